// CudaBackend: each Backend op casts its pointers to the compute dtype (float or __nv_bfloat16) and
// calls the launcher of kernels/<family>.cuh on the backend's stream. The scratch those launchers
// take comes from the Workspace buffers described in cuda_workspace_plan.h.
//
// Compiled twice from this one source: by nvcc into the slimcuda library, and by g++ against the
// SIMT emulator (tests/emulated_cuda_backend.cpp includes this file after simt/cuda_compat.h), so
// the whole backend runs in the emulated tests.
#include "kernels/cuda_check.h"  // first: cuda_compat.h must precede every CUDA header

#include <algorithm>
#include <cstdio>
#include <vector>

#include "kernels/adamw.cuh"
#include "kernels/attention.cuh"
#include "kernels/block_adam.cuh"
#include "kernels/classifier.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gelu.cuh"
#include "kernels/global_norm.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/workspace_sizes.h"

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_workspace_plan.h"
#include "util/error.h"

namespace slim {

struct CudaBackend::State {
  cudaStream_t stream = nullptr;
  MatmulContext matmul;           // cuBLASLt handle + workspace
  void* reduction = nullptr;      // sum_squares: kGlobalNormMaxScratchBytes
  void* backward = nullptr;       // encoder / layernorm / matmul backward scratch
  size_t backward_bytes = 0;
  void* optimizer = nullptr;      // block-Adam scratch
  size_t optimizer_bytes = 0;

  // Runs on every exit path, also when the constructor throws half way (the buffers themselves
  // belong to the tagged allocator, which frees what is left when the Backend goes).
  ~State() {
    if (matmul.handle != nullptr) cublasLtDestroy(matmul.handle);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

namespace {

// Host conversions go through a bounded staging vector, so a 124M-parameter upload does not need
// a second full-size host copy.
constexpr size_t kConversionChunk = size_t(1) << 22;  // elements

template <typename X>
X* as(void* pointer) {
  return static_cast<X*>(pointer);
}
template <typename X>
const X* as(const void* pointer) {
  return static_cast<const X*>(pointer);
}

// Calls body(X{}) with X the storage type of `dtype`: one instantiation of each op per dtype.
template <typename Body>
void with_dtype(DType dtype, Body&& body) {
  if (dtype == DType::F32)
    body(float{});
  else
    body(__nv_bfloat16{});
}

// Calls body(X{}, M{}) with X the storage type of `dtype` and M that of the first moment (float,
// or __nv_bfloat16 when m_bf16): the optimizer ops take both.
template <typename Body>
void with_dtype_and_moment(DType dtype, bool m_bf16, Body&& body) {
  with_dtype(dtype, [&](auto x) {
    if (m_bf16)
      body(x, __nv_bfloat16{});
    else
      body(x, float{});
  });
}

// cudaFree runs from TaggedAllocator's destructor too, possibly while an exception unwinds the
// stack (a device fault makes every later call fail), so a failure is reported, never thrown.
void free_device_memory(void* pointer) {
  const cudaError_t error = cudaFree(pointer);
  if (error != cudaSuccess)
    std::fprintf(stderr, "%s:%d: warning: cudaFree(%p) failed: %s (%s)\n", __FILE__, __LINE__,
                 pointer, cudaGetErrorName(error), cudaGetErrorString(error));
}

// nullptr on out-of-memory, so that TaggedAllocator reports the buffer, its tag and what is held;
// every other failure throws with the cudart error.
void* allocate_device_memory(size_t bytes) {
  void* pointer = nullptr;
  const cudaError_t error = cudaMalloc(&pointer, bytes);
  if (error == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: out of memory is an answer here, not a sticky fault
    return nullptr;
  }
  if (error != cudaSuccess)
    cuda_check_detail::throw_cuda_error(error, "cudaMalloc(&pointer, bytes)", __FILE__, __LINE__);
  return pointer;
}

}  // namespace

CudaAvailability cuda_availability() {
  CudaAvailability result;
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();  // not a fault of later calls: a machine without a driver says so here
    // cudart's own text for a machine without a driver ("driver version is insufficient") reads
    // like a version problem, so the two common cases get a plainer word too.
    const char* hint = error == cudaErrorInsufficientDriver
                           ? ": no NVIDIA driver is installed, or it is older than the CUDA "
                             "runtime slimtrain was built with"
                       : error == cudaErrorNoDevice ? ": the driver sees no GPU"
                                                    : "";
    result.reason = cat("cudaGetDeviceCount failed with ", cudaGetErrorName(error), " (",
                        cudaGetErrorString(error), ")", hint);
    return result;
  }
  if (count == 0) {
    result.reason = "cudaGetDeviceCount found no CUDA device";
    return result;
  }
  result.devices = count;
  return result;
}

std::unique_ptr<Backend> make_cuda_backend(DType compute_dtype) {
  return std::make_unique<CudaBackend>(compute_dtype);
}

// ---- construction ------------------------------------------------------------------------------

CudaBackend::CudaBackend(DType compute_dtype)
    : dtype_(compute_dtype), state_(std::make_unique<State>()) {
  const CudaAvailability availability = cuda_availability();
  if (availability.devices == 0)
    throw Error(cat("the cuda backend needs a CUDA device: ", availability.reason));
  CUDA_CHECK(cudaSetDevice(0));
  allocator_ = std::make_unique<TaggedAllocator>(allocate_device_memory, free_device_memory);
  // Non-blocking: the legacy default stream (which other libraries may use) never serializes
  // with ours.
  CUDA_CHECK(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasLtCreate(&state_->matmul.handle));
  state_->matmul.workspace = alloc(kMatmulWorkspaceBytes, MemTag::Workspace, "cuBLASLt workspace");
  state_->matmul.workspace_bytes = kMatmulWorkspaceBytes;
  state_->reduction =
      alloc(kGlobalNormMaxScratchBytes, MemTag::Workspace, "sum_squares partials");
}

CudaBackend::~CudaBackend() {
  // Finish the queued work before its buffers go; a failure was already reported by the op that
  // caused it (destructors must not throw).
  const cudaError_t error = cudaStreamSynchronize(state_->stream);
  if (error != cudaSuccess)
    std::fprintf(stderr, "warning: CudaBackend: the stream ended with %s (%s)\n",
                 cudaGetErrorName(error), cudaGetErrorString(error));
  for (void* buffer : {state_->matmul.workspace, state_->reduction, state_->backward,
                       state_->optimizer})
    if (buffer != nullptr) release(buffer);
}

// ---- workspace ---------------------------------------------------------------------------------

void CudaBackend::grow_workspace(void** buffer, size_t* held, size_t bytes, const char* what) {
  if (*buffer != nullptr && bytes <= *held) return;
  if (*buffer != nullptr) {
    // The old buffer may still be read by queued kernels.
    CUDA_CHECK(cudaStreamSynchronize(state_->stream));
    release(*buffer);
    *buffer = nullptr;
  }
  *buffer = alloc(bytes, MemTag::Workspace, what);
  *held = bytes;
}

void CudaBackend::reserve_workspace(const ModelConfig& model, int B, int T) {
  if (B <= 0 || T <= 0)
    throw Error(cat("CudaBackend::reserve_workspace: B and T must be positive, got B=", B,
                    " T=", T));
  grow_workspace(&state_->backward, &state_->backward_bytes,
                 cuda_backward_scratch_bytes(model, B, T), "backward scratch");
}

void CudaBackend::reserve_optimizer_workspace(const PartitionTable& partition) {
  grow_workspace(&state_->optimizer, &state_->optimizer_bytes,
                 cuda_optimizer_scratch_bytes(partition), "block-Adam scratch");
}

void* CudaBackend::backward_scratch(const char* op, size_t bytes) const {
  if (state_->backward == nullptr || bytes > state_->backward_bytes)
    throw Error(cat("CudaBackend::", op, " needs ", bytes, " bytes of backward scratch, but ",
                    state_->backward_bytes,
                    " are reserved; call reserve_workspace(model, B, T) with the largest "
                    "micro-batch first (GptModel::allocate_activations does)"));
  return state_->backward;
}

float* CudaBackend::optimizer_scratch(const char* op, const TensorPartition& part) const {
  const size_t bytes = block_adam_scratch_floats(part) * sizeof(float);
  if (state_->optimizer == nullptr || bytes > state_->optimizer_bytes)
    throw Error(cat("CudaBackend::", op, " on ", part.tensor, " needs ", bytes,
                    " bytes of block-Adam scratch, but ", state_->optimizer_bytes,
                    " are reserved; call reserve_optimizer_workspace(partition) with the "
                    "optimizer's partition first (the Optimizer's constructor does)"));
  return static_cast<float*>(state_->optimizer);
}

// ---- memory ------------------------------------------------------------------------------------

void CudaBackend::upload(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, state_->stream));
  // The caller may reuse host_src on return; a copy from pinned memory would still be reading it.
  CUDA_CHECK(cudaStreamSynchronize(state_->stream));
}

void CudaBackend::download(void* host_dst, const void* src, size_t bytes) const {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, state_->stream));
  CUDA_CHECK(cudaStreamSynchronize(state_->stream));
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, state_->stream));
}

void CudaBackend::zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, state_->stream));
}

void CudaBackend::upload_f32_as_x(void* dst, const float* host_src, size_t n) {
  if (dtype_ == DType::F32) {
    upload(dst, host_src, n * sizeof(float));
    return;
  }
  std::vector<__nv_bfloat16> staging(std::min(n, kConversionChunk));
  __nv_bfloat16* device = as<__nv_bfloat16>(dst);
  for (size_t begin = 0; begin < n; begin += kConversionChunk) {
    const size_t count = std::min(kConversionChunk, n - begin);
    for (size_t i = 0; i < count; ++i) staging[i] = __float2bfloat16_rn(host_src[begin + i]);
    upload(device + begin, staging.data(), count * sizeof(__nv_bfloat16));
  }
}

void CudaBackend::download_x_as_f32(float* host_dst, const void* src, size_t n) const {
  if (dtype_ == DType::F32) {
    download(host_dst, src, n * sizeof(float));
    return;
  }
  std::vector<__nv_bfloat16> staging(std::min(n, kConversionChunk));
  const __nv_bfloat16* device = as<__nv_bfloat16>(src);
  for (size_t begin = 0; begin < n; begin += kConversionChunk) {
    const size_t count = std::min(kConversionChunk, n - begin);
    download(staging.data(), device + begin, count * sizeof(__nv_bfloat16));
    for (size_t i = 0; i < count; ++i) host_dst[begin + i] = __bfloat162float(staging[i]);
  }
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(state_->stream)); }

// ---- forward / backward ops --------------------------------------------------------------------
// The launchers' names are the Backend methods' names, so they are called as ::slim::name.

void CudaBackend::encoder_forward(void* out, const int* tokens, const void* wte, const void* wpe,
                                  int B, int T, int C) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::encoder_forward(as<X>(out), tokens, as<X>(wte), as<X>(wpe), B, T, C, state_->stream);
  });
}

void CudaBackend::encoder_backward(void* dwte, void* dwpe, const void* dout, const int* tokens,
                                   int B, int T, int C) {
  void* scratch = backward_scratch("encoder_backward", encoder_backward_scratch_bytes(B, T));
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::encoder_backward(as<X>(dwte), as<X>(dwpe), as<X>(dout), tokens, B, T, C, scratch,
                             state_->stream);
  });
}

void CudaBackend::layernorm_forward(void* out, float* mean, float* rstd, const void* inp,
                                    const void* w, const void* b, int N, int C) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::layernorm_forward(as<X>(out), mean, rstd, as<X>(inp), as<X>(w), as<X>(b), N, C,
                              state_->stream);
  });
}

void CudaBackend::fused_residual_layernorm_forward(void* residual_out, void* out, float* mean,
                                                   float* rstd, const void* a, const void* b,
                                                   const void* w, const void* bias, int N,
                                                   int C) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::fused_residual_layernorm_forward(as<X>(residual_out), as<X>(out), mean, rstd,
                                             as<X>(a), as<X>(b), as<X>(w), as<X>(bias), N, C,
                                             state_->stream);
  });
}

void CudaBackend::layernorm_backward(void* dinp, void* dw, void* db, const void* dout,
                                     const void* inp, const void* w, const float* mean,
                                     const float* rstd, int N, int C, bool accumulate_dweight) {
  void* scratch = backward_scratch("layernorm_backward", layernorm_backward_scratch_bytes(N, C));
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::layernorm_backward(as<X>(dinp), as<X>(dw), as<X>(db), as<X>(dout), as<X>(inp),
                               as<X>(w), mean, rstd, N, C, accumulate_dweight, scratch,
                               state_->stream);
  });
}

void CudaBackend::matmul_forward(void* out, void* gelu_pre, const void* inp, const void* weight,
                                 const void* bias, int N, int C, int OC) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::matmul_forward(as<X>(out), as<X>(gelu_pre), as<X>(inp), as<X>(weight), as<X>(bias),
                           N, C, OC, state_->matmul, state_->stream);
  });
}

void CudaBackend::matmul_backward(void* dinp, void* dweight, void* dbias, const void* dout,
                                  const void* inp, const void* weight,
                                  const void* gelu_pre_of_inp, int N, int C, int OC,
                                  bool accumulate_dweight) {
  // Only the bias gradient's column sum uses scratch.
  void* scratch = dbias != nullptr
                      ? backward_scratch("matmul_backward", matmul_backward_scratch_bytes(N, OC))
                      : nullptr;
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::matmul_backward(as<X>(dinp), as<X>(dweight), as<X>(dbias), as<X>(dout), as<X>(inp),
                            as<X>(weight), as<X>(gelu_pre_of_inp), N, C, OC, accumulate_dweight,
                            scratch, state_->matmul, state_->stream);
  });
}

void CudaBackend::gelu_forward(void* out, const void* inp, size_t n) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::gelu_forward(as<X>(out), as<X>(inp), n, state_->stream);
  });
}

void CudaBackend::attention_forward(void* out, float* lse, const void* qkv, int B, int T, int C,
                                    int NH) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::attention_forward(as<X>(out), lse, as<X>(qkv), B, T, C, NH, state_->stream);
  });
}

void CudaBackend::attention_backward(void* dqkv, const void* dout, const void* qkv,
                                     const void* out, const float* lse, int B, int T, int C,
                                     int NH) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::attention_backward(as<X>(dqkv), as<X>(dout), as<X>(qkv), as<X>(out), lse, B, T, C,
                               NH, state_->stream);
  });
}

void CudaBackend::fused_classifier(void* logits, float* losses, const int* targets, float dloss,
                                   int N, int V, int Vp, bool write_dlogits) {
  with_dtype(dtype_, [&](auto x) {
    using X = decltype(x);
    ::slim::fused_classifier(as<X>(logits), losses, targets, dloss, N, V, Vp, write_dlogits,
                             state_->stream);
  });
}

// ---- optimizer ---------------------------------------------------------------------------------

double CudaBackend::sum_squares(const void* x, size_t n) {
  double result = 0.0;
  with_dtype(dtype_, [&](auto tag) {
    using X = decltype(tag);
    // The reduction buffer holds kGlobalNormMaxScratchBytes, what the largest n needs.
    result = ::slim::sum_squares(as<X>(x), n, state_->reduction, state_->stream);
  });
  return result;
}

void CudaBackend::adamw_update(void* params, float* master, const void* grads, void* m, float* v,
                               size_t n, const AdamWArgs& args) {
  with_dtype_and_moment(dtype_, args.m_bf16, [&](auto x, auto moment) {
    using X = decltype(x);
    using M = decltype(moment);
    ::slim::adamw_update(as<X>(params), master, as<X>(grads), as<M>(m), v, n, args, args.seed,
                         state_->stream);
  });
}

void CudaBackend::block_adam_step(void* params, float* master, const void* grads, void* m,
                                  float* v, const TensorPartition& part,
                                  const BlockAdamHyper& hyper) {
  float* scratch = optimizer_scratch("block_adam_step", part);
  with_dtype_and_moment(dtype_, hyper.m_bf16, [&](auto x, auto moment) {
    using X = decltype(x);
    using M = decltype(moment);
    ::slim::block_adam_step(as<X>(params), master, as<X>(grads), as<M>(m), v, part, hyper,
                            scratch, state_->stream);
  });
}

void CudaBackend::block_adam_fold(const void* grads, void* m, float* v,
                                  const TensorPartition& part, const BlockAdamHyper& hyper,
                                  bool first_fold, FoldStatus* status) {
  float* scratch = optimizer_scratch("block_adam_fold", part);
  with_dtype_and_moment(dtype_, hyper.m_bf16, [&](auto x, auto moment) {
    using X = decltype(x);
    using M = decltype(moment);
    ::slim::block_adam_fold(as<X>(grads), as<M>(m), v, part, hyper, first_fold, status, scratch,
                            state_->stream);
  });
}

void CudaBackend::block_adam_apply(void* params, float* master, const void* m, const float* v,
                                   const TensorPartition& part, const BlockAdamHyper& hyper) {
  float* scratch = optimizer_scratch("block_adam_apply", part);
  with_dtype_and_moment(dtype_, hyper.m_bf16, [&](auto x, auto moment) {
    using X = decltype(x);
    using M = decltype(moment);
    ::slim::block_adam_apply(as<X>(params), master, as<M>(m), v, part, hyper, scratch,
                             state_->stream);
  });
}

void CudaBackend::block_adam_unfold(const void* grads, void* m, float* v,
                                    const TensorPartition& part, const BlockAdamHyper& hyper) {
  float* scratch = optimizer_scratch("block_adam_unfold", part);
  with_dtype_and_moment(dtype_, hyper.m_bf16, [&](auto x, auto moment) {
    using X = decltype(x);
    using M = decltype(moment);
    ::slim::block_adam_unfold(as<X>(grads), as<M>(m), v, part, hyper, scratch, state_->stream);
  });
}

void CudaBackend::block_adam_undo_decay(void* m, float* v, const TensorPartition& part,
                                        const BlockAdamHyper& hyper) {
  if (hyper.m_bf16)
    ::slim::block_adam_undo_decay(as<__nv_bfloat16>(m), v, part, hyper, state_->stream);
  else
    ::slim::block_adam_undo_decay(as<float>(m), v, part, hyper, state_->stream);
}

}  // namespace slim
