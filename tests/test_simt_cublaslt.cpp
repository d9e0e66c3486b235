// test_simt_cublaslt.cpp — the emulated cuBLASLt against a naive fp64 GEMM written here: every
// transpose × epilogue × data-type combination (with padded leading dimensions, alpha/beta and a
// strided batch), the epilogue semantics (bias, GELU, GELU aux output, DGELU, bias gradients), and
// the strictness: bad leading dimensions, unsupported epilogues and types, host pointers, missing
// epilogue pointers fail loudly.
#include "simt/cuda_compat.h"
#include "simt/device_buffer.h"

#include <cublasLt.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace {

// ----------------------------------------------------------------------------------------------
// The reference: GPT-2's GELU (tanh form) and its derivative, and a plain column-major GEMM.

double gelu_reference(double x) {
  const double inner = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(inner));
}

double gelu_derivative_reference(double x) {
  // d/dx [0.5 x (1 + tanh(u))] with u = sqrt(2/pi) (x + 0.044715 x^3)
  const double s = std::sqrt(2.0 / M_PI);
  const double u = s * (x + 0.044715 * x * x * x);
  const double t = std::tanh(u);
  const double du = s * (1.0 + 3.0 * 0.044715 * x * x);
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
}

// A stored column-major matrix (possibly a strided batch) and its values as floats.
struct HostMatrix {
  cudaDataType type;
  int64_t rows, cols, ld;
  int batches = 1;
  int64_t stride = 0;  // elements between batches
  std::vector<float> values;  // ld * cols per batch, at stride; already rounded to `type`

  float at(int batch, int64_t i, int64_t j) const { return values[batch * stride + i + j * ld]; }
  size_t elements() const { return static_cast<size_t>((batches - 1) * stride + ld * cols); }
};

float round_to(cudaDataType type, float v) {
  return type == CUDA_R_16BF ? __bfloat162float(__float2bfloat16_rn(v)) : v;
}

HostMatrix random_matrix(cudaDataType type, int64_t rows, int64_t cols, int64_t ld, int batches,
                         std::mt19937& rng) {
  HostMatrix m{type, rows, cols, ld, batches, ld * cols + 5, {}};
  std::uniform_real_distribution<float> uniform(-1.5f, 1.5f);
  m.values.resize(m.elements());
  for (float& v : m.values) v = round_to(type, uniform(rng));
  return m;
}

// Device storage of a HostMatrix in its data type.
struct DeviceMatrix {
  void* pointer = nullptr;
  size_t bytes = 0;
  explicit DeviceMatrix(const HostMatrix& m) {
    const size_t element = m.type == CUDA_R_16BF ? 2 : 4;
    bytes = m.elements() * element;
    EXPECT_EQ(cudaMalloc(&pointer, bytes), cudaSuccess);
    if (m.type == CUDA_R_16BF) {
      std::vector<__nv_bfloat16> raw(m.values.size());
      for (size_t i = 0; i < raw.size(); ++i) raw[i] = __float2bfloat16_rn(m.values[i]);
      cudaMemcpy(pointer, raw.data(), bytes, cudaMemcpyHostToDevice);
    } else {
      cudaMemcpy(pointer, m.values.data(), bytes, cudaMemcpyHostToDevice);
    }
  }
  ~DeviceMatrix() { cudaFree(pointer); }
  std::vector<float> download(cudaDataType type, size_t count) const {
    std::vector<float> out(count);
    if (type == CUDA_R_16BF) {
      std::vector<__nv_bfloat16> raw(count);
      cudaMemcpy(raw.data(), pointer, count * 2, cudaMemcpyDeviceToHost);
      for (size_t i = 0; i < count; ++i) out[i] = __bfloat162float(raw[i]);
    } else {
      cudaMemcpy(out.data(), pointer, count * 4, cudaMemcpyDeviceToHost);
    }
    return out;
  }
};

struct Case {
  cublasOperation_t transa, transb;
  cublasLtEpilogue_t epilogue;
  cudaDataType ab_type, cd_type;
  int batches;
};

std::string describe(const Case& c) {
  return std::string("transa=") + (c.transa == CUBLAS_OP_N ? "N" : "T") +
         " transb=" + (c.transb == CUBLAS_OP_N ? "N" : "T") + " epilogue=" +
         std::to_string(c.epilogue) + " ab=" + (c.ab_type == CUDA_R_16BF ? "bf16" : "f32") +
         " cd=" + (c.cd_type == CUDA_R_16BF ? "bf16" : "f32") + " batches=" + std::to_string(c.batches);
}

bool reads_bias(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS ||
         e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool writes_aux(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool reads_aux(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_DGELU || e == CUBLASLT_EPILOGUE_DGELU_BGRAD;
}
bool applies_gelu(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS || writes_aux(e);
}
bool writes_bias_gradient(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_DGELU_BGRAD || e == CUBLASLT_EPILOGUE_BGRADA ||
         e == CUBLASLT_EPILOGUE_BGRADB;
}

// cuBLASLt handles and descriptors, released at the end of a test.
struct Lt {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  Lt() {
    EXPECT_EQ(cublasLtCreate(&handle), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulPreferenceCreate(&preference), CUBLAS_STATUS_SUCCESS);
  }
  ~Lt() {
    for (auto* layout : {a, b, c, d})
      if (layout != nullptr) cublasLtMatrixLayoutDestroy(layout);
    cublasLtMatmulPreferenceDestroy(preference);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(handle);
  }
  static cublasLtMatrixLayout_t layout(const HostMatrix& m) {
    cublasLtMatrixLayout_t l = nullptr;
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&l, m.type, m.rows, m.cols, m.ld), CUBLAS_STATUS_SUCCESS);
    if (m.batches > 1) {
      const int32_t count = m.batches;
      const int64_t stride = m.stride;
      EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
                CUBLAS_STATUS_SUCCESS);
      EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                 &stride, sizeof stride),
                CUBLAS_STATUS_SUCCESS);
    }
    return l;
  }
  template <typename T>
  void set(cublasLtMatmulDescAttributes_t attribute, const T& value) {
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof value), CUBLAS_STATUS_SUCCESS);
  }
};

class SimtCublasLt : public ::testing::Test {
 protected:
  void SetUp() override { simt::reset_reports(); }
};

// Runs one case against the reference; returns whether everything matched.
void check_case(const Case& c, std::mt19937& rng) {
  SCOPED_TRACE(describe(c));
  const int64_t m = 13, n = 7, k = 9;  // awkward sizes
  const float alpha = 0.75f;
  const bool bias_gradient = writes_bias_gradient(c.epilogue);
  const float beta = bias_gradient ? 0.0f : 0.5f;
  // Stored shapes before the transposes; leading dimensions padded past the rows.
  const int64_t a_rows = c.transa == CUBLAS_OP_N ? m : k, a_cols = c.transa == CUBLAS_OP_N ? k : m;
  const int64_t b_rows = c.transb == CUBLAS_OP_N ? k : n, b_cols = c.transb == CUBLAS_OP_N ? n : k;
  HostMatrix A = random_matrix(c.ab_type, a_rows, a_cols, a_rows + 3, c.batches, rng);
  HostMatrix B = random_matrix(c.ab_type, b_rows, b_cols, b_rows + 1, c.batches, rng);
  HostMatrix C = random_matrix(c.cd_type, m, n, m + 2, c.batches, rng);
  HostMatrix D = C;  // same layout; its values are written by the matmul
  const int64_t aux_ld = 16;  // >= m, divisible by 8
  HostMatrix aux = random_matrix(c.cd_type, m, n, aux_ld, c.batches, rng);
  aux.stride = aux_ld * n;  // divisible by 8
  aux.values.resize(aux.elements());
  const int64_t bias_length = c.epilogue == CUBLASLT_EPILOGUE_BGRADB ? n : m;
  HostMatrix bias = random_matrix(c.cd_type, bias_length, 1, bias_length, c.batches, rng);
  bias.stride = bias_length + 3;
  bias.values.resize(bias.elements());
  for (float& v : bias.values) v = round_to(c.cd_type, v);

  DeviceMatrix dA(A), dB(B), dC(C), dD(D), dAux(aux), dBias(bias);
  if (bias_gradient) cudaMemset(dC.pointer, 0xFF, dC.bytes);  // NaN: beta == 0 must not read C

  Lt lt;
  lt.set(CUBLASLT_MATMUL_DESC_TRANSA, static_cast<int32_t>(c.transa));
  lt.set(CUBLASLT_MATMUL_DESC_TRANSB, static_cast<int32_t>(c.transb));
  lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(c.epilogue));
  if (reads_bias(c.epilogue) || bias_gradient) {
    lt.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(dBias.pointer));
    lt.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, static_cast<int64_t>(bias.stride));
  }
  if (writes_aux(c.epilogue) || reads_aux(c.epilogue)) {
    lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, dAux.pointer);
    lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
    lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, static_cast<int64_t>(aux.stride));
  }
  lt.a = Lt::layout(A);
  lt.b = Lt::layout(B);
  lt.c = Lt::layout(C);
  lt.d = Lt::layout(D);
  cublasLtMatmulHeuristicResult_t heuristic{};
  int returned = 0;
  ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(lt.handle, lt.desc, lt.a, lt.b, lt.c, lt.d, lt.preference,
                                           1, &heuristic, &returned),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(returned, 1);
  ASSERT_EQ(cublasLtMatmul(lt.handle, lt.desc, &alpha, dA.pointer, lt.a, dB.pointer, lt.b, &beta,
                           dC.pointer, lt.c, dD.pointer, lt.d, &heuristic.algo, nullptr, 0, nullptr),
            CUBLAS_STATUS_SUCCESS);

  const auto got_d = dD.download(c.cd_type, D.elements());
  const auto got_aux = dAux.download(c.cd_type, aux.elements());
  const auto got_bias = dBias.download(c.cd_type, bias.elements());
  const bool bf16_out = c.cd_type == CUDA_R_16BF;
  auto close = [&](double got, double want) {
    const double tolerance = bf16_out ? 1e-2 + 8e-3 * std::abs(want) : 2e-5 + 2e-5 * std::abs(want);
    return std::abs(got - want) <= tolerance;
  };
  for (int batch = 0; batch < c.batches; ++batch) {
    std::vector<double> bias_grad(bias_length, 0.0);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < m; ++i) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p) {
          const double a = c.transa == CUBLAS_OP_N ? A.at(batch, i, p) : A.at(batch, p, i);
          const double b = c.transb == CUBLAS_OP_N ? B.at(batch, p, j) : B.at(batch, j, p);
          acc += a * b;
        }
        double z = alpha * acc + beta * C.at(batch, i, j);
        if (reads_bias(c.epilogue)) z += bias.at(batch, i, 0);
        if (writes_aux(c.epilogue)) {
          const double stored = got_aux[batch * aux.stride + i + j * aux_ld];
          ASSERT_TRUE(close(stored, z)) << "aux (" << i << "," << j << ") " << stored << " vs " << z;
        }
        if (applies_gelu(c.epilogue)) z = gelu_reference(z);
        if (reads_aux(c.epilogue)) z *= gelu_derivative_reference(aux.at(batch, i, j));
        if (c.epilogue == CUBLASLT_EPILOGUE_DGELU_BGRAD) bias_grad[i] += z;
        const double d = got_d[batch * D.stride + i + j * D.ld];
        ASSERT_TRUE(close(d, z)) << "D (" << i << "," << j << ") batch " << batch << ": " << d
                                 << " vs " << z;
      }
    }
    if (c.epilogue == CUBLASLT_EPILOGUE_BGRADA)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p < k; ++p)
          bias_grad[i] += c.transa == CUBLAS_OP_N ? A.at(batch, i, p) : A.at(batch, p, i);
    if (c.epilogue == CUBLASLT_EPILOGUE_BGRADB)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t p = 0; p < k; ++p)
          bias_grad[j] += c.transb == CUBLAS_OP_N ? B.at(batch, p, j) : B.at(batch, j, p);
    if (bias_gradient)
      for (int64_t i = 0; i < bias_length; ++i) {
        const double got = got_bias[batch * bias.stride + i];
        ASSERT_TRUE(close(got, bias_grad[i]) ||
                    std::abs(got - bias_grad[i]) <= 1e-2 * (1 + std::abs(bias_grad[i])))
            << "bias gradient " << i << ": " << got << " vs " << bias_grad[i];
      }
    // The matmul touched nothing but D inside C's/D's padding rows.
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = m; i < D.ld; ++i)
        ASSERT_EQ(got_d[batch * D.stride + i + j * D.ld], D.at(batch, i, j)) << "padding written";
  }
}

}  // namespace

TEST_F(SimtCublasLt, EveryTransposeEpilogueAndTypeMatchesTheReference) {
  std::mt19937 rng(2024);
  const cublasLtEpilogue_t epilogues[] = {
      CUBLASLT_EPILOGUE_DEFAULT,  CUBLASLT_EPILOGUE_BIAS,          CUBLASLT_EPILOGUE_GELU,
      CUBLASLT_EPILOGUE_GELU_BIAS, CUBLASLT_EPILOGUE_GELU_AUX,     CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
      CUBLASLT_EPILOGUE_DGELU,    CUBLASLT_EPILOGUE_DGELU_BGRAD,   CUBLASLT_EPILOGUE_BGRADA,
      CUBLASLT_EPILOGUE_BGRADB};
  const std::pair<cudaDataType, cudaDataType> types[] = {
      {CUDA_R_32F, CUDA_R_32F}, {CUDA_R_16BF, CUDA_R_16BF}, {CUDA_R_16BF, CUDA_R_32F}};
  int cases = 0;
  for (auto transa : {CUBLAS_OP_N, CUBLAS_OP_T})
    for (auto transb : {CUBLAS_OP_N, CUBLAS_OP_T})
      for (auto epilogue : epilogues)
        for (auto [ab, cd] : types)
          for (int batches : {1, 2}) {
            check_case({transa, transb, epilogue, ab, cd, batches}, rng);
            ++cases;
            if (HasFatalFailure()) return;
          }
  EXPECT_EQ(cases, 2 * 2 * 10 * 3 * 2);
  EXPECT_EQ(simt::report_count(), 0);
}

// The semantics spelled out on tiny numbers, so a reader can check them by hand.
TEST_F(SimtCublasLt, EpilogueSemanticsOnAHandWorkedExample) {
  // A = [1 2; 3 4] (2x2), B = identity: op(A) op(B) = A. Column-major storage.
  const std::vector<float> a = {1, 3, 2, 4}, identity = {1, 0, 0, 1}, bias = {10, 20};
  simt::DeviceBuffer<float> dA(a), dB(identity), dD(4), dBias(bias), dAux(8 * 2);
  Lt lt;
  lt.a = Lt::layout({CUDA_R_32F, 2, 2, 2, 1, 0, {}});
  lt.b = Lt::layout({CUDA_R_32F, 2, 2, 2, 1, 0, {}});
  lt.c = Lt::layout({CUDA_R_32F, 2, 2, 2, 1, 0, {}});
  lt.d = Lt::layout({CUDA_R_32F, 2, 2, 2, 1, 0, {}});
  const float one = 1.0f, zero = 0.0f;
  auto run = [&](cublasLtEpilogue_t epilogue) {
    lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(epilogue));
    lt.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(dBias.get()));
    lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(dAux.get()));
    lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<int64_t>(8));
    EXPECT_EQ(cublasLtMatmul(lt.handle, lt.desc, &one, dA.get(), lt.a, dB.get(), lt.b, &zero,
                             dD.get(), lt.c, dD.get(), lt.d, nullptr, nullptr, 0, nullptr),
              CUBLAS_STATUS_SUCCESS);
    return dD.download();
  };
  EXPECT_EQ(run(CUBLASLT_EPILOGUE_BIAS), (std::vector<float>{11, 23, 12, 24}));  // bias per row
  const auto gelu = run(CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
  const auto aux = dAux.download();
  EXPECT_EQ(aux[0], 11.0f);  // the GELU input, bias included
  EXPECT_EQ(aux[8 + 1], 24.0f);
  EXPECT_FLOAT_EQ(gelu[0], static_cast<float>(gelu_reference(11.0)));
  // BGRADA: bias[i] = sum over k of op(A)[i, k] (rows of A); BGRADB: sum over k of op(B)[k, j].
  const auto d = run(CUBLASLT_EPILOGUE_BGRADA);
  EXPECT_EQ(d, a);
  EXPECT_EQ(dBias.download(), (std::vector<float>{3, 7}));
  run(CUBLASLT_EPILOGUE_BGRADB);
  EXPECT_EQ(dBias.download(), (std::vector<float>{1, 1}));
  EXPECT_EQ(simt::report_count(), 0);
}

TEST_F(SimtCublasLt, InPlaceAccumulationWithCEqualToD) {
  const std::vector<float> a = {1, 2, 3, 4}, b = {1, 0, 0, 1}, d0 = {100, 100, 100, 100};
  simt::DeviceBuffer<float> dA(a), dB(b), dD(d0);
  Lt lt;
  for (auto** l : {&lt.a, &lt.b, &lt.c, &lt.d}) *l = Lt::layout({CUDA_R_32F, 2, 2, 2, 1, 0, {}});
  const float one = 1.0f;
  ASSERT_EQ(cublasLtMatmul(lt.handle, lt.desc, &one, dA.get(), lt.a, dB.get(), lt.b, &one, dD.get(),
                           lt.c, dD.get(), lt.d, nullptr, nullptr, 0, nullptr),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(dD.download(), (std::vector<float>{101, 102, 103, 104}));
}

// ----------------------------------------------------------------------------------------------
// Strictness.

class SimtCublasLtRejects : public SimtCublasLt {
 protected:
  void SetUp() override {
    SimtCublasLt::SetUp();
    lt.a = Lt::layout({CUDA_R_32F, 4, 4, 4, 1, 0, {}});
    lt.b = Lt::layout({CUDA_R_32F, 4, 4, 4, 1, 0, {}});
    lt.c = Lt::layout({CUDA_R_32F, 4, 4, 4, 1, 0, {}});
    lt.d = Lt::layout({CUDA_R_32F, 4, 4, 4, 1, 0, {}});
  }
  cublasStatus_t run(const void* a_pointer = nullptr) {
    return cublasLtMatmul(lt.handle, lt.desc, &one, a_pointer ? a_pointer : A.get(), lt.a, B.get(),
                          lt.b, &zero, D.get(), lt.c, D.get(), lt.d, nullptr, nullptr, 0, nullptr);
  }
  cublasStatus_t heuristic() {
    cublasLtMatmulHeuristicResult_t result{};
    int returned = -1;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        lt.handle, lt.desc, lt.a, lt.b, lt.c, lt.d, lt.preference, 1, &result, &returned);
    EXPECT_EQ(returned, status == CUBLAS_STATUS_SUCCESS ? 1 : 0);
    return status;
  }
  void expect_report(const char* fragment) {
    const auto all = simt::reports();
    ASSERT_FALSE(all.empty());
    EXPECT_NE(all.back().find(fragment), std::string::npos) << all.back();
  }
  Lt lt;
  simt::DeviceBuffer<float> A{16}, B{16}, D{16};
  const float one = 1.0f, zero = 0.0f;
};

TEST_F(SimtCublasLtRejects, LeadingDimensionSmallerThanRows) {
  cublasLtMatrixLayoutDestroy(lt.a);
  lt.a = Lt::layout({CUDA_R_32F, 4, 4, 3, 1, 0, {}});
  EXPECT_EQ(heuristic(), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(run(), CUBLAS_STATUS_INVALID_VALUE);
  expect_report("leading dimension 3 is smaller than its 4 rows");
}

TEST_F(SimtCublasLtRejects, UnsupportedEpilogue) {
  lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_RELU_BIAS));
  EXPECT_EQ(heuristic(), CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(run(), CUBLAS_STATUS_NOT_SUPPORTED);
  expect_report("epilogue RELU_BIAS");
}

TEST_F(SimtCublasLtRejects, UnsupportedTypesAndComputeTypes) {
  cublasLtMatrixLayoutDestroy(lt.d);
  lt.d = Lt::layout({CUDA_R_16F, 4, 4, 4, 1, 0, {}});
  EXPECT_EQ(run(), CUBLAS_STATUS_NOT_SUPPORTED);
  cublasLtMatrixLayoutDestroy(lt.d);
  lt.d = Lt::layout({CUDA_R_32F, 4, 4, 4, 1, 0, {}});
  lt.set(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, static_cast<int32_t>(CUBLAS_COMPUTE_16F));
  EXPECT_EQ(run(), CUBLAS_STATUS_NOT_SUPPORTED);
  expect_report("compute type");
}

TEST_F(SimtCublasLtRejects, ShapesThatDoNotChain) {
  cublasLtMatrixLayoutDestroy(lt.b);
  lt.b = Lt::layout({CUDA_R_32F, 3, 4, 4, 1, 0, {}});
  EXPECT_EQ(run(), CUBLAS_STATUS_INVALID_VALUE);
  expect_report("shapes do not chain");
}

TEST_F(SimtCublasLtRejects, HostPointers) {
  std::vector<float> host(16, 1.0f);
  EXPECT_EQ(run(host.data()), CUBLAS_STATUS_INVALID_VALUE);
  expect_report("not inside one device allocation");
}

TEST_F(SimtCublasLtRejects, MissingOrBadEpiloguePointers) {
  lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_BIAS));
  EXPECT_EQ(run(), CUBLAS_STATUS_INVALID_VALUE);
  expect_report("needs BIAS_POINTER");
  lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_GELU_AUX));
  lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(B.get()));
  lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<int64_t>(4));  // not divisible by 8
  EXPECT_EQ(run(), CUBLAS_STATUS_INVALID_VALUE);
  expect_report("EPILOGUE_AUX_LD 4");
  lt.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<int64_t>(8));  // 8 x 4 floats > B's 16
  EXPECT_EQ(run(), CUBLAS_STATUS_INVALID_VALUE);
  expect_report("aux");
}

TEST_F(SimtCublasLtRejects, UnknownAttributesAndWrongSizes) {
  const int32_t value = 0;
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, &value, sizeof value),
            CUBLAS_STATUS_NOT_SUPPORTED);
  const int16_t too_small = 0;
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_TRANSA, &too_small, sizeof too_small),
            CUBLAS_STATUS_INVALID_VALUE);
  const int32_t order = CUBLASLT_ORDER_ROW;
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(lt.a, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(run(), CUBLAS_STATUS_NOT_SUPPORTED);
  expect_report("column-major");
}
