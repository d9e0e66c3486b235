// Emulated tests of kernels/adamw.cuh against the CPU backend's adamw_update (OPTIMIZERS.md
// section 1): fp32 params alone, fp32 params with fp32 master weights, bf16 params with fp32 master
// weights (master exact to fp32 rounding, params one of the two bf16 neighbours of the master),
// bf16 params alone; three steps with weight decay and a gradient scale; a partial last block.
// Stochastic rounding is checked to be unbiased (lr = 0 leaves the master value between two bf16
// neighbours and the rounded copies must average to it), reproducible for a seed, and different
// across seeds. A bf16 m (optimizer.m_dtype): the kernel stores the CPU reference's bits (the same
// draws from (m_seed, index)) for every parameter storage, one step at a time from the CPU's
// state; fp32 m keeps its old bits whatever m_seed says.
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

// ---- bf16 m ------------------------------------------------------------------------------------

// The worst figures of a quantity over several comparisons, printed once (what the report quotes).
class Worst {
 public:
  explicit Worst(std::string what) : what_(std::move(what)) {}
  // NaN-aware tolerance check (kernel_test_support.h); fails the test on a mismatch.
  void close(const std::string& step, const std::vector<float>& got, const std::vector<float>& ref,
             Tolerance tol) {
    const Comparison c = compare(got, ref, tol);
    abs_ = std::max(abs_, c.max_abs_error);
    rel_ = std::max(rel_, c.max_rel_error);
    count_ += c.count;
    EXPECT_EQ(c.mismatches, 0u) << what_ << " " << step << ": " << c.mismatches << " of " << c.count
                                << " outside atol=" << tol.atol << " rtol=" << tol.rtol
                                << "; first: " << c.first_mismatch;
  }
  // A bf16 m against the CPU reference's. Identical fp32 values round to identical bits (same
  // seed, same index). The kernel and the reference may contract b1*m + (1-b1)*g differently
  // (the reference is built with -march=native, the emulated kernel is not), leaving fp32 values
  // an ulp or two apart; a draw then falls between them with probability about 2^-15 (16 random
  // bits against a gap of 2^-16..2^-15 of a bf16 ulp), and the two stored values are neighbours.
  // So: every element within one bf16 ulp, and at most n / 2^13 + 4 of them off at all (4x the
  // expected count, plus room for a handful).
  void bf16_moment(const std::string& step, const std::vector<float>& got,
                   const std::vector<float>& ref) {
    ASSERT_EQ(got.size(), ref.size());
    size_t differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      if (got[i] == ref[i]) continue;
      ++differ;
      // Neighbouring bf16 values are 2^16 fp32 bit patterns apart (same sign).
      const int64_t apart = std::llabs(int64_t(float_bits(got[i])) - int64_t(float_bits(ref[i])));
      EXPECT_TRUE(std::signbit(got[i]) == std::signbit(ref[i]) && apart == (int64_t(1) << 16))
          << what_ << " " << step << " [" << i << "]: " << got[i] << " vs " << ref[i];
    }
    EXPECT_LE(differ, ref.size() / 8192 + 4) << what_ << " " << step;
    is_moment_ = true;
    differ_ += differ;
    count_ += ref.size();
  }
  ~Worst() {
    if (count_ == 0) return;
    if (is_moment_)
      std::printf("[  errors  ] %-48s n=%-8zu bf16 bits differ in %zu\n", what_.c_str(), count_,
                  differ_);
    else
      std::printf("[  errors  ] %-48s n=%-8zu max_abs=%.3e max_rel=%.3e\n", what_.c_str(), count_,
                  abs_, rel_);
  }

 private:
  std::string what_;
  double abs_ = 0, rel_ = 0;
  size_t count_ = 0, differ_ = 0;
  bool is_moment_ = false;
};

// kSteps steps with a bf16 m, each from the CPU reference's state (weights, bf16 m, v), against
// cpu_ops.h's adamw_update with the same m seed: m's bits, v and the weights (the master, or the
// fp32 params) match; bf16 params without master are checked for m and v only (the CPU cannot
// follow their rounding).
template <typename X>
void check_bf16_moment(size_t n, bool with_master, uint32_t seed) {
  using bf16 = __nv_bfloat16;
  const std::string label = std::string(dtype_label<X>()) + " params, bf16 m, n=" +
                            std::to_string(n) + (with_master ? " master" : "");
  Worst m_worst("adamw m " + label), v_worst("adamw v " + label),
      w_worst("adamw weights " + label);
  std::vector<float> weights = round_through<X>(random_floats(n, -1, 1, seed));
  std::vector<float> m = round_through<bf16>(random_floats(n, -0.02f, 0.02f, seed + 1));
  std::vector<float> v = random_floats(n, 1e-5f, 1e-3f, seed + 2);
  for (int t = 1; t <= kSteps; ++t) {
    const std::vector<float> g = round_through<X>(random_floats(n, -0.2f, 0.2f, seed + 10 + t));
    AdamWArgs args = args_for_step(t);
    args.m_bf16 = true;
    args.m_seed = 555u + uint32_t(t);
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<X> params(to_storage<X>(weights)), grads(to_storage<X>(g));
      DeviceArray<bf16> moment(to_storage<bf16>(m));  // exact: m holds bf16 values
      DeviceArray<float> master(weights), variance(v);
      adamw_update(params.get(), with_master ? master.get() : nullptr, grads.get(), moment.get(),
                   variance.get(), n, args, 99u + t, nullptr);
      return Outputs{to_floats(params.download()), master.download(), to_floats(moment.download()),
                     variance.download()};
    });
    std::vector<uint16_t> m_bits(n);
    for (size_t i = 0; i < n; ++i) m_bits[i] = uint16_t(float_bits(m[i]) >> 16);
    std::vector<float> cpu_params = weights, cpu_master = weights;
    cpu::adamw_update(cpu_params.data(),
                      with_master ? cpu_master.data() : static_cast<float*>(nullptr), g.data(),
                      m_bits.data(), v.data(), n, args);
    for (size_t i = 0; i < n; ++i) m[i] = bf16_bits_to_float(m_bits[i]);
    const std::string step = "step " + std::to_string(t);
    m_worst.bf16_moment(step, got[2], m);
    v_worst.close(step, got[3], v, default_tolerance<float>(0.01));
    if (std::is_same_v<X, float>)
      w_worst.close(step, with_master ? got[1] : got[0], cpu_params, default_tolerance<float>(1));
    else if (with_master)
      w_worst.close(step, got[1], cpu_master, default_tolerance<float>(1));
    weights = with_master ? cpu_master : std::is_same_v<X, float> ? cpu_params : got[0];
  }
}

TEST(AdamWKernels, Bf16MomentMatchesCpu) {
  uint32_t seed = 1200;
  for (size_t n : {size_t(1), size_t(5001), size_t(300000)}) {
    check_bf16_moment<float>(n, false, seed += 10);
    check_bf16_moment<__nv_bfloat16>(n, true, seed += 10);
    check_bf16_moment<__nv_bfloat16>(n, false, seed += 10);
  }
}

// An fp32 m ignores m_seed: the same bits whatever it is.
TEST(AdamWKernels, Fp32MomentIgnoresTheMomentSeed) {
  const size_t n = 4096;
  auto run = [&](uint32_t m_seed) {
    AdamWArgs args = args_for_step(2);
    args.m_seed = m_seed;
    DeviceArray<__nv_bfloat16> params(to_storage<__nv_bfloat16>(random_floats(n, -1, 1, 1))),
        grads(to_storage<__nv_bfloat16>(random_floats(n, -1, 1, 2)));
    DeviceArray<float> m(random_floats(n, -0.1f, 0.1f, 3)), v(random_floats(n, 0.0f, 0.1f, 4));
    adamw_update(params.get(), static_cast<float*>(nullptr), grads.get(), m.get(), v.get(), n, args,
                 17u, nullptr);
    return Outputs{to_floats(params.download()), m.download(), v.download()};
  };
  EXPECT_TRUE(bitwise_equal(run(1), run(2)));
}

TEST(AdamWKernels, LaunchersRejectBadArguments) {
  DeviceArray<float> p(4), g(4), m(4), v(4);
  AdamWArgs args = args_for_step(1);
  float* no_m = nullptr;  // typed: the launcher's m type is deduced from it
  EXPECT_THROW(adamw_update(p.get(), nullptr, g.get(), no_m, v.get(), 4, args, 0, nullptr), Error);
  args.bias_correction1 = 0.0f;  // step 0: 1 - beta1^0
  EXPECT_THROW(adamw_update(p.get(), nullptr, g.get(), m.get(), v.get(), 4, args, 0, nullptr),
               Error);
  // m's storage and args.m_bf16 must agree.
  DeviceArray<__nv_bfloat16> m16(4);
  args = args_for_step(1);
  EXPECT_THROW(adamw_update(p.get(), nullptr, g.get(), m16.get(), v.get(), 4, args, 0, nullptr),
               Error);
  args.m_bf16 = true;
  EXPECT_NO_THROW(adamw_update(p.get(), nullptr, g.get(), m16.get(), v.get(), 4, args, 0, nullptr));
  EXPECT_THROW(adamw_update(p.get(), nullptr, g.get(), m.get(), v.get(), 4, args, 0, nullptr),
               Error);
}

}  // namespace
}  // namespace slim::kernel_test
