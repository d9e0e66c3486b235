// Emulated tests of kernels/classifier.cuh against the CPU backend's fused_classifier: losses and
// in-place dlogits (padding zeroed), fp32 and bf16, on edge shapes: V=1, V not a multiple of the
// pack (a pack straddles V), V == Vp, GPT-2's V=50257 / Vp=50304, rows with huge logits (the
// max-subtraction), losses only (write_dlogits=false leaves the logits untouched), and an invalid
// target (NaN instead of a silent wrong loss).
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include "backend/cpu/cpu_ops.h"
#include "kernels/classifier.cuh"

namespace slim::kernel_test {
namespace {

struct ClassifierShape {
  int N, V, Vp;
};

template <typename T>
void check_classifier(const ClassifierShape& shape, bool write_dlogits, uint32_t seed) {
  const int N = shape.N, V = shape.V, Vp = shape.Vp;
  const std::string label = std::string(dtype_label<T>()) + " N=" + std::to_string(N) +
                            " V=" + std::to_string(V) + " Vp=" + std::to_string(Vp) +
                            (write_dlogits ? "" : " loss only");
  std::vector<float> logits = random_floats(size_t(N) * Vp, -6, 6, seed);
  // Row 0 has huge logits: without subtracting the max, exp(100) would overflow fp32.
  for (int j = 0; j < Vp; ++j) logits[j] += 100.0f;
  logits = round_through<T>(logits);
  std::vector<int> targets = random_ints(N, 0, V, seed + 1);
  targets[0] = V - 1;
  if (N > 1) targets[1] = 0;
  const float dloss = 1.0f / (3.0f * N);

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<T> d_logits(to_storage<T>(logits));
    DeviceArray<float> d_losses(N);
    DeviceArray<int> d_targets(targets);
    fused_classifier(d_logits.get(), d_losses.get(), d_targets.get(), dloss, N, V, Vp,
                     write_dlogits, nullptr);
    return Outputs{d_losses.download(), to_floats(d_logits.download())};
  });

  std::vector<float> losses_ref(N), logits_ref = logits;
  cpu::fused_classifier(logits_ref.data(), losses_ref.data(), targets.data(), dloss, N, V, Vp,
                        write_dlogits);
  expect_close("fused_classifier losses " + label, got[0], losses_ref, Tolerance{1e-5, 1e-5});
  if (write_dlogits)
    expect_close("fused_classifier dlogits " + label, got[1], logits_ref,
                 default_tolerance<T>(dloss));
  else
    EXPECT_TRUE(bitwise_equal({got[1]}, {logits})) << "loss-only mode changed the logits";
}

const ClassifierShape kShapes[] = {
    {2, 1, 8},          // V=1: the loss is 0 and so is the gradient
    {5, 37, 40},        // a pack straddles V (bf16), padding columns
    {8, 64, 64},        // no padding
    {3, 1000, 1024},    // several packs per thread
    {2, 50257, 50304},  // GPT-2's vocabulary
};

TEST(ClassifierKernels, Fp32MatchesCpu) {
  uint32_t seed = 700;
  for (const ClassifierShape& s : kShapes)
    for (bool write : {true, false}) check_classifier<float>(s, write, seed += 10);
}

TEST(ClassifierKernels, Bf16MatchesCpu) {
  uint32_t seed = 800;
  for (const ClassifierShape& s : kShapes)
    for (bool write : {true, false}) check_classifier<__nv_bfloat16>(s, write, seed += 10);
}

TEST(ClassifierKernels, InvalidTargetGivesNaN) {
  const int N = 2, V = 5, Vp = 8;
  DeviceArray<float> logits(random_floats(N * Vp, -1, 1, 5)), losses(N);
  DeviceArray<int> targets(std::vector<int>{2, V});  // row 1's target is out of range
  fused_classifier(logits.get(), losses.get(), targets.get(), 1.0f, N, V, Vp, true, nullptr);
  const std::vector<float> loss = losses.download(), grad = logits.download();
  EXPECT_TRUE(std::isfinite(loss[0]));
  EXPECT_TRUE(std::isnan(loss[1]));
  for (int j = 0; j < V; ++j) EXPECT_TRUE(std::isnan(grad[Vp + j])) << j;
}

TEST(ClassifierKernels, NaNLogitPoisonsOnlyItsRow) {
  const int N = 3, V = 6, Vp = 8;
  std::vector<float> host = random_floats(N * Vp, -1, 1, 9);
  host[Vp + 2] = std::nanf("");
  DeviceArray<float> logits(host), losses(N);
  DeviceArray<int> targets(std::vector<int>{0, 1, 2});
  fused_classifier(logits.get(), losses.get(), targets.get(), 1.0f, N, V, Vp, false, nullptr);
  const std::vector<float> loss = losses.download();
  EXPECT_TRUE(std::isfinite(loss[0]));
  EXPECT_TRUE(std::isnan(loss[1]));
  EXPECT_TRUE(std::isfinite(loss[2]));
}

TEST(ClassifierKernels, LaunchersRejectBadShapes) {
  DeviceArray<__nv_bfloat16> logits(64);
  DeviceArray<float> losses(4);
  DeviceArray<int> targets(4);
  EXPECT_THROW(
      fused_classifier(logits.get(), losses.get(), targets.get(), 1.0f, 2, 9, 12, true, nullptr),
      Error);  // Vp=12 is not a multiple of the bf16 pack
  EXPECT_THROW(
      fused_classifier(logits.get(), losses.get(), targets.get(), 1.0f, 2, 17, 16, true, nullptr),
      Error);  // V > Vp
}

}  // namespace
}  // namespace slim::kernel_test
