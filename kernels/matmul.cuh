// matmul.cuh — the linear layer: cuBLASLt GEMMs with fused bias / GELU epilogues, and a
// deterministic bias-gradient column sum.
//
// Forward:  out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC]
//           with gelu_pre: gelu_pre = that result, out = gelu_tanh(gelu_pre)  (GELU_AUX epilogue)
// Backward: dinp[N,C]     = dout[N,OC] @ weight[OC,C]       (overwritten)
//                           * gelu'(gelu_pre_of_inp)         (DGELU epilogue, when given)
//           dweight[OC,C] (+)= dout^T @ inp                  (beta = 1 accumulates)
//           dbias[OC]     (+)= column sums of dout           (two small kernels, fixed order)
//
// Row-major tensors as cuBLASLt's column-major matrices. A row-major X[R,K] (row stride K) is,
// byte for byte, the column-major matrix X^T[K,R] with leading dimension K. So every product is
// written transposed, (P Q)^T = Q^T P^T, and each row-major operand is passed as its transpose:
//
//   forward   out^T[OC,N] = W[OC,C] . inp^T[C,N]
//             A = weight buffer = col-major [C,OC] (ld C), op(A) = T  -> [OC,C]
//             B = inp buffer    = col-major [C,N]  (ld C), op(B) = N  -> [C,N]
//             D = out buffer    = col-major [OC,N] (ld OC);  m = OC, n = N, k = C
//             bias has rows(D) = OC elements, broadcast over the N columns: bias[oc] per row of out.
//             aux (gelu_pre) has D's layout, ld OC.
//   dinp      dinp^T[C,N] = W^T[C,OC] . dout^T[OC,N]
//             A = weight buffer = col-major [C,OC] (ld C),  op(A) = N
//             B = dout buffer   = col-major [OC,N] (ld OC), op(B) = N
//             D = dinp buffer   = col-major [C,N]  (ld C);  m = C, n = N, k = OC
//             aux (gelu_pre_of_inp, row-major [N,C]) has D's layout, ld C.
//   dweight   dW^T[C,OC] = inp^T[C,N] . dout[N,OC]
//             A = inp buffer    = col-major [C,N]  (ld C),  op(A) = N
//             B = dout buffer   = col-major [OC,N] (ld OC), op(B) = T  -> [N,OC]
//             C = D = dweight buffer = col-major [C,OC] (ld C) = row-major [OC,C]; m = C, n = OC,
//             k = N; beta = 1 adds onto the previous dweight.
//
// Why dbias is not cuBLASLt's BGRADB epilogue: the epilogue overwrites the bias gradient, while
// backend.h needs dbias += when accumulating, and a separate column sum with a fixed order keeps
// the result bit-reproducible. The rows are cut into at most kBiasMaxSlices slices (a function of
// N only); one kernel sums each slice's columns into fp32 partials, a second adds the partials in
// slice order onto dbias.
//
// Compute is fp32 in both modes (CUBLAS_COMPUTE_32F: no TF32 for fp32 tensors, so the fp32 mode
// matches the CPU backend closely); bf16 tensors are read and written as bf16.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "cuda_check.h"
#include "packed.h"
#include "workspace_sizes.h"  // kMatmulWorkspaceBytes, matmul_backward_scratch_bytes

namespace slim {

// What every GEMM needs besides its tensors: a cuBLASLt handle and a device workspace (cuBLASLt's
// faster algorithms use one; 32 MiB is what NVIDIA recommends for Hopper).
struct MatmulContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;  // device memory of workspace_bytes, in use while a GEMM runs
  size_t workspace_bytes = 0;
};
// kMatmulWorkspaceBytes (32 MiB, what NVIDIA recommends for Hopper) is in workspace_sizes.h.

namespace matmul_detail {

constexpr int kBiasWarps = 8;  // warps of a partial-sum block split its rows
constexpr int kBiasThreads = 32 * kBiasWarps;
constexpr int kBiasFinalThreads = 256;
// The row slicing (bias_row_slices) that matmul_backward_scratch_bytes depends on is in
// workspace_sizes.h.

}  // namespace matmul_detail

// ---- CUDA kernels ---------------------------------------------------------------------------

// partials[slice, c] = sum of dout[r, c] over the rows r of the slice, in a fixed order: warp w
// adds rows begin + w, begin + w + kBiasWarps, ... in registers, then the warps' sums are added
// in warp order. Grid (ceil(OC / (32 * pack)), n_slices), block kBiasThreads; lane l of every
// warp owns the pack of columns starting at (blockIdx.x * 32 + l) * pack. OC % pack == 0.
template <typename floatX>
__global__ void __launch_bounds__(matmul_detail::kBiasThreads)
    matmul_backward_bias_partial_kernel(float* partials, const floatX* dout, int N, int OC,
                                        int rows_per_slice) {
  using namespace matmul_detail;
  using Pack = Packed128<floatX>;
  constexpr int kColumns = 32 * Pack::size;  // columns per block
  __shared__ float warp_sums[kBiasWarps][kColumns];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int block_col0 = blockIdx.x * kColumns;
  const int col = block_col0 + lane * Pack::size;
  const int row_begin = blockIdx.y * rows_per_slice;
  const int row_end = min(N, row_begin + rows_per_slice);

  float acc[Pack::size];
#pragma unroll
  for (int k = 0; k < Pack::size; ++k) acc[k] = 0.0f;
  if (col < OC) {
    for (int r = row_begin + warp; r < row_end; r += kBiasWarps) {
      const Pack g = load128cs(dout + static_cast<size_t>(r) * OC + col);  // read once
#pragma unroll
      for (int k = 0; k < Pack::size; ++k) acc[k] += static_cast<float>(g[k]);
    }
  }
#pragma unroll
  for (int k = 0; k < Pack::size; ++k) warp_sums[warp][lane * Pack::size + k] = acc[k];
  __syncthreads();
  for (int j = threadIdx.x; j < kColumns; j += kBiasThreads) {
    if (block_col0 + j >= OC) break;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kBiasWarps; ++w) sum += warp_sums[w][j];
    partials[static_cast<size_t>(blockIdx.y) * OC + block_col0 + j] = sum;
  }
}

// dbias[c] = (accumulate ? dbias[c] : 0) + sum over slices of partials[slice, c], slices in order.
// One thread per column.
template <typename floatX>
__global__ void matmul_backward_bias_kernel(floatX* dbias, const float* partials, int n_slices,
                                            int OC, bool accumulate) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= OC) return;
  float sum = 0.0f;
  for (int s = 0; s < n_slices; ++s) sum += partials[static_cast<size_t>(s) * OC + c];
  dbias[c] = static_cast<floatX>(accumulate ? static_cast<float>(dbias[c]) + sum : sum);
}

// ---- launchers ------------------------------------------------------------------------------

namespace matmul_detail {

template <typename floatX>
constexpr cudaDataType_t cuda_data_type() {
  static_assert(std::is_same_v<floatX, float> || std::is_same_v<floatX, __nv_bfloat16>,
                "matmul storage type must be float or __nv_bfloat16");
  return std::is_same_v<floatX, float> ? CUDA_R_32F : CUDA_R_16BF;
}

// Owners of the cuBLASLt descriptors, so a failing call between create and destroy leaks nothing.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  MatmulDesc() { CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)); }
  ~MatmulDesc() { cublasLtMatmulDescDestroy(desc); }
  MatmulDesc(const MatmulDesc&) = delete;
  MatmulDesc& operator=(const MatmulDesc&) = delete;
  template <typename T>
  void set(cublasLtMatmulDescAttributes_t attribute, const T& value) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
  }
};
struct MatrixLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  // A column-major rows x cols matrix with leading dimension ld.
  MatrixLayout(cudaDataType_t type, int rows, int cols, int ld) {
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                            static_cast<uint64_t>(cols), static_cast<int64_t>(ld)));
  }
  ~MatrixLayout() { cublasLtMatrixLayoutDestroy(layout); }
  MatrixLayout(const MatrixLayout&) = delete;
  MatrixLayout& operator=(const MatrixLayout&) = delete;
};
struct MatmulPreference {
  cublasLtMatmulPreference_t preference = nullptr;
  explicit MatmulPreference(size_t max_workspace_bytes) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
    const uint64_t bytes = max_workspace_bytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes, sizeof(bytes)));
  }
  ~MatmulPreference() { cublasLtMatmulPreferenceDestroy(preference); }
  MatmulPreference(const MatmulPreference&) = delete;
  MatmulPreference& operator=(const MatmulPreference&) = delete;
};

// One column-major GEMM D[m,n] = op(A)[m,k] . op(B)[k,n] + beta * D, followed by an epilogue.
// A is stored k x m when trans_a (else m x k), B n x k when trans_b (else k x n).
struct Gemm {
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;
  const void* A = nullptr;
  int lda = 0;
  const void* B = nullptr;
  int ldb = 0;
  void* D = nullptr;
  int ldd = 0;
  float beta = 0.0f;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;  // BIAS epilogues: m elements
  void* aux = nullptr;         // GELU_AUX (written) / DGELU (read): D's shape, leading dim ld_aux
  int ld_aux = 0;
};

template <typename floatX>
void run_gemm(const char* op, const MatmulContext& ctx, const Gemm& g, cudaStream_t stream) {
  constexpr cudaDataType_t type = cuda_data_type<floatX>();
  MatmulDesc desc;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, g.epilogue);
  if (g.bias != nullptr) desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  if (g.aux != nullptr) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<int64_t>(g.ld_aux));
  }
  const MatrixLayout a(type, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda);
  const MatrixLayout b(type, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb);
  const MatrixLayout d(type, g.m, g.n, g.ldd);
  const MatmulPreference preference(ctx.workspace_bytes);

  cublasLtMatmulHeuristicResult_t heuristic;
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, desc.desc, a.layout, b.layout, d.layout,
                                              d.layout, preference.preference, 1, &heuristic,
                                              &found));
  if (found == 0)
    throw Error(cat(op, ": cuBLASLt has no algorithm for m=", g.m, " n=", g.n, " k=", g.k,
                    " (", g.trans_a ? "T" : "N", g.trans_b ? "T" : "N", ", epilogue ",
                    static_cast<int>(g.epilogue), ", ", sizeof(floatX) == 2 ? "bf16" : "fp32",
                    ", workspace ", ctx.workspace_bytes, " bytes)"));
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasLtMatmul(ctx.handle, desc.desc, &alpha, g.A, a.layout, g.B, b.layout, &g.beta,
                              g.D, d.layout, g.D, d.layout, &heuristic.algo, ctx.workspace,
                              ctx.workspace_bytes, stream));
}

inline void check_matmul_shape(const char* op, int N, int C, int OC) {
  if (N < 1 || C < 1 || OC < 1)
    throw Error(cat(op, ": N, C, OC must be positive, got N=", N, " C=", C, " OC=", OC));
}

inline void check_context(const char* op, const MatmulContext& ctx) {
  if (ctx.handle == nullptr || (ctx.workspace == nullptr && ctx.workspace_bytes != 0))
    throw Error(cat(op, ": the MatmulContext has no cuBLASLt handle or a null workspace"));
}

inline void check_not_null(const char* op, const char* tensor, const void* pointer) {
  if (pointer == nullptr) throw Error(cat(op, ": ", tensor, " is null"));
}

// cuBLASLt's fast kernels (and its bias / aux epilogues) want every matrix and vector 16-byte
// aligned; the tagged allocator guarantees it, so a misaligned pointer is a layout bug.
inline void check_aligned(const char* op, const char* tensor, const void* pointer) {
  if (pointer != nullptr && reinterpret_cast<uintptr_t>(pointer) % 16 != 0)
    throw Error(cat(op, ": ", tensor, " at ", pointer,
                    " is not 16-byte aligned, which cuBLASLt needs; allocate it through the "
                    "tagged allocator or at a 16-byte multiple offset"));
}

// cuBLASLt's GELU epilogues need the aux leading dimension (the pre-activation's row length) to
// be a multiple of 8.
inline void check_gelu_rows(const char* op, const char* tensor, int row_length) {
  if (row_length % 8 != 0)
    throw Error(cat(op, ": ", tensor, " has rows of ", row_length,
                    " elements; cuBLASLt's GELU epilogues need a multiple of 8 (pad the layer)"));
}

}  // namespace matmul_detail

// out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC] (bias may be null); when gelu_pre is not null
// it receives that result and out = gelu_tanh(gelu_pre)  (backend.h matmul_forward).
template <typename floatX>
void matmul_forward(floatX* out, floatX* gelu_pre, const floatX* inp, const floatX* weight,
                    const floatX* bias, int N, int C, int OC, const MatmulContext& ctx,
                    cudaStream_t stream) {
  using namespace matmul_detail;
  constexpr const char* op = "matmul_forward";
  check_matmul_shape(op, N, C, OC);
  check_context(op, ctx);
  check_not_null(op, "out", out);
  check_not_null(op, "inp", inp);
  check_not_null(op, "weight", weight);
  check_aligned(op, "out", out);
  check_aligned(op, "gelu_pre", gelu_pre);
  check_aligned(op, "inp", inp);
  check_aligned(op, "weight", weight);
  check_aligned(op, "bias", bias);
  if (gelu_pre != nullptr) {
    check_gelu_rows(op, "gelu_pre", OC);
    if (gelu_pre == out) throw Error(cat(op, ": gelu_pre and out must be different buffers"));
  }
  Gemm g;
  g.trans_a = true;  // A = weight, col-major [C,OC]
  g.trans_b = false;  // B = inp, col-major [C,N]
  g.m = OC;
  g.n = N;
  g.k = C;
  g.A = weight;
  g.lda = C;
  g.B = inp;
  g.ldb = C;
  g.D = out;
  g.ldd = OC;
  g.bias = bias;
  if (gelu_pre != nullptr) {
    g.epilogue = bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    g.aux = gelu_pre;
    g.ld_aux = OC;
  } else {
    g.epilogue = bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  }
  run_gemm<floatX>(op, ctx, g, stream);
}

// dinp[N,C] = dout @ weight (overwritten; times gelu'(gelu_pre_of_inp) when that is not null);
// dweight[OC,C] (+)= dout^T @ inp; dbias[OC] (+)= column sums of dout (dbias may be null)
// (backend.h matmul_backward). scratch: matmul_backward_scratch_bytes(N, OC) bytes of device
// memory, 4-byte aligned, used only when dbias is not null (may be null otherwise).
template <typename floatX>
void matmul_backward(floatX* dinp, floatX* dweight, floatX* dbias, const floatX* dout,
                     const floatX* inp, const floatX* weight, const floatX* gelu_pre_of_inp, int N,
                     int C, int OC, bool accumulate_dweight, void* scratch,
                     const MatmulContext& ctx, cudaStream_t stream) {
  using namespace matmul_detail;
  constexpr const char* op = "matmul_backward";
  check_matmul_shape(op, N, C, OC);
  check_context(op, ctx);
  check_not_null(op, "dinp", dinp);
  check_not_null(op, "dweight", dweight);
  check_not_null(op, "dout", dout);
  check_not_null(op, "inp", inp);
  check_not_null(op, "weight", weight);
  check_aligned(op, "dinp", dinp);
  check_aligned(op, "dweight", dweight);
  check_aligned(op, "dout", dout);
  check_aligned(op, "inp", inp);
  check_aligned(op, "weight", weight);
  check_aligned(op, "gelu_pre_of_inp", gelu_pre_of_inp);
  if (gelu_pre_of_inp != nullptr) check_gelu_rows(op, "gelu_pre_of_inp", C);
  if (dbias != nullptr) {
    require_packed(op, "dout", dout, OC);
    if (scratch == nullptr || reinterpret_cast<uintptr_t>(scratch) % alignof(float) != 0)
      throw Error(cat(op, ": dbias needs ", matmul_backward_scratch_bytes(N, OC),
                      " bytes of 4-byte aligned scratch, got ", scratch));
  }

  Gemm dinp_gemm;  // dinp^T[C,N] = W^T[C,OC] . dout^T[OC,N]
  dinp_gemm.m = C;
  dinp_gemm.n = N;
  dinp_gemm.k = OC;
  dinp_gemm.A = weight;
  dinp_gemm.lda = C;
  dinp_gemm.B = dout;
  dinp_gemm.ldb = OC;
  dinp_gemm.D = dinp;
  dinp_gemm.ldd = C;
  if (gelu_pre_of_inp != nullptr) {
    dinp_gemm.epilogue = CUBLASLT_EPILOGUE_DGELU;
    // cuBLASLt takes one aux pointer type for reading and writing; DGELU only reads it.
    dinp_gemm.aux = const_cast<floatX*>(gelu_pre_of_inp);
    dinp_gemm.ld_aux = C;
  }
  run_gemm<floatX>(op, ctx, dinp_gemm, stream);

  Gemm dweight_gemm;  // dW^T[C,OC] = inp^T[C,N] . dout[N,OC]
  dweight_gemm.trans_b = true;
  dweight_gemm.m = C;
  dweight_gemm.n = OC;
  dweight_gemm.k = N;
  dweight_gemm.A = inp;
  dweight_gemm.lda = C;
  dweight_gemm.B = dout;
  dweight_gemm.ldb = OC;
  dweight_gemm.D = dweight;
  dweight_gemm.ldd = C;
  dweight_gemm.beta = accumulate_dweight ? 1.0f : 0.0f;
  run_gemm<floatX>(op, ctx, dweight_gemm, stream);

  if (dbias != nullptr) {
    const int n_slices = bias_row_slices(N);
    const int rows_per_slice = (N + n_slices - 1) / n_slices;
    constexpr int kColumnsPerBlock = 32 * Packed128<floatX>::size;
    float* partials = static_cast<float*>(scratch);
    simt::launch(matmul_backward_bias_partial_kernel<floatX>,
                 dim3((OC + kColumnsPerBlock - 1) / kColumnsPerBlock, n_slices),
                 dim3(kBiasThreads), 0, stream, partials, dout, N, OC, rows_per_slice);
    CUDA_CHECK_LAUNCH();
    simt::launch(matmul_backward_bias_kernel<floatX>,
                 dim3((OC + kBiasFinalThreads - 1) / kBiasFinalThreads), dim3(kBiasFinalThreads),
                 0, stream, dbias, static_cast<const float*>(partials), n_slices, OC,
                 accumulate_dweight);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace slim
