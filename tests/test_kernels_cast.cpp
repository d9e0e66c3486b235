// Emulated tests of kernels/cast.cuh: fp32 -> bf16 must round to nearest even exactly like the
// host conversion (__float2bfloat16_rn), including ties, NaN, infinities, denormals and overflow
// to infinity; bf16 -> fp32 and same-type copies must be exact; partial last blocks.
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include <limits>

#include "kernels/cast.cuh"

namespace slim::kernel_test {
namespace {

std::vector<float> test_values(size_t n, uint32_t seed) {
  std::vector<float> values = random_floats(n, -100, 100, seed);
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f + std::ldexp(1.0f, -8),      // a tie: rounds to even (1.0)
                            1.0f + 3 * std::ldexp(1.0f, -8),  // a tie: rounds to even (up)
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::nanf(""),
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max(),  // overflows bf16 to infinity
                            1e-40f};
  for (size_t k = 0; k < std::size(specials) && k < n; ++k) values[k] = specials[k];
  return values;
}

// Round to nearest even by integer arithmetic, written independently of the CUDA headers: add
// 0x7fff plus the lowest kept bit, then drop the low 16 bits. NaN is kept a (quiet) NaN.
float reference_round_to_bf16(float x) {
  if (std::isnan(x)) return x;
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
  float result;
  std::memcpy(&result, &bits, 4);
  return result;
}

TEST(CastKernels, Fp32ToBf16RoundsToNearestEven) {
  using bf16 = __nv_bfloat16;
  for (size_t n : {size_t(10), size_t(513), size_t(100003)}) {
    const std::vector<float> values = test_values(n, uint32_t(n));
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<float> in(values);
      DeviceArray<bf16> out(n);
      cast_copy(out.get(), in.get(), n, nullptr);
      return Outputs{to_floats(out.download())};
    });
    std::vector<float> ref(n);
    for (size_t i = 0; i < n; ++i) ref[i] = reference_round_to_bf16(values[i]);
    expect_close("cast fp32->bf16 n=" + std::to_string(n), got[0], ref, Tolerance{0, 0});
    // The special values, spelled out.
    EXPECT_EQ(got[0][2], 1.0f);                           // tie, rounds down to even
    EXPECT_EQ(got[0][3], 1.0f + std::ldexp(1.0f, -6));    // tie, rounds up to even
    EXPECT_TRUE(std::isinf(got[0][8]) && got[0][8] > 0);  // FLT_MAX overflows bf16
    EXPECT_TRUE(std::isnan(got[0][6]));
    EXPECT_TRUE(std::signbit(got[0][1]));  // -0 stays -0
  }
}

TEST(CastKernels, Bf16ToFp32AndCopiesAreExact) {
  using bf16 = __nv_bfloat16;
  const size_t n = 4099;
  const std::vector<float> values = round_through<bf16>(test_values(n, 3));
  const Outputs got = run_in_both_orders([&] {
    DeviceArray<bf16> in(to_storage<bf16>(values)), copy(n);
    DeviceArray<float> out(n), out_copy(n);
    cast_copy(out.get(), in.get(), n, nullptr);
    cast_copy(copy.get(), in.get(), n, nullptr);
    cast_copy(out_copy.get(), out.get(), n, nullptr);
    return Outputs{out.download(), to_floats(copy.download()), out_copy.download()};
  });
  for (const auto& result : got) EXPECT_TRUE(bitwise_equal({result}, {values}));
  expect_close("cast bf16->fp32 n=4099", got[0], values, Tolerance{0, 0});
}

TEST(CastKernels, RejectsNullPointers) {
  DeviceArray<float> a(4);
  EXPECT_THROW(cast_copy(static_cast<__nv_bfloat16*>(nullptr), a.get(), 4, nullptr), Error);
  EXPECT_NO_THROW(cast_copy(static_cast<__nv_bfloat16*>(nullptr), a.get(), 0, nullptr));
}

}  // namespace
}  // namespace slim::kernel_test
