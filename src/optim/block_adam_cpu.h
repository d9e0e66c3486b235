// The CPU reference of block-wise Adam (AdamW / Adam-mini / SlimAdam, grads mode and AdamA
// folding) over one whole tensor, with the math of block_adam.h and the partition of
// partition.h. It is what the CPU backend runs and what the CUDA kernels are tested against.
//
// Pointers: weights, grads and m point at the tensor's first element (rows*cols elements; weights
// and grads fp32; m fp32, or bf16 bits (uint16_t) when hyper.m_bf16); v points at the tensor's
// first v entry (the run's v buffer + TensorPartition::v_offset), fp32.
//
// A bf16 m (block_adam.h) is read as fp32 and every write rounds it stochastically with
// random_bits(hyper.m_seed, e), e the element's index in the tensor: the bits the CUDA kernels
// draw, so a kernel and this reference given the same fp32 value store the same bf16.
//
// Reductions: a block's sum of (grad_scale*g)^2 is accumulated in fp32 over runs of
// kPartialChunk consecutive squares (consecutive rows, for a column), each run's fp32 partial
// added into a double, in a fixed order; a whole-tensor block first sums fixed spans and then the
// spans in order. The result never depends on the OpenMP thread count (tested).
//
// Non-finite gradients under AdamA. A fold reads its micro-batch gradient twice: once to check
// and reduce it, and, only if every (grad_scale*g)^2 and every block mean is finite, once more to
// write m and v. A non-finite micro-batch gradient therefore never enters the state: the fold
// returns false and leaves m and v exactly as they were. (An fp32 overflow of a partial sum of
// squares counts as non-finite too: such a gradient is not usable either.) The check covers every
// element of the tensor, also the padded rows that Column and Whole means leave out.
// Folds made earlier in the same step (earlier micro-batches, and tensors of this micro-batch
// folded before the bad one) are already in the state and their gradients are gone; without a
// full-size copy of m no code can restore them exactly. To skip the step the caller undoes them:
// the weights have not moved during the step and the backward pass is deterministic, so the
// caller recomputes each folded gradient g_j (same micro-batch, same grad_scale) and calls
// block_adam_unfold_cpu for it, then block_adam_undo_decay_cpu once per tensor whose state was
// decayed this step. m and v are then back to their pre-step values up to the fp32 rounding of
// the values they held during the step (an absolute error of about 1e-7 times the largest of
// them; tested). The undo is inexact where a pre-step value is much smaller than what was folded
// on top of it (v early in training); a caller that wants v exactly can copy it at the first fold
// (v_entries floats: tiny for Adam-mini and SlimAdam) and restore the copy instead of unfolding v.
// With a bf16 m every fold, unfold and the undo of the decay round m to bf16 once more, each
// rounding off by less than one bf16 ulp (2^-7 relative at most) of the value it stored. After F
// folds of the step, F unfolds and the undo, the restored m is off by less than
// (2F + 1) / beta1 bf16 ulps of the largest |m| it held in between (unbiased: the roundings
// average out, so the typical error is about sqrt(2F + 1) / 2 of those ulps; tested).
#pragma once
#include <cstdint>

#include "optim/block_adam.h"
#include "optim/partition.h"

namespace slim {

// Squares per fp32 partial sum before it is added into the block's double.
constexpr int64_t kPartialChunk = 256;

// The mean of (grad_scale*g)^2 of every block of the tensor, written to mean_square
// (part.v_entries floats, in v order; an Element entry is the element's own square). Returns
// false when a square, a partial sum or a mean is not finite (mean_square is then unspecified).
bool block_mean_squares_cpu(const TensorPartition& part, const float* grads, float grad_scale,
                            float* mean_square);

// grads mode: one optimizer step of the tensor from its full (accumulated) gradient.
void block_adam_step_cpu(const TensorPartition& part, float* weights, const float* grads, void* m,
                         float* v, const BlockAdamHyper& hyper);

// AdamA: folds one micro-batch gradient into m and v; first_fold decays both (once per step).
// Returns false, writing nothing, when the gradient is not finite (see above).
bool block_adam_fold_cpu(const TensorPartition& part, const float* grads, void* m, float* v,
                         const BlockAdamHyper& hyper, bool first_fold);

// The mean of u^2, u = m_hat/(sqrt(v_hat)+eps) (adam_direction), over the tensor's real elements
// (the real rows of every segment; wte's padded rows do not count): fp32 partials over
// kPartialChunk elements of a row into one double per row, rows and segments added in order.
// 0 for a tensor without real elements.
double block_update_mean_square_cpu(const TensorPartition& part, const void* m, const float* v,
                                    const BlockAdamHyper& hyper);

// AdamA: the update of the weights from the step's folded m and v (once per step, after the
// last fold; bias corrections of this step in hyper). hyper.update_clip > 0 scales the direction
// u of every element (padded rows included) by update_clip_scale(block_update_mean_square_cpu,
// update_clip), so that the RMS of the applied direction over the real elements is at most
// update_clip; weight decay is not scaled. When that scale is 1 (clipping off, or the RMS under
// the clip) the update is adam_apply itself, bit for bit.
void block_adam_apply_cpu(const TensorPartition& part, float* weights, const void* m,
                          const float* v, const BlockAdamHyper& hyper);

// Takes one finite fold of `grads` (same grad_scale and fold_scale) back out of m and v.
void block_adam_unfold_cpu(const TensorPartition& part, const float* grads, void* m, float* v,
                           const BlockAdamHyper& hyper);

// Undoes the first fold's decay: m /= beta1, v /= beta2.
void block_adam_undo_decay_cpu(const TensorPartition& part, void* m, float* v,
                               const BlockAdamHyper& hyper);

}  // namespace slim
