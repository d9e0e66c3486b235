// Emulated tests of kernels/matmul.cuh against the CPU backend's matmul (cpu_ops.h).
//
// The GEMMs run in the emulator's cuBLASLt, which checks every layout, leading dimension and
// epilogue strictly, so these tests pin down the row-major <-> column-major transposes written in
// matmul.cuh. Every combination of the options is covered: bias or not, GELU epilogue or not,
// DGELU or not, dbias or not, dweight/dbias overwritten or accumulated. Shapes: odd sizes with no
// bias or GELU (which need multiples of the pack / of 8), one row, a tail of row slices and of
// column packs in the bias sum, and GPT-2's C = 768 with OC = 4C.
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include "backend/cpu/cpu_ops.h"
#include "kernels/matmul.cuh"

namespace slim::kernel_test {
namespace {

struct MatmulCase {
  int N, C, OC;
  bool bias;        // forward bias and backward dbias
  bool gelu;        // forward GELU epilogue; backward DGELU on the input side (needs C % 8 == 0)
  bool accumulate;  // backward: dweight/dbias +=
};

std::string describe(const MatmulCase& m) {
  return cat("N=", m.N, " C=", m.C, " OC=", m.OC, m.bias ? " bias" : "", m.gelu ? " gelu" : "",
             m.accumulate ? " accumulate" : "");
}

const MatmulCase kCases[] = {
    {5, 7, 3, false, false, false},       // odd everything: plain GEMMs only
    {1, 16, 8, true, true, false},        // one row
    {37, 24, 40, true, true, true},       // bias packs with a partial column block
    {37, 24, 40, false, true, false},     // GELU without bias
    {130, 32, 48, true, false, true},     // three row slices in the bias sum (64 rows each)
    {300, 40, 264, true, true, false},    // five slices, last one short; 264 = 256 + a tail pack
    {65, 768, 3072, true, true, true},    // GPT-2's MLP up-projection (a pair of its rows)
    {20, 3072, 768, true, false, false},  // and the down-projection
};

// Absolute tolerance scale: the largest reference value, and at least the size of the summed
// terms (sqrt(k) * |a| * |b| for random inputs in [-1, 1]), which bounds the cancellation error.
template <typename floatX>
Tolerance matmul_tolerance(const std::vector<float>& ref, int k) {
  double magnitude = std::sqrt(double(k)) / 3;
  for (float x : ref) magnitude = std::max(magnitude, double(std::fabs(x)));
  return default_tolerance<floatX>(magnitude);
}

class MatmulTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CUBLAS_CHECK(cublasLtCreate(&ctx_.handle));
    CUDA_CHECK(cudaMalloc(&ctx_.workspace, kMatmulWorkspaceBytes));
    ctx_.workspace_bytes = kMatmulWorkspaceBytes;
  }
  void TearDown() override {
    cudaFree(ctx_.workspace);
    cublasLtDestroy(ctx_.handle);
  }

  template <typename floatX>
  void check_forward(const MatmulCase& m, uint32_t seed) {
    SCOPED_TRACE(describe(m));
    const std::vector<float> inp = round_through<floatX>(random_floats(size_t(m.N) * m.C, -1, 1, seed));
    const std::vector<float> weight =
        round_through<floatX>(random_floats(size_t(m.OC) * m.C, -1, 1, seed + 1));
    const std::vector<float> bias = round_through<floatX>(random_floats(m.OC, -1, 1, seed + 2));
    const size_t n_out = size_t(m.N) * m.OC;

    std::vector<float> ref_out(n_out), ref_pre(m.gelu ? n_out : 0);
    cpu::matmul_forward(ref_out.data(), m.gelu ? ref_pre.data() : nullptr, inp.data(),
                        weight.data(), m.bias ? bias.data() : nullptr, m.N, m.C, m.OC);

    const Outputs got = run_in_both_orders([&] {
      DeviceArray<floatX> d_inp(to_storage<floatX>(inp)), d_weight(to_storage<floatX>(weight));
      DeviceArray<floatX> d_bias(to_storage<floatX>(bias));
      DeviceArray<floatX> d_out(n_out), d_pre(n_out);
      matmul_forward(d_out.get(), m.gelu ? d_pre.get() : nullptr, d_inp.get(), d_weight.get(),
                     m.bias ? d_bias.get() : nullptr, m.N, m.C, m.OC, ctx_, nullptr);
      Outputs result{to_floats(d_out.download())};
      if (m.gelu) result.push_back(to_floats(d_pre.download()));
      return result;
    });
    const std::string tag = cat(dtype_label<floatX>(), " ", describe(m));
    expect_close("matmul_forward out " + tag, got[0], ref_out, matmul_tolerance<floatX>(ref_out, m.C));
    if (m.gelu)
      expect_close("matmul_forward gelu_pre " + tag, got[1], ref_pre,
                   matmul_tolerance<floatX>(ref_pre, m.C));
  }

  template <typename floatX>
  void check_backward(const MatmulCase& m, uint32_t seed) {
    SCOPED_TRACE(describe(m));
    const size_t n_inp = size_t(m.N) * m.C, n_w = size_t(m.OC) * m.C, n_out = size_t(m.N) * m.OC;
    const std::vector<float> inp = round_through<floatX>(random_floats(n_inp, -1, 1, seed));
    const std::vector<float> weight = round_through<floatX>(random_floats(n_w, -1, 1, seed + 1));
    const std::vector<float> dout = round_through<floatX>(random_floats(n_out, -1, 1, seed + 2));
    // The input's pre-activation (the backward of a matmul fed by GELU): spans GELU's curved part.
    const std::vector<float> gelu_pre = round_through<floatX>(random_floats(n_inp, -3, 3, seed + 3));
    // Starting gradients: must survive (accumulate) or be ignored (overwrite).
    const std::vector<float> dweight0 = round_through<floatX>(random_floats(n_w, -1, 1, seed + 4));
    const std::vector<float> dbias0 = round_through<floatX>(random_floats(m.OC, -1, 1, seed + 5));

    std::vector<float> ref_dinp(n_inp), ref_dweight = dweight0, ref_dbias = dbias0;
    cpu::matmul_backward(ref_dinp.data(), ref_dweight.data(), m.bias ? ref_dbias.data() : nullptr,
                         dout.data(), inp.data(), weight.data(),
                         m.gelu ? gelu_pre.data() : nullptr, m.N, m.C, m.OC, m.accumulate);

    const Outputs got = run_in_both_orders([&] {
      DeviceArray<floatX> d_inp(to_storage<floatX>(inp)), d_weight(to_storage<floatX>(weight));
      DeviceArray<floatX> d_dout(to_storage<floatX>(dout)), d_pre(to_storage<floatX>(gelu_pre));
      DeviceArray<floatX> d_dweight(to_storage<floatX>(dweight0)), d_dbias(to_storage<floatX>(dbias0));
      DeviceArray<floatX> d_dinp(n_inp);  // poisoned: overwritten by the GEMM
      DeviceArray<uint8_t> scratch(matmul_backward_scratch_bytes(m.N, m.OC));
      matmul_backward(d_dinp.get(), d_dweight.get(), m.bias ? d_dbias.get() : nullptr,
                      d_dout.get(), d_inp.get(), d_weight.get(), m.gelu ? d_pre.get() : nullptr,
                      m.N, m.C, m.OC, m.accumulate, m.bias ? scratch.get() : nullptr, ctx_,
                      nullptr);
      Outputs result{to_floats(d_dinp.download()), to_floats(d_dweight.download())};
      if (m.bias) result.push_back(to_floats(d_dbias.download()));
      return result;
    });
    const std::string tag = cat(dtype_label<floatX>(), " ", describe(m));
    expect_close("matmul_backward dinp " + tag, got[0], ref_dinp, matmul_tolerance<floatX>(ref_dinp, m.OC));
    expect_close("matmul_backward dweight " + tag, got[1], ref_dweight,
                 matmul_tolerance<floatX>(ref_dweight, m.N));
    if (m.bias)
      expect_close("matmul_backward dbias " + tag, got[2], ref_dbias,
                   matmul_tolerance<floatX>(ref_dbias, m.N));
  }

  MatmulContext ctx_;
};

TEST_F(MatmulTest, ForwardFp32) {
  uint32_t seed = 1000;
  for (const MatmulCase& m : kCases) check_forward<float>(m, seed += 10);
}
TEST_F(MatmulTest, ForwardBf16) {
  uint32_t seed = 2000;
  for (const MatmulCase& m : kCases) check_forward<__nv_bfloat16>(m, seed += 10);
}
TEST_F(MatmulTest, BackwardFp32) {
  uint32_t seed = 3000;
  for (const MatmulCase& m : kCases) check_backward<float>(m, seed += 10);
}
TEST_F(MatmulTest, BackwardBf16) {
  uint32_t seed = 4000;
  for (const MatmulCase& m : kCases) check_backward<__nv_bfloat16>(m, seed += 10);
}

// The launchers reject what cuBLASLt's epilogues or the bias kernels cannot do, naming it.
TEST_F(MatmulTest, RejectsBadArguments) {
  DeviceArray<float> a(4096), b(4096), c(4096), d(4096);
  DeviceArray<uint8_t> scratch(4096);
  // OC = 12 is not a multiple of 8: no GELU epilogue.
  EXPECT_THROW(matmul_forward<float>(a.get(), b.get(), c.get(), d.get(), nullptr, 4, 8, 12, ctx_, nullptr),
               Error);
  // gelu_pre aliasing out.
  EXPECT_THROW(matmul_forward<float>(a.get(), a.get(), c.get(), d.get(), nullptr, 4, 8, 16, ctx_, nullptr),
               Error);
  EXPECT_THROW(matmul_forward<float>(a.get(), nullptr, c.get(), d.get(), nullptr, 0, 8, 16, ctx_, nullptr),
               Error);
  // dbias without scratch.
  EXPECT_THROW(matmul_backward<float>(a.get(), b.get(), c.get(), d.get(), a.get(), b.get(), nullptr, 4, 8,
                               16, false, nullptr, ctx_, nullptr),
               Error);
  // dbias over rows of 6 floats: not a whole number of 16-byte packs.
  EXPECT_THROW(matmul_backward<float>(a.get(), b.get(), c.get(), d.get(), a.get(), b.get(), nullptr, 4, 8,
                               6, false, scratch.get(), ctx_, nullptr),
               Error);
  // A misaligned operand (one float past an allocation's start).
  EXPECT_THROW(matmul_forward<float>(a.get(), nullptr, c.get() + 1, d.get(), nullptr, 4, 8, 16, ctx_,
                                     nullptr),
               Error);
  // No handle.
  MatmulContext empty;
  EXPECT_THROW(matmul_forward<float>(a.get(), nullptr, c.get(), d.get(), nullptr, 4, 8, 16, empty, nullptr),
               Error);
}

}  // namespace
}  // namespace slim::kernel_test
