// Emulated tests of kernels/global_norm.cuh against the CPU backend's sum_squares: fp32 and bf16,
// n = 0, tails shorter than a pack, partial blocks, enough elements that the grid is capped and
// threads stride, a misaligned tensor (element-wise path), accumulation of two tensors into one
// device double, and bitwise determinism across schedule orders.
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include "backend/cpu/cpu_ops.h"
#include "kernels/global_norm.cuh"

namespace slim::kernel_test {
namespace {

// Relative error allowed: squares of a pack are added in fp32 (about 1e-7 relative each) before
// the double accumulation; the CPU adds every square in double.
constexpr double kRelTolerance = 1e-6;

void expect_sum_close(const std::string& what, double got, double ref) {
  const double error = std::fabs(got - ref);
  std::printf("[  errors  ] %-48s abs=%.3e rel=%.3e\n", what.c_str(), error,
              ref != 0 ? error / std::fabs(ref) : error);
  EXPECT_LE(error, kRelTolerance * std::fabs(ref))
      << what << ": got " << got << ", expected " << ref;
}

template <typename T>
void check_sum_squares(size_t n, size_t offset, uint32_t seed) {
  const std::string label =
      std::string(dtype_label<T>()) + " n=" + std::to_string(n) + (offset ? " misaligned" : "");
  const std::vector<float> values = round_through<T>(random_floats(n + offset, -3, 3, seed));
  const Outputs got = run_in_both_orders([&] {
    DeviceArray<T> d_x(to_storage<T>(values));
    DeviceArray<uint8_t> scratch(global_norm_squared_scratch_bytes(n));
    const double total = sum_squares(d_x.get() + offset, n, scratch.get(), nullptr);
    // The bits of the double, as two floats' worth of storage.
    std::vector<float> bits(2);
    std::memcpy(bits.data(), &total, sizeof(double));
    return Outputs{bits};
  });
  double total = 0;
  std::memcpy(&total, got[0].data(), sizeof(double));
  const double ref = cpu::sum_squares(values.data() + offset, n);
  if (n == 0) {
    EXPECT_EQ(total, 0.0);
    return;
  }
  expect_sum_close("sum_squares " + label, total, ref);
}

TEST(GlobalNormKernels, Fp32MatchesCpu) {
  uint32_t seed = 900;
  // 5e6 > 1024 blocks * 512 threads * 8: the grid is capped and threads stride.
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(512 * 8 * 3 + 5), size_t(1 << 20) + 3,
                   size_t(5000000)})
    check_sum_squares<float>(n, 0, ++seed);
  check_sum_squares<float>(12345, 1, ++seed);
}

TEST(GlobalNormKernels, Bf16MatchesCpu) {
  uint32_t seed = 950;
  for (size_t n : {size_t(1), size_t(7), size_t(512 * 8 * 3 + 5), size_t(1 << 20) + 3})
    check_sum_squares<__nv_bfloat16>(n, 0, ++seed);
  check_sum_squares<__nv_bfloat16>(12345, 3, ++seed);
}

TEST(GlobalNormKernels, AccumulatesSeveralTensors) {
  const std::vector<float> a = random_floats(1000, -1, 1, 1), b = random_floats(4097, -2, 2, 2);
  DeviceArray<float> d_a(a), d_b(b);
  DeviceArray<double> out(1);
  DeviceArray<uint8_t> scratch(global_norm_squared_scratch_bytes(4097));
  out.upload({123.0});  // overwritten by the first call (accumulate = false)
  global_norm_squared(out.get(), d_a.get(), a.size(), false, scratch.get(), nullptr);
  global_norm_squared(out.get(), d_b.get(), b.size(), true, scratch.get(), nullptr);
  const double ref = cpu::sum_squares(a.data(), a.size()) + cpu::sum_squares(b.data(), b.size());
  expect_sum_close("global_norm_squared a+b fp32", out.download()[0], ref);
}

TEST(GlobalNormKernels, NaNPropagates) {
  std::vector<float> x = random_floats(10000, -1, 1, 3);
  x[7777] = std::nanf("");
  DeviceArray<float> d_x(x);
  DeviceArray<uint8_t> scratch(global_norm_squared_scratch_bytes(x.size()));
  EXPECT_TRUE(std::isnan(sum_squares(d_x.get(), x.size(), scratch.get(), nullptr)));
}

TEST(GlobalNormKernels, LaunchersRejectMissingScratch) {
  DeviceArray<float> x(16);
  DeviceArray<double> out(1);
  EXPECT_THROW(global_norm_squared(out.get(), x.get(), 16, false, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace slim::kernel_test
