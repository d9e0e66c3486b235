// emu_cublaslt.cpp — a strict cuBLASLt subset behind the real <cublasLt.h> C ABI, computed on the
// CPU (OpenBLAS sgemm on fp32 copies, epilogues in fp32/fp64).
//
// Supported: compute type 32F (and 32F_FAST_TF32 / 32F_FAST_16BF, computed in full fp32), scale
// type 32F with host alpha/beta; A/B of CUDA_R_32F or CUDA_R_16BF, C/D of CUDA_R_32F or CUDA_R_16BF
// (16BF inputs with 32F outputs allowed, 32F inputs need 32F outputs); column-major layouts with
// ld >= rows; transposes N/T; strided batches; epilogues DEFAULT, BIAS, GELU, GELU_BIAS, GELU_AUX,
// GELU_AUX_BIAS, DGELU, DGELU_BGRAD, BGRADA, BGRADB. Everything else fails loudly (a report on
// stderr and CUBLAS_STATUS_NOT_SUPPORTED or CUBLAS_STATUS_INVALID_VALUE).
//
// Semantics, as documented in cublasLt.h:
//   z = alpha * op(A) op(B) + beta * C          (C is not read when beta == 0)
//   BIAS:           D = z + bias                 bias has rows(D) elements, broadcast over columns
//   GELU(_BIAS):    D = gelu(z (+ bias))         GELU is the tanh approximation
//   GELU_AUX(_BIAS): aux = z (+ bias) (the GELU input), D = gelu(aux)
//   DGELU:          D = z * gelu'(aux)           aux is an input (the forward GELU input)
//   DGELU_BGRAD:    as DGELU, and bias = sum over the columns of D (rows(D) elements)
//   BGRADA:         D = z, bias[i] = sum_k op(A)[i,k] (rows(D) elements)
//   BGRADB:         D = z, bias[j] = sum_k op(B)[k,j] (cols(D) elements)
// The descriptors live inside the opaque structs of the real header (so the *Init functions work
// on caller-provided storage too).

#include "emu_internal.h"

#include <cblas.h>
#include <cublasLt.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

struct cublasLtContext {
  uint64_t magic;
};

namespace simt::detail {
namespace {

constexpr uint64_t kHandleMagic = 0x73696d744c74484eull;  // "simtLtHN"
constexpr uint64_t kLayoutMagic = 0x73696d744c744c59ull;
constexpr uint64_t kDescMagic = 0x73696d744c744453ull;
constexpr uint64_t kPreferenceMagic = 0x73696d744c745052ull;
constexpr uint64_t kAlgoMagic = 0x73696d744c74414cull;

struct LayoutState {
  uint64_t magic;
  int32_t type;   // cudaDataType
  int32_t order;  // cublasLtOrder_t
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch_count;
  int64_t batch_stride;  // elements
};
static_assert(sizeof(LayoutState) <= sizeof(cublasLtMatrixLayoutOpaque_t));

struct DescState {
  uint64_t magic;
  int32_t compute_type;
  int32_t scale_type;
  int32_t pointer_mode;
  int32_t transa, transb, transc;
  uint32_t epilogue;
  const void* bias;
  int64_t bias_batch_stride;
  void* aux;
  int64_t aux_ld;
  int64_t aux_batch_stride;
  int32_t aux_type;   // -1: the type of D
  int32_t bias_type;  // -1: the type of D
};
static_assert(sizeof(DescState) <= sizeof(cublasLtMatmulDescOpaque_t));

struct PreferenceState {
  uint64_t magic;
  uint64_t max_workspace;
};
static_assert(sizeof(PreferenceState) <= sizeof(cublasLtMatmulPreferenceOpaque_t));

LayoutState* state(cublasLtMatrixLayout_t layout) {
  auto* s = layout == nullptr ? nullptr : reinterpret_cast<LayoutState*>(layout->data);
  return s != nullptr && s->magic == kLayoutMagic ? s : nullptr;
}
DescState* state(cublasLtMatmulDesc_t desc) {
  auto* s = desc == nullptr ? nullptr : reinterpret_cast<DescState*>(desc->data);
  return s != nullptr && s->magic == kDescMagic ? s : nullptr;
}
PreferenceState* state(cublasLtMatmulPreference_t pref) {
  auto* s = pref == nullptr ? nullptr : reinterpret_cast<PreferenceState*>(pref->data);
  return s != nullptr && s->magic == kPreferenceMagic ? s : nullptr;
}

cublasStatus_t fail(cublasStatus_t status, const std::string& message) {
  report(cat("cuBLASLt: ", message));
  return status;
}

const char* type_name(int32_t type) {
  switch (type) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    case CUDA_R_16F: return "CUDA_R_16F";
    case CUDA_R_64F: return "CUDA_R_64F";
    case CUDA_R_8I: return "CUDA_R_8I";
    case CUDA_R_32I: return "CUDA_R_32I";
    default: return "an unsupported cudaDataType";
  }
}

bool is_supported_type(int32_t type) { return type == CUDA_R_32F || type == CUDA_R_16BF; }
size_t type_bytes(int32_t type) { return type == CUDA_R_32F ? 4 : 2; }

float load(const void* base, int32_t type, int64_t index) {
  if (type == CUDA_R_32F) return static_cast<const float*>(base)[index];
  return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]);
}
void store(void* base, int32_t type, int64_t index, float value) {
  if (type == CUDA_R_32F)
    static_cast<float*>(base)[index] = value;
  else
    static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn(value);
}

// GPT-2's GELU (tanh approximation) and its derivative, in double for a clean reference.
constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluCubic = 0.044715;
float gelu(float x) {
  const double v = x;
  return static_cast<float>(0.5 * v * (1.0 + std::tanh(kGeluScale * (v + kGeluCubic * v * v * v))));
}
float gelu_grad(float x) {
  const double v = x;
  const double t = std::tanh(kGeluScale * (v + kGeluCubic * v * v * v));
  return static_cast<float>(0.5 * (1.0 + t) +
                            0.5 * v * (1.0 - t * t) * kGeluScale * (1.0 + 3.0 * kGeluCubic * v * v));
}

enum EpilogueFlags : unsigned {
  kReadsBias = 1,
  kGelu = 2,
  kWritesAux = 4,
  kDGelu = 8,
  kBiasGradD = 16,
  kBiasGradA = 32,
  kBiasGradB = 64,
};

// Returns false for epilogues the emulator does not implement.
bool epilogue_flags(uint32_t epilogue, unsigned* flags) {
  switch (epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT: *flags = 0; return true;
    case CUBLASLT_EPILOGUE_BIAS: *flags = kReadsBias; return true;
    case CUBLASLT_EPILOGUE_GELU: *flags = kGelu; return true;
    case CUBLASLT_EPILOGUE_GELU_BIAS: *flags = kGelu | kReadsBias; return true;
    case CUBLASLT_EPILOGUE_GELU_AUX: *flags = kGelu | kWritesAux; return true;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: *flags = kGelu | kWritesAux | kReadsBias; return true;
    case CUBLASLT_EPILOGUE_DGELU: *flags = kDGelu; return true;
    case CUBLASLT_EPILOGUE_DGELU_BGRAD: *flags = kDGelu | kBiasGradD; return true;
    case CUBLASLT_EPILOGUE_BGRADA: *flags = kBiasGradA; return true;
    case CUBLASLT_EPILOGUE_BGRADB: *flags = kBiasGradB; return true;
    default: return false;
  }
}

const char* epilogue_name(uint32_t epilogue) {
  switch (epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT: return "DEFAULT";
    case CUBLASLT_EPILOGUE_RELU: return "RELU";
    case CUBLASLT_EPILOGUE_RELU_AUX: return "RELU_AUX";
    case CUBLASLT_EPILOGUE_BIAS: return "BIAS";
    case CUBLASLT_EPILOGUE_RELU_BIAS: return "RELU_BIAS";
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS: return "RELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DRELU: return "DRELU";
    case CUBLASLT_EPILOGUE_DRELU_BGRAD: return "DRELU_BGRAD";
    case CUBLASLT_EPILOGUE_GELU: return "GELU";
    case CUBLASLT_EPILOGUE_GELU_AUX: return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_BIAS: return "GELU_BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DGELU: return "DGELU";
    case CUBLASLT_EPILOGUE_DGELU_BGRAD: return "DGELU_BGRAD";
    case CUBLASLT_EPILOGUE_BGRADA: return "BGRADA";
    case CUBLASLT_EPILOGUE_BGRADB: return "BGRADB";
    default: return "unknown";
  }
}

// A validated matmul problem.
struct Problem {
  const LayoutState *a, *b, *c, *d;
  bool trans_a, trans_b;
  int64_t m, n, k;
  int32_t batches;
  unsigned flags;
  int32_t aux_type, bias_type;
  int64_t bias_length;
};

// Shape, type and epilogue checks shared by cublasLtMatmulAlgoGetHeuristic and cublasLtMatmul.
cublasStatus_t validate(const DescState& desc, cublasLtMatrixLayout_t a_layout,
                        cublasLtMatrixLayout_t b_layout, cublasLtMatrixLayout_t c_layout,
                        cublasLtMatrixLayout_t d_layout, Problem* p) {
  p->a = state(a_layout);
  p->b = state(b_layout);
  p->c = state(c_layout);
  p->d = state(d_layout);
  if (p->a == nullptr || p->b == nullptr || p->c == nullptr || p->d == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE,
                "a matrix layout (A, B, C or D) is null or was never created");
  if (desc.compute_type != CUBLAS_COMPUTE_32F && desc.compute_type != CUBLAS_COMPUTE_32F_FAST_TF32 &&
      desc.compute_type != CUBLAS_COMPUTE_32F_FAST_16BF)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                cat("compute type ", desc.compute_type, " is not emulated (use CUBLAS_COMPUTE_32F)"));
  if (desc.scale_type != CUDA_R_32F)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                cat("scale type ", type_name(desc.scale_type), " is not emulated (use CUDA_R_32F)"));
  if (desc.pointer_mode != CUBLASLT_POINTER_MODE_HOST)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, "only CUBLASLT_POINTER_MODE_HOST is emulated");
  if (desc.transc != CUBLAS_OP_N)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, "TRANSC must be CUBLAS_OP_N");
  const LayoutState* layouts[4] = {p->a, p->b, p->c, p->d};
  const char* names = "ABCD";
  for (int i = 0; i < 4; ++i) {
    const LayoutState& l = *layouts[i];
    if (l.order != CUBLASLT_ORDER_COL)
      return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                  cat("matrix ", names[i], " is not column-major (CUBLASLT_ORDER_COL)"));
    if (!is_supported_type(l.type))
      return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                  cat("matrix ", names[i], " has type ", type_name(l.type),
                      " (emulated: CUDA_R_32F, CUDA_R_16BF)"));
    if (l.ld < 1 || static_cast<uint64_t>(l.ld) < l.rows)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("matrix ", names[i], ": leading dimension ", l.ld, " is smaller than its ",
                      l.rows, " rows (column-major needs ld >= rows)"));
    if (l.batch_count < 1)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("matrix ", names[i], ": batch count ", l.batch_count, " < 1"));
    if (l.batch_count > 1 && l.batch_stride < 0)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("matrix ", names[i], ": negative batch stride ", l.batch_stride));
  }
  if (p->a->type != p->b->type)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, cat("A is ", type_name(p->a->type), " but B is ",
                                                 type_name(p->b->type), "; they must match"));
  if (p->c->type != p->d->type)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, cat("C is ", type_name(p->c->type), " but D is ",
                                                 type_name(p->d->type), "; they must match"));
  if (p->a->type == CUDA_R_32F && p->d->type != CUDA_R_32F)
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, "32F inputs need 32F outputs");

  p->trans_a = desc.transa != CUBLAS_OP_N;
  p->trans_b = desc.transb != CUBLAS_OP_N;
  p->m = static_cast<int64_t>(p->d->rows);
  p->n = static_cast<int64_t>(p->d->cols);
  const int64_t a_rows = static_cast<int64_t>(p->trans_a ? p->a->cols : p->a->rows);
  p->k = static_cast<int64_t>(p->trans_a ? p->a->rows : p->a->cols);
  const int64_t b_rows = static_cast<int64_t>(p->trans_b ? p->b->cols : p->b->rows);
  const int64_t b_cols = static_cast<int64_t>(p->trans_b ? p->b->rows : p->b->cols);
  if (a_rows != p->m || b_rows != p->k || b_cols != p->n ||
      static_cast<int64_t>(p->c->rows) != p->m || static_cast<int64_t>(p->c->cols) != p->n)
    return fail(CUBLAS_STATUS_INVALID_VALUE,
                cat("shapes do not chain: op(A) is ", a_rows, "x", p->k, ", op(B) is ", b_rows, "x",
                    b_cols, ", C is ", p->c->rows, "x", p->c->cols, ", D is ", p->m, "x", p->n));
  p->batches = p->d->batch_count;
  for (const LayoutState* l : layouts)
    if (l->batch_count != p->batches)
      return fail(CUBLAS_STATUS_INVALID_VALUE, "batch counts of A, B, C and D differ");

  if (!epilogue_flags(desc.epilogue, &p->flags))
    return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                cat("epilogue ", epilogue_name(desc.epilogue), " (", desc.epilogue,
                    ") is not emulated (supported: DEFAULT, BIAS, GELU, GELU_BIAS, GELU_AUX, "
                    "GELU_AUX_BIAS, DGELU, DGELU_BGRAD, BGRADA, BGRADB)"));
  p->aux_type = desc.aux_type >= 0 ? desc.aux_type : p->d->type;
  p->bias_type = desc.bias_type >= 0 ? desc.bias_type : p->d->type;
  if ((p->flags & (kWritesAux | kDGelu)) != 0) {
    if (!is_supported_type(p->aux_type))
      return fail(CUBLAS_STATUS_NOT_SUPPORTED, cat("aux type ", type_name(p->aux_type)));
    if (desc.aux_ld < p->m || desc.aux_ld % 8 != 0)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("EPILOGUE_AUX_LD ", desc.aux_ld, " must be >= ", p->m,
                      " (rows of D) and divisible by 8"));
    if (p->batches > 1 && desc.aux_batch_stride % 8 != 0)
      return fail(CUBLAS_STATUS_INVALID_VALUE, "EPILOGUE_AUX_BATCH_STRIDE must be divisible by 8");
  }
  if ((p->flags & (kReadsBias | kBiasGradD | kBiasGradA | kBiasGradB)) != 0) {
    if (!is_supported_type(p->bias_type))
      return fail(CUBLAS_STATUS_NOT_SUPPORTED, cat("bias type ", type_name(p->bias_type)));
    if (p->d->type == CUDA_R_32F && p->bias_type != CUDA_R_32F)
      return fail(CUBLAS_STATUS_NOT_SUPPORTED, "a 32F output needs a 32F bias");
  }
  p->bias_length = (p->flags & kBiasGradB) != 0 ? p->n : p->m;
  return CUBLAS_STATUS_SUCCESS;
}

// Bytes spanned by a strided batch of column-major matrices.
size_t extent_bytes(const LayoutState& l, int32_t type) {
  if (l.rows == 0 || l.cols == 0) return 0;
  const uint64_t last_batch = l.batch_count > 1 ? static_cast<uint64_t>(l.batch_count - 1) : 0;
  const uint64_t elements =
      last_batch * static_cast<uint64_t>(l.batch_stride) + (l.cols - 1) * l.ld + l.rows;
  return elements * type_bytes(type);
}

cublasStatus_t check_device(const char* what, const void* pointer, size_t bytes) {
  if (bytes == 0) return CUBLAS_STATUS_SUCCESS;
  if (!is_inside_allocation(pointer, bytes, /*allow_pinned_host=*/false))
    return fail(CUBLAS_STATUS_INVALID_VALUE,
                cat(what, " ", describe_address(pointer), " + ", bytes,
                    " bytes is not inside one device allocation"));
  return CUBLAS_STATUS_SUCCESS;
}

// Copies one (batch of a) stored matrix into dense fp32, column-major with ld = rows.
std::vector<float> to_float(const void* base, const LayoutState& l, int64_t batch) {
  std::vector<float> out(l.rows * l.cols);
  const int64_t offset = batch * l.batch_stride;
  for (uint64_t j = 0; j < l.cols; ++j)
    for (uint64_t i = 0; i < l.rows; ++i)
      out[i + j * l.rows] = load(base, l.type, offset + static_cast<int64_t>(i + j * l.ld));
  return out;
}

std::mutex& blas_mutex() {
  // OpenBLAS builds differ in whether concurrent calls are safe; NCCL rank threads may overlap.
  static std::mutex mutex;
  return mutex;
}

}  // namespace
}  // namespace simt::detail

using namespace simt::detail;

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasLtContext{kHandleMagic};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (handle == nullptr || handle->magic != kHandleMagic) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->magic = 0;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

const char* cublasLtGetStatusString(cublasStatus_t status) { return cublasLtGetStatusName(status); }

size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }

// --- matrix layouts ---------------------------------------------------------------------------

cublasStatus_t cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t layout, size_t size,
                                                 cudaDataType type, uint64_t rows, uint64_t cols,
                                                 int64_t ld) {
  if (layout == nullptr || size < sizeof(cublasLtMatrixLayoutOpaque_t))
    return CUBLAS_STATUS_INVALID_VALUE;
  std::memset(layout, 0, sizeof *layout);
  auto* s = reinterpret_cast<LayoutState*>(layout->data);
  *s = LayoutState{kLayoutMagic, type, CUBLASLT_ORDER_COL, rows, cols, ld, 1, 0};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (layout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cublasLtMatrixLayoutOpaque_t;
  return cublasLtMatrixLayoutInit_internal(*layout, sizeof(cublasLtMatrixLayoutOpaque_t), type,
                                           rows, cols, ld);
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  if (layout != nullptr && state(layout) == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  LayoutState* s = state(layout);
  if (s == nullptr || buf == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutSetAttribute on an invalid layout");
  auto take = [&](auto* field) {
    using T = std::remove_pointer_t<decltype(field)>;
    if (size != sizeof(T))
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("layout attribute ", static_cast<int>(attr), " takes ", sizeof(T),
                      " bytes, got ", size));
    std::memcpy(field, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: {
      uint32_t type = 0;
      cublasStatus_t status = take(&type);
      s->type = static_cast<int32_t>(type);
      return status;
    }
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return take(&s->order);
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return take(&s->rows);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return take(&s->cols);
    case CUBLASLT_MATRIX_LAYOUT_LD: return take(&s->ld);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return take(&s->batch_count);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return take(&s->batch_stride);
    default:
      return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                  cat("matrix layout attribute ", static_cast<int>(attr), " is not emulated"));
  }
}

// --- matmul descriptors -------------------------------------------------------------------------

cublasStatus_t cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t desc, size_t size,
                                               cublasComputeType_t compute_type,
                                               cudaDataType_t scale_type) {
  if (desc == nullptr || size < sizeof(cublasLtMatmulDescOpaque_t)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memset(desc, 0, sizeof *desc);
  auto* s = reinterpret_cast<DescState*>(desc->data);
  *s = DescState{};
  s->magic = kDescMagic;
  s->compute_type = compute_type;
  s->scale_type = scale_type;
  s->pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  s->transa = s->transb = s->transc = CUBLAS_OP_N;
  s->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  s->aux_type = -1;
  s->bias_type = -1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute_type,
                                        cudaDataType_t scale_type) {
  if (desc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *desc = new cublasLtMatmulDescOpaque_t;
  return cublasLtMatmulDescInit_internal(*desc, sizeof(cublasLtMatmulDescOpaque_t), compute_type,
                                         scale_type);
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  if (desc != nullptr && state(desc) == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t size) {
  DescState* s = state(desc);
  if (s == nullptr || buf == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute on an invalid descriptor");
  auto take = [&](auto* field) {
    using T = std::remove_pointer_t<decltype(field)>;
    if (size != sizeof(T))
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("matmul descriptor attribute ", static_cast<int>(attr), " takes ", sizeof(T),
                      " bytes, got ", size));
    std::memcpy(static_cast<void*>(field), buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
  };
  auto take_op = [&](int32_t* field) {
    int32_t op = 0;
    cublasStatus_t status = take(&op);
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T && op != CUBLAS_OP_C)
      return fail(CUBLAS_STATUS_INVALID_VALUE, cat("invalid cublasOperation_t ", op));
    *field = op == CUBLAS_OP_C ? CUBLAS_OP_T : op;  // conjugation is a no-op for real types
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return take(&s->compute_type);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return take(&s->scale_type);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: return take(&s->pointer_mode);
    case CUBLASLT_MATMUL_DESC_TRANSA: return take_op(&s->transa);
    case CUBLASLT_MATMUL_DESC_TRANSB: return take_op(&s->transb);
    case CUBLASLT_MATMUL_DESC_TRANSC: return take_op(&s->transc);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return take(&s->epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return take(&s->bias);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: return take(&s->bias_batch_stride);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return take(&s->aux);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return take(&s->aux_ld);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE: return take(&s->aux_batch_stride);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: return take(&s->aux_type);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return take(&s->bias_type);
    case CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET: {
      int32_t ignored = 0;  // a scheduling hint; nothing to schedule here
      return take(&ignored);
    }
    default:
      return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                  cat("matmul descriptor attribute ", static_cast<int>(attr), " is not emulated"));
  }
}

// --- preferences and heuristics -----------------------------------------------------------------

cublasStatus_t cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t pref, size_t size) {
  if (pref == nullptr || size < sizeof(cublasLtMatmulPreferenceOpaque_t))
    return CUBLAS_STATUS_INVALID_VALUE;
  std::memset(pref, 0, sizeof *pref);
  *reinterpret_cast<PreferenceState*>(pref->data) = PreferenceState{kPreferenceMagic, 0};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = new cublasLtMatmulPreferenceOpaque_t;
  return cublasLtMatmulPreferenceInit_internal(*pref, sizeof(cublasLtMatmulPreferenceOpaque_t));
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (pref != nullptr && state(pref) == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
  PreferenceState* s = state(pref);
  if (s == nullptr || buf == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute on an invalid preference");
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      if (size != sizeof(uint64_t))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "MAX_WORKSPACE_BYTES takes a uint64_t");
      std::memcpy(&s->max_workspace, buf, sizeof(uint64_t));
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      // Restrictions on which kernels may be chosen; the one emulated algorithm meets them.
      if (size != sizeof(uint32_t))
        return fail(CUBLAS_STATUS_INVALID_VALUE, cat("preference attribute ", static_cast<int>(attr),
                                                     " takes a uint32_t"));
      return CUBLAS_STATUS_SUCCESS;
    default:
      return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                  cat("preference attribute ", static_cast<int>(attr), " is not emulated"));
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int* returned) {
  if (handle == nullptr || handle->magic != kHandleMagic) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (returned == nullptr || results == nullptr || requested < 1 || state(pref) == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulAlgoGetHeuristic: invalid arguments");
  *returned = 0;
  const DescState* s = state(desc);
  if (s == nullptr) return fail(CUBLAS_STATUS_INVALID_VALUE, "invalid matmul descriptor");
  Problem p;
  cublasStatus_t status = validate(*s, a, b, c, d, &p);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  std::memset(&results[0], 0, sizeof results[0]);
  results[0].algo.data[0] = kAlgoMagic;
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

// --- the matmul -----------------------------------------------------------------------------------

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* A, cublasLtMatrixLayout_t a_layout, const void* B,
                              cublasLtMatrixLayout_t b_layout, const void* beta, const void* C,
                              cublasLtMatrixLayout_t c_layout, void* D,
                              cublasLtMatrixLayout_t d_layout, const cublasLtMatmulAlgo_t* algo,
                              void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (handle == nullptr || handle->magic != kHandleMagic) return CUBLAS_STATUS_NOT_INITIALIZED;
  const DescState* s = state(desc);
  if (s == nullptr) return fail(CUBLAS_STATUS_INVALID_VALUE, "invalid matmul descriptor");
  if (alpha == nullptr || beta == nullptr)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "alpha and beta must be host pointers to floats");
  if (algo != nullptr && algo->data[0] != kAlgoMagic)
    return fail(CUBLAS_STATUS_INVALID_VALUE, "algo was not returned by cublasLtMatmulAlgoGetHeuristic");
  if (!is_valid_stream(stream)) return fail(CUBLAS_STATUS_INVALID_VALUE, "invalid stream");
  Problem p;
  cublasStatus_t status = validate(*s, a_layout, b_layout, c_layout, d_layout, &p);
  if (status != CUBLAS_STATUS_SUCCESS) return status;
  const float alpha_f = *static_cast<const float*>(alpha);
  const float beta_f = *static_cast<const float*>(beta);

  // Every pointer must be device memory large enough for what the layouts describe.
  if ((status = check_device("A", A, extent_bytes(*p.a, p.a->type))) != CUBLAS_STATUS_SUCCESS ||
      (status = check_device("B", B, extent_bytes(*p.b, p.b->type))) != CUBLAS_STATUS_SUCCESS ||
      (status = check_device("D", D, extent_bytes(*p.d, p.d->type))) != CUBLAS_STATUS_SUCCESS ||
      (beta_f != 0.0f &&
       (status = check_device("C", C, extent_bytes(*p.c, p.c->type))) != CUBLAS_STATUS_SUCCESS) ||
      (status = check_device("workspace", workspace, workspace_bytes)) != CUBLAS_STATUS_SUCCESS)
    return status;
  if (C == D && beta_f != 0.0f && (p.c->ld != p.d->ld || p.c->batch_stride != p.d->batch_stride))
    return fail(CUBLAS_STATUS_INVALID_VALUE, "C and D are the same memory but their layouts differ");
  const size_t bias_bytes = static_cast<size_t>(p.bias_length) * type_bytes(p.bias_type);
  const size_t aux_bytes =
      (p.batches > 1 ? static_cast<size_t>(p.batches - 1) * s->aux_batch_stride : 0) +
      static_cast<size_t>(std::max<int64_t>(p.n - 1, 0) * s->aux_ld + p.m);
  const bool uses_bias = (p.flags & (kReadsBias | kBiasGradD | kBiasGradA | kBiasGradB)) != 0;
  const bool uses_aux = (p.flags & (kWritesAux | kDGelu)) != 0;
  if (uses_bias) {
    if (s->bias == nullptr)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("epilogue ", epilogue_name(s->epilogue), " needs BIAS_POINTER"));
    const size_t batched = bias_bytes + (p.batches > 1 ? static_cast<size_t>(p.batches - 1) *
                                                             s->bias_batch_stride *
                                                             type_bytes(p.bias_type)
                                                       : 0);
    if ((status = check_device("bias", s->bias, batched)) != CUBLAS_STATUS_SUCCESS) return status;
  }
  if (uses_aux) {
    if (s->aux == nullptr)
      return fail(CUBLAS_STATUS_INVALID_VALUE,
                  cat("epilogue ", epilogue_name(s->epilogue), " needs EPILOGUE_AUX_POINTER"));
    if ((status = check_device("aux", s->aux, aux_bytes * type_bytes(p.aux_type))) !=
        CUBLAS_STATUS_SUCCESS)
      return status;
  }
  if (p.m == 0 || p.n == 0) return CUBLAS_STATUS_SUCCESS;

  const int64_t m = p.m, n = p.n, k = p.k;
  for (int32_t batch = 0; batch < p.batches; ++batch) {
    // z = alpha * op(A) op(B), fp32, dense m x n.
    std::vector<float> z(static_cast<size_t>(m * n), 0.0f);
    std::vector<float> a_dense, b_dense;
    if (k > 0) {
      a_dense = to_float(A, *p.a, batch);
      b_dense = to_float(B, *p.b, batch);
      std::lock_guard<std::mutex> lock(blas_mutex());
      cblas_sgemm(CblasColMajor, p.trans_a ? CblasTrans : CblasNoTrans,
                  p.trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
                  static_cast<blasint>(n), static_cast<blasint>(k), alpha_f, a_dense.data(),
                  static_cast<blasint>(p.a->rows), b_dense.data(), static_cast<blasint>(p.b->rows),
                  0.0f, z.data(), static_cast<blasint>(m));
    }
    const int64_t c_offset = batch * p.c->batch_stride, d_offset = batch * p.d->batch_stride;
    const int64_t aux_offset = batch * s->aux_batch_stride;
    const int64_t bias_offset = batch * s->bias_batch_stride;
    std::vector<double> bias_grad(static_cast<size_t>(p.bias_length), 0.0);

    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < m; ++i) {
        float v = z[i + j * m];
        if (beta_f != 0.0f) v += beta_f * load(C, p.c->type, c_offset + i + j * p.c->ld);
        if (p.flags & kReadsBias) v += load(s->bias, p.bias_type, bias_offset + i);
        const int64_t aux_index = aux_offset + i + j * s->aux_ld;
        if (p.flags & kWritesAux) store(s->aux, p.aux_type, aux_index, v);
        if (p.flags & kGelu) v = gelu(v);
        if (p.flags & kDGelu) v *= gelu_grad(load(s->aux, p.aux_type, aux_index));
        if (p.flags & kBiasGradD) bias_grad[i] += v;
        store(D, p.d->type, d_offset + i + j * p.d->ld, v);
      }
    }
    if (p.flags & kBiasGradA) {  // sum over k of op(A)[i, k]
      for (int64_t i = 0; i < m; ++i)
        for (int64_t kk = 0; kk < k; ++kk)
          bias_grad[i] += p.trans_a ? a_dense[kk + i * p.a->rows] : a_dense[i + kk * p.a->rows];
    }
    if (p.flags & kBiasGradB) {  // sum over k of op(B)[k, j]
      for (int64_t j = 0; j < n; ++j)
        for (int64_t kk = 0; kk < k; ++kk)
          bias_grad[j] += p.trans_b ? b_dense[j + kk * p.b->rows] : b_dense[kk + j * p.b->rows];
    }
    if (p.flags & (kBiasGradD | kBiasGradA | kBiasGradB)) {
      void* bias_out = const_cast<void*>(s->bias);
      for (int64_t i = 0; i < p.bias_length; ++i)
        store(bias_out, p.bias_type, bias_offset + i, static_cast<float>(bias_grad[i]));
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
