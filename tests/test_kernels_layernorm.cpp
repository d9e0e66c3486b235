// Emulated tests of kernels/layernorm.cuh against the CPU backend: layernorm_forward,
// fused_residual_layernorm_forward and layernorm_backward (dinp accumulate; dw/db accumulate and
// overwrite), fp32 and bf16, on edge shapes: one row, partial blocks of warps, C=768, C=1600
// (fewer warps per block to fit shared memory), and N large enough that the backward's blocks
// loop over rows (G capped at 512).
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include "backend/cpu/cpu_ops.h"
#include "kernels/layernorm.cuh"

namespace slim::kernel_test {
namespace {

struct RowsShape {
  int N, C;
};

std::string describe(const char* dtype, const RowsShape& s) {
  return std::string(dtype) + " N=" + std::to_string(s.N) + " C=" + std::to_string(s.C);
}

template <typename T>
void check_forward(const RowsShape& shape, uint32_t seed) {
  const int N = shape.N, C = shape.C;
  const size_t NC = size_t(N) * C;
  const std::string label = describe(dtype_label<T>(), shape);
  // A large row mean (3) checks that the variance is computed without cancellation.
  const std::vector<float> inp = round_through<T>(random_floats(NC, 2, 4, seed));
  const std::vector<float> a = round_through<T>(random_floats(NC, -2, 2, seed + 1));
  const std::vector<float> b = round_through<T>(random_floats(NC, 1, 3, seed + 2));
  const std::vector<float> w = round_through<T>(random_floats(C, -1.5, 1.5, seed + 3));
  const std::vector<float> bias = round_through<T>(random_floats(C, -0.5, 0.5, seed + 4));

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<T> d_inp(to_storage<T>(inp)), d_a(to_storage<T>(a)), d_b(to_storage<T>(b));
    DeviceArray<T> d_w(to_storage<T>(w)), d_bias(to_storage<T>(bias));
    DeviceArray<T> d_out(NC), d_out2(NC), d_residual(NC);
    DeviceArray<float> d_mean(N), d_rstd(N), d_mean2(N), d_rstd2(N);
    layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_w.get(), d_bias.get(),
                      N, C, nullptr);
    fused_residual_layernorm_forward(d_residual.get(), d_out2.get(), d_mean2.get(), d_rstd2.get(),
                                     d_a.get(), d_b.get(), d_w.get(), d_bias.get(), N, C, nullptr);
    return Outputs{to_floats(d_out.download()),
                   d_mean.download(),
                   d_rstd.download(),
                   to_floats(d_residual.download()),
                   to_floats(d_out2.download()),
                   d_mean2.download(),
                   d_rstd2.download()};
  });

  std::vector<float> out_ref(NC), mean_ref(N), rstd_ref(N);
  cpu::layernorm_forward(out_ref.data(), mean_ref.data(), rstd_ref.data(), inp.data(), w.data(),
                         bias.data(), N, C);
  // The fused op normalizes the residual as stored; in bf16 that is the rounded sum, so the
  // reference normalizes the rounded sum too (in fp32 rounding is the identity).
  std::vector<float> residual_ref(NC), out2_ref(NC), mean2_ref(N), rstd2_ref(N);
  for (size_t i = 0; i < NC; ++i) residual_ref[i] = a[i] + b[i];
  residual_ref = round_through<T>(residual_ref);
  cpu::layernorm_forward(out2_ref.data(), mean2_ref.data(), rstd2_ref.data(), residual_ref.data(),
                         w.data(), bias.data(), N, C);
  if constexpr (std::is_same_v<T, float>) {  // and the fused CPU op itself agrees exactly
    std::vector<float> fused_residual(NC), fused_out(NC), fused_mean(N), fused_rstd(N);
    cpu::fused_residual_layernorm_forward(fused_residual.data(), fused_out.data(),
                                          fused_mean.data(), fused_rstd.data(), a.data(), b.data(),
                                          w.data(), bias.data(), N, C);
    ASSERT_EQ(fused_out, out2_ref);
  }

  // Statistics are fp32 in both dtypes.
  const Tolerance stats{1e-6, 2e-6};
  expect_close("layernorm_forward out " + label, got[0], out_ref, default_tolerance<T>(4));
  expect_close("layernorm_forward mean " + label, got[1], mean_ref, stats);
  expect_close("layernorm_forward rstd " + label, got[2], rstd_ref, stats);
  expect_close("fused_residual_layernorm residual " + label, got[3], residual_ref,
               default_tolerance<T>(4));
  expect_close("fused_residual_layernorm out " + label, got[4], out2_ref, default_tolerance<T>(4));
  expect_close("fused_residual_layernorm mean " + label, got[5], mean2_ref, stats);
  expect_close("fused_residual_layernorm rstd " + label, got[6], rstd2_ref, stats);
}

template <typename T>
void check_backward(const RowsShape& shape, bool accumulate, uint32_t seed) {
  const int N = shape.N, C = shape.C;
  const size_t NC = size_t(N) * C;
  const std::string label =
      describe(dtype_label<T>(), shape) + (accumulate ? " accumulate" : " overwrite");
  const std::vector<float> inp = round_through<T>(random_floats(NC, -1, 3, seed));
  const std::vector<float> w = round_through<T>(random_floats(C, -1.5, 1.5, seed + 1));
  const std::vector<float> bias = round_through<T>(random_floats(C, -0.5, 0.5, seed + 2));
  const std::vector<float> dout = round_through<T>(random_floats(NC, -1, 1, seed + 3));
  const std::vector<float> dinp0 = round_through<T>(random_floats(NC, -1, 1, seed + 4));
  const std::vector<float> dw0 = round_through<T>(random_floats(C, -1, 1, seed + 5));
  const std::vector<float> db0 = round_through<T>(random_floats(C, -1, 1, seed + 6));
  // Both sides use the CPU's statistics, so the backward is tested on its own.
  std::vector<float> out_ref(NC), mean(N), rstd(N);
  cpu::layernorm_forward(out_ref.data(), mean.data(), rstd.data(), inp.data(), w.data(),
                         bias.data(), N, C);

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<T> d_inp(to_storage<T>(inp)), d_w(to_storage<T>(w)), d_dout(to_storage<T>(dout));
    DeviceArray<T> d_dinp(to_storage<T>(dinp0)), d_dw(to_storage<T>(dw0)), d_db(to_storage<T>(db0));
    DeviceArray<float> d_mean(mean), d_rstd(rstd);
    DeviceArray<uint8_t> scratch(layernorm_backward_scratch_bytes(N, C));
    layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), d_dout.get(), d_inp.get(), d_w.get(),
                       d_mean.get(), d_rstd.get(), N, C, accumulate, scratch.get(), nullptr);
    return Outputs{to_floats(d_dinp.download()), to_floats(d_dw.download()),
                   to_floats(d_db.download())};
  });

  std::vector<float> dinp_ref = dinp0, dw_ref = dw0, db_ref = db0;
  cpu::layernorm_backward(dinp_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), inp.data(),
                          w.data(), mean.data(), rstd.data(), N, C, accumulate);
  // dw/db are sums over N rows of terms of size ~1: the absolute tolerance grows like sqrt(N).
  const double column_scale = 2 * std::sqrt(double(N)) + 1;
  expect_close("layernorm_backward dinp " + label, got[0], dinp_ref, default_tolerance<T>(8));
  expect_close("layernorm_backward dw " + label, got[1], dw_ref,
               default_tolerance<T>(column_scale));
  expect_close("layernorm_backward db " + label, got[2], db_ref,
               default_tolerance<T>(column_scale));
}

const RowsShape kShapes[] = {
    {1, 8},      // one row, one pack per row for bf16
    {13, 768},   // GPT-2 width, a partial block of warps
    {37, 24},    // odd N, lanes with no pack
    {5, 1600},   // GPT-2 XL width: fewer warps per block
    {4133, 16},  // N > 512 blocks * 8 warps: backward blocks loop over rows
};

TEST(LayernormKernels, ForwardFp32MatchesCpu) {
  uint32_t seed = 300;
  for (const RowsShape& s : kShapes) check_forward<float>(s, seed += 10);
}
TEST(LayernormKernels, ForwardBf16MatchesCpu) {
  uint32_t seed = 400;
  for (const RowsShape& s : kShapes) check_forward<__nv_bfloat16>(s, seed += 10);
}
TEST(LayernormKernels, BackwardFp32MatchesCpu) {
  uint32_t seed = 500;
  for (const RowsShape& s : kShapes)
    for (bool accumulate : {false, true}) check_backward<float>(s, accumulate, seed += 10);
}
TEST(LayernormKernels, BackwardBf16MatchesCpu) {
  uint32_t seed = 600;
  for (const RowsShape& s : kShapes)
    for (bool accumulate : {false, true}) check_backward<__nv_bfloat16>(s, accumulate, seed += 10);
}

TEST(LayernormKernels, ForwardPropagatesNaN) {
  // A NaN in one row poisons that row's output and statistics, and no other row.
  const int N = 3, C = 8;
  std::vector<float> inp = random_floats(N * C, -1, 1, 7), w(C, 1.0f), b(C, 0.0f);
  inp[C + 3] = std::nanf("");
  DeviceArray<float> d_inp(inp), d_w(w), d_b(b), d_out(N * C), d_mean(N), d_rstd(N);
  layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_w.get(), d_b.get(), N,
                    C, nullptr);
  const std::vector<float> out = d_out.download(), mean = d_mean.download();
  for (int i = 0; i < N; ++i) {
    EXPECT_EQ(std::isnan(mean[i]), i == 1) << "row " << i;
    for (int c = 0; c < C; ++c) EXPECT_EQ(std::isnan(out[i * C + c]), i == 1) << i << "," << c;
  }
}

TEST(LayernormKernels, LaunchersRejectBadShapes) {
  DeviceArray<__nv_bfloat16> x(64), y(64), w(64), b(64);
  DeviceArray<float> stats(8);
  // bf16 rows of 12 elements are not a multiple of the 8-element pack.
  EXPECT_THROW(layernorm_forward(y.get(), stats.get(), stats.get(), x.get(), w.get(), b.get(), 2,
                                 12, nullptr),
               Error);
  EXPECT_THROW(layernorm_forward(y.get() + 4, stats.get(), stats.get(), x.get(), w.get(), b.get(),
                                 2, 8, nullptr),
               Error);
  EXPECT_THROW(layernorm_backward(x.get(), w.get(), b.get(), y.get(), x.get(), w.get(), stats.get(),
                                  stats.get(), 2, 8, false, nullptr, nullptr),
               Error);
}

}  // namespace
}  // namespace slim::kernel_test
