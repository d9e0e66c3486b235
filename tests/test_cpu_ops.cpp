// Tests of the CPU reference ops (backend/cpu/cpu_ops.h) and of CpuBackend.
//   - Every backward is checked against central finite differences of the double instantiation,
//     with the scalar loss L = sum(out .* R) for a random R (so dout = R).
//   - Accumulate/overwrite semantics of the weight gradients, and dinp accumulation.
//   - CpuBackend (fp32) against the double templates on a medium shape; attention against a naive
//     reference that builds the full masked softmax; AdamW against numbers written out by hand.
//   - Bitwise determinism run to run (GEMMs included), and across OpenMP thread counts for the
//     ops that do not call BLAS.
//   - The GEMM split among threads, and the vectorised float exp.
//   - make_backend's errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_ops.h"
#include "util/error.h"

namespace slim {
namespace {

using Vec = std::vector<double>;

Vec random_vec(size_t n, std::mt19937_64& rng, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

std::vector<int> random_tokens(size_t n, int vocab, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> dist(0, vocab - 1);
  std::vector<int> v(n);
  for (int& x : v) x = dist(rng);
  return v;
}

double weighted_sum(const Vec& out, const Vec& weights) {
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += out[i] * weights[i];
  return s;
}

double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Compares analytic[i] with the central difference of loss() w.r.t. x[i], for every i. loss()
// must read x. Also insists the gradient is not identically zero, so a broken op whose forward
// ignores its input cannot pass by comparing zero with zero.
void expect_gradient(const std::string& what, Vec& x, const Vec& analytic,
                     const std::function<double()>& loss) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  constexpr double kStep = 1e-6, kRelTol = 1e-6, kAbsTol = 1e-8;
  int failures = 0;
  for (size_t i = 0; i < x.size() && failures < 5; ++i) {
    const double saved = x[i];
    x[i] = saved + kStep;
    const double loss_plus = loss();
    x[i] = saved - kStep;
    const double loss_minus = loss();
    x[i] = saved;
    const double numeric = (loss_plus - loss_minus) / (2 * kStep);
    const double tol = kRelTol * std::max(std::fabs(numeric), std::fabs(analytic[i])) + kAbsTol;
    if (std::fabs(numeric - analytic[i]) > tol) ++failures;
    EXPECT_NEAR(analytic[i], numeric, tol) << what << "[" << i << "]";
  }
  EXPECT_GT(max_abs(analytic), 1e-3) << what << ": gradient is (almost) all zero";
}

std::vector<float> to_f32(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }

// fp32 result against the double reference: |got - ref| <= rel * |ref| + abs_frac * max|ref|.
void expect_close_f32(const std::string& what, const std::vector<float>& got, const Vec& ref,
                      double rel = 1e-4, double abs_frac = 1e-5) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  const double floor = abs_frac * std::max(max_abs(ref), 1e-30);
  int failures = 0;
  for (size_t i = 0; i < ref.size() && failures < 5; ++i) {
    const double tol = rel * std::fabs(ref[i]) + floor;
    if (!(std::fabs(got[i] - ref[i]) <= tol)) ++failures;
    EXPECT_NEAR(got[i], ref[i], tol) << what << "[" << i << "]";
  }
}

template <typename V>
bool same_bits(const V& a, const V& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), a.size() * sizeof(typename V::value_type)) == 0;
}

// ===========================================================================================
// GELU
// ===========================================================================================

// The float exp the softmaxes and GELUs use, against the libm exp in double: a few ulp.
TEST(CpuOps, FloatExpIsAccurate) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.001373) {
    const float xf = static_cast<float>(x);
    const double ref = std::exp(double(xf));
    worst = std::max(worst, std::fabs(cpu::exp_vec(xf) - ref) / ref);
  }
  EXPECT_LT(worst, 4 * 6e-8) << "worst relative error";
  EXPECT_EQ(cpu::exp_vec(0.0f), 1.0f);
  EXPECT_EQ(cpu::exp_vec(-100.0f), 0.0f);
  EXPECT_EQ(cpu::exp_vec(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_GT(cpu::exp_vec(100.0f), 1e38f);  // saturates, stays finite
  EXPECT_TRUE(std::isnan(cpu::exp_vec(std::numeric_limits<float>::quiet_NaN())));
}

TEST(CpuOps, GeluMatchesTanhFormula) {
  // Reference values of 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  EXPECT_NEAR(cpu::gelu_tanh(1.0), 0.8411919906082768, 1e-15);
  EXPECT_NEAR(cpu::gelu_tanh(-2.0), -0.04540230591222494, 1e-15);
  EXPECT_NEAR(cpu::gelu_tanh(0.5), 0.34571400982514394, 1e-15);
  EXPECT_NEAR(cpu::gelu_tanh(1.0f), 0.8411919906082768, 1e-6);
  for (double x : {-3.0, -0.7, 0.0, 0.3, 2.5}) {
    const double h = 1e-6;
    const double numeric = (cpu::gelu_tanh(x + h) - cpu::gelu_tanh(x - h)) / (2 * h);
    EXPECT_NEAR(cpu::gelu_tanh_grad(x), numeric, 1e-8) << "x=" << x;
  }
}

// ===========================================================================================
// matmul
// ===========================================================================================

// The GEMM split among OpenMP threads (rows or columns of C, ragged last slice) against a plain
// triple loop, for every transpose combination and with beta = 0 and beta = 1.
TEST(CpuOps, ParallelGemmMatchesPlainProduct) {
  std::mt19937_64 rng(15);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(3);
  for (auto [M, N] : {std::pair{130, 70}, std::pair{70, 130}}) {
    const int K = 300;  // 2 M N K is above the single-thread threshold
    for (CBLAS_TRANSPOSE ta : {CblasNoTrans, CblasTrans})
      for (CBLAS_TRANSPOSE tb : {CblasNoTrans, CblasTrans})
        for (double beta : {0.0, 1.0}) {
          const int lda = ta == CblasNoTrans ? K : M, ldb = tb == CblasNoTrans ? N : K;
          Vec A = random_vec(size_t(M) * K, rng), B = random_vec(size_t(K) * N, rng);
          Vec C0 = random_vec(size_t(M) * N, rng), C = C0;
          cpu::parallel_gemm(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, beta, C.data(), N);
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
              double ref = beta * C0[size_t(i) * N + j];
              for (int k = 0; k < K; ++k) {
                const double a = ta == CblasNoTrans ? A[size_t(i) * lda + k] : A[size_t(k) * lda + i];
                const double b = tb == CblasNoTrans ? B[size_t(k) * ldb + j] : B[size_t(j) * ldb + k];
                ref += a * b;
              }
              ASSERT_NEAR(C[size_t(i) * N + j], ref, 1e-11)
                  << "M=" << M << " N=" << N << " ta=" << ta << " tb=" << tb << " beta=" << beta
                  << " at " << i << "," << j;
            }
        }
  }
  omp_set_num_threads(saved_threads);
}

TEST(CpuOps, MatmulForwardEpilogueValues) {
  std::mt19937_64 rng(11);
  const int N = 3, C = 4, OC = 5;
  Vec inp = random_vec(N * C, rng), weight = random_vec(OC * C, rng), bias = random_vec(OC, rng);
  Vec out(N * OC), pre(N * OC), plain(N * OC);
  cpu::matmul_forward(out.data(), pre.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
  cpu::matmul_forward(plain.data(), static_cast<double*>(nullptr), inp.data(), weight.data(),
                      static_cast<const double*>(nullptr), N, C, OC);
  for (int i = 0; i < N; ++i)
    for (int o = 0; o < OC; ++o) {
      double acc = 0;
      for (int c = 0; c < C; ++c) acc += inp[i * C + c] * weight[o * C + c];
      EXPECT_NEAR(plain[i * OC + o], acc, 1e-14);
      EXPECT_NEAR(pre[i * OC + o], acc + bias[o], 1e-14);
      EXPECT_NEAR(out[i * OC + o], cpu::gelu_tanh(acc + bias[o]), 1e-14);
    }
}

TEST(CpuOps, MatmulBackwardNoBiasNoGeluFiniteDiff) {
  std::mt19937_64 rng(1);
  const int N = 7, C = 5, OC = 3;
  Vec inp = random_vec(N * C, rng), weight = random_vec(OC * C, rng), R = random_vec(N * OC, rng);
  Vec out(N * OC);
  auto loss = [&] {
    cpu::matmul_forward(out.data(), static_cast<double*>(nullptr), inp.data(), weight.data(),
                        static_cast<const double*>(nullptr), N, C, OC);
    return weighted_sum(out, R);
  };
  loss();
  Vec dinp(N * C), dweight(OC * C);
  cpu::matmul_backward(dinp.data(), dweight.data(), static_cast<double*>(nullptr), R.data(),
                       inp.data(), weight.data(), static_cast<const double*>(nullptr), N, C, OC,
                       false);
  expect_gradient("dinp", inp, dinp, loss);
  expect_gradient("dweight", weight, dweight, loss);
}

// Two layers, as the MLP: pre = x W1^T + b1, h = gelu(pre) (forward epilogue), y = h W2^T + b2.
// The second backward gets gelu_pre_of_inp = pre and so returns d/dpre, which the first consumes.
TEST(CpuOps, MatmulBiasGeluChainFiniteDiff) {
  std::mt19937_64 rng(2);
  const int N = 5, C = 6, H = 9, OC = 4;
  Vec x = random_vec(N * C, rng), w1 = random_vec(H * C, rng), b1 = random_vec(H, rng);
  Vec w2 = random_vec(OC * H, rng), b2 = random_vec(OC, rng), R = random_vec(N * OC, rng);
  Vec pre(N * H), h(N * H), y(N * OC);
  auto loss = [&] {
    cpu::matmul_forward(h.data(), pre.data(), x.data(), w1.data(), b1.data(), N, C, H);
    cpu::matmul_forward(y.data(), static_cast<double*>(nullptr), h.data(), w2.data(), b2.data(),
                        N, H, OC);
    return weighted_sum(y, R);
  };
  loss();
  Vec dpre(N * H), dw2(OC * H), db2(OC), dx(N * C), dw1(H * C), db1(H);
  cpu::matmul_backward(dpre.data(), dw2.data(), db2.data(), R.data(), h.data(), w2.data(),
                       pre.data(), N, H, OC, false);
  cpu::matmul_backward(dx.data(), dw1.data(), db1.data(), dpre.data(), x.data(), w1.data(),
                       static_cast<const double*>(nullptr), N, C, H, false);
  expect_gradient("dx", x, dx, loss);
  expect_gradient("dw1", w1, dw1, loss);
  expect_gradient("db1", b1, db1, loss);
  expect_gradient("dw2", w2, dw2, loss);
  expect_gradient("db2", b2, db2, loss);
}

TEST(CpuOps, MatmulBackwardAccumulateSemantics) {
  std::mt19937_64 rng(3);
  const int N = 6, C = 5, OC = 7;
  Vec inp = random_vec(N * C, rng), weight = random_vec(OC * C, rng), dout = random_vec(N * OC, rng);
  Vec dinp(N * C), once_w(OC * C), once_b(OC);
  cpu::matmul_backward(dinp.data(), once_w.data(), once_b.data(), dout.data(), inp.data(),
                       weight.data(), static_cast<const double*>(nullptr), N, C, OC, false);

  // accumulate = true twice from zero doubles the gradients; dinp is overwritten each time.
  Vec acc_w(OC * C, 0.0), acc_b(OC, 0.0), dinp2(N * C, 123.0);
  for (int k = 0; k < 2; ++k)
    cpu::matmul_backward(dinp2.data(), acc_w.data(), acc_b.data(), dout.data(), inp.data(),
                         weight.data(), static_cast<const double*>(nullptr), N, C, OC, true);
  for (size_t i = 0; i < acc_w.size(); ++i) EXPECT_NEAR(acc_w[i], 2 * once_w[i], 1e-13);
  for (size_t i = 0; i < acc_b.size(); ++i) EXPECT_NEAR(acc_b[i], 2 * once_b[i], 1e-13);
  for (size_t i = 0; i < dinp.size(); ++i) EXPECT_NEAR(dinp2[i], dinp[i], 1e-13);

  // accumulate = false overwrites whatever was there.
  Vec over_w(OC * C, 55.0), over_b(OC, -9.0);
  cpu::matmul_backward(dinp2.data(), over_w.data(), over_b.data(), dout.data(), inp.data(),
                       weight.data(), static_cast<const double*>(nullptr), N, C, OC, false);
  for (size_t i = 0; i < over_w.size(); ++i) EXPECT_NEAR(over_w[i], once_w[i], 1e-13);
  for (size_t i = 0; i < over_b.size(); ++i) EXPECT_NEAR(over_b[i], once_b[i], 1e-13);
}

// ===========================================================================================
// layernorm
// ===========================================================================================

TEST(CpuOps, LayerNormFiniteDiff) {
  std::mt19937_64 rng(4);
  const int N = 6, C = 7;
  Vec inp = random_vec(N * C, rng, -2, 3), w = random_vec(C, rng), b = random_vec(C, rng);
  Vec R = random_vec(N * C, rng), out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(),
                           N, C);
    return weighted_sum(out, R);
  };
  loss();
  for (int i = 0; i < N; ++i) {  // the saved statistics are the row's mean and 1/sqrt(var+eps)
    double mu = 0, var = 0;
    for (int c = 0; c < C; ++c) mu += inp[i * C + c] / C;
    for (int c = 0; c < C; ++c) var += (inp[i * C + c] - mu) * (inp[i * C + c] - mu) / C;
    EXPECT_NEAR(mean[i], mu, 1e-14);
    EXPECT_NEAR(rstd[i], 1 / std::sqrt(var + 1e-5), 1e-12);
  }
  Vec dinp(N * C, 0.0), dw(C), db(C);
  cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), R.data(), inp.data(), w.data(),
                          mean.data(), rstd.data(), N, C, false);
  expect_gradient("dinp", inp, dinp, loss);
  expect_gradient("dw", w, dw, loss);
  expect_gradient("db", b, db, loss);
}

// residual = a + b; out = LN(residual). The loss also reads the residual (as the next block
// does), and the residual's gradient, pre-filled into dinp, is what a and b both receive.
TEST(CpuOps, FusedResidualLayerNormFiniteDiff) {
  std::mt19937_64 rng(5);
  const int N = 5, C = 9;
  Vec a = random_vec(N * C, rng), bb = random_vec(N * C, rng, -1, 2);
  Vec w = random_vec(C, rng), bias = random_vec(C, rng);
  Vec R_out = random_vec(N * C, rng), R_res = random_vec(N * C, rng);
  Vec residual(N * C), out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    cpu::fused_residual_layernorm_forward(residual.data(), out.data(), mean.data(), rstd.data(),
                                          a.data(), bb.data(), w.data(), bias.data(), N, C);
    return weighted_sum(out, R_out) + weighted_sum(residual, R_res);
  };
  loss();
  for (int i = 0; i < N * C; ++i) EXPECT_EQ(residual[i], a[i] + bb[i]);
  Vec dresidual = R_res, dw(C), dbias(C);
  cpu::layernorm_backward(dresidual.data(), dw.data(), dbias.data(), R_out.data(), residual.data(),
                          w.data(), mean.data(), rstd.data(), N, C, false);
  expect_gradient("da", a, dresidual, loss);
  expect_gradient("db", bb, dresidual, loss);
  expect_gradient("dw", w, dw, loss);
  expect_gradient("dbias", bias, dbias, loss);
}

TEST(CpuOps, LayerNormBackwardAccumulateSemantics) {
  std::mt19937_64 rng(6);
  const int N = 4, C = 70;  // C spans two column blocks
  Vec inp = random_vec(N * C, rng), w = random_vec(C, rng), b = random_vec(C, rng);
  Vec dout = random_vec(N * C, rng), out(N * C), mean(N), rstd(N);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), N,
                         C);
  Vec dinp_once(N * C, 0.0), dw_once(C), db_once(C);
  cpu::layernorm_backward(dinp_once.data(), dw_once.data(), db_once.data(), dout.data(),
                          inp.data(), w.data(), mean.data(), rstd.data(), N, C, false);

  Vec prior = random_vec(N * C, rng);
  Vec dinp = prior, dw(C, 0.0), db(C, 0.0);
  for (int k = 0; k < 2; ++k)
    cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), inp.data(), w.data(),
                            mean.data(), rstd.data(), N, C, true);
  for (int i = 0; i < N * C; ++i) EXPECT_NEAR(dinp[i], prior[i] + 2 * dinp_once[i], 1e-13);
  for (int c = 0; c < C; ++c) {
    EXPECT_NEAR(dw[c], 2 * dw_once[c], 1e-13);
    EXPECT_NEAR(db[c], 2 * db_once[c], 1e-13);
  }
  // accumulate_dweight = false overwrites dw/db but dinp still accumulates.
  Vec dw_over(C, 7.0), db_over(C, 7.0), dinp_acc = prior;
  cpu::layernorm_backward(dinp_acc.data(), dw_over.data(), db_over.data(), dout.data(),
                          inp.data(), w.data(), mean.data(), rstd.data(), N, C, false);
  for (int c = 0; c < C; ++c) {
    EXPECT_NEAR(dw_over[c], dw_once[c], 1e-13);
    EXPECT_NEAR(db_over[c], db_once[c], 1e-13);
  }
  for (int i = 0; i < N * C; ++i) EXPECT_NEAR(dinp_acc[i], prior[i] + dinp_once[i], 1e-13);
}

// ===========================================================================================
// attention
// ===========================================================================================

// The plain implementation: for each (b, h) the full [T, T] score matrix, masked, softmaxed.
void naive_attention(Vec& out, Vec& lse, const Vec& qkv, int B, int T, int C, int NH) {
  const int HS = C / NH;
  const double scale = 1 / std::sqrt(double(HS));
  out.assign(size_t(B) * T * C, 0.0);
  lse.assign(size_t(B) * NH * T, 0.0);
  Vec att(size_t(T) * T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h) {
      auto at = [&](int t, int part, int d) { return qkv[(size_t(b) * T + t) * 3 * C + part * C + h * HS + d]; };
      for (int t = 0; t < T; ++t) {
        double mx = -INFINITY;
        for (int j = 0; j < T; ++j) {
          double s = -INFINITY;  // masked
          if (j <= t) {
            s = 0;
            for (int d = 0; d < HS; ++d) s += at(t, 0, d) * at(j, 1, d);
            s *= scale;
          }
          att[t * T + j] = s;
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (int j = 0; j < T; ++j) sum += std::exp(att[t * T + j] - mx);
        for (int j = 0; j < T; ++j) att[t * T + j] = std::exp(att[t * T + j] - mx) / sum;
        lse[(size_t(b) * NH + h) * T + t] = mx + std::log(sum);
        for (int d = 0; d < HS; ++d) {
          double o = 0;
          for (int j = 0; j < T; ++j) o += att[t * T + j] * at(j, 2, d);
          out[(size_t(b) * T + t) * C + h * HS + d] = o;
        }
      }
    }
}

struct AttentionShape {
  int B, T, C, NH;
};
void PrintTo(const AttentionShape& s, std::ostream* os) {
  *os << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH;
}

class AttentionFiniteDiff : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(AttentionFiniteDiff, GradientOfQkv) {
  const auto [B, T, C, NH] = GetParam();
  std::mt19937_64 rng(7 + T);
  Vec qkv = random_vec(size_t(B) * T * 3 * C, rng, -1.5, 1.5), R = random_vec(size_t(B) * T * C, rng);
  Vec out(size_t(B) * T * C), lse(size_t(B) * NH * T);
  auto loss = [&] {
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
    return weighted_sum(out, R);
  };
  loss();
  Vec dqkv(qkv.size(), 99.0);  // overwritten, so the prefill must not leak
  cpu::attention_backward(dqkv.data(), R.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH);
  expect_gradient("dqkv", qkv, dqkv, loss);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionFiniteDiff,
                         ::testing::Values(AttentionShape{2, 5, 8, 2}, AttentionShape{1, 1, 6, 2},
                                           AttentionShape{2, 7, 9, 3}, AttentionShape{1, 4, 4, 1},
                                           AttentionShape{3, 2, 10, 5},
                                           // several query blocks and key tiles, a ragged
                                           // head-channel tile (HS = 17)
                                           AttentionShape{1, 19, 6, 2}, AttentionShape{2, 9, 34, 2}));

class AttentionMatchesNaive : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(AttentionMatchesNaive, ForwardOutAndLse) {
  const auto [B, T, C, NH] = GetParam();
  std::mt19937_64 rng(8);
  Vec qkv = random_vec(size_t(B) * T * 3 * C, rng, -2, 2);
  Vec ref_out, ref_lse;
  naive_attention(ref_out, ref_lse, qkv, B, T, C, NH);

  Vec out(ref_out.size()), lse(ref_lse.size());
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], ref_out[i], 1e-13) << i;
  for (size_t i = 0; i < lse.size(); ++i) EXPECT_NEAR(lse[i], ref_lse[i], 1e-13) << i;

  CpuBackend backend;
  std::vector<float> qkv32 = to_f32(qkv), out32(out.size()), lse32(lse.size());
  backend.attention_forward(out32.data(), lse32.data(), qkv32.data(), B, T, C, NH);
  expect_close_f32("out", out32, ref_out);
  expect_close_f32("lse", lse32, ref_lse);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionMatchesNaive,
                         ::testing::Values(AttentionShape{2, 17, 64, 4},
                                           AttentionShape{1, 33, 60, 3}));

// ===========================================================================================
// encoder
// ===========================================================================================

TEST(CpuOps, EncoderFiniteDiffWithRepeatedTokens) {
  std::mt19937_64 rng(9);
  const int B = 2, T = 5, C = 8, V = 6;
  const std::vector<int> tokens = {3, 1, 3, 3, 0, 1, 5, 3, 2, 1};  // 3 and 1 repeat
  Vec wte = random_vec(V * C, rng), wpe = random_vec(T * C, rng), R = random_vec(B * T * C, rng);
  Vec out(B * T * C);
  auto loss = [&] {
    cpu::encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return weighted_sum(out, R);
  };
  loss();
  for (int bt = 0; bt < B * T; ++bt)
    for (int c = 0; c < C; ++c)
      EXPECT_EQ(out[bt * C + c], wte[tokens[bt] * C + c] + wpe[(bt % T) * C + c]);
  // The backward accumulates (the tied wte also receives the lm_head gradient): start from a
  // prior value and compare the increment.
  Vec prior_wte = random_vec(V * C, rng), prior_wpe = random_vec(T * C, rng);
  Vec dwte = prior_wte, dwpe = prior_wpe;
  cpu::encoder_backward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);
  for (size_t i = 0; i < dwte.size(); ++i) dwte[i] -= prior_wte[i];
  for (size_t i = 0; i < dwpe.size(); ++i) dwpe[i] -= prior_wpe[i];
  expect_gradient("dwte", wte, dwte, loss);
  expect_gradient("dwpe", wpe, dwpe, loss);
  for (int c = 0; c < C; ++c) EXPECT_EQ(dwte[4 * C + c], 0.0);  // token 4 never appears
}

// ===========================================================================================
// fused classifier
// ===========================================================================================

TEST(CpuOps, ClassifierLossAndFiniteDiff) {
  std::mt19937_64 rng(10);
  const int N = 4, V = 7, Vp = 10;
  const double dloss = 0.25;
  const std::vector<int> targets = {0, 6, 3, 3};
  Vec logits = random_vec(N * Vp, rng, -3, 3);
  for (int i = 0; i < N; ++i)  // padded columns hold junk that must not enter the softmax
    for (int j = V; j < Vp; ++j) logits[i * Vp + j] = 1e3;

  Vec losses(N);
  Vec untouched = logits;
  cpu::fused_classifier(untouched.data(), losses.data(), targets.data(), dloss, N, V, Vp, false);
  EXPECT_TRUE(same_bits(untouched, logits)) << "write_dlogits=false must not modify the logits";
  for (int i = 0; i < N; ++i) {
    double sum = 0;
    for (int j = 0; j < V; ++j) sum += std::exp(logits[i * Vp + j]);
    EXPECT_NEAR(losses[i], -std::log(std::exp(logits[i * Vp + targets[i]]) / sum), 1e-13);
  }

  auto loss = [&] {
    Vec scratch = logits, row_losses(N);
    cpu::fused_classifier(scratch.data(), row_losses.data(), targets.data(), dloss, N, V, Vp,
                          false);
    double s = 0;
    for (double l : row_losses) s += dloss * l;
    return s;
  };
  Vec dlogits = logits, losses2(N);
  cpu::fused_classifier(dlogits.data(), losses2.data(), targets.data(), dloss, N, V, Vp, true);
  for (int i = 0; i < N; ++i) {
    EXPECT_EQ(losses2[i], losses[i]);
    for (int j = V; j < Vp; ++j) EXPECT_EQ(dlogits[i * Vp + j], 0.0) << "padded column " << j;
  }
  expect_gradient("dlogits", logits, dlogits, loss);
}

TEST(CpuOps, ClassifierRejectsTargetOutsideVocabulary) {
  Vec logits(2 * 4, 0.0), losses(2);
  const std::vector<int> targets = {1, 3};  // V = 3: target 3 is a padded column
  EXPECT_THROW(cpu::fused_classifier(logits.data(), losses.data(), targets.data(), 1.0, 2, 3, 4,
                                     true),
               Error);
}

// ===========================================================================================
// optimizer
// ===========================================================================================

TEST(CpuOps, SumSquaresMatchesPlainSum) {
  std::mt19937_64 rng(12);
  // Spans several chunks and more than one group of chunks, with a ragged tail.
  const size_t n = (size_t(64) << 15) + (size_t(3) << 15) + 123;
  std::vector<float> x(n);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (float& v : x) v = dist(rng);
  long double ref = 0;
  for (float v : x) ref += (long double)v * v;
  CpuBackend backend;
  const double got = backend.sum_squares(x.data(), n);
  EXPECT_NEAR(got, double(ref), 1e-9 * double(ref));
  EXPECT_EQ(backend.sum_squares(x.data(), 0), 0.0);
  EXPECT_EQ(backend.sum_squares(x.data(), 1), double(x[0]) * double(x[0]));
}

// Two AdamW steps on two elements, with the numbers written out from
//   g = grad*grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   w -= lr (m/bc1 / (sqrt(v/bc2) + eps) + wd w)
// lr = 0.1, b1 = 0.9, b2 = 0.95, eps = 1e-8, grad_scale = 0.5; bc at t=1: 0.1, 0.05; t=2: 0.19,
// 0.0975. Element 0: w = 0.5, wd = 0.1, grads 0.2 then -0.1. Element 1: w = -1.25, wd = 0 (run
// as a separate tensor), grads -0.03 then 0.05.
TEST(CpuOps, AdamWTwoStepsByHand) {
  AdamWArgs args{};
  args.lr = 0.1f;
  args.beta1 = 0.9f;
  args.beta2 = 0.95f;
  args.eps = 1e-8f;
  args.grad_scale = 0.5f;
  CpuBackend backend;

  // Element 0.
  // t=1: g = 0.1, m = 0.01, v = 0.0005, m_hat = 0.1, v_hat = 0.01, sqrt = 0.1
  //      w = 0.5 - 0.1 * (0.1 / (0.1 + 1e-8) + 0.1 * 0.5) = 0.39500001
  // t=2: g = -0.05, m = 0.009 - 0.005 = 0.004, v = 0.000475 + 0.000125 = 0.0006,
  //      m_hat = 0.004/0.19 = 0.0210526316, v_hat = 0.0006/0.0975 = 0.0061538462,
  //      w = 0.39500001 - 0.1 * (0.0210526316/0.0784464541 + 0.039500001) = 0.3642130685
  float w0 = 0.5f, m0 = 0, v0 = 0;
  args.weight_decay = 0.1f;
  float grad = 0.2f;
  args.bias_correction1 = 0.1f;
  args.bias_correction2 = 0.05f;
  backend.adamw_update(&w0, nullptr, &grad, &m0, &v0, 1, args);
  EXPECT_NEAR(m0, 0.01, 1e-8);
  EXPECT_NEAR(v0, 0.0005, 1e-9);
  EXPECT_NEAR(w0, 0.39500001, 1e-6);
  grad = -0.1f;
  args.bias_correction1 = 0.19f;
  args.bias_correction2 = 0.0975f;
  backend.adamw_update(&w0, nullptr, &grad, &m0, &v0, 1, args);
  EXPECT_NEAR(m0, 0.004, 1e-8);
  EXPECT_NEAR(v0, 0.0006, 1e-9);
  EXPECT_NEAR(w0, 0.3642130685, 1e-6);

  // Element 1, through the master-weights path: master is updated, params receive a copy.
  // t=1: g = -0.015, m = -0.0015, v = 1.125e-5, m_hat = -0.015, v_hat = 2.25e-4, sqrt = 0.015
  //      w = -1.25 - 0.1 * (-0.015 / (0.015 + 1e-8)) = -1.1500000667
  // t=2: g = 0.025, m = -0.00135 + 0.0025 = 0.00115, v = 1.06875e-5 + 3.125e-5 = 4.19375e-5,
  //      m_hat = 0.0060526316, v_hat = 4.301282e-4, sqrt = 0.0207395,
  //      w = -1.1500000667 - 0.1 * 0.2918417 = -1.1791840836
  float param1 = 123.0f, master1 = -1.25f, m1 = 0, v1 = 0;
  args.weight_decay = 0.0f;
  grad = -0.03f;
  args.bias_correction1 = 0.1f;
  args.bias_correction2 = 0.05f;
  backend.adamw_update(&param1, &master1, &grad, &m1, &v1, 1, args);
  EXPECT_NEAR(master1, -1.1500000667, 1e-6);
  EXPECT_EQ(param1, master1);
  grad = 0.05f;
  args.bias_correction1 = 0.19f;
  args.bias_correction2 = 0.0975f;
  backend.adamw_update(&param1, &master1, &grad, &m1, &v1, 1, args);
  EXPECT_NEAR(m1, 0.00115, 1e-8);
  EXPECT_NEAR(v1, 4.19375e-5, 1e-10);
  EXPECT_NEAR(master1, -1.1791840836, 1e-6);
  EXPECT_EQ(param1, master1);
}

// ===========================================================================================
// CpuBackend (fp32) against the double templates, through the Backend interface
// ===========================================================================================

// Holds one backend buffer of n fp32 values, uploaded from doubles.
struct BackendBuffer {
  Backend& backend;
  size_t n;
  float* ptr;
  BackendBuffer(Backend& be, const Vec& values, const std::string& what)
      : backend(be), n(values.size()) {
    ptr = static_cast<float*>(be.alloc(n * sizeof(float), MemTag::Scratch, what));
    std::vector<float> host = to_f32(values);
    be.upload_f32_as_x(ptr, host.data(), n);
  }
  BackendBuffer(Backend& be, size_t count, const std::string& what)
      : BackendBuffer(be, Vec(count, 0.0), what) {}
  ~BackendBuffer() { backend.release(ptr); }
  std::vector<float> read() const {
    std::vector<float> host(n);
    backend.download_x_as_f32(host.data(), ptr, n);
    return host;
  }
};

TEST(CpuBackend, AllocationsAreAlignedAndAccounted) {
  CpuBackend backend;
  EXPECT_EQ(backend.name(), "cpu");
  EXPECT_EQ(backend.compute_dtype(), DType::F32);
  void* a = backend.alloc(3, MemTag::Params, "three bytes");
  void* b = backend.alloc(1000, MemTag::Grads, "a thousand bytes");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % CpuBackend::kAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % CpuBackend::kAlignment, 0u);
  EXPECT_EQ(backend.allocator().bytes(MemTag::Params), 3u);
  EXPECT_EQ(backend.allocator().bytes(MemTag::Grads), 1000u);
  backend.release(a);
  backend.release(b);
  EXPECT_EQ(backend.allocator().total(), 0u);
}

TEST(CpuBackend, MatchesDoubleTemplatesOnMediumShape) {
  std::mt19937_64 rng(13);
  // Large enough that every op takes its OpenMP-parallel path (N * C and N * V above
  // cpu::kMinParallelWork), so the threaded fp32 code is what gets compared.
  const int B = 2, T = 33, C = 512, NH = 8, N = B * T, OC = 3 * C, H = 4 * C, V = 500, Vp = 512;
  ASSERT_TRUE(cpu::worth_parallel(size_t(N) * C) && cpu::worth_parallel(size_t(N) * V));
  CpuBackend be;

  // encoder
  const std::vector<int> tokens = random_tokens(N, V, rng);
  Vec wte = random_vec(size_t(V) * C, rng), wpe = random_vec(size_t(T) * C, rng);
  Vec enc(size_t(N) * C);
  cpu::encoder_forward(enc.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
  {
    BackendBuffer wte_b(be, wte, "wte"), wpe_b(be, wpe, "wpe"), out_b(be, enc.size(), "enc");
    be.encoder_forward(out_b.ptr, tokens.data(), wte_b.ptr, wpe_b.ptr, B, T, C);
    expect_close_f32("encoder out", out_b.read(), enc);
    Vec dout = random_vec(enc.size(), rng), dwte(wte.size(), 0.5), dwpe(wpe.size(), -0.5);
    BackendBuffer dout_b(be, dout, "dout"), dwte_b(be, dwte, "dwte"), dwpe_b(be, dwpe, "dwpe");
    cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
    be.encoder_backward(dwte_b.ptr, dwpe_b.ptr, dout_b.ptr, tokens.data(), B, T, C);
    expect_close_f32("dwte", dwte_b.read(), dwte);
    expect_close_f32("dwpe", dwpe_b.read(), dwpe);
  }

  // fused residual + layernorm, then its backward
  Vec a = random_vec(size_t(N) * C, rng), bb = random_vec(size_t(N) * C, rng);
  Vec lw = random_vec(C, rng, 0.5, 1.5), lb = random_vec(C, rng);
  Vec res(a.size()), ln(a.size()), mean(N), rstd(N);
  cpu::fused_residual_layernorm_forward(res.data(), ln.data(), mean.data(), rstd.data(), a.data(),
                                        bb.data(), lw.data(), lb.data(), N, C);
  BackendBuffer a_b(be, a, "a"), b_b(be, bb, "b"), lw_b(be, lw, "lw"), lb_b(be, lb, "lb");
  BackendBuffer res_b(be, a.size(), "res"), ln_b(be, a.size(), "ln");
  BackendBuffer mean_b(be, N, "mean"), rstd_b(be, N, "rstd");
  be.fused_residual_layernorm_forward(res_b.ptr, ln_b.ptr, mean_b.ptr, rstd_b.ptr, a_b.ptr,
                                      b_b.ptr, lw_b.ptr, lb_b.ptr, N, C);
  expect_close_f32("residual", res_b.read(), res);
  expect_close_f32("ln out", ln_b.read(), ln);
  expect_close_f32("mean", mean_b.read(), mean);
  expect_close_f32("rstd", rstd_b.read(), rstd);
  {
    BackendBuffer ln2_b(be, a.size(), "ln2"), mean2_b(be, N, "mean2"), rstd2_b(be, N, "rstd2");
    be.layernorm_forward(ln2_b.ptr, mean2_b.ptr, rstd2_b.ptr, res_b.ptr, lw_b.ptr, lb_b.ptr, N, C);
    expect_close_f32("layernorm_forward out", ln2_b.read(), ln);
    Vec dout = random_vec(a.size(), rng), dinp = random_vec(a.size(), rng), dw(C), db(C);
    BackendBuffer dout_b(be, dout, "dout"), dinp_b(be, dinp, "dinp");
    BackendBuffer dw_b(be, C, "dw"), db_b(be, C, "db");
    cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), res.data(), lw.data(),
                            mean.data(), rstd.data(), N, C, false);
    be.layernorm_backward(dinp_b.ptr, dw_b.ptr, db_b.ptr, dout_b.ptr, res_b.ptr, lw_b.ptr,
                          mean_b.ptr, rstd_b.ptr, N, C, false);
    expect_close_f32("ln dinp", dinp_b.read(), dinp);
    expect_close_f32("ln dw", dw_b.read(), dw);
    expect_close_f32("ln db", db_b.read(), db);
  }

  // qkv projection, attention, and their backward
  Vec qkvw = random_vec(size_t(OC) * C, rng, -0.2, 0.2), qkvb = random_vec(OC, rng);
  Vec qkv(size_t(N) * OC);
  cpu::matmul_forward(qkv.data(), static_cast<double*>(nullptr), ln.data(), qkvw.data(),
                      qkvb.data(), N, C, OC);
  BackendBuffer qkvw_b(be, qkvw, "qkvw"), qkvb_b(be, qkvb, "qkvb"), qkv_b(be, qkv.size(), "qkv");
  be.matmul_forward(qkv_b.ptr, nullptr, ln_b.ptr, qkvw_b.ptr, qkvb_b.ptr, N, C, OC);
  expect_close_f32("qkv", qkv_b.read(), qkv);

  Vec att(size_t(N) * C), lse(size_t(B) * NH * T);
  cpu::attention_forward(att.data(), lse.data(), qkv.data(), B, T, C, NH);
  BackendBuffer att_b(be, att.size(), "att"), lse_b(be, lse.size(), "lse");
  be.attention_forward(att_b.ptr, lse_b.ptr, qkv_b.ptr, B, T, C, NH);
  expect_close_f32("att out", att_b.read(), att);
  expect_close_f32("att lse", lse_b.read(), lse);
  {
    Vec datt = random_vec(att.size(), rng), dqkv(qkv.size());
    BackendBuffer datt_b(be, datt, "datt"), dqkv_b(be, qkv.size(), "dqkv");
    cpu::attention_backward(dqkv.data(), datt.data(), qkv.data(), att.data(), lse.data(), B, T, C,
                            NH);
    be.attention_backward(dqkv_b.ptr, datt_b.ptr, qkv_b.ptr, att_b.ptr, lse_b.ptr, B, T, C, NH);
    expect_close_f32("dqkv", dqkv_b.read(), dqkv, 1e-4, 1e-4);

    Vec dln(size_t(N) * C), dqkvw(qkvw.size(), 1.0), dqkvb(OC, 1.0);
    BackendBuffer dln_b(be, dln.size(), "dln"), dqkvw_b(be, dqkvw, "dqkvw"),
        dqkvb_b(be, dqkvb, "dqkvb");
    cpu::matmul_backward(dln.data(), dqkvw.data(), dqkvb.data(), dqkv.data(), ln.data(),
                         qkvw.data(), static_cast<const double*>(nullptr), N, C, OC, true);
    be.matmul_backward(dln_b.ptr, dqkvw_b.ptr, dqkvb_b.ptr, dqkv_b.ptr, ln_b.ptr, qkvw_b.ptr,
                       nullptr, N, C, OC, true);
    expect_close_f32("dln", dln_b.read(), dln, 1e-4, 1e-4);
    expect_close_f32("dqkvw", dqkvw_b.read(), dqkvw, 1e-4, 1e-4);
    expect_close_f32("dqkvb", dqkvb_b.read(), dqkvb, 1e-4, 1e-4);
  }

  // MLP up-projection with the GELU epilogue and its backward with dGELU
  {
    Vec fcw = random_vec(size_t(H) * C, rng, -0.3, 0.3), fcb = random_vec(H, rng);
    Vec pre(size_t(N) * H), h(size_t(N) * H);
    cpu::matmul_forward(h.data(), pre.data(), ln.data(), fcw.data(), fcb.data(), N, C, H);
    BackendBuffer fcw_b(be, fcw, "fcw"), fcb_b(be, fcb, "fcb");
    BackendBuffer pre_b(be, pre.size(), "pre"), h_b(be, h.size(), "h");
    be.matmul_forward(h_b.ptr, pre_b.ptr, ln_b.ptr, fcw_b.ptr, fcb_b.ptr, N, C, H);
    expect_close_f32("fc pre", pre_b.read(), pre);
    expect_close_f32("fc gelu", h_b.read(), h);

    Vec projw = random_vec(size_t(C) * H, rng, -0.2, 0.2), dy = random_vec(size_t(N) * C, rng);
    Vec dpre(pre.size()), dprojw(projw.size());
    cpu::matmul_backward(dpre.data(), dprojw.data(), static_cast<double*>(nullptr), dy.data(),
                         h.data(), projw.data(), pre.data(), N, H, C, false);
    BackendBuffer projw_b(be, projw, "projw"), dy_b(be, dy, "dy");
    BackendBuffer dpre_b(be, dpre.size(), "dpre"), dprojw_b(be, dprojw.size(), "dprojw");
    be.matmul_backward(dpre_b.ptr, dprojw_b.ptr, nullptr, dy_b.ptr, h_b.ptr, projw_b.ptr,
                       pre_b.ptr, N, H, C, false);
    expect_close_f32("dpre", dpre_b.read(), dpre, 1e-4, 1e-4);
    expect_close_f32("dprojw", dprojw_b.read(), dprojw, 1e-4, 1e-4);
  }

  // classifier
  {
    const std::vector<int> targets = random_tokens(N, V, rng);
    Vec logits = random_vec(size_t(N) * Vp, rng, -4, 4), losses(N);
    BackendBuffer logits_b(be, logits, "logits"), losses_b(be, N, "losses");
    cpu::fused_classifier(logits.data(), losses.data(), targets.data(), 1.0 / N, N, V, Vp, true);
    be.fused_classifier(logits_b.ptr, losses_b.ptr, targets.data(), 1.0f / N, N, V, Vp, true);
    expect_close_f32("losses", losses_b.read(), losses);
    expect_close_f32("dlogits", logits_b.read(), logits, 1e-4, 1e-4);
  }
  EXPECT_GT(be.allocator().peak_total(), 0u);
}

// ===========================================================================================
// determinism
// ===========================================================================================

// Runs the ops whose reductions cross rows (or threads) and returns all their outputs.
struct DeterminismRun {
  std::vector<float> dqkv, ln_dinp, ln_dw, ln_db, dwte, dwpe, dbias, dlogits;
  double sum_squares = 0;
  bool operator==(const DeterminismRun& o) const {
    return same_bits(dqkv, o.dqkv) && same_bits(ln_dinp, o.ln_dinp) && same_bits(ln_dw, o.ln_dw) &&
           same_bits(ln_db, o.ln_db) && same_bits(dwte, o.dwte) && same_bits(dwpe, o.dwpe) &&
           same_bits(dbias, o.dbias) && same_bits(dlogits, o.dlogits) &&
           std::memcmp(&sum_squares, &o.sum_squares, sizeof(double)) == 0;
  }
};

class Determinism : public ::testing::Test {
 protected:
  // Sized so that every op runs its parallel path (see cpu::kMinParallelWork).
  static constexpr int B = 4, T = 65, C = 128, NH = 4, N = B * T, V = 200;
  std::mt19937_64 rng{14};
  std::vector<float> qkv = to_f32(random_vec(size_t(N) * 3 * C, rng, -2, 2));
  std::vector<float> dout = to_f32(random_vec(size_t(N) * C, rng));
  std::vector<float> x = to_f32(random_vec(size_t(N) * C, rng, -1, 3));
  std::vector<float> w = to_f32(random_vec(C, rng)), b = to_f32(random_vec(C, rng));
  std::vector<int> tokens = random_tokens(N, 5, rng);  // few distinct tokens: many repeats
  std::vector<float> logits = to_f32(random_vec(size_t(N) * V, rng, -3, 3));
  std::vector<int> targets = random_tokens(N, V, rng);
  // Many chunks of widely varying magnitude: any change in how sum_squares groups its partial
  // sums shows up in the last bits.
  std::vector<float> wide = [this] {
    std::normal_distribution<float> log_magnitude(0.0f, 3.0f);
    std::vector<float> v(size_t(3) << 20);
    for (float& x : v) x = std::exp(log_magnitude(rng));
    return v;
  }();

  DeterminismRun run() {
    CpuBackend be;
    DeterminismRun r;
    std::vector<float> out(size_t(N) * C), lse(size_t(B) * NH * T);
    be.attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH);
    r.dqkv.resize(qkv.size());
    be.attention_backward(r.dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T,
                          C, NH);
    std::vector<float> ln(x.size()), mean(N), rstd(N);
    be.layernorm_forward(ln.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    r.ln_dinp.assign(x.size(), 0.0f);
    r.ln_dw.resize(C);
    r.ln_db.resize(C);
    be.layernorm_backward(r.ln_dinp.data(), r.ln_dw.data(), r.ln_db.data(), dout.data(), x.data(),
                          w.data(), mean.data(), rstd.data(), N, C, false);
    r.dwte.assign(size_t(5) * C, 0.0f);
    r.dwpe.assign(size_t(T) * C, 0.0f);
    be.encoder_backward(r.dwte.data(), r.dwpe.data(), dout.data(), tokens.data(), B, T, C);
    r.dbias.resize(C);
    cpu::column_sums(r.dbias.data(), dout.data(), N, C, false);
    r.dlogits = logits;
    std::vector<float> losses(N);
    be.fused_classifier(r.dlogits.data(), losses.data(), targets.data(), 0.5f, N, V, V, true);
    r.sum_squares = be.sum_squares(wide.data(), wide.size());
    return r;
  }
};

TEST_F(Determinism, BitwiseIdenticalRunToRun) {
  ASSERT_TRUE(cpu::worth_parallel(size_t(N) * C) && cpu::worth_parallel(size_t(N) * V));
  const DeterminismRun first = run();
  EXPECT_TRUE(first == run());

  // The GEMMs (split among the threads, large enough to run in parallel) and the GELU epilogue.
  const int OC = 3 * C;
  const std::vector<float> weight = to_f32(random_vec(size_t(OC) * C, rng));
  const std::vector<float> dy = to_f32(random_vec(size_t(N) * OC, rng));
  auto matmuls = [&] {
    CpuBackend be;
    std::vector<float> out(size_t(N) * OC), pre(out.size()), dinp(x.size()), dw(weight.size());
    be.matmul_forward(out.data(), pre.data(), x.data(), weight.data(), nullptr, N, C, OC);
    be.matmul_backward(dinp.data(), dw.data(), nullptr, dy.data(), x.data(), weight.data(),
                       x.data(), N, C, OC, false);
    out.insert(out.end(), dinp.begin(), dinp.end());
    out.insert(out.end(), dw.begin(), dw.end());
    return out;
  };
  EXPECT_TRUE(same_bits(matmuls(), matmuls()));
}

TEST_F(Determinism, BitwiseIdenticalAcrossThreadCounts) {
  const int saved = omp_get_max_threads();
  const DeterminismRun reference = run();
  for (int threads : {1, 3, 4}) {
    omp_set_num_threads(threads);
    EXPECT_TRUE(reference == run()) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

// ===========================================================================================
// make_backend
// ===========================================================================================

std::string usage_error_message(const std::string& kind, const std::string& precision) {
  try {
    make_backend(kind, precision);
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "make_backend(\"" << kind << "\", \"" << precision << "\") did not throw";
  return "";
}

TEST(MakeBackend, CpuAndAutoGiveTheCpuBackend) {
  for (const char* kind : {"cpu", "auto"})
    for (const char* precision : {"fp32", "auto"}) {
      auto backend = make_backend(kind, precision);
      ASSERT_NE(backend, nullptr);
      EXPECT_EQ(backend->name(), "cpu");
      EXPECT_EQ(backend->compute_dtype(), DType::F32);
    }
}

TEST(MakeBackend, ErrorsNameTheFix) {
  const std::string cuda = usage_error_message("cuda", "fp32");
  EXPECT_NE(cuda.find("cuda"), std::string::npos) << cuda;
  EXPECT_NE(cuda.find("\"backend\": \"cpu\""), std::string::npos) << cuda;

  const std::string bf16 = usage_error_message("cpu", "bf16");
  EXPECT_NE(bf16.find("cpu"), std::string::npos) << bf16;
  EXPECT_NE(bf16.find("fp32"), std::string::npos) << bf16;

  const std::string gpu = usage_error_message("gpu", "fp32");
  EXPECT_NE(gpu.find("\"gpu\""), std::string::npos) << gpu;
  EXPECT_NE(gpu.find("cpu|cuda|auto"), std::string::npos) << gpu;

  const std::string fp16 = usage_error_message("cpu", "fp16");
  EXPECT_NE(fp16.find("\"fp16\""), std::string::npos) << fp16;
  EXPECT_NE(fp16.find("fp32|bf16|auto"), std::string::npos) << fp16;
}

}  // namespace
}  // namespace slim
