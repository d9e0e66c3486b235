// nvcc_smoke.cu — compiles the kernel-facing API of simt/cuda_compat.h with nvcc, so the emulated
// API never drifts from what real CUDA accepts. Never run; the emulated twins of these kernels
// are exercised by tests/test_simt_core.cpp.
#include "simt/cuda_compat.h"

namespace cg = cooperative_groups;

// Block sum: warp shuffles, dynamic shared memory, a block barrier, an atomic.
__global__ void smoke_block_sum(const float* __restrict__ in, float* out, int n) {
  SIMT_DYNAMIC_SHARED(float, warp_sums);
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? __ldcs(in + i) : 0.0f;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  v += __shfl_down_sync(0xffffffffu, v, 1, 16) * 0.0f;
  v += __shfl_up_sync(0xffffffffu, v, 1, 8) * 0.0f;
  v += __shfl_sync(0xffffffffu, v, 0) * 0.0f;
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += warp_sums[w];
    atomicAdd(out, total);
  }
}

// Cooperative groups: tiles, reduce with plus/greater/less, tile shuffles and votes.
__global__ void smoke_cg(const float* in, float* out, unsigned* votes) {
  cg::thread_block block = cg::this_thread_block();
  cg::thread_block_tile<32> warp = cg::tiled_partition<32>(block);
  const float x = in[block.thread_rank()];
  const float sum = cg::reduce(warp, x, cg::plus<float>{});
  const float big = cg::reduce(warp, x, cg::greater<float>{});
  const float small = cg::reduce(warp, x, cg::less<float>{});
  const float moved = warp.shfl_xor(x, 1) + warp.shfl_down(x, 1) + warp.shfl(x, 0);
  if (warp.thread_rank() == 0) out[warp.meta_group_rank()] = sum + big + small + moved;
  const unsigned ballot = __ballot_sync(0xffffffffu, x > 0.0f);
  const bool any_big = warp.any(x > 1.0f), all_positive = warp.all(x > -1.0f);
  if (any_big && all_positive && warp.thread_rank() == 0) votes[warp.meta_group_rank()] = ballot;
  warp.sync();
  block.sync();
}

// 128-bit vectorized copy with bf16 conversion.
__global__ void smoke_cast(const float4* in, __nv_bfloat162* out, int n4) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) {
    const float4 v = __ldcs(in + i);
    out[2 * i] = __floats2bfloat162_rn(v.x, v.y);
    out[2 * i + 1] = __floats2bfloat162_rn(v.z, __expf(v.w) * rsqrtf(2.0f));
  }
}

void smoke_launch(const float* in, float* out, unsigned* votes, const float4* in4,
                  __nv_bfloat162* out2, int n, cudaStream_t stream) {
  simt::launch(smoke_block_sum, dim3((n + 255) / 256), dim3(256), 8 * sizeof(float), stream, in,
               out, n);
  simt::launch(smoke_cg, dim3(1), dim3(64), 0, stream, in, out, votes);
  simt::launch(smoke_cast, dim3(4), dim3(128), 0, stream, in4, out2, n / 4);
}
