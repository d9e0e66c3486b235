// block_adam.cuh — block-wise Adam on one tensor (OPTIMIZERS.md sections 2, 3, 5.4 and 9): AdamW,
// Adam-mini and SlimAdam in grads mode, and AdamA's fold / apply / unfold / undo_decay, with the
// math of optim/block_adam.h and the partition of optim/partition.h. block_adam_cpu.cpp is the
// reference; every kernel computes the same per-element expressions, only the summation order of
// the reductions differs (fixed here too, see block_adam_sizes.h).
//
// A tensor is cut into row segments (the fused qkv has three); each segment's elements group into
// blocks that share one v entry: Element (AdamW), Row, Head, Column or Whole. The launchers take
// the host-side TensorPartition, plan it (block_adam_sizes.h) and launch per segment; the kernels
// only see plain structs (BlockGeometry, BlockAdamHyper, the cuts) and pointers.
//
// Kernels, and who runs them:
//   square partials (span / column)   fp32 partial sums of (grad_scale*g)^2 and of g^2: one warp
//                                     per span chunk, or one thread per (column, row chunk)
//   fold verdict                      one block: is every partial finite (and status->nonfinite
//                                     clear)? writes the verdict, updates the FoldStatus
//   fold / unfold                     one thread per element (m) plus one per block (v, whose
//                                     mean it adds from the partials); does nothing unless the
//                                     verdict says write
//   v step, step                      grads mode: v_B from the partials, then m and the weights
//   direction partials, clip scale    update clipping: partial sums of u^2, then one block turns
//                                     them into min(1, update_clip / rms(u))
//   apply                             one thread per element: the weight update
//   undo decay                        m /= beta1, v /= beta2
//
// Launches per call on a tensor of S segments: grads-mode step 1 per Element segment, 3 per other;
// fold and unfold 2S + 1 (+1 for a Column/Whole segment with padded rows); apply S, or 2S + 1
// with update clipping; undo_decay 1.
//
// Determinism: no atomics. Every partial is summed by one warp (lanes in element order, then the
// butterfly warp_sum of reduce.cuh) or one thread (rows in order); every total is added in a fixed
// order (block_sum in warp order, or one thread in chunk order). The cut depends on the partition
// alone, so the bits depend neither on the schedule nor on the GPU model.
//
// Non-finite gradients (fold): the gradient is read twice. The partial kernels read all of it (the
// padded rows too) and the verdict kernel looks at every partial: a NaN or an infinity anywhere
// makes its partial non-finite (squares are >= 0, so nothing cancels), as does an fp32 overflow
// of a partial (|grad_scale*g| beyond ~1e17: no such gradient is usable either). Only then does
// the fold kernel read the gradient again and write m and v. A gradient tensor of a few MiB is
// still in L2 for the second read, which is why the loads here are plain (cached) loads.
//
// Element segments reproduce kernels/adamw.cuh: the same expressions in the same order, and the
// same stochastic-rounding index (the element's index in the tensor), so with one Element segment
// block_adam_step gives adamw_update's bits.
//
// m is floatM: float, or __nv_bfloat16 when the optimizer stores it in bf16 (h.m_bf16 must agree;
// optim/block_adam.h). Every kernel that writes m (step, fold, unfold, undo decay) reads it as
// fp32 and stores it with store_rounded: fp32 as is, bf16 stochastically rounded with
// random_bits(h.m_seed, the element's index in the tensor), the CPU reference's bits. The grads-
// mode step applies the unrounded m to the weights, as the CPU does.
//
// Loads are scalar and coalesced, not 128-bit packs: segments start at any row of a tensor and
// rows have any length, so no alignment can be assumed; like adamw.cuh, these kernels are bounded
// by DRAM bandwidth either way.
#pragma once

#include "cuda_check.h"
#include "packed.h"
#include "reduce.cuh"
#include "adamw.cuh"            // store_rounded (stochastic rounding to bf16)
#include "block_adam_sizes.h"   // the plan: cuts, partial layout, scratch floats

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "backend/backend.h"  // FoldStatus
#include "optim/block_adam.h"
#include "optim/partition.h"

namespace slim {

namespace block_adam_detail {
constexpr int kThreads = 512;        // element-wise kernels: one thread per element
constexpr int kReduceThreads = 256;  // span partials: one warp per chunk
constexpr int kReduceWarps = kReduceThreads / 32;
constexpr int kColumnThreads = 256;  // column partials: one thread per column
constexpr int kTotalThreads = 1024;  // the one-block kernels (verdict, clip scale)
static_assert(kReduceThreads % 32 == 0 && kTotalThreads % 32 == 0);

// a / b for a >= 0, b > 0: a 32-bit division when both fit (the usual case), which is several
// times cheaper than the 64-bit one.
__device__ __host__ inline int64_t divide(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
  return a / b;
}

// The v entry (relative to the segment's first) of the segment's element i (= row * cols + col):
// block_index of block_adam.h from a flat index. The kind is a kernel argument, so the switch is
// uniform over the grid.
__device__ __host__ inline int64_t element_v_index(const BlockGeometry& geo, int64_t i) {
  switch (geo.kind) {
    case BlockKind::Element: return i;
    case BlockKind::Row: return divide(i, geo.cols);
    case BlockKind::Head: return divide(i, geo.head_dim * geo.cols);
    case BlockKind::Column: return i - divide(i, geo.cols) * geo.cols;
    case BlockKind::Whole: return 0;
  }
  return 0;
}

// Block b's mean: its partials added in chunk order in double, divided by the block's count
// (block_adam_cpu.cpp does the same with its own partials).
__device__ inline float block_mean(const float* partials, const PartialLayout& layout, int64_t b) {
  const float* p = partials + b * layout.block_stride;
  double sum = 0.0;
  for (int64_t k = 0; k < layout.chunks; ++k) sum += static_cast<double>(p[k * layout.chunk_stride]);
  return static_cast<float>(sum / layout.count);
}

__device__ inline bool fold_abandoned(const FoldStatus* status) {
  return status != nullptr && status->nonfinite != 0;
}

}  // namespace block_adam_detail

// ---- CUDA kernels ------------------------------------------------------------------------------

// Span partials: warp w sums chunk w of the cut (SpanCut in block_adam_sizes.h) of `grads`:
// scaled[w] = sum (grad_scale*g)^2, raw[w] = sum g^2. Skipped when the step's fold status is
// already non-finite (the verdict then writes nothing anyway).
template <typename floatX>
__global__ void block_adam_span_partials_kernel(float* scaled, float* raw, const floatX* grads,
                                                block_adam_detail::SpanCut cut, float grad_scale,
                                                const FoldStatus* status) {
  using namespace block_adam_detail;
  if (fold_abandoned(status)) return;
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kReduceWarps + threadIdx.x / 32;
  if (chunk >= cut.partials()) return;  // the whole warp leaves together
  const int lane = threadIdx.x % 32;
  const int64_t span = chunk / cut.chunks_per_span;
  const int64_t begin = (chunk - span * cut.chunks_per_span) * cut.chunk_length;
  const int64_t end = begin + cut.chunk_length < cut.span_length ? begin + cut.chunk_length
                                                                 : cut.span_length;
  const floatX* x = grads + span * cut.span_length;
  float scaled_sum = 0.0f, raw_sum = 0.0f;
#pragma unroll 4
  for (int64_t i = begin + lane; i < end; i += 32) {
    const float g = to_float(x[i]);
    scaled_sum += scaled_square(g, grad_scale);
    raw_sum += g * g;
  }
  scaled_sum = warp_sum(scaled_sum);
  raw_sum = warp_sum(raw_sum);
  if (lane == 0) {
    scaled[chunk] = scaled_sum;
    raw[chunk] = raw_sum;
  }
}

// Column partials: thread (column c, row chunk k = blockIdx.y) sums its rows of column c in row
// order into scaled[k * cols + c] and raw[k * cols + c]. Neighbouring threads read neighbouring
// columns, so every row visit is coalesced.
template <typename floatX>
__global__ void block_adam_column_partials_kernel(float* scaled, float* raw, const floatX* grads,
                                                  block_adam_detail::ColumnCut cut,
                                                  float grad_scale, const FoldStatus* status) {
  using namespace block_adam_detail;
  if (fold_abandoned(status)) return;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cut.cols) return;
  const int64_t k = blockIdx.y;
  const int64_t row_begin = k * cut.rows_per_chunk;
  const int64_t row_end = row_begin + cut.rows_per_chunk < cut.rows ? row_begin + cut.rows_per_chunk
                                                                    : cut.rows;
  const floatX* x = grads + row_begin * cut.cols + col;
  float scaled_sum = 0.0f, raw_sum = 0.0f;
  for (int64_t r = row_begin; r < row_end; ++r, x += cut.cols) {
    const float g = to_float(*x);
    scaled_sum += scaled_square(g, grad_scale);
    raw_sum += g * g;
  }
  scaled[k * cut.cols + col] = scaled_sum;
  raw[k * cut.cols + col] = raw_sum;
}

// One block: the fold's verdict. Write (1) only when status (may be null: unfold) is not already
// non-finite and every scaled partial is finite; then count the fold and add ||g||^2 (the raw
// partials in a fixed order) to the status. Otherwise 0, and the status becomes non-finite.
__global__ void block_adam_fold_verdict_kernel(int* verdict, FoldStatus* status,
                                               const float* scaled, const float* raw,
                                               int64_t partials) {
  using namespace block_adam_detail;
  if (fold_abandoned(status)) {  // the same branch for every thread of the block
    if (threadIdx.x == 0) *verdict = 0;
    return;
  }
  int bad = 0;
  double raw_sum = 0.0;
  for (int64_t k = threadIdx.x; k < partials; k += blockDim.x) {
    bad |= isfinite(scaled[k]) ? 0 : 1;
    raw_sum += static_cast<double>(raw[k]);
  }
  bad = block_sum(bad);
  raw_sum = block_sum(raw_sum);
  if (threadIdx.x != 0) return;
  if (bad != 0) {
    *verdict = 0;
    if (status != nullptr) status->nonfinite = 1;
  } else {
    *verdict = 1;
    if (status != nullptr) {
      status->committed += 1;
      status->raw_sum_squares += raw_sum;
    }
  }
}

// AdamA fold (kUnfold false) or its inverse (true) of one segment, when the verdict says write:
// thread i folds element i's m (and its own v under Element); thread b < blocks also folds block
// b's v from the block's mean (Element segments have no partials: `partials` is unused there).
// first_element: the segment's offset in the tensor (the rounding index of a bf16 m).
template <typename floatX, typename floatM, bool kUnfold>
__global__ void block_adam_fold_kernel(floatM* m, float* v, const floatX* grads, BlockGeometry geo,
                                       int64_t elements, int64_t first_element, int64_t blocks,
                                       const float* partials,
                                       block_adam_detail::PartialLayout layout, BlockAdamHyper h,
                                       bool first_fold, const int* verdict) {
  using namespace block_adam_detail;
  if (*verdict == 0) return;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // The same weights as block_adam_fold_cpu / block_adam_unfold_cpu.
  const float c = h.grad_scale, m_weight = 1.0f - h.beta1;
  const float v_weight = v_fold_weight(h.beta2, h.fold_scale);
  const float m_keep = fold_keep(h.beta1, first_fold), v_keep = fold_keep(h.beta2, first_fold);
  const bool element_v = geo.kind == BlockKind::Element;
  if (i < elements) {
    const float g = to_float(grads[i]) * c;
    const uint64_t index = static_cast<uint64_t>(first_element + i);
    if constexpr (kUnfold) {
      const float m_new = moment_unstep(to_float(m[i]), m_weight, g);
      m[i] = store_rounded<floatM>(m_new, h.m_seed, index);
      if (element_v) v[i] = square_moment_unstep(v[i], v_weight, g);
    } else {
      const float m_new = moment_step(to_float(m[i]), m_keep, m_weight, g);
      m[i] = store_rounded<floatM>(m_new, h.m_seed, index);
      if (element_v) v[i] = square_moment_step(v[i], v_keep, v_weight, g);
    }
  }
  if (!element_v && i < blocks) {
    const float mean = block_mean(partials, layout, i);
    if constexpr (kUnfold)
      v[i] = block_moment_unstep(v[i], v_weight, mean);
    else
      v[i] = moment_step(v[i], v_keep, v_weight, mean);
  }
}

// Grads mode, before the element update: v_B = beta2*v_B + (1-beta2)*mean_B for every block.
__global__ void block_adam_v_step_kernel(float* v, const float* partials,
                                         block_adam_detail::PartialLayout layout, int64_t blocks,
                                         BlockAdamHyper h) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= blocks) return;
  v[b] = moment_step(v[b], h.beta2, 1.0f - h.beta2, block_adam_detail::block_mean(partials, layout, b));
}

// Grads mode, one thread per element: m, (Element: v,) the weight, its master and its stored copy.
// Pointers are at the segment's first element / v entry; first_element is the segment's offset in
// the tensor (the stochastic-rounding index is the element's index in the tensor, as in adamw.cuh).
template <typename floatX, typename floatM>
__global__ void block_adam_step_kernel(floatX* params, float* master, const floatX* grads,
                                       floatM* m, float* v, BlockGeometry geo, int64_t elements,
                                       int64_t first_element, BlockAdamHyper h) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= elements) return;
  const uint64_t index = static_cast<uint64_t>(first_element + i);
  // The order of adamw_update_kernel (and of block_adam_step_cpu).
  const float g = to_float(grads[i]) * h.grad_scale;
  const float m_new = moment_step(to_float(m[i]), h.beta1, 1.0f - h.beta1, g);
  float v_e;
  if (geo.kind == BlockKind::Element) {
    v_e = square_moment_step(v[i], h.beta2, 1.0f - h.beta2, g);
    m[i] = store_rounded<floatM>(m_new, h.m_seed, index);
    v[i] = v_e;
  } else {
    m[i] = store_rounded<floatM>(m_new, h.m_seed, index);
    v_e = v[block_adam_detail::element_v_index(geo, i)];
  }
  const float w_old = master != nullptr ? master[i] : to_float(params[i]);
  const float w_new = adam_apply(w_old, m_new, v_e, h);
  if (master != nullptr) master[i] = w_new;
  params[i] = store_rounded<floatX>(w_new, h.seed, index);
}

// Update clipping, stage 1: warp w sums u^2 (u = adam_direction) over chunk w of the segment's
// real elements.
template <typename floatM>
__global__ void block_adam_direction_partials_kernel(float* partials, const floatM* m,
                                                     const float* v, BlockGeometry geo,
                                                     block_adam_detail::SpanCut cut,
                                                     BlockAdamHyper h) {
  using namespace block_adam_detail;
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kReduceWarps + threadIdx.x / 32;
  if (chunk >= cut.partials()) return;
  const int lane = threadIdx.x % 32;
  const int64_t begin = chunk * cut.chunk_length;  // one span: the real rows
  const int64_t end = begin + cut.chunk_length < cut.span_length ? begin + cut.chunk_length
                                                                 : cut.span_length;
  float sum = 0.0f;
  for (int64_t i = begin + lane; i < end; i += 32) {
    const float u = adam_direction(to_float(m[i]), v[element_v_index(geo, i)], h);
    sum += u * u;
  }
  sum = warp_sum(sum);
  if (lane == 0) partials[chunk] = sum;
}

// Update clipping, stage 2 (one block): scale = update_clip_scale(mean of u^2, update_clip).
__global__ void block_adam_clip_scale_kernel(float* scale, const float* partials,
                                             int64_t count, int64_t real_elements,
                                             float update_clip) {
  double sum = 0.0;
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) sum += static_cast<double>(partials[k]);
  sum = block_sum(sum);
  if (threadIdx.x == 0)
    *scale = update_clip_scale(real_elements > 0 ? sum / static_cast<double>(real_elements) : 0.0,
                               update_clip);
}

// AdamA apply, one thread per element. clip_scale (device, may be null = 1) is the same for the
// whole tensor, so the branch is uniform; scale 1 takes adam_apply itself (block_adam.h says why).
template <typename floatX, typename floatM>
__global__ void block_adam_apply_kernel(floatX* params, float* master, const floatM* m,
                                        const float* v, BlockGeometry geo, int64_t elements,
                                        int64_t first_element, BlockAdamHyper h,
                                        const float* clip_scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= elements) return;
  const float scale = clip_scale != nullptr ? *clip_scale : 1.0f;
  const float w_old = master != nullptr ? master[i] : to_float(params[i]);
  const float m_i = to_float(m[i]), v_b = v[block_adam_detail::element_v_index(geo, i)];
  const float w_new =
      scale == 1.0f ? adam_apply(w_old, m_i, v_b, h) : adam_apply_scaled(w_old, m_i, v_b, h, scale);
  if (master != nullptr) master[i] = w_new;
  params[i] = store_rounded<floatX>(w_new, h.seed, static_cast<uint64_t>(first_element + i));
}

// m[i] /= beta1 for i < elements (m at the tensor's first element; a bf16 m rounded with m_seed),
// v[b] /= beta2 for b < v_entries.
template <typename floatM>
__global__ void block_adam_undo_decay_kernel(floatM* m, float* v, int64_t elements,
                                             int64_t v_entries, float beta1, float beta2,
                                             uint32_t m_seed) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < elements) {
    const float m_new = undo_decay(to_float(m[i]), beta1);
    m[i] = store_rounded<floatM>(m_new, m_seed, static_cast<uint64_t>(i));
  }
  if (i < v_entries) v[i] = undo_decay(v[i], beta2);
}

// ---- launchers ---------------------------------------------------------------------------------
//
// Pointers as in Backend::block_adam_step: params / master / grads / m at the tensor's first
// element (rows x cols), v at its first v entry (the run's v buffer + part.v_offset); master may be
// null (the params are then the weights: fp32, or bf16 updated in fp32 and rounded back
// stochastically); m is float or __nv_bfloat16, as h.m_bf16 says. scratch:
// block_adam_scratch_floats(part) device floats (block_adam_sizes.h).
// Every launcher checks the partition and its arguments (slim::Error naming the op and tensor)
// and every launch; under the emulator a launch is synchronous, on a GPU it is queued on `stream`.

namespace block_adam_detail {

inline void require(bool ok, const char* op, const TensorPartition& part, const char* what) {
  if (!ok) throw Error(cat(op, ": tensor '", part.tensor, "': ", what));
}

inline void require_bias_corrections(const char* op, const TensorPartition& part,
                                     const BlockAdamHyper& h) {
  if (!(h.bias_correction1 > 0.0f) || !(h.bias_correction2 > 0.0f))
    throw Error(cat(op, ": tensor '", part.tensor,
                    "': bias corrections must be positive (1 - beta^t with t >= 1), got ",
                    h.bias_correction1, " and ", h.bias_correction2));
}

// m's storage type and h.m_bf16 must agree: the optimizer's dtype is in both, and a mismatch would
// read bf16 bits as floats (or the reverse).
template <typename floatM>
void require_moment_dtype(const char* op, const TensorPartition& part, const BlockAdamHyper& h) {
  static_assert(std::is_same_v<floatM, float> || std::is_same_v<floatM, __nv_bfloat16>,
                "m is stored in fp32 or bf16");
  constexpr bool kBf16 = std::is_same_v<floatM, __nv_bfloat16>;
  if (h.m_bf16 != kBf16)
    throw Error(cat(op, ": tensor '", part.tensor, "': hyper.m_bf16 = ", h.m_bf16,
                    " but m is passed as ", kBf16 ? "bf16" : "fp32"));
}

inline void require_scratch(const char* op, const TensorPartition& part, const float* scratch) {
  if (scratch == nullptr)
    throw Error(cat(op, ": tensor '", part.tensor, "': needs ", block_adam_scratch_floats(part),
                    " floats of device scratch (block_adam_scratch_floats), got null"));
}

// Blocks of `threads` covering `items`, checked to fit a grid.
inline dim3 grid_for(const char* op, int64_t items, int threads) {
  return dim3(grid_blocks(op, static_cast<unsigned long long>(items > 0 ? items : 1),
                          static_cast<unsigned long long>(threads)));
}

// The partial kernels of one segment's gradient into the tensor's partial arrays: its blocks,
// and with check_padding also the padded rows its means skip (the fold's finiteness check and
// ||g||^2 need them; grads mode does not).
template <typename floatX>
void launch_square_partials(const char* op, const SegmentPlan& p, const floatX* grads,
                            float* scaled, float* raw, float grad_scale, const FoldStatus* status,
                            bool check_padding, cudaStream_t stream) {
  const floatX* g = grads + p.first_element;
  if (p.by_column) {
    if (p.columns.partials() > 0) {
      const dim3 grid(grid_blocks(op, static_cast<unsigned long long>(p.columns.cols), kColumnThreads),
                      static_cast<unsigned int>(p.columns.row_chunks));
      simt::launch(block_adam_column_partials_kernel<floatX>, grid, dim3(kColumnThreads), 0,
                   stream, scaled + p.partial_offset, raw + p.partial_offset, g, p.columns,
                   grad_scale, status);
      CUDA_CHECK_LAUNCH();
    }
  } else if (p.spans.partials() > 0) {
    simt::launch(block_adam_span_partials_kernel<floatX>,
                 grid_for(op, p.spans.partials(), kReduceWarps), dim3(kReduceThreads), 0, stream,
                 scaled + p.partial_offset, raw + p.partial_offset, g, p.spans, grad_scale, status);
    CUDA_CHECK_LAUNCH();
  }
  if (check_padding && p.padding.partials() > 0) {
    simt::launch(block_adam_span_partials_kernel<floatX>,
                 grid_for(op, p.padding.partials(), kReduceWarps), dim3(kReduceThreads), 0, stream,
                 scaled + p.padding_offset, raw + p.padding_offset,
                 g + p.geo.real_rows * p.geo.cols, p.padding, grad_scale, status);
    CUDA_CHECK_LAUNCH();
  }
}

// fold (kUnfold false) and unfold share everything but the kernel's direction.
template <typename floatX, typename floatM, bool kUnfold>
void fold_or_unfold(const char* op, const floatX* grads, floatM* m, float* v,
                    const TensorPartition& part, const BlockAdamHyper& h, bool first_fold,
                    FoldStatus* status, float* scratch, cudaStream_t stream) {
  const TensorPlan plan = plan_tensor(op, part);
  require(plan.elements == 0 || (grads != nullptr && m != nullptr && v != nullptr), op, part,
          "grads, m and v must not be null");
  require_moment_dtype<floatM>(op, part, h);
  require_scratch(op, part, scratch);
  int* verdict = reinterpret_cast<int*>(scratch + kVerdictSlot);
  float* scaled = scratch + kHeaderFloats;
  float* raw = scaled + plan.partials;
  for (const SegmentPlan& p : plan.segments)
    launch_square_partials(op, p, grads, scaled, raw, h.grad_scale, status, true, stream);
  simt::launch(block_adam_fold_verdict_kernel, dim3(1), dim3(kTotalThreads), 0, stream, verdict,
               status, static_cast<const float*>(scaled), static_cast<const float*>(raw),
               plan.partials);
  CUDA_CHECK_LAUNCH();
  for (const SegmentPlan& p : plan.segments) {
    const int64_t threads = p.elements > p.blocks ? p.elements : p.blocks;
    simt::launch(block_adam_fold_kernel<floatX, floatM, kUnfold>, grid_for(op, threads, kThreads),
                 dim3(kThreads), 0, stream, m + p.first_element, v + p.v_offset,
                 grads + p.first_element, p.geo, p.elements, p.first_element, p.blocks,
                 static_cast<const float*>(scaled + p.partial_offset), p.layout, h, first_fold,
                 static_cast<const int*>(verdict));
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace block_adam_detail

// Grads mode (Backend::block_adam_step): one optimizer step of the tensor from its full gradient.
template <typename floatX, typename floatM>
void block_adam_step(floatX* params, float* master, const floatX* grads, floatM* m, float* v,
                     const TensorPartition& part, const BlockAdamHyper& h, float* scratch,
                     cudaStream_t stream) {
  using namespace block_adam_detail;
  constexpr const char* op = "block_adam_step";
  const TensorPlan plan = plan_tensor(op, part);
  if (plan.elements == 0) return;
  require(params != nullptr && grads != nullptr && m != nullptr && v != nullptr, op, part,
          "params, grads, m and v must not be null");
  require_moment_dtype<floatM>(op, part, h);
  require_bias_corrections(op, part, h);
  for (const SegmentPlan& p : plan.segments) {
    if (p.geo.kind != BlockKind::Element) {  // Element segments need no scratch (AdamW)
      require_scratch(op, part, scratch);
      float* scaled = scratch + kHeaderFloats;
      launch_square_partials(op, p, grads, scaled, scaled + plan.partials, h.grad_scale, nullptr,
                             false, stream);
      simt::launch(block_adam_v_step_kernel, grid_for(op, p.blocks, kThreads), dim3(kThreads), 0,
                   stream, v + p.v_offset, static_cast<const float*>(scaled + p.partial_offset),
                   p.layout, p.blocks, h);
      CUDA_CHECK_LAUNCH();
    }
    simt::launch(block_adam_step_kernel<floatX, floatM>, grid_for(op, p.elements, kThreads),
                 dim3(kThreads), 0, stream, params + p.first_element,
                 master != nullptr ? master + p.first_element : nullptr, grads + p.first_element,
                 m + p.first_element, v + p.v_offset, p.geo, p.elements, p.first_element, h);
    CUDA_CHECK_LAUNCH();
  }
}

// AdamA (Backend::block_adam_fold): folds one micro-batch gradient into m and v (first_fold: the
// step's decay first). status (device memory) decides: when status->nonfinite is already set, or
// this gradient has a non-finite (grad_scale*g)^2 anywhere (or a partial sum overflows), nothing is
// written and status->nonfinite is set; otherwise m and v are updated, status->committed grows by
// one and ||g||^2 (unscaled) is added to status->raw_sum_squares. The host never waits.
template <typename floatX, typename floatM>
void block_adam_fold(const floatX* grads, floatM* m, float* v, const TensorPartition& part,
                     const BlockAdamHyper& h, bool first_fold, FoldStatus* status, float* scratch,
                     cudaStream_t stream) {
  constexpr const char* op = "block_adam_fold";
  if (status == nullptr)
    throw Error(cat(op, ": tensor '", part.tensor, "': status must point at a device FoldStatus"));
  block_adam_detail::fold_or_unfold<floatX, floatM, false>(op, grads, m, v, part, h, first_fold,
                                                           status, scratch, stream);
}

// AdamA (Backend::block_adam_apply): the step's weight update from the folded m and v.
// h.update_clip > 0 scales every element's direction u by min(1, update_clip / rms(u)), the RMS
// taken over the tensor's real elements (weight decay is not scaled).
template <typename floatX, typename floatM>
void block_adam_apply(floatX* params, float* master, const floatM* m, const float* v,
                      const TensorPartition& part, const BlockAdamHyper& h, float* scratch,
                      cudaStream_t stream) {
  using namespace block_adam_detail;
  constexpr const char* op = "block_adam_apply";
  const TensorPlan plan = plan_tensor(op, part);
  if (plan.elements == 0) return;
  require(params != nullptr && m != nullptr && v != nullptr, op, part,
          "params, m and v must not be null");
  require_moment_dtype<floatM>(op, part, h);
  require_bias_corrections(op, part, h);
  const float* clip_scale = nullptr;
  if (h.update_clip > 0.0f) {
    require_scratch(op, part, scratch);
    float* partials = scratch + kHeaderFloats;
    for (const SegmentPlan& p : plan.segments) {
      if (p.direction.partials() == 0) continue;
      simt::launch(block_adam_direction_partials_kernel<floatM>,
                   grid_for(op, p.direction.partials(), kReduceWarps), dim3(kReduceThreads), 0,
                   stream, partials + p.direction_offset, m + p.first_element, v + p.v_offset,
                   p.geo, p.direction, h);
      CUDA_CHECK_LAUNCH();
    }
    simt::launch(block_adam_clip_scale_kernel, dim3(1), dim3(kTotalThreads), 0, stream,
                 scratch + kClipScaleSlot, static_cast<const float*>(partials),
                 plan.direction_partials, plan.real_elements, h.update_clip);
    CUDA_CHECK_LAUNCH();
    clip_scale = scratch + kClipScaleSlot;
  }
  for (const SegmentPlan& p : plan.segments) {
    simt::launch(block_adam_apply_kernel<floatX, floatM>, grid_for(op, p.elements, kThreads),
                 dim3(kThreads), 0, stream, params + p.first_element,
                 master != nullptr ? master + p.first_element : nullptr, m + p.first_element,
                 v + p.v_offset, p.geo, p.elements, p.first_element, h, clip_scale);
    CUDA_CHECK_LAUNCH();
  }
}

// AdamA (Backend::block_adam_unfold): takes one committed fold of `grads` (same h) back out of m
// and v. The gradient is checked like a fold's; a non-finite one (it was never committed) leaves
// m and v alone (the GPU cannot throw mid-stream; the CPU reference throws).
template <typename floatX, typename floatM>
void block_adam_unfold(const floatX* grads, floatM* m, float* v, const TensorPartition& part,
                       const BlockAdamHyper& h, float* scratch, cudaStream_t stream) {
  block_adam_detail::fold_or_unfold<floatX, floatM, true>("block_adam_unfold", grads, m, v, part,
                                                          h, /*first_fold=*/false, nullptr, scratch,
                                                          stream);
}

// AdamA (Backend::block_adam_undo_decay): m /= beta1 over the tensor, v /= beta2 over its entries.
template <typename floatM>
void block_adam_undo_decay(floatM* m, float* v, const TensorPartition& part,
                           const BlockAdamHyper& h, cudaStream_t stream) {
  using namespace block_adam_detail;
  constexpr const char* op = "block_adam_undo_decay";
  const TensorPlan plan = plan_tensor(op, part);
  const int64_t threads = plan.elements > part.v_entries ? plan.elements : part.v_entries;
  if (threads == 0) return;
  require(m != nullptr && v != nullptr, op, part, "m and v must not be null");
  require_moment_dtype<floatM>(op, part, h);
  if (!(h.beta1 > 0.0f) || !(h.beta2 > 0.0f))
    throw Error(cat(op, ": tensor '", part.tensor, "': beta1 and beta2 must be positive to undo ",
                    "their decay, got ", h.beta1, " and ", h.beta2));
  simt::launch(block_adam_undo_decay_kernel<floatM>, grid_for(op, threads, kThreads),
               dim3(kThreads), 0, stream, m, v, plan.elements, part.v_entries, h.beta1, h.beta2,
               h.m_seed);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
