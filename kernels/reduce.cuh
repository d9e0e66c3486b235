// reduce.cuh — warp and block reductions with a fixed combination order.
//
// The butterfly (xor) warp reduction combines the same pairs on every lane, and a + b == b + a
// exactly, so all 32 lanes end with identical bits and the result never depends on timing. The
// block reduction adds the per-warp results in warp order. These are the only reductions the
// kernels use for sums that must be deterministic (LayerNorm statistics, softmax sums, norms).
#pragma once

#include "simt/cuda_compat.h"

namespace slim {

constexpr unsigned kFullWarpMask = 0xffffffffu;

// Sum over the 32 lanes of a full warp; every lane gets the total.
template <typename T>
__device__ inline T warp_sum(T value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    value += __shfl_xor_sync(kFullWarpMask, value, offset);
  return value;
}

// Maximum over the 32 lanes of a full warp; every lane gets it. NaN-propagating like fmaxf is
// not: a NaN lane makes the result NaN, so a poisoned row is not silently normalized.
__device__ inline float warp_max(float value) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(kFullWarpMask, value, offset);
    value = (other > value || other != other) ? other : value;
  }
  return value;
}

// Sum over all threads of a block whose size is a multiple of 32 (at most 1024); every thread gets
// the total. Every thread of the block must call it (it synchronizes).
template <typename T>
__device__ inline T block_sum(T value) {
  __shared__ T warp_totals[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  value = warp_sum(value);
  __syncthreads();  // a previous call may still be reading warp_totals
  if (lane == 0) warp_totals[warp] = value;
  __syncthreads();
  T total = lane < warps ? warp_totals[lane] : T(0);
  return warp_sum(total);
}

}  // namespace slim
