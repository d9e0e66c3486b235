// Emulated tests of kernels/attention.cuh against the CPU backend's attention (cpu_ops.h).
//
// Shapes cover one token (T = 1), a single partial tile, odd T across several tiles (partial last
// query and key tiles), head sizes that do and do not fill the packed width or a multiple of 4
// (the scalar load path and the padded dims), every register budget (HS <= 32, <= 64, <= 128),
// GPT-2's C = 768 with NH = 12, and large scores (the online softmax's rescaling). Every case runs
// under the forward and the reverse schedule order and must give identical bits (the backward is
// deterministic by construction) with no emulator report.
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "kernels/attention.cuh"

namespace slim::kernel_test {
namespace {

struct AttentionShape {
  int B, T, C, NH;
  float input_scale;  // q, k, v uniform in [-input_scale, input_scale]
};

std::string describe(const AttentionShape& s) {
  return cat("B=", s.B, " T=", s.T, " C=", s.C, " NH=", s.NH, " HS=", s.C / s.NH,
             s.input_scale != 1.0f ? cat(" scale=", s.input_scale) : std::string());
}

const AttentionShape kShapes[] = {
    {1, 1, 8, 2, 1.0f},      // one token: the softmax of a single key
    {2, 5, 12, 3, 1.0f},     // HS = 4: one partial tile, fp32 packs, bf16 does not
    {1, 33, 24, 2, 1.0f},    // HS = 12: one full tile plus one row
    {2, 70, 48, 4, 1.0f},    // three tiles, the last one partial
    {1, 40, 18, 3, 1.0f},    // HS = 6: padded dims (not a multiple of 4), scalar loads
    {1, 9, 3, 3, 1.0f},      // HS = 1
    {1, 64, 40, 1, 1.0f},    // HS = 40: the HS <= 64 kernels with unused register dims
    {1, 37, 256, 2, 1.0f},   // HS = 128: the largest kernels
    {1, 50, 96, 1, 1.0f},    // HS = 96: HS <= 128 kernels with unused dim groups
    {1, 45, 768, 12, 1.0f},  // GPT-2 124M's layout
    {2, 257, 128, 2, 1.0f},  // nine tiles: long key loops in the forward and dq, long query loops in dk/dv
    {1, 100, 32, 2, 6.0f},   // large scores: the running max changes from tile to tile
};

// The dtype's default tolerance, scaled by the largest reference value (atol) and widened for
// large scores: exp(s - max) carries the fp32 rounding of s, about |s| * 2^-24 relative, and
// |s| <= sqrt(HS) * input_scale^2 (q.k over HS dims, times 1/sqrt(HS)).
template <typename floatX>
Tolerance attention_tolerance(const std::vector<float>& ref, const AttentionShape& s) {
  double magnitude = 0;
  for (float x : ref) magnitude = std::max(magnitude, double(std::fabs(x)));
  Tolerance tol = default_tolerance<floatX>(magnitude);
  const double score_bound = std::sqrt(double(s.C / s.NH)) * s.input_scale * s.input_scale;
  tol.rtol += 2 * score_bound * std::ldexp(1.0, -24);
  return tol;
}

template <typename floatX>
void check_forward(const AttentionShape& s) {
  SCOPED_TRACE(describe(s));
  const size_t n_qkv = size_t(s.B) * s.T * 3 * s.C, n_out = size_t(s.B) * s.T * s.C;
  const size_t n_lse = size_t(s.B) * s.NH * s.T;
  const std::vector<float> qkv =
      round_through<floatX>(random_floats(n_qkv, -s.input_scale, s.input_scale, 11 + s.T));

  std::vector<float> ref_out(n_out), ref_lse(n_lse);
  cpu::attention_forward(ref_out.data(), ref_lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<floatX> d_qkv(to_storage<floatX>(qkv));
    DeviceArray<floatX> d_out(n_out);
    DeviceArray<float> d_lse(n_lse);
    attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), s.B, s.T, s.C, s.NH, nullptr);
    return Outputs{to_floats(d_out.download()), d_lse.download()};
  });
  const std::string tag = cat(dtype_label<floatX>(), " ", describe(s));
  expect_close("attention_forward out " + tag, got[0], ref_out,
               attention_tolerance<floatX>(ref_out, s));
  // lse is fp32 in both modes; its inputs are the same rounded values, so it is tight in both.
  expect_close("attention_forward lse " + tag, got[1], ref_lse, attention_tolerance<float>(ref_lse, s));
}

template <typename floatX>
void check_backward(const AttentionShape& s) {
  SCOPED_TRACE(describe(s));
  const size_t n_qkv = size_t(s.B) * s.T * 3 * s.C, n_out = size_t(s.B) * s.T * s.C;
  const size_t n_lse = size_t(s.B) * s.NH * s.T;
  const std::vector<float> qkv =
      round_through<floatX>(random_floats(n_qkv, -s.input_scale, s.input_scale, 23 + s.T));
  const std::vector<float> dout = round_through<floatX>(random_floats(n_out, -1.0f, 1.0f, 37 + s.C));
  // The forward's results as the backward receives them: out stored in floatX, lse in fp32.
  std::vector<float> out(n_out), lse(n_lse);
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH);
  out = round_through<floatX>(out);

  std::vector<float> ref_dqkv(n_qkv);
  cpu::attention_backward(ref_dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B,
                          s.T, s.C, s.NH);

  const Outputs got = run_in_both_orders([&] {
    DeviceArray<floatX> d_qkv(to_storage<floatX>(qkv)), d_dout(to_storage<floatX>(dout));
    DeviceArray<floatX> d_out(to_storage<floatX>(out));
    DeviceArray<float> d_lse(lse);
    DeviceArray<floatX> d_dqkv(n_qkv);  // poisoned: every element must be written
    attention_backward(d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out.get(), d_lse.get(), s.B,
                       s.T, s.C, s.NH, nullptr);
    return Outputs{to_floats(d_dqkv.download())};
  });
  expect_close(cat("attention_backward dqkv ", dtype_label<floatX>(), " ", describe(s)), got[0],
               ref_dqkv, attention_tolerance<floatX>(ref_dqkv, s));
}

TEST(KernelsAttention, ForwardFp32) {
  for (const AttentionShape& s : kShapes) check_forward<float>(s);
}
TEST(KernelsAttention, ForwardBf16) {
  for (const AttentionShape& s : kShapes) check_forward<__nv_bfloat16>(s);
}
TEST(KernelsAttention, BackwardFp32) {
  for (const AttentionShape& s : kShapes) check_backward<float>(s);
}
TEST(KernelsAttention, BackwardBf16) {
  for (const AttentionShape& s : kShapes) check_backward<__nv_bfloat16>(s);
}

// The launchers reject what the kernels cannot do, naming the problem.
TEST(KernelsAttention, RejectsBadShapes) {
  DeviceArray<float> qkv(3 * 2 * 260), out(2 * 260), lse(2 * 2);
  auto forward = [&](int B, int T, int C, int NH) {
    attention_forward(out.get(), lse.get(), qkv.get(), B, T, C, NH, nullptr);
  };
  EXPECT_THROW(forward(1, 2, 12, 5), Error);   // C not a multiple of NH
  EXPECT_THROW(forward(1, 2, 260, 2), Error);  // HS = 130 > 128
  EXPECT_THROW(forward(1, 0, 8, 2), Error);    // T = 0
  // HS = 4 packs in fp32, so a misaligned tensor is an error rather than a silent slow path.
  EXPECT_THROW(attention_forward(out.get() + 1, lse.get(), qkv.get(), 1, 2, 8, 2, nullptr), Error);
  try {
    forward(1, 2, 260, 2);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head size"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace slim::kernel_test
