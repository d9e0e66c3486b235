// classifier.cuh — the fused classifier: softmax, cross-entropy loss and dlogits in one kernel.
//
// logits [N, Vp]: only the first V columns are real tokens (Vp pads the vocabulary for aligned
// GEMMs). Per row i:
//   losses[i] = logsumexp(logits[i, :V]) - logits[i, target_i]                    (fp32)
//   with write_dlogits, logits[i, j] <- dloss * (softmax_j - [j == target_i]) for j < V, and 0
//   for the padded columns — in place, so the [N, Vp] probabilities never need a buffer of
//   their own.
//
// One block per row, two passes over the row: pass 1 keeps a running (max, sum of exp) per thread
// ("online softmax": when a larger value arrives, the sum so far is rescaled), pass 2 writes the
// gradient. The per-thread partials are combined warp by warp and then in warp order by every
// thread identically, so the row statistics are deterministic and the same in every thread.
//
// A target outside [0, V) cannot be reported from the device without a sync; the row's loss and
// gradient become NaN instead, which the trainer's non-finite-loss guard stops on.
#pragma once

#include "cuda_check.h"
#include "packed.h"

#include <cstddef>
#include <cstdint>

namespace slim {

namespace classifier_detail {
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

// Running softmax statistics: the maximum seen and the sum of exp(x - max).
struct SoftmaxStats {
  float max;
  float sum;
};

__device__ inline float rescale(float old_max, float new_max) {
  // exp(-inf - -inf) would be NaN; a part that has seen nothing contributes nothing.
  return old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
}

__device__ inline SoftmaxStats combine(SoftmaxStats a, SoftmaxStats b) {
  const float new_max = fmaxf(a.max, b.max);
  return {new_max, a.sum * rescale(a.max, new_max) + b.sum * rescale(b.max, new_max)};
}
}  // namespace classifier_detail

// ---- CUDA kernels ------------------------------------------------------------------------------

template <typename floatX>
__global__ void fused_classifier_kernel(floatX* logits, float* losses, const int* targets,
                                        float dloss, int V, int Vp, bool write_dlogits) {
  using Pack = Packed128<floatX>;
  using classifier_detail::SoftmaxStats;
  __shared__ SoftmaxStats warp_stats[classifier_detail::kWarps];
  __shared__ float target_logit;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warps = blockDim.x / 32;
  floatX* row = logits + static_cast<size_t>(blockIdx.x) * Vp;
  const int target = targets[blockIdx.x];

  // Pass 1: per-thread online max / sum of exp over the real columns (cached loads: pass 2
  // reads the row again).
  SoftmaxStats stats{-INFINITY, 0.0f};
  const int real_packs = (V + Pack::size - 1) / Pack::size;
  for (int p = threadIdx.x; p < real_packs; p += blockDim.x) {
    const Pack x = load128(row + p * Pack::size);
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) {
      if (p * Pack::size + k >= V) break;
      const float value = to_float(x[k]);
      if (value > stats.max) {
        stats.sum = stats.sum * classifier_detail::rescale(stats.max, value) + 1.0f;
        stats.max = value;
      } else {
        stats.sum += expf(value - stats.max);  // NaN stays NaN
      }
    }
  }
  // Warp, then block: lane 0's result per warp, warps combined in order by every thread.
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    const SoftmaxStats other{__shfl_xor_sync(0xffffffffu, stats.max, offset),
                             __shfl_xor_sync(0xffffffffu, stats.sum, offset)};
    stats = classifier_detail::combine(stats, other);
  }
  if (lane == 0) warp_stats[warp] = stats;
  if (threadIdx.x == 0) {
    const bool valid = target >= 0 && target < V;
    target_logit = valid ? to_float(row[target]) : NAN;  // read before pass 2 overwrites it
  }
  __syncthreads();
  SoftmaxStats total = warp_stats[0];
  for (int k = 1; k < warps; ++k) total = classifier_detail::combine(total, warp_stats[k]);
  const float log_sum_exp = total.max + logf(total.sum);
  if (threadIdx.x == 0) losses[blockIdx.x] = log_sum_exp - target_logit;
  if (!write_dlogits) return;

  // Pass 2: dlogits in place; padding columns zeroed. An invalid target poisons the row.
  const float inv_sum = isnan(target_logit) ? NAN : 1.0f / total.sum;
  const int all_packs = Vp / Pack::size;
  for (int p = threadIdx.x; p < all_packs; p += blockDim.x) {
    const int column0 = p * Pack::size;
    Pack result = Pack::zeros();
    if (column0 < V) {
      const Pack x = load128cs(row + column0);
#pragma unroll
      for (int k = 0; k < Pack::size; ++k) {
        const int column = column0 + k;
        if (column >= V) break;
        const float probability = expf(to_float(x[k]) - total.max) * inv_sum;
        const float indicator = column == target ? 1.0f : 0.0f;
        result[k] = from_float<floatX>(dloss * (probability - indicator));
      }
    }
    store128cs(row + column0, result);
  }
}

// ---- launchers ---------------------------------------------------------------------------------

// losses[N] = cross-entropy of softmax(logits[i, :V]) at targets[i]; with write_dlogits, logits
// [N, Vp] is overwritten with dloss * (softmax - onehot(target)) and zeros in the padding.
template <typename floatX>
void fused_classifier(floatX* logits, float* losses, const int* targets, float dloss, int N, int V,
                      int Vp, bool write_dlogits, cudaStream_t stream) {
  constexpr const char* op = "fused_classifier";
  if (N <= 0 || V <= 0 || Vp < V)
    throw Error(cat(op, ": need N > 0 and 0 < V <= Vp, got N=", N, " V=", V, " Vp=", Vp));
  require_packed(op, "logits", logits, Vp);
  if (losses == nullptr || targets == nullptr)
    throw Error(cat(op, ": losses and targets must not be null"));
  simt::launch(fused_classifier_kernel<floatX>, dim3(grid_blocks(op, N, 1)),
               dim3(classifier_detail::kThreads), 0, stream, logits, losses, targets, dloss, V, Vp,
               write_dlogits);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
