// global_norm.cuh — the sum of squares of a gradient tensor (for the global gradient norm used by
// clipping), deterministic: the result's bits depend only on the data and n, never on timing or
// on the GPU model.
//
//   stage 1: G blocks (G a function of n alone) each walk a fixed grid-stride set of 16-byte packs;
//            a pack's squares are added in fp32, each thread adds its packs into a double, and the
//            block's threads are combined by a fixed-order block reduction into partials[block];
//   stage 2: one block adds the G partials in a fixed order and writes
//            out = (accumulate ? out : 0) + total, so summing several tensors into one device
//            double is also deterministic (stream order).
// No atomics anywhere. Tensors that are not 16-byte aligned take the same path element by element.
#pragma once

#include "cuda_check.h"
#include "packed.h"
#include "reduce.cuh"
#include "workspace_sizes.h"  // global_norm_squared_scratch_bytes, kThreads, blocks_for

#include <cstddef>
#include <cstdint>

namespace slim {

// The grid (global_norm_detail::kThreads, kMaxBlocks, blocks_for) and
// global_norm_squared_scratch_bytes are in workspace_sizes.h, where the memory planner reads them.

// ---- CUDA kernels ------------------------------------------------------------------------------

// partials[blockIdx.x] = this block's share of sum(x^2). With kPacked, x is 16-byte aligned and
// read in packs; the n % pack tail elements go to the first threads of the grid.
template <typename floatX, bool kPacked>
__global__ void global_norm_squared_kernel(double* partials, const floatX* x, size_t n) {
  using Pack = Packed128<floatX>;
  const size_t thread = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t threads = static_cast<size_t>(gridDim.x) * blockDim.x;
  double sum = 0.0;
  if constexpr (kPacked) {
    const size_t packs = n / Pack::size;
    for (size_t p = thread; p < packs; p += threads) {
      const Pack values = load128cs(x + p * Pack::size);
      float pack_sum = 0.0f;
#pragma unroll
      for (int k = 0; k < Pack::size; ++k) pack_sum += to_float(values[k]) * to_float(values[k]);
      sum += pack_sum;
    }
    const size_t tail = packs * Pack::size + thread;
    if (tail < n) {
      const float value = to_float(x[tail]);
      sum += value * value;
    }
  } else {
    for (size_t i = thread; i < n; i += threads) {
      const float value = to_float(x[i]);
      sum += value * value;
    }
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

// out = (accumulate ? out : 0) + sum of partials[0 .. blocks).
__global__ void global_norm_squared_reduce_kernel(double* out, const double* partials, int blocks,
                                                  bool accumulate) {
  double sum = static_cast<int>(threadIdx.x) < blocks ? partials[threadIdx.x] : 0.0;
  sum = block_sum(sum);
  if (threadIdx.x == 0) *out = (accumulate ? *out : 0.0) + sum;
}

// ---- launchers ---------------------------------------------------------------------------------

// *out (device double) (+)= sum of x[i]^2 over n elements; deterministic.
// scratch: global_norm_squared_scratch_bytes(n) bytes, 8-byte aligned.
template <typename floatX>
void global_norm_squared(double* out, const floatX* x, size_t n, bool accumulate, void* scratch,
                         cudaStream_t stream) {
  using namespace global_norm_detail;
  constexpr const char* op = "global_norm_squared";
  if (out == nullptr || (x == nullptr && n > 0))
    throw Error(cat(op, ": out and x must not be null"));
  if (scratch == nullptr || reinterpret_cast<uintptr_t>(scratch) % alignof(double) != 0)
    throw Error(cat(op, ": needs ", global_norm_squared_scratch_bytes(n),
                    " bytes of 8-byte aligned scratch, got ", scratch));
  double* partials = static_cast<double*>(scratch);
  const int blocks = blocks_for(n);
  if (is_aligned16(x))
    simt::launch(global_norm_squared_kernel<floatX, true>, dim3(blocks), dim3(kThreads), 0, stream,
                 partials, x, n);
  else
    simt::launch(global_norm_squared_kernel<floatX, false>, dim3(blocks), dim3(kThreads), 0, stream,
                 partials, x, n);
  CUDA_CHECK_LAUNCH();
  simt::launch(global_norm_squared_reduce_kernel, dim3(1), dim3(kMaxBlocks), 0, stream, out,
               static_cast<const double*>(partials), blocks, accumulate);
  CUDA_CHECK_LAUNCH();
}

// Backend::sum_squares: the sum of squares of n elements, returned to the host (synchronizes the
// stream). Uses the last double of scratch as the result slot.
template <typename floatX>
double sum_squares(const floatX* x, size_t n, void* scratch, cudaStream_t stream) {
  double* result = static_cast<double*>(scratch) + global_norm_detail::blocks_for(n);
  global_norm_squared(result, x, n, /*accumulate=*/false, scratch, stream);
  double host = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

}  // namespace slim
