// Emulated tests of kernels/adamw.cuh against the CPU backend's adamw_update (OPTIMIZERS.md
// section 1): fp32 params alone, fp32 params with fp32 master weights, bf16 params with fp32 master
// weights (master exact to fp32 rounding, params one of the two bf16 neighbours of the master),
// bf16 params alone; three steps with weight decay and a gradient scale; a partial last block.
// Stochastic rounding is checked to be unbiased (lr = 0 leaves the master value between two bf16
// neighbours and the rounded copies must average to it), reproducible for a seed, and different
// across seeds.
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include "backend/cpu/cpu_ops.h"
#include "kernels/adamw.cuh"

namespace slim::kernel_test {
namespace {

AdamWArgs args_for_step(int t) {
  AdamWArgs args{};
  args.lr = 1e-3f;
  args.beta1 = 0.9f;
  args.beta2 = 0.95f;
  args.eps = 1e-8f;
  args.weight_decay = 0.1f;
  args.grad_scale = 0.5f;
  args.bias_correction1 = 1.0f - std::pow(0.9f, float(t));
  args.bias_correction2 = 1.0f - std::pow(0.95f, float(t));
  return args;
}

// The bf16 values just below and just above |x| in magnitude (equal when x is a bf16 value).
std::pair<float, float> bf16_neighbours(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const uint32_t down_bits = bits & 0xffff0000u;
  const uint32_t up_bits = (bits & 0xffffu) ? down_bits + 0x10000u : down_bits;
  float down, up;
  std::memcpy(&down, &down_bits, 4);
  std::memcpy(&up, &up_bits, 4);
  return {down, up};
}

constexpr int kSteps = 3;

// fp32 params, with or without master weights: everything must match the CPU to fp32 rounding.
void check_fp32(size_t n, bool with_master, uint32_t seed) {
  const std::string label = "fp32 n=" + std::to_string(n) + (with_master ? " master" : "");
  const std::vector<float> params0 = random_floats(n, -1, 1, seed);
  std::vector<std::vector<float>> grads;
  for (int t = 0; t < kSteps; ++t) grads.push_back(random_floats(n, -0.2f, 0.2f, seed + 1 + t));

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<float> params(params0), master(params0), m(std::vector<float>(n, 0.0f)),
        v(std::vector<float>(n, 0.0f)), g(n);
    for (int t = 1; t <= kSteps; ++t) {
      g.upload(grads[t - 1]);
      adamw_update(params.get(), with_master ? master.get() : nullptr, g.get(), m.get(), v.get(), n,
                   args_for_step(t), 1234u + t, nullptr);
    }
    return Outputs{params.download(), master.download(), m.download(), v.download()};
  });

  std::vector<float> params = params0, master = params0, m(n, 0.0f), v(n, 0.0f);
  for (int t = 1; t <= kSteps; ++t)
    cpu::adamw_update(params.data(), with_master ? master.data() : static_cast<float*>(nullptr),
                      grads[t - 1].data(), m.data(), v.data(), n, args_for_step(t));
  expect_close("adamw params " + label, got[0], params, default_tolerance<float>(1));
  if (with_master)
    expect_close("adamw master " + label, got[1], master, default_tolerance<float>(1));
  expect_close("adamw m " + label, got[2], m, default_tolerance<float>(0.1));
  expect_close("adamw v " + label, got[3], v, default_tolerance<float>(0.01));
}

// bf16 params: the master (or the CPU's fp32 weights) must match; params must be one of the two
// bf16 neighbours of the fp32 weight.
void check_bf16(size_t n, bool with_master, uint32_t seed) {
  using bf16 = __nv_bfloat16;
  const std::string label = "bf16 n=" + std::to_string(n) + (with_master ? " master" : "");
  const std::vector<float> params0 = round_through<bf16>(random_floats(n, -1, 1, seed));
  std::vector<std::vector<float>> grads;
  for (int t = 0; t < kSteps; ++t)
    grads.push_back(round_through<bf16>(random_floats(n, -0.2f, 0.2f, seed + 1 + t)));

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<bf16> params(to_storage<bf16>(params0)), g(n);
    DeviceArray<float> master(params0), m(std::vector<float>(n, 0.0f)),
        v(std::vector<float>(n, 0.0f));
    std::vector<float> params_before_last;
    for (int t = 1; t <= kSteps; ++t) {
      if (t == kSteps) params_before_last = to_floats(params.download());
      g.upload(to_storage<bf16>(grads[t - 1]));
      adamw_update(params.get(), with_master ? master.get() : nullptr, g.get(), m.get(), v.get(), n,
                   args_for_step(t), 99u + t, nullptr);
    }
    return Outputs{to_floats(params.download()), master.download(), m.download(), v.download(),
                   params_before_last};
  });

  if (with_master) {
    // The CPU keeps fp32 weights throughout: that is exactly what the master is.
    std::vector<float> params = params0, master = params0, m(n, 0.0f), v(n, 0.0f);
    for (int t = 1; t <= kSteps; ++t)
      cpu::adamw_update(params.data(), master.data(), grads[t - 1].data(), m.data(), v.data(), n,
                        args_for_step(t));
    expect_close("adamw master " + label, got[1], master, default_tolerance<float>(1));
    expect_close("adamw m " + label, got[2], m, default_tolerance<float>(0.1));
    expect_close("adamw v " + label, got[3], v, default_tolerance<float>(0.01));
    size_t off_grid = 0;
    for (size_t i = 0; i < n; ++i) {
      const auto [down, up] = bf16_neighbours(got[1][i]);
      if (got[0][i] != down && got[0][i] != up) ++off_grid;
    }
    EXPECT_EQ(off_grid, 0u) << label << ": params that are not a bf16 neighbour of the master";
  } else {
    // Without a master the weights live in bf16: check the last step from the params it started
    // with (the kernel's own previous, stochastically rounded, values).
    std::vector<float> weights = got[4], m(n, 0.0f), v(n, 0.0f);
    std::vector<float> scratch_params = params0, no_use(n);
    for (int t = 1; t < kSteps; ++t)  // m, v of the first steps (independent of the weights)
      cpu::adamw_update(scratch_params.data(), no_use.data(), grads[t - 1].data(), m.data(),
                        v.data(), n, args_for_step(t));
    cpu::adamw_update(weights.data(), static_cast<float*>(nullptr), grads[kSteps - 1].data(),
                      m.data(), v.data(), n, args_for_step(kSteps));
    expect_close("adamw m " + label, got[2], m, default_tolerance<float>(0.1));
    expect_close("adamw v " + label, got[3], v, default_tolerance<float>(0.01));
    size_t off_grid = 0;
    for (size_t i = 0; i < n; ++i) {
      // The CPU's fp32 weight may differ from the kernel's by an fp32 rounding: allow either
      // neighbour of the values within 2 fp32 ulps.
      const float w = weights[i];
      const auto [down, up] = bf16_neighbours(w);
      const auto [down2, up2] = bf16_neighbours(std::nextafter(w, 2 * w));
      const auto [down3, up3] = bf16_neighbours(std::nextafter(w, 0.0f));
      const float p = got[0][i];
      if (p != down && p != up && p != down2 && p != up2 && p != down3 && p != up3) ++off_grid;
    }
    EXPECT_EQ(off_grid, 0u) << label << ": params that are not a bf16 neighbour of the weight";
  }
}

TEST(AdamWKernels, Fp32MatchesCpu) {
  uint32_t seed = 1000;
  for (size_t n : {size_t(1), size_t(5001), size_t(300000)})
    for (bool master : {false, true}) check_fp32(n, master, seed += 10);
}

TEST(AdamWKernels, Bf16MatchesCpu) {
  uint32_t seed = 1100;
  for (size_t n : {size_t(1), size_t(5001), size_t(300000)})
    for (bool master : {false, true}) check_bf16(n, master, seed += 10);
}

// lr = 0 keeps the master at x, a value 0.3 of a bf16 ulp above a bf16 value; the copies in bf16
// must round up about 30% of the time (round to nearest would never round up).
TEST(AdamWKernels, StochasticRoundingIsUnbiasedAndSeeded) {
  using bf16 = __nv_bfloat16;
  const size_t n = 100000;
  const float ulp = std::ldexp(1.0f, -7);  // bf16 ulp in [1, 2)
  std::vector<float> master0(n);
  for (size_t i = 0; i < n; ++i) master0[i] = (i % 2 ? -1.0f : 1.0f) * (1.0f + 0.3f * ulp);
  AdamWArgs args = args_for_step(1);
  args.lr = 0.0f;

  auto run = [&](uint32_t seed) {
    DeviceArray<bf16> params(n), grads(to_storage<bf16>(random_floats(n, -1, 1, 5)));
    DeviceArray<float> master(master0), m(std::vector<float>(n, 0.0f)),
        v(std::vector<float>(n, 0.0f));
    adamw_update(params.get(), master.get(), grads.get(), m.get(), v.get(), n, args, seed, nullptr);
    EXPECT_TRUE(bitwise_equal({master.download()}, {master0})) << "lr = 0 must not move the master";
    return to_floats(params.download());
  };
  const std::vector<float> a = run(7), b = run(7), c = run(8);
  size_t rounded_up = 0, differ = 0;
  for (size_t i = 0; i < n; ++i) {
    const float magnitude = std::fabs(a[i]);
    ASSERT_TRUE(magnitude == 1.0f || magnitude == 1.0f + ulp) << i << ": " << a[i];
    ASSERT_EQ(std::signbit(a[i]), i % 2 == 1) << i;
    rounded_up += magnitude > 1.0f;
    differ += a[i] != c[i];
  }
  const double fraction = double(rounded_up) / n;
  std::printf("[  errors  ] stochastic rounding: fraction rounded up %.4f (expected 0.3)\n",
              fraction);
  EXPECT_NEAR(fraction, 0.3, 0.01);  // 7 standard deviations at n = 1e5
  EXPECT_TRUE(bitwise_equal({a}, {b})) << "the same seed must give the same bits";
  EXPECT_GT(differ, n / 4) << "another seed must give other random bits";
}

TEST(AdamWKernels, LaunchersRejectBadArguments) {
  DeviceArray<float> p(4), g(4), m(4), v(4);
  AdamWArgs args = args_for_step(1);
  EXPECT_THROW(adamw_update(p.get(), nullptr, g.get(), nullptr, v.get(), 4, args, 0, nullptr),
               Error);
  args.bias_correction1 = 0.0f;  // step 0: 1 - beta1^0
  EXPECT_THROW(adamw_update(p.get(), nullptr, g.get(), m.get(), v.get(), 4, args, 0, nullptr),
               Error);
}

}  // namespace
}  // namespace slim::kernel_test
