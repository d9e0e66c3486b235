// cast.cuh — element-wise copies between storage types: fp32 -> bf16 (round to nearest even, the
// conversion PyTorch's .to(torch.bfloat16) uses), bf16 -> fp32 (exact), and same-type copies.
// Used off the hot path (uploading fp32 host data as the compute dtype, downloading it for
// checkpoints and tests, initializing bf16 params from fp32 master weights), so it is one thread
// per element with coalesced access and no alignment requirement.
#pragma once

#include "cuda_check.h"
#include "packed.h"

#include <cstddef>

namespace slim {

namespace cast_detail {
constexpr int kThreads = 512;
}  // namespace cast_detail

// ---- CUDA kernels ------------------------------------------------------------------------------

template <typename Out, typename In>
__global__ void cast_copy_kernel(Out* out, const In* in, size_t n) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = from_float<Out>(to_float(in[i]));
}

// ---- launchers ---------------------------------------------------------------------------------

// out[n] = in[n] converted to Out (NaN and infinities preserved). out and in must not overlap
// unless they are the same pointer with the same type.
template <typename Out, typename In>
void cast_copy(Out* out, const In* in, size_t n, cudaStream_t stream) {
  constexpr const char* op = "cast_copy";
  if (n == 0) return;
  if (out == nullptr || in == nullptr) throw Error(cat(op, ": out and in must not be null"));
  simt::launch(cast_copy_kernel<Out, In>, dim3(grid_blocks(op, n, cast_detail::kThreads)),
               dim3(cast_detail::kThreads), 0, stream, out, in, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
