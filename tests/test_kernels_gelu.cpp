// Emulated tests of kernels/gelu.cuh against the CPU backend's GELU (cpu_ops.h gelu_tanh and
// gelu_tanh_grad), fp32 and bf16: the whole useful input range, large |x| (saturation), zero,
// NaN, a partial last block, in-place use, and the launchers' shape checks.
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include "backend/cpu/cpu_ops.h"
#include "kernels/gelu.cuh"

namespace slim::kernel_test {
namespace {

template <typename T>
void check_gelu(size_t n, uint32_t seed) {
  const std::string label = std::string(dtype_label<T>()) + " n=" + std::to_string(n);
  std::vector<float> inp = random_floats(n, -6, 6, seed);
  // Special values at the front: zero, saturation on both sides, NaN.
  const float specials[] = {0.0f, 20.0f, -20.0f, 1e-3f, -0.7517916f, std::nanf("")};
  for (size_t k = 0; k < std::size(specials) && k < n; ++k) inp[k] = specials[k];
  inp = round_through<T>(inp);
  const std::vector<float> dout = round_through<T>(random_floats(n, -2, 2, seed + 1));

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<T> d_inp(to_storage<T>(inp)), d_out(n), d_dout(to_storage<T>(dout)), d_dinp(n);
    gelu_forward(d_out.get(), d_inp.get(), n, nullptr);
    gelu_backward(d_dinp.get(), d_dout.get(), d_inp.get(), n, nullptr);
    gelu_backward(d_dout.get(), d_dout.get(), d_inp.get(), n, nullptr);  // in place
    return Outputs{to_floats(d_out.download()), to_floats(d_dinp.download()),
                   to_floats(d_dout.download())};
  });

  std::vector<float> out_ref(n), dinp_ref(n);
  for (size_t i = 0; i < n; ++i) {
    out_ref[i] = cpu::gelu_tanh(inp[i]);
    dinp_ref[i] = dout[i] * cpu::gelu_tanh_grad(inp[i]);
  }
  expect_close("gelu_forward " + label, got[0], out_ref, default_tolerance<T>(1));
  expect_close("gelu_backward " + label, got[1], dinp_ref, default_tolerance<T>(1));
  expect_close("gelu_backward in place " + label, got[2], dinp_ref, default_tolerance<T>(1));
}

TEST(GeluKernels, Fp32MatchesCpu) {
  check_gelu<float>(8, 1);
  check_gelu<float>(3 * 768 * 4 + 8, 2);  // a partial last block
  check_gelu<float>(100000, 3);
}

TEST(GeluKernels, Bf16MatchesCpu) {
  check_gelu<__nv_bfloat16>(8, 11);
  check_gelu<__nv_bfloat16>(3 * 768 * 4 + 8, 12);
  check_gelu<__nv_bfloat16>(100000, 13);
}

TEST(GeluKernels, LaunchersRejectBadShapes) {
  DeviceArray<__nv_bfloat16> a(64), b(64);
  EXPECT_THROW(gelu_forward(a.get(), b.get(), 12, nullptr), Error);     // not a multiple of 8
  EXPECT_THROW(gelu_forward(a.get() + 1, b.get(), 8, nullptr), Error);  // misaligned
  EXPECT_THROW(gelu_backward(a.get(), a.get(), b.get() + 8, 4, nullptr), Error);
  EXPECT_NO_THROW(gelu_forward(a.get(), b.get(), 0, nullptr));  // nothing to do
}

}  // namespace
}  // namespace slim::kernel_test
