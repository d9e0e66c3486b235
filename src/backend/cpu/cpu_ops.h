// The CPU reference math for every Backend op, as templates on the scalar type `Real`:
// float is what CpuBackend runs, double is what the finite-difference tests differentiate.
// Plain pointers and sizes, row-major, with exactly the shapes and the accumulate/overwrite
// semantics documented in backend/backend.h. (The sequence length is `T`, as in backend.h, which
// is why the scalar type is called `Real` here.) Statistics that backend.h keeps in fp32 (mean,
// rstd, lse, losses) are `Real` here, so the double instantiation is double all the way through.
//
// Determinism: apart from the GEMMs, every reduction has a fixed order that depends neither on
// the OpenMP schedule nor on the thread count. Column reductions (dweight of LayerNorm, dbias,
// the encoder's dwte/dwpe) give each thread a block of columns and walk the rows in order; row
// reductions stay inside one thread; sum_squares adds fixed-size chunks in chunk order. The GEMMs
// are BLAS calls on thread-owned slices of the output: deterministic for a fixed thread count.
//
// Speed: no atomics, no per-call allocation beyond one small scratch per thread in attention,
// every GEMM in BLAS, every element-wise loop vectorised (exp_vec, lane_sum below exist because
// GCC will not vectorise std::exp or widening reductions without -ffast-math).
#pragma once
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend/backend.h"
#include "util/error.h"

namespace slim::cpu {

constexpr double kLayerNormEps = 1e-5;
// Columns per thread-owned block in column reductions: 64 floats is four cache lines, so two
// threads never write the same line and each row visit reads whole lines.
constexpr int kColumnBlock = 64;

// Below this many elements (or multiply-adds) an op runs on the calling thread: waking the
// OpenMP team costs more than the work, and far more when the cores are shared.
constexpr size_t kMinParallelWork = size_t(1) << 15;
inline bool worth_parallel(size_t work) { return work >= kMinParallelWork; }

// ---- GEMM ---------------------------------------------------------------------------------
// OpenBLAS keeps its own thread pool whose workers spin for a while after every call; next to
// the OpenMP pool that runs all the other ops, the two pools would fight over the cores. So BLAS
// is made single-threaded once, and each GEMM is split among the OpenMP threads instead: one
// pool for everything.
inline void use_single_threaded_blas() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

// C[M,N] = op(A) @ op(B) + beta * C, row-major; one overload per precision.
inline void gemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K,
                 const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K,
                 const double* A, int lda, const double* B, int ldb, double beta, double* C,
                 int ldc) {
  cblas_dgemm(CblasRowMajor, trans_a, trans_b, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
}

// The same product with the larger of M and N cut into one slice per OpenMP thread (slices a
// multiple of kGemmSliceAlign, so BLAS's kernels see whole tiles); each slice is one
// single-threaded BLAS call. Every output element is computed by one call, in one order: the
// result is deterministic for a fixed thread count.
constexpr int kGemmSliceAlign = 64;
constexpr double kMinParallelGemmFlops = 4e6;  // below this one thread is faster

template <typename Real>
void parallel_gemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K,
                   const Real* A, int lda, const Real* B, int ldb, Real beta, Real* C, int ldc) {
  use_single_threaded_blas();
  if (M == 0 || N == 0) return;
  const bool split_rows = M > N;
  const int extent = split_rows ? M : N;
  const int max_slices = (extent + kGemmSliceAlign - 1) / kGemmSliceAlign;
  const int threads = 2.0 * M * N * K < kMinParallelGemmFlops
                          ? 1
                          : std::min(omp_get_max_threads(), max_slices);
  if (threads <= 1) {
    gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int n_threads = omp_get_num_threads();
    const int per_thread = (max_slices + n_threads - 1) / n_threads * kGemmSliceAlign;
    const int begin = std::min(extent, omp_get_thread_num() * per_thread);
    const int end = std::min(extent, begin + per_thread);
    const size_t b = static_cast<size_t>(begin);
    if (begin < end) {
      if (split_rows)  // rows [begin, end) of C and of op(A)
        gemm(trans_a, trans_b, end - begin, N, K, trans_a == CblasNoTrans ? A + b * lda : A + b,
             lda, B, ldb, beta, C + b * ldc, ldc);
      else  // columns [begin, end) of C and of op(B)
        gemm(trans_a, trans_b, M, end - begin, K, A, lda,
             trans_b == CblasNoTrans ? B + b : B + b * ldb, ldb, beta, C + b, ldc);
    }
  }
}

// ---- dot product (vectorised; the summation order is fixed by the compiled code) ---------------
template <typename Real>
inline Real dot(const Real* a, const Real* b, int n) {
  Real acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// ---- vectorised reductions in a fixed order -----------------------------------------------
// GCC does not vectorise `omp simd reduction` loops that widen float terms to a double sum, nor
// max-reductions, so reductions keep kLanes explicit partials instead. lane_sum adds the terms
// into kLanes partial sums of type Real over blocks of kLaneBlock terms and each block's partials
// into double totals: vector speed, double-accumulation accuracy, and an order fixed by n alone.
constexpr int kLanes = 16;       // a multiple of every vector width
constexpr int kLaneBlock = 256;  // terms per block: each lane partial sums 16 terms in Real

template <typename Real, typename Term>
inline double lane_sum(int n, Term term) {
  double total[kLanes] = {};
  const int n_full = n - n % kLanes;
  int i = 0;
  while (i < n_full) {
    const int block_end = std::min(i + kLaneBlock, n_full);
    Real part[kLanes] = {};
    for (; i < block_end; i += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) part[l] += term(i + l);
    }
    for (int l = 0; l < kLanes; ++l) total[l] += double(part[l]);
  }
  double sum = 0;
  for (int l = 0; l < kLanes; ++l) sum += total[l];
  for (; i < n; ++i) sum += double(term(i));
  return sum;
}

template <typename Real>
inline Real lane_max(const Real* x, int n) {
  Real lane[kLanes];
  std::fill(lane, lane + kLanes, -std::numeric_limits<Real>::infinity());
  const int n_full = n - n % kLanes;
  for (int i = 0; i < n_full; i += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) lane[l] = std::max(lane[l], x[i + l]);
  }
  Real result = lane[0];
  for (int l = 1; l < kLanes; ++l) result = std::max(result, lane[l]);
  for (int i = n_full; i < n; ++i) result = std::max(result, x[i]);
  return result;
}

// ---- exp that vectorises -------------------------------------------------------------------
// std::exp does not vectorise without -ffast-math, and the softmaxes and GELUs call it once per
// element, so the float path uses this one: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of
// ln2, so n ln2 is exact), exp(r) by its degree-7 Taylor polynomial (truncation < 1e-8
// relative), and 2^n written into the exponent bits. Results are within a few ulp of expf.
// Inputs below -87 give 0 (instead of denormals); inputs above 88 saturate at exp(88) ~ 1.7e38,
// which only ever meets the callers below as "huge". NaN stays NaN. The double overload is
// std::exp, so the double instantiation the tests differentiate is exact.
inline float exp_vec(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;  // few mantissa bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = 1.4286068202862268e-06f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float clamped = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (clamped * kLog2e + kRoundMagic) - kRoundMagic;
  const float r = (clamped - n * kLn2Hi) - n * kLn2Lo;
  float poly = 1.0f / 5040;
  poly = poly * r + 1.0f / 720;
  poly = poly * r + 1.0f / 120;
  poly = poly * r + 1.0f / 24;
  poly = poly * r + 1.0f / 6;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  const float two_to_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x < -87.0f ? 0.0f : poly * two_to_n;
}
inline double exp_vec(double x) { return std::exp(x); }

// ---- GELU, tanh approximation (as GPT-2) --------------------------------------------------
// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). Since 1 + tanh(u) =
// 2 sigmoid(2u), this is x * sigmoid(2u): one exp, no cancellation, and it vectorises.
template <typename Real>
inline Real gelu_tanh(Real x) {
  const Real sqrt_2_over_pi = Real(0.7978845608028654);
  const Real u = sqrt_2_over_pi * (x + Real(0.044715) * x * x * x);
  return x / (Real(1) + exp_vec(Real(-2) * u));
}

// d gelu / dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx; with s = sigmoid(2u):
//             = s + 2 x s (1 - s) du/dx.
template <typename Real>
inline Real gelu_tanh_grad(Real x) {
  const Real sqrt_2_over_pi = Real(0.7978845608028654);
  const Real u = sqrt_2_over_pi * (x + Real(0.044715) * x * x * x);
  const Real s = Real(1) / (Real(1) + exp_vec(Real(-2) * u));
  const Real du_dx = sqrt_2_over_pi * (Real(1) + Real(3 * 0.044715) * x * x);
  return s + Real(2) * x * s * (Real(1) - s) * du_dx;
}

// ---- column sums: sums[c] (+)= sum_r x[r, c], rows added in order ---------------------------
template <typename Real>
void column_sums(Real* sums, const Real* x, int rows, int cols, bool accumulate) {
  const int n_blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(rows) * cols))
  for (int block = 0; block < n_blocks; ++block) {
    const int c0 = block * kColumnBlock;
    const int width = std::min(kColumnBlock, cols - c0);
    double acc[kColumnBlock] = {};
    for (int r = 0; r < rows; ++r) {
      const Real* row = x + static_cast<size_t>(r) * cols + c0;
      for (int c = 0; c < width; ++c) acc[c] += row[c];
    }
    for (int c = 0; c < width; ++c)
      sums[c0 + c] = static_cast<Real>((accumulate ? double(sums[c0 + c]) : 0.0) + acc[c]);
  }
}

// ===========================================================================================
// encoder
// ===========================================================================================

// out[B,T,C] = wte[tokens[b,t]] + wpe[t]
template <typename Real>
void encoder_forward(Real* out, const int* tokens, const Real* wte, const Real* wpe, int B, int T,
                     int C) {
  const int N = B * T;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * C))
  for (int bt = 0; bt < N; ++bt) {
    const int t = bt % T;
    const Real* token_row = wte + static_cast<size_t>(tokens[bt]) * C;
    const Real* pos_row = wpe + static_cast<size_t>(t) * C;
    Real* out_row = out + static_cast<size_t>(bt) * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) out_row[c] = token_row[c] + pos_row[c];
  }
}

// dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += dout[b,t]. Threads own column blocks and walk the
// tokens in order, so repeated tokens never race and the sum order is fixed.
template <typename Real>
void encoder_backward(Real* dwte, Real* dwpe, const Real* dout, const int* tokens, int B, int T,
                      int C) {
  const int N = B * T;
  const int n_blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * C))
  for (int block = 0; block < n_blocks; ++block) {
    const int c0 = block * kColumnBlock;
    const int width = std::min(kColumnBlock, C - c0);
    for (int bt = 0; bt < N; ++bt) {
      const Real* g = dout + static_cast<size_t>(bt) * C + c0;
      Real* token_grad = dwte + static_cast<size_t>(tokens[bt]) * C + c0;
      Real* pos_grad = dwpe + static_cast<size_t>(bt % T) * C + c0;
      for (int c = 0; c < width; ++c) {
        token_grad[c] += g[c];
        pos_grad[c] += g[c];
      }
    }
  }
}

// ===========================================================================================
// layernorm
// ===========================================================================================

// One row: out = (x - mean) * rstd * w + b. Mean and variance are summed with lane_sum (double
// totals).
template <typename Real>
inline void layernorm_row(Real* out, Real* mean_out, Real* rstd_out, const Real* x, const Real* w,
                          const Real* b, int C) {
  const double mean = lane_sum<Real>(C, [&](int c) { return x[c]; }) / C;
  const Real mean_r = static_cast<Real>(mean);
  // Two-pass variance: no cancellation for rows with a large mean.
  const double var = lane_sum<Real>(C, [&](int c) { return (x[c] - mean_r) * (x[c] - mean_r); }) / C;
  const double rstd = 1.0 / std::sqrt(var + kLayerNormEps);
  const Real rstd_r = static_cast<Real>(rstd);
#pragma omp simd
  for (int c = 0; c < C; ++c) out[c] = (x[c] - mean_r) * rstd_r * w[c] + b[c];
  *mean_out = mean_r;
  *rstd_out = rstd_r;
}

// out = LN(inp) * w + b; mean/rstd [N] kept for the backward.
template <typename Real>
void layernorm_forward(Real* out, Real* mean, Real* rstd, const Real* inp, const Real* w,
                       const Real* b, int N, int C) {
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * C))
  for (int i = 0; i < N; ++i) {
    const size_t off = static_cast<size_t>(i) * C;
    layernorm_row(out + off, mean + i, rstd + i, inp + off, w, b, C);
  }
}

// residual_out = a + b; out = LN(residual_out) * w + bias.
template <typename Real>
void fused_residual_layernorm_forward(Real* residual_out, Real* out, Real* mean, Real* rstd,
                                      const Real* a, const Real* b, const Real* w,
                                      const Real* bias, int N, int C) {
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * C))
  for (int i = 0; i < N; ++i) {
    const size_t off = static_cast<size_t>(i) * C;
    Real* res = residual_out + off;
#pragma omp simd
    for (int c = 0; c < C; ++c) res[c] = a[off + c] + b[off + c];
    layernorm_row(out + off, mean + i, rstd + i, res, w, bias, C);
  }
}

// dinp += dLN/dinp (always accumulates); dw, db (+)= per accumulate_dweight.
// With n = (x - mean) * rstd and g = w * dout:
//   dinp = rstd * (g - mean(g) - n * mean(g * n)).
template <typename Real>
void layernorm_backward(Real* dinp, Real* dw, Real* db, const Real* dout, const Real* inp,
                        const Real* w, const Real* mean, const Real* rstd, int N, int C,
                        bool accumulate_dweight) {
  // Rows: each row's reduction stays inside one thread.
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * C))
  for (int i = 0; i < N; ++i) {
    const size_t off = static_cast<size_t>(i) * C;
    const Real* x = inp + off;
    const Real* g_out = dout + off;
    Real* dx = dinp + off;
    const Real mu = mean[i], rs = rstd[i];
    const double sum_g = lane_sum<Real>(C, [&](int c) { return w[c] * g_out[c]; });
    const double sum_gn =
        lane_sum<Real>(C, [&](int c) { return w[c] * g_out[c] * ((x[c] - mu) * rs); });
    const Real mean_g = static_cast<Real>(sum_g / C), mean_gn = static_cast<Real>(sum_gn / C);
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      const Real n = (x[c] - mu) * rs;
      dx[c] += (w[c] * g_out[c] - mean_g - n * mean_gn) * rs;
    }
  }
  // Columns: dw[c] = sum_i dout[i,c] * n[i,c], db[c] = sum_i dout[i,c], rows in order.
  const int n_blocks = (C + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * C))
  for (int block = 0; block < n_blocks; ++block) {
    const int c0 = block * kColumnBlock;
    const int width = std::min(kColumnBlock, C - c0);
    double acc_w[kColumnBlock] = {}, acc_b[kColumnBlock] = {};
    for (int i = 0; i < N; ++i) {
      const size_t off = static_cast<size_t>(i) * C + c0;
      const Real mu = mean[i], rs = rstd[i];
      for (int c = 0; c < width; ++c) {
        const Real g = dout[off + c];
        acc_w[c] += double(g * ((inp[off + c] - mu) * rs));
        acc_b[c] += double(g);
      }
    }
    for (int c = 0; c < width; ++c) {
      const double w_prev = accumulate_dweight ? double(dw[c0 + c]) : 0.0;
      const double b_prev = accumulate_dweight ? double(db[c0 + c]) : 0.0;
      dw[c0 + c] = static_cast<Real>(w_prev + acc_w[c]);
      db[c0 + c] = static_cast<Real>(b_prev + acc_b[c]);
    }
  }
}

// ===========================================================================================
// matmul (linear layer) with optional bias and GELU epilogue
// ===========================================================================================

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias; with gelu_pre, gelu_pre = that result and
// out = gelu_tanh(gelu_pre).
template <typename Real>
void matmul_forward(Real* out, Real* gelu_pre, const Real* inp, const Real* weight,
                    const Real* bias, int N, int C, int OC) {
  Real* result = gelu_pre ? gelu_pre : out;
  if (bias) {
    // Seed every row with the bias and let the GEMM add onto it (beta = 1): one pass, not two.
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * OC))
    for (int i = 0; i < N; ++i) std::copy(bias, bias + OC, result + static_cast<size_t>(i) * OC);
  }
  parallel_gemm(CblasNoTrans, CblasTrans, N, OC, C, inp, C, weight, C, Real(bias ? 1 : 0), result,
                OC);
  if (gelu_pre) {
    const ptrdiff_t n = static_cast<ptrdiff_t>(N) * OC;
#pragma omp parallel for simd schedule(static) if (worth_parallel(size_t(n)))
    for (ptrdiff_t i = 0; i < n; ++i) out[i] = gelu_tanh(gelu_pre[i]);
  }
}

// dinp[N,C] = dout[N,OC] @ weight[OC,C] (overwritten), times gelu'(gelu_pre_of_inp) when given;
// dweight[OC,C] (+)= dout^T @ inp; dbias[OC] (+)= column sums of dout.
template <typename Real>
void matmul_backward(Real* dinp, Real* dweight, Real* dbias, const Real* dout, const Real* inp,
                     const Real* weight, const Real* gelu_pre_of_inp, int N, int C, int OC,
                     bool accumulate_dweight) {
  parallel_gemm(CblasNoTrans, CblasNoTrans, N, C, OC, dout, OC, weight, C, Real(0), dinp, C);
  if (gelu_pre_of_inp) {
    const ptrdiff_t n = static_cast<ptrdiff_t>(N) * C;
#pragma omp parallel for simd schedule(static) if (worth_parallel(size_t(n)))
    for (ptrdiff_t i = 0; i < n; ++i) dinp[i] *= gelu_tanh_grad(gelu_pre_of_inp[i]);
  }
  parallel_gemm(CblasTrans, CblasNoTrans, OC, C, N, dout, OC, inp, C,
                Real(accumulate_dweight ? 1 : 0), dweight, C);
  if (dbias) column_sums(dbias, dout, N, OC, accumulate_dweight);
}

// ===========================================================================================
// attention (causal, flash style: scores are recomputed, never stored as [T,T])
// ===========================================================================================
// qkv[B,T,3C]: per token q | k | v, each [NH][HS]. out[B,T,C]: [NH][HS]. lse[B,NH,T].
// A thread owns one (b, h) pair at a time, so every write into out, lse and dqkv for that head
// comes from one thread in a fixed order: the results do not depend on the thread count.
//
// Queries are processed kQueryBlock at a time so that every key and value row brought into
// registers serves kQueryBlock queries; the block's scores live in a [kQueryBlock, T] scratch.
// The head's keys (and, in the backward, values) are packed transposed, [HS][T], so the score
// products are broadcast-multiply-adds with no horizontal sums. Per-thread scratch is
// O(HS * T + kQueryBlock * T); nothing is [T, T]. In the ragged last block the missing queries
// read a copy of the last real query row and get all-zero probabilities, so they add nothing.

constexpr int kQueryBlock = 8;  // queries per block
constexpr int kKeyTile = 16;    // keys per register tile; score rows are padded to a multiple
constexpr int kHeadTile = 16;   // head channels per register tile of the row kernel

inline int round_up(int x, int multiple) { return (x + multiple - 1) / multiple * multiple; }

// Multiply-adds of one attention pass (causal: about half of B * T * T * C).
inline size_t attention_work(int B, int T, int C) { return size_t(B) * T * (T + 1) / 2 * C; }

// out[qi][j] = sum_d a[qi][d] * bt[d][j] for qi < kQueryBlock, j < n_cols (a kKeyTile multiple).
// Row qi of a is a + min(qi, n_a_rows - 1) * a_stride; bt: [HS][ld_bt]; out: [kQueryBlock][ld_out].
template <typename Real>
void block_times_packed(Real* out, int ld_out, const Real* a, size_t a_stride, int n_a_rows,
                        const Real* bt, int ld_bt, int HS, int n_cols) {
  const Real* a_row[kQueryBlock];
  for (int qi = 0; qi < kQueryBlock; ++qi) a_row[qi] = a + std::min(qi, n_a_rows - 1) * a_stride;
  for (int j0 = 0; j0 < n_cols; j0 += kKeyTile) {
    Real acc[kQueryBlock][kKeyTile] = {};
    for (int d = 0; d < HS; ++d) {
      const Real* b = bt + static_cast<size_t>(d) * ld_bt + j0;
      for (int qi = 0; qi < kQueryBlock; ++qi) {
        const Real a_qd = a_row[qi][d];
#pragma omp simd
        for (int jj = 0; jj < kKeyTile; ++jj) acc[qi][jj] += a_qd * b[jj];
      }
    }
    for (int qi = 0; qi < kQueryBlock; ++qi) {
      Real* o = out + static_cast<size_t>(qi) * ld_out + j0;
#pragma omp simd
      for (int jj = 0; jj < kKeyTile; ++jj) o[jj] = acc[qi][jj];
    }
  }
}

// out[qi][d0 + dd] = sum_{j < n_rows} coef[qi][j] * rows[j][d0 + dd] for dd < width, qi < n_out.
// kWidth is the width when known at compile time (full tiles), 0 for the ragged last tile.
template <typename Real, int kWidth>
inline void weighted_rows_tile(Real* out, size_t out_stride, int n_out, const Real* coef,
                               int ld_coef, const Real* rows, size_t row_stride, int n_rows, int d0,
                               int width) {
  const int w = kWidth > 0 ? kWidth : width;
  Real acc[kQueryBlock][kHeadTile] = {};
  for (int j = 0; j < n_rows; ++j) {
    const Real* r = rows + j * row_stride + d0;
    for (int qi = 0; qi < kQueryBlock; ++qi) {
      const Real c = coef[static_cast<size_t>(qi) * ld_coef + j];
#pragma omp simd
      for (int dd = 0; dd < w; ++dd) acc[qi][dd] += c * r[dd];
    }
  }
  for (int qi = 0; qi < n_out; ++qi) {
    Real* o = out + qi * out_stride + d0;
#pragma omp simd
    for (int dd = 0; dd < w; ++dd) o[dd] = acc[qi][dd];
  }
}

// out[qi][:] = sum_{j < n_rows} coef[qi][j] * rows[j][:] for qi < n_out; rows and out rows are
// HS wide, row_stride / out_stride apart; coef: [kQueryBlock][ld_coef].
template <typename Real>
void block_times_rows(Real* out, size_t out_stride, int n_out, const Real* coef, int ld_coef,
                      const Real* rows, size_t row_stride, int n_rows, int HS) {
  int d0 = 0;
  for (; d0 + kHeadTile <= HS; d0 += kHeadTile)
    weighted_rows_tile<Real, kHeadTile>(out, out_stride, n_out, coef, ld_coef, rows, row_stride,
                                        n_rows, d0, kHeadTile);
  if (d0 < HS)
    weighted_rows_tile<Real, 0>(out, out_stride, n_out, coef, ld_coef, rows, row_stride, n_rows,
                                d0, HS - d0);
}

// rows[j][:] += sum_qi coef[qi][j] * a[qi][:] for j < n_rows (the transposed product: dk, dv).
// Row qi of a is a + min(qi, n_a_rows - 1) * a_stride; coef: [kQueryBlock][ld_coef]. Each row
// is read and written once per query block; the vector iterations over d are independent, so
// their kQueryBlock-long FMA chains overlap.
template <typename Real>
void accumulate_rows(Real* rows, size_t row_stride, const Real* coef, int ld_coef, const Real* a,
                     size_t a_stride, int n_a_rows, int n_rows, int HS) {
  const Real* a_row[kQueryBlock];
  for (int qi = 0; qi < kQueryBlock; ++qi) a_row[qi] = a + std::min(qi, n_a_rows - 1) * a_stride;
  for (int j = 0; j < n_rows; ++j) {
    Real c[kQueryBlock];
    for (int qi = 0; qi < kQueryBlock; ++qi) c[qi] = coef[static_cast<size_t>(qi) * ld_coef + j];
    Real* r = rows + j * row_stride;
#pragma omp simd
    for (int d = 0; d < HS; ++d) {
      Real sum = r[d];
      for (int qi = 0; qi < kQueryBlock; ++qi) sum += c[qi] * a_row[qi][d];
      r[d] = sum;
    }
  }
}

// Packs T rows of HS values (row_stride apart) transposed into bt[HS][ld_bt], kKeyTile rows at
// a time so the source rows stay in L1 while each destination row receives a contiguous run.
template <typename Real>
void pack_transposed(Real* bt, int ld_bt, const Real* rows, size_t row_stride, int T, int HS) {
  for (int j0 = 0; j0 < T; j0 += kKeyTile) {
    const int n = std::min(kKeyTile, T - j0);
    for (int d = 0; d < HS; ++d) {
      Real* dst = bt + static_cast<size_t>(d) * ld_bt + j0;
      for (int jj = 0; jj < n; ++jj) dst[jj] = rows[(j0 + jj) * row_stride + d];
    }
  }
}

// One query's softmax in place: p[0, n_cols) holds raw scores q.k (n_cols a kKeyTile multiple);
// keys j >= n_visible are masked. Leaves the probabilities (0 where masked) and returns the
// log-sum-exp of the scaled scores. Lane-wise partial max/sum in fixed-size tiles keep the loops
// vectorised without remainders; the lanes are combined in order.
template <typename Real>
Real softmax_row(Real* p, int n_visible, int n_cols, Real scale) {
  Real lane_max[kKeyTile];
  std::fill(lane_max, lane_max + kKeyTile, -std::numeric_limits<Real>::infinity());
  for (int j0 = 0; j0 < n_cols; j0 += kKeyTile) {
#pragma omp simd
    for (int jj = 0; jj < kKeyTile; ++jj) {
      const Real s = j0 + jj < n_visible ? p[j0 + jj] * scale
                                         : -std::numeric_limits<Real>::infinity();
      lane_max[jj] = std::max(lane_max[jj], s);
    }
  }
  Real max_score = lane_max[0];
  for (int jj = 1; jj < kKeyTile; ++jj) max_score = std::max(max_score, lane_max[jj]);
  Real lane_sum[kKeyTile] = {};
  for (int j0 = 0; j0 < n_cols; j0 += kKeyTile) {
#pragma omp simd
    for (int jj = 0; jj < kKeyTile; ++jj) {
      const Real e = j0 + jj < n_visible ? exp_vec(p[j0 + jj] * scale - max_score) : Real(0);
      p[j0 + jj] = e;
      lane_sum[jj] += e;
    }
  }
  double sum = 0;
  for (int jj = 0; jj < kKeyTile; ++jj) sum += double(lane_sum[jj]);
  const Real inv_sum = static_cast<Real>(1.0 / sum);
  for (int j0 = 0; j0 < n_cols; j0 += kKeyTile) {
#pragma omp simd
    for (int jj = 0; jj < kKeyTile; ++jj) p[j0 + jj] *= inv_sum;
  }
  return static_cast<Real>(double(max_score) + std::log(sum));
}

template <typename Real>
void attention_forward(Real* out, Real* lse, const Real* qkv, int B, int T, int C, int NH) {
  SLIM_CHECK(NH > 0 && C % NH == 0, "C=", C, " is not a multiple of NH=", NH);
  const int HS = C / NH;
  const size_t row = 3 * static_cast<size_t>(C);
  const Real scale = static_cast<Real>(1.0 / std::sqrt(double(HS)));
  const int t_pad = round_up(T, kKeyTile);
#pragma omp parallel if (worth_parallel(attention_work(B, T, C)))
  {
    // Zero-initialised once: the padding columns of k_t stay zero for every head.
    std::vector<Real> k_t(static_cast<size_t>(HS) * t_pad);            // [HS][t_pad]
    std::vector<Real> probs(static_cast<size_t>(kQueryBlock) * t_pad);  // [kQueryBlock][t_pad]
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; ++bh) {
      const int b = bh / NH, h = bh % NH;
      const Real* q_rows = qkv + static_cast<size_t>(b) * T * row + h * HS;
      const Real* k_rows = q_rows + C;
      const Real* v_rows = q_rows + 2 * C;
      Real* out_rows = out + static_cast<size_t>(b) * T * C + h * HS;
      pack_transposed(k_t.data(), t_pad, k_rows, row, T, HS);
      for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
        const int n_queries = std::min(kQueryBlock, T - t0);
        const int n_keys = t0 + n_queries;  // causal: the block sees keys [0, n_keys)
        const int n_cols = round_up(n_keys, kKeyTile);
        block_times_packed(probs.data(), t_pad, q_rows + t0 * row, row, n_queries, k_t.data(),
                           t_pad, HS, n_cols);
        for (int qi = 0; qi < kQueryBlock; ++qi) {
          Real* p = probs.data() + static_cast<size_t>(qi) * t_pad;
          if (qi < n_queries)
            lse[static_cast<size_t>(bh) * T + t0 + qi] = softmax_row(p, t0 + qi + 1, n_cols, scale);
          else
            std::fill(p, p + n_cols, Real(0));
        }
        block_times_rows(out_rows + static_cast<size_t>(t0) * C, C, n_queries, probs.data(), t_pad,
                         v_rows, row, n_keys, HS);
      }
    }
  }
}

// dqkv (overwritten). For query t with p_j = exp(scale q_t.k_j - lse_t), D_t = dout_t . out_t:
//   dp_j = dout_t . v_j,  dS_j = p_j (dp_j - D_t),
//   dq_t = scale sum_j dS_j k_j,  dk_j += scale dS_j q_t,  dv_j += p_j dout_t.
template <typename Real>
void attention_backward(Real* dqkv, const Real* dout, const Real* qkv, const Real* out,
                        const Real* lse, int B, int T, int C, int NH) {
  SLIM_CHECK(NH > 0 && C % NH == 0, "C=", C, " is not a multiple of NH=", NH);
  const int HS = C / NH;
  const size_t row = 3 * static_cast<size_t>(C);
  const Real scale = static_cast<Real>(1.0 / std::sqrt(double(HS)));
  const int t_pad = round_up(T, kKeyTile);
#pragma omp parallel if (worth_parallel(attention_work(B, T, C)))
  {
    std::vector<Real> k_t(static_cast<size_t>(HS) * t_pad), v_t(static_cast<size_t>(HS) * t_pad);
    std::vector<Real> probs(static_cast<size_t>(kQueryBlock) * t_pad);
    std::vector<Real> dscores(static_cast<size_t>(kQueryBlock) * t_pad);  // dp, then scale * dS
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; ++bh) {
      const int b = bh / NH, h = bh % NH;
      const size_t head_offset = static_cast<size_t>(b) * T * row + h * HS;
      const Real* q_rows = qkv + head_offset;
      const Real* k_rows = q_rows + C;
      const Real* v_rows = q_rows + 2 * C;
      Real* dq_rows = dqkv + head_offset;
      Real* dk_rows = dq_rows + C;
      Real* dv_rows = dq_rows + 2 * C;
      const Real* dout_rows = dout + static_cast<size_t>(b) * T * C + h * HS;
      const Real* out_rows = out + static_cast<size_t>(b) * T * C + h * HS;
      pack_transposed(k_t.data(), t_pad, k_rows, row, T, HS);
      pack_transposed(v_t.data(), t_pad, v_rows, row, T, HS);
      for (int t = 0; t < T; ++t) {  // dk, dv accumulate below; dq is written block by block
        std::fill(dk_rows + t * row, dk_rows + t * row + HS, Real(0));
        std::fill(dv_rows + t * row, dv_rows + t * row + HS, Real(0));
      }
      for (int t0 = 0; t0 < T; t0 += kQueryBlock) {
        const int n_queries = std::min(kQueryBlock, T - t0);
        const int n_keys = t0 + n_queries;
        const int n_cols = round_up(n_keys, kKeyTile);
        const Real* q_block = q_rows + t0 * row;
        const Real* dout_block = dout_rows + static_cast<size_t>(t0) * C;
        block_times_packed(probs.data(), t_pad, q_block, row, n_queries, k_t.data(), t_pad, HS,
                           n_cols);
        block_times_packed(dscores.data(), t_pad, dout_block, C, n_queries, v_t.data(), t_pad,
                           HS, n_cols);
        for (int qi = 0; qi < kQueryBlock; ++qi) {
          Real* p = probs.data() + static_cast<size_t>(qi) * t_pad;
          Real* ds = dscores.data() + static_cast<size_t>(qi) * t_pad;
          if (qi >= n_queries) {
            std::fill(p, p + n_cols, Real(0));
            std::fill(ds, ds + n_cols, Real(0));
            continue;
          }
          const size_t t = static_cast<size_t>(t0 + qi);
          const int n_visible = t0 + qi + 1;
          const Real D = dot(dout_rows + t * C, out_rows + t * C, HS);
          const Real L = lse[static_cast<size_t>(bh) * T + t];
          for (int j0 = 0; j0 < n_cols; j0 += kKeyTile) {
#pragma omp simd
            for (int jj = 0; jj < kKeyTile; ++jj) {
              const int j = j0 + jj;
              const Real pj = j < n_visible ? exp_vec(p[j] * scale - L) : Real(0);
              p[j] = pj;
              ds[j] = pj * (ds[j] - D) * scale;
            }
          }
        }
        block_times_rows(dq_rows + t0 * row, row, n_queries, dscores.data(), t_pad, k_rows, row,
                         n_keys, HS);
        accumulate_rows(dk_rows, row, dscores.data(), t_pad, q_block, row, n_queries, n_keys, HS);
        accumulate_rows(dv_rows, row, probs.data(), t_pad, dout_block, C, n_queries, n_keys, HS);
      }
    }
  }
}

// ===========================================================================================
// fused classifier: softmax cross-entropy over the first V of Vp columns
// ===========================================================================================
// losses[i] = lse(logits[i,:V]) - logits[i, target]. With write_dlogits, logits[i, j] becomes
// dloss * (softmax_j - [j == target]) for j < V and 0 for the padded columns.
template <typename Real>
void fused_classifier(Real* logits, Real* losses, const int* targets, Real dloss, int N, int V,
                      int Vp, bool write_dlogits) {
  for (int i = 0; i < N; ++i)  // checked up front: an exception cannot leave a parallel region
    SLIM_CHECK(targets[i] >= 0 && targets[i] < V, "target ", targets[i], " at row ", i,
               " is outside the vocabulary [0, ", V, ")");
#pragma omp parallel for schedule(static) if (worth_parallel(size_t(N) * V))
  for (int i = 0; i < N; ++i) {
    Real* x = logits + static_cast<size_t>(i) * Vp;
    const int target = targets[i];
    const Real target_logit = x[target];
    const Real max_logit = lane_max(x, V);
    double sum;
    if (write_dlogits) {  // keep exp(x - max) in place so the gradient pass does not redo it
      sum = lane_sum<Real>(V, [&](int j) {
        const Real e = exp_vec(x[j] - max_logit);
        x[j] = e;
        return e;
      });
    } else {
      sum = lane_sum<Real>(V, [&](int j) { return exp_vec(x[j] - max_logit); });
    }
    losses[i] = static_cast<Real>(double(max_logit) + std::log(sum) - double(target_logit));
    if (write_dlogits) {
      const Real inv_sum = static_cast<Real>(1.0 / sum);
      const Real target_exp = x[target];
#pragma omp simd
      for (int j = 0; j < V; ++j) x[j] = dloss * (x[j] * inv_sum);
      x[target] = dloss * (target_exp * inv_sum - Real(1));
      std::fill(x + V, x + Vp, Real(0));
    }
  }
}

// ===========================================================================================
// optimizer
// ===========================================================================================

// Sum of squares in double: fixed chunks of kChunk elements, each summed by one thread, and the
// chunk sums added in chunk order. Independent of the thread count; no allocation.
template <typename Real>
double sum_squares(const Real* x, size_t n) {
  constexpr size_t kChunk = size_t(1) << 15;
  constexpr size_t kGroup = 64;  // chunks per parallel region (the partials live on the stack)
  const size_t n_chunks = (n + kChunk - 1) / kChunk;
  double total = 0;
  for (size_t group0 = 0; group0 < n_chunks; group0 += kGroup) {
    const int group_size = static_cast<int>(std::min(kGroup, n_chunks - group0));
    double partial[kGroup];
#pragma omp parallel for schedule(static) if (group_size > 1)
    for (int k = 0; k < group_size; ++k) {
      const size_t begin = (group0 + k) * kChunk, end = std::min(n, begin + kChunk);
      const Real* chunk = x + begin;
      partial[k] = lane_sum<double>(static_cast<int>(end - begin),
                                    [&](int i) { return double(chunk[i]) * double(chunk[i]); });
    }
    for (int k = 0; k < group_size; ++k) total += partial[k];
  }
  return total;
}

// AdamW (OPTIMIZERS.md section 1):
//   g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   w -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * w).
// When master is not null it is the weight being updated and params receive a copy.
// Moment is the storage of m: Real, or uint16_t holding bf16 bits (Real = float only; then
// args.m_bf16 must say so). A bf16 m is read as fp32, the step computed in fp32 (the weight update
// uses the unrounded m_new) and written back stochastically rounded with random_bits(args.m_seed,
// i), the bits the CUDA kernel draws (optim/block_adam.h).
template <typename Real, typename Moment = Real>
void adamw_update(Real* params, Real* master, const Real* grads, Moment* m, Real* v, size_t n,
                  const AdamWArgs& args) {
  constexpr bool kBf16Moment = std::is_same_v<Moment, uint16_t>;
  static_assert(std::is_same_v<Moment, Real> || (kBf16Moment && std::is_same_v<Real, float>),
                "m is stored as Real, or as bf16 bits (uint16_t) next to float");
  SLIM_CHECK(args.m_bf16 == kBf16Moment, "adamw_update: args.m_bf16 = ", args.m_bf16,
             " does not match the m storage passed");
  const Real lr = args.lr, beta1 = args.beta1, beta2 = args.beta2, eps = args.eps;
  const Real weight_decay = args.weight_decay, grad_scale = args.grad_scale;
  const Real bc1 = args.bias_correction1, bc2 = args.bias_correction2;
  const uint32_t m_seed = args.m_seed;
  Real* weights = master ? master : params;  // the copy that is updated (branch-free loop)
  const ptrdiff_t count = static_cast<ptrdiff_t>(n);
#pragma omp parallel for simd schedule(static) if (worth_parallel(n))
  for (ptrdiff_t i = 0; i < count; ++i) {
    const Real g = grads[i] * grad_scale;
    Real m_old;
    if constexpr (kBf16Moment)
      m_old = bf16_bits_to_float(m[i]);
    else
      m_old = m[i];
    const Real m_new = beta1 * m_old + (Real(1) - beta1) * g;
    const Real v_new = beta2 * v[i] + (Real(1) - beta2) * g * g;
    if constexpr (kBf16Moment)
      m[i] = stochastic_round_bf16_bits(m_new, random_bits(m_seed, uint64_t(i)));
    else
      m[i] = m_new;
    v[i] = v_new;
    const Real m_hat = m_new / bc1, v_hat = v_new / bc2;
    const Real w_old = weights[i];
    const Real w_new = w_old - lr * (m_hat / (std::sqrt(v_hat) + eps) + weight_decay * w_old);
    weights[i] = w_new;
    params[i] = w_new;
  }
}

}  // namespace slim::cpu
