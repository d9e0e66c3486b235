// The update math shared by AdamW, Adam-mini, SlimAdam and AdamA folding (OPTIMIZERS.md §9),
// as small inline functions on plain scalars and one plain geometry struct, so that the CPU
// reference (block_adam_cpu.cpp) and the CUDA kernels compute the very same expressions.
//
// One formulation for every method: a tensor is cut into row segments (partition.h), and each
// segment's elements group into blocks B that share one second-moment entry v_B:
//   Element: one v per element (AdamW)        Row:    one v per row (mean over the columns)
//   Head:    one v per head_dim rows          Column: one v per column (mean over the rows)
//   Whole:   one v for the segment
// A 1-D tensor of n elements is an n x 1 matrix (n rows, one column): Row is then the same as
// Element and Column the same as Whole. That is PyTorch's view of dim 0 of a 1-D tensor.
//
// grads mode (full gradient g, clip and 1/accumulation in grad_scale c, applied BEFORE squaring):
//   m   = b1*m + (1-b1)*(c*g)
//   v_B = b2*v_B + (1-b2)*mean_B((c*g)^2)
//   w   = w - lr*((m/bc1)/(sqrt(v_B/bc2)+eps) + wd*w)
// AdamA (fold per micro-batch g_i, then apply once per step):
//   first fold of the step: m = b1*m, v_B = b2*v_B   (the decay happens once per step)
//   every fold:             m += (1-b1)*(c*g_i),  v_B += (1-b2)*s*mean_B((c*g_i)^2)
//   apply:                  w = w - lr*((m/bc1)/(sqrt(v_B/bc2)+eps) + wd*w)
//
// Weight decay follows llm.c / our AdamW (cpu_ops.h adamw_update): w -= lr*(update + wd*w_old),
// with w_old the weight before this step. Adam-mini and SlimAdam instead shrink first
// (w *= 1-lr*wd) and then subtract lr*update; the Adam direction does not depend on w, so that is
// the same number up to rounding (tests/test_optim_reference.cpp checks against the official
// form). We use ours everywhere so that an Element partition is AdamW exactly.
//
// Element blocks use AdamW's own expressions (same operations in the same order), so an Element
// partition reproduces adamw_update bit for bit as long as the compiler contracts the two the
// same way (GCC forms fused multiply-adds in C++ even with -std=c++20; both then get the same).
//
// The first moment m is stored in fp32 or, with BlockAdamHyper::m_bf16 (optimizer.m_dtype =
// bf16), in bf16: every update reads m as fp32, computes in fp32 (a grads-mode step also applies
// this unrounded m to the weights) and writes it back stochastically rounded (the helpers at the
// end of this file), with random bits from (m_seed, the element's index in the tensor). m_seed is
// another seed than the weights' (Optimizer::moment_seed): one draw never decides both roundings.
// Stochastic rounding keeps m unbiased: E[stored] = the fp32 value, so the decaying average does
// not stall when (1-beta1)*g is below half a bf16 ulp of m, which round to nearest would drop.
// fp32 m is untouched by all of this (same loads, same stores, same bits as before).
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define SLIM_HD __host__ __device__
#else
#define SLIM_HD
#endif

namespace slim {

enum class BlockKind : int { Element, Row, Head, Column, Whole };

// How one segment's elements group into blocks, as the kernels see it. The segment is a
// row-major rows x cols matrix; only its first real_rows rows carry meaning (real_rows < rows
// for the padded vocabulary rows of wte). Padded rows have their own v entries under Element,
// Row and Head (their gradient is zero, so they stay zero); Column and Whole means run over the
// real rows only and divide by their count, so padding never dilutes a mean.
struct BlockGeometry {
  BlockKind kind = BlockKind::Element;
  int64_t rows = 0;
  int64_t real_rows = 0;
  int64_t cols = 0;
  int64_t head_dim = 0;  // rows per block, Head only
};

// Hyperparameters of one update, the same fields as AdamWArgs plus AdamA's fold scale.
struct BlockAdamHyper {
  float lr = 0.0f;            // scheduled learning rate
  float beta1 = 0.9f, beta2 = 0.95f;
  float eps = 1e-8f;          // added to sqrt(v_hat), outside the sqrt
  float weight_decay = 0.0f;  // decoupled, multiplied by lr; 0 for tensors not decayed
  float grad_scale = 1.0f;    // multiplies the gradient first: clipping (and 1/N when not in g)
  float bias_correction1 = 1.0f;  // 1 - beta1^t, t = optimizer steps including this one
  float bias_correction2 = 1.0f;  // 1 - beta2^t
  float fold_scale = 1.0f;    // AdamA's s: v_B += (1-b2)*s*mean_B(g_i^2)
  float update_clip = 0.0f;   // AdamA apply: clip the update's RMS over the tensor to this (0 = off)
  uint32_t seed = 0;          // stochastic-rounding seed of this step and tensor (bf16 params)
  bool m_bf16 = false;        // m is stored in bf16 (else fp32): the dtype of the call's m
  uint32_t m_seed = 0;        // stochastic-rounding seed of the bf16 m writes of this call
};

// ---- geometry ---------------------------------------------------------------------------

SLIM_HD inline int64_t block_count(const BlockGeometry& g) {
  switch (g.kind) {
    case BlockKind::Element: return g.rows * g.cols;
    case BlockKind::Row: return g.rows;
    case BlockKind::Head: return g.rows / g.head_dim;
    case BlockKind::Column: return g.cols;
    case BlockKind::Whole: return 1;
  }
  return 0;
}

// The v entry (relative to the segment's first) of the element at (row, col) of the segment.
SLIM_HD inline int64_t block_index(const BlockGeometry& g, int64_t row, int64_t col) {
  switch (g.kind) {
    case BlockKind::Element: return row * g.cols + col;
    case BlockKind::Row: return row;
    case BlockKind::Head: return row / g.head_dim;
    case BlockKind::Column: return col;
    case BlockKind::Whole: return 0;
  }
  return 0;
}

// Row loops use this instead of block_index: the v entry of (row, col) is
// row_v_base(row) + col * col_v_stride, which needs no division inside the row.
SLIM_HD inline int64_t row_v_base(const BlockGeometry& g, int64_t row) {
  return g.kind == BlockKind::Column ? 0 : block_index(g, row, 0);
}
SLIM_HD inline int64_t col_v_stride(const BlockGeometry& g) {
  return (g.kind == BlockKind::Element || g.kind == BlockKind::Column) ? 1 : 0;
}

// The number of elements a block's mean divides by (the same for every block of a segment).
SLIM_HD inline int64_t block_mean_count(const BlockGeometry& g) {
  switch (g.kind) {
    case BlockKind::Element: return 1;
    case BlockKind::Row: return g.cols;
    case BlockKind::Head: return g.head_dim * g.cols;
    case BlockKind::Column: return g.real_rows;
    case BlockKind::Whole: return g.real_rows * g.cols;
  }
  return 1;
}

// ---- scalar update steps -----------------------------------------------------------------

// (c*g)^2 in fp32: the clip scale is applied before squaring (OPTIMIZERS.md §8.11).
SLIM_HD inline float scaled_square(float grad, float grad_scale) {
  const float g = grad * grad_scale;
  return g * g;
}

// Every moment update is one expression, keep*state + weight*x:
//   grads mode:  keep = beta,                          weight = 1-beta
//   AdamA fold:  keep = beta on the step's first fold, 1 on the others (fold_keep),
//                weight = 1-beta1 for m, (1-beta2)*s for v (v_fold_weight)
// One expression for all of them keeps the roundings (and any fused multiply-add the compiler
// forms) the same: AdamA with one micro-batch and s = 1 is grads mode bit for bit.
SLIM_HD inline float moment_step(float state, float keep, float weight, float x) {
  return keep * state + weight * x;
}

// An Element v from the (scaled) gradient itself: keep*v + weight*g*g, AdamW's expression.
SLIM_HD inline float square_moment_step(float v, float keep, float weight, float g) {
  return keep * v + weight * g * g;
}

SLIM_HD inline float fold_keep(float beta, bool first_fold) { return first_fold ? beta : 1.0f; }
SLIM_HD inline float v_fold_weight(float beta2, float fold_scale) {
  return (1.0f - beta2) * fold_scale;
}

// The inverses, to take a fold back out of the state (block_adam_cpu.h explains when): first
// subtract the fold's increment, then, for the step's first fold, divide by the decay. v is
// clamped at 0: rounding may leave a tiny negative where the true value was 0.
SLIM_HD inline float moment_unstep(float state, float weight, float x) { return state - weight * x; }
SLIM_HD inline float square_moment_unstep(float v, float weight, float g) {
  const float back = v - weight * g * g;
  return back > 0.0f ? back : 0.0f;
}
SLIM_HD inline float block_moment_unstep(float v, float weight, float mean_square) {
  const float back = v - weight * mean_square;
  return back > 0.0f ? back : 0.0f;
}
SLIM_HD inline float undo_decay(float state, float beta) { return state / beta; }

// The weight update from the step's m and the element's block v (AdamW's expression).
SLIM_HD inline float adam_apply(float w, float m, float v, const BlockAdamHyper& h) {
  const float m_hat = m / h.bias_correction1, v_hat = v / h.bias_correction2;
  return w - h.lr * (m_hat / (sqrtf(v_hat) + h.eps) + h.weight_decay * w);
}

// The Adam direction u = m_hat/(sqrt(v_hat)+eps) of one element, whose square update clipping
// averages over the tensor.
SLIM_HD inline float adam_direction(float m, float v, const BlockAdamHyper& h) {
  const float m_hat = m / h.bias_correction1, v_hat = v / h.bias_correction2;
  return m_hat / (sqrtf(v_hat) + h.eps);
}

// Update clipping's multiplier from the tensor's mean of u^2: min(1, update_clip / rms).
SLIM_HD inline float update_clip_scale(double mean_square_direction, float update_clip) {
  if (update_clip <= 0.0f) return 1.0f;
  const double rms = sqrt(mean_square_direction);
  return rms > double(update_clip) ? float(double(update_clip) / rms) : 1.0f;
}

// adam_apply with the direction scaled by update clipping. Callers use adam_apply when scale == 1:
// the compiler may contract the two expressions differently, and unclipped AdamA must stay
// bitwise equal to AdamW.
SLIM_HD inline float adam_apply_scaled(float w, float m, float v, const BlockAdamHyper& h,
                                       float scale) {
  const float m_hat = m / h.bias_correction1, v_hat = v / h.bias_correction2;
  return w - h.lr * (scale * (m_hat / (sqrtf(v_hat) + h.eps)) + h.weight_decay * w);
}

// ---- bf16 storage and stochastic rounding --------------------------------------------------
// Plain bit arithmetic on the host and the device alike, so the CPU reference (which stores a bf16
// m as uint16_t bits) and the kernels (__nv_bfloat16) round to the very same bits.

SLIM_HD inline uint32_t float_bits(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  return bits;
}
SLIM_HD inline float float_from_bits(uint32_t bits) {
  float x;
  __builtin_memcpy(&x, &bits, sizeof x);
  return x;
}

// A bf16 value (its 16 bits) as fp32: exact.
SLIM_HD inline float bf16_bits_to_float(uint16_t bits) {
  return float_from_bits(uint32_t(bits) << 16);
}

// 32 random bits from (seed, index): the splitmix64 finalizer applied to a Weyl-sequence point, a
// well-mixed counter-based hash (every input bit affects every output bit). A run is
// reproducible (and resumable) given the seeds, and no RNG state is kept.
SLIM_HD inline uint32_t random_bits(uint32_t seed, uint64_t index) {
  uint64_t z = index + (static_cast<uint64_t>(seed) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}

// x (finite) rounded to one of its two neighbouring bf16 values, returned as fp32 (the low 16 bits
// zero): adding 16 random bits below the kept mantissa and truncating rounds up (away from zero)
// exactly when the random number is below the dropped remainder, i.e. with probability
// remainder / ulp, so E[result] = x. (Past the largest bf16 it may round up to infinity, as the
// GPU's own conversion would.)
SLIM_HD inline float stochastic_round_finite_to_bf16(float x, uint32_t random) {
  return float_from_bits((float_bits(x) + (random & 0xffffu)) & 0xffff0000u);
}

// The bf16 bits of x stochastically rounded; an infinity stays itself and a NaN stays a (quiet)
// NaN.
SLIM_HD inline uint16_t stochastic_round_bf16_bits(float x, uint32_t random) {
  const uint32_t bits = float_bits(x);
  if ((bits & 0x7f800000u) == 0x7f800000u)
    return uint16_t((bits >> 16) | ((bits & 0x7fffffu) != 0 ? 0x40u : 0u));
  return uint16_t(float_bits(stochastic_round_finite_to_bf16(x, random)) >> 16);
}

// The bf16 bits of x rounded to nearest, ties to even (the GPU's __float2bfloat16_rn); a NaN stays
// a quiet NaN. For loading an fp32 m into bf16 storage (checkpoints), where no draw is wanted.
SLIM_HD inline uint16_t round_to_nearest_bf16_bits(float x) {
  const uint32_t bits = float_bits(x);
  if ((bits & 0x7f800000u) == 0x7f800000u)
    return uint16_t((bits >> 16) | ((bits & 0x7fffffu) != 0 ? 0x40u : 0u));
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

}  // namespace slim
