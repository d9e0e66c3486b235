// Emulated tests of kernels/encoder.cuh against the CPU backend's encoder ops: forward and the
// deterministic (sorted) backward, fp32 and bf16, on edge shapes: T=1, odd T, partial blocks,
// many repeats of a few tokens, and batches large enough that the token sort needs its global
// merge passes (more than one 2048-key chunk).
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include "backend/cpu/cpu_ops.h"
#include "kernels/encoder.cuh"

namespace slim::kernel_test {
namespace {

struct EncoderShape {
  int B, T, C, V;
};

template <typename T>
void check_encoder(const EncoderShape& shape, uint32_t seed) {
  const int B = shape.B, TT = shape.T, C = shape.C, V = shape.V, N = B * TT;
  const std::string label = std::string(dtype_label<T>()) + " B=" + std::to_string(B) +
                            " T=" + std::to_string(TT) + " C=" + std::to_string(C) +
                            " V=" + std::to_string(V);
  const std::vector<int> tokens = random_ints(static_cast<size_t>(N), 0, V, seed);
  const std::vector<float> wte = round_through<T>(random_floats(size_t(V) * C, -1, 1, seed + 1));
  const std::vector<float> wpe = round_through<T>(random_floats(size_t(TT) * C, -1, 1, seed + 2));
  const std::vector<float> dout = round_through<T>(random_floats(size_t(N) * C, -1, 1, seed + 3));
  // Non-zero starting gradients: the backward accumulates.
  const std::vector<float> dwte0 = round_through<T>(random_floats(size_t(V) * C, -1, 1, seed + 4));
  const std::vector<float> dwpe0 = round_through<T>(random_floats(size_t(TT) * C, -1, 1, seed + 5));

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<int> d_tokens(tokens);
    DeviceArray<T> d_wte(to_storage<T>(wte)), d_wpe(to_storage<T>(wpe));
    DeviceArray<T> d_out(size_t(N) * C), d_dout(to_storage<T>(dout));
    DeviceArray<T> d_dwte(to_storage<T>(dwte0)), d_dwpe(to_storage<T>(dwpe0));
    DeviceArray<uint8_t> scratch(encoder_backward_scratch_bytes(B, TT));
    encoder_forward(d_out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), B, TT, C, nullptr);
    encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_tokens.get(), B, TT, C,
                     scratch.get(), nullptr);
    return Outputs{to_floats(d_out.download()), to_floats(d_dwte.download()),
                   to_floats(d_dwpe.download())};
  });

  std::vector<float> out_ref(size_t(N) * C), dwte_ref = dwte0, dwpe_ref = dwpe0;
  cpu::encoder_forward(out_ref.data(), tokens.data(), wte.data(), wpe.data(), B, TT, C);
  cpu::encoder_backward(dwte_ref.data(), dwpe_ref.data(), dout.data(), tokens.data(), B, TT, C);

  // Gradients sum up to (number of repeats) unit-sized terms: scale the absolute tolerance.
  const double repeats = std::max(1.0, double(N) / V) + 1;
  expect_close("encoder_forward out " + label, got[0], out_ref, default_tolerance<T>(2));
  expect_close("encoder_backward dwte " + label, got[1], dwte_ref,
               default_tolerance<T>(std::sqrt(repeats) * 2));
  expect_close("encoder_backward dwpe " + label, got[2], dwpe_ref,
               default_tolerance<T>(std::sqrt(double(B) + 1) * 2));
}

const EncoderShape kShapes[] = {
    {1, 1, 8, 3},        // T=1: one token, the smallest sort
    {2, 5, 768, 37},     // GPT-2 width, odd T, partial last block
    {3, 7, 24, 4},       // many repeats of few tokens (long runs in the sorted order)
    {4, 33, 64, 50},     // odd T, N not a power of two
    {3, 1100, 16, 300},  // N=3300 > 2048: global merge passes of the token sort
    {1, 4500, 8, 2},     // N=4500: two merge levels, runs of ~2250 equal tokens
};

TEST(EncoderKernels, Fp32MatchesCpu) {
  uint32_t seed = 100;
  for (const EncoderShape& shape : kShapes) check_encoder<float>(shape, seed += 10);
}

TEST(EncoderKernels, Bf16MatchesCpu) {
  uint32_t seed = 200;
  for (const EncoderShape& shape : kShapes) check_encoder<__nv_bfloat16>(shape, seed += 10);
}

TEST(EncoderKernels, LaunchersRejectBadShapes) {
  DeviceArray<float> a(64), b(64), c(64);
  DeviceArray<int> tokens(4);
  // C=6 is not a multiple of the 4-float pack.
  EXPECT_THROW(encoder_forward(a.get(), tokens.get(), b.get(), c.get(), 1, 2, 6, nullptr), Error);
  // Misaligned base pointer.
  EXPECT_THROW(encoder_forward(a.get() + 1, tokens.get(), b.get(), c.get(), 1, 2, 4, nullptr),
               Error);
  EXPECT_THROW(encoder_forward(a.get(), tokens.get(), b.get(), c.get(), 0, 2, 4, nullptr), Error);
  // Missing scratch.
  EXPECT_THROW(encoder_backward(a.get(), b.get(), c.get(), tokens.get(), 1, 2, 4, nullptr, nullptr),
               Error);
}

}  // namespace
}  // namespace slim::kernel_test
