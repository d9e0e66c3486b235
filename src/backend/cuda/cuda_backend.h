// CudaBackend: the Backend interface on one NVIDIA GPU, in fp32 or bf16. Every op is a thin call
// of the launcher in kernels/<family>.cuh for the compute dtype, on the backend's own stream; the
// GEMMs go through cuBLASLt. Plain C++ on purpose (no CUDA type appears here), so the factory,
// the trainer and the memory planner include it without the CUDA headers; the implementation is
// cuda_backend.cu, compiled by nvcc for the real build and by g++ against the SIMT emulator for
// the tests (tests/emulated_cuda_backend.cpp).
//
// Device memory comes only from the tagged allocator (cudaMalloc/cudaFree). The backend's own
// buffers are tagged Workspace and sized by cuda_workspace_plan.h, which `slimtrain memory` calls
// without a GPU; they are allocated at fixed points:
//   construction                        cuBLASLt workspace, sum_squares partials
//   reserve_workspace(model, B, T)      the scratch of the backward ops (encoder, layernorm,
//                                       matmul dbias), for micro-batches up to B x T
//   reserve_optimizer_workspace(part)   the block-Adam kernels' scratch, for the largest tensor
// An op whose scratch was not reserved (or reserved for smaller shapes) throws an Error naming the
// missing call, rather than allocating behind the planner's back.
//
// Ordering: every op is enqueued on one stream, so kernels run in call order and buffers can be
// reused from one op to the next without synchronizing. upload, download, sum_squares and the
// conversions wait for the stream, so host memory handed to them may be reused on return.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "model/model_config.h"
#include "optim/partition.h"

namespace slim {

// Whether this process can use a CUDA device: `devices` > 0, or `reason` says why not (the cudart
// error, or that no device was found).
struct CudaAvailability {
  int devices = 0;
  std::string reason;
};
CudaAvailability cuda_availability();

// A CudaBackend on device 0 computing in `compute_dtype` (what make_backend calls).
std::unique_ptr<Backend> make_cuda_backend(DType compute_dtype);

class CudaBackend final : public Backend {
 public:
  // Selects device 0, creates the stream and the cuBLASLt handle and allocates the fixed
  // workspaces. Throws Error when no device can be used.
  explicit CudaBackend(DType compute_dtype);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return "cuda"; }
  DType compute_dtype() const override { return dtype_; }

  // ---- workspace ----------------------------------------------------------------------------
  // Reserves the backward ops' scratch for micro-batches up to B x T of `model` (call once the
  // shapes are known, before the first backward; GptModel::allocate_activations is the place).
  // A later call with larger shapes replaces the buffer; with smaller ones it keeps it.
  void reserve_workspace(const ModelConfig& model, int B, int T);
  // Reserves the block-Adam kernels' scratch for the tensors of `partition` (the Optimizer's
  // constructor is the place). Same replacement rule.
  void reserve_optimizer_workspace(const PartitionTable& partition);

  // ---- memory ------------------------------------------------------------------------------
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) const override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  // bf16: host-side round to nearest even (the GPU's __float2bfloat16_rn), in bounded chunks.
  void upload_f32_as_x(void* dst, const float* host_src, size_t n) override;
  void download_x_as_f32(float* host_dst, const void* src, size_t n) const override;
  void synchronize() override;

  // ---- forward / backward ops ----------------------------------------------------------------
  void encoder_forward(void* out, const int* tokens, const void* wte, const void* wpe, int B,
                       int T, int C) override;
  void encoder_backward(void* dwte, void* dwpe, const void* dout, const int* tokens, int B, int T,
                        int C) override;
  void layernorm_forward(void* out, float* mean, float* rstd, const void* inp, const void* w,
                         const void* b, int N, int C) override;
  void fused_residual_layernorm_forward(void* residual_out, void* out, float* mean, float* rstd,
                                        const void* a, const void* b, const void* w,
                                        const void* bias, int N, int C) override;
  void layernorm_backward(void* dinp, void* dw, void* db, const void* dout, const void* inp,
                          const void* w, const float* mean, const float* rstd, int N, int C,
                          bool accumulate_dweight) override;
  void matmul_forward(void* out, void* gelu_pre, const void* inp, const void* weight,
                      const void* bias, int N, int C, int OC) override;
  void matmul_backward(void* dinp, void* dweight, void* dbias, const void* dout, const void* inp,
                       const void* weight, const void* gelu_pre_of_inp, int N, int C, int OC,
                       bool accumulate_dweight) override;
  void gelu_forward(void* out, const void* inp, size_t n) override;
  void attention_forward(void* out, float* lse, const void* qkv, int B, int T, int C,
                         int NH) override;
  void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out,
                          const float* lse, int B, int T, int C, int NH) override;
  void fused_classifier(void* logits, float* losses, const int* targets, float dloss, int N,
                        int V, int Vp, bool write_dlogits) override;

  // ---- optimizer -----------------------------------------------------------------------------
  double sum_squares(const void* x, size_t n) override;
  // m is fp32 or bf16 (args.m_bf16 / hyper.m_bf16), independently of the compute dtype.
  void adamw_update(void* params, float* master, const void* grads, void* m, float* v, size_t n,
                    const AdamWArgs& args) override;
  void block_adam_step(void* params, float* master, const void* grads, void* m, float* v,
                       const TensorPartition& part, const BlockAdamHyper& hyper) override;
  void block_adam_fold(const void* grads, void* m, float* v, const TensorPartition& part,
                       const BlockAdamHyper& hyper, bool first_fold, FoldStatus* status) override;
  void block_adam_apply(void* params, float* master, const void* m, const float* v,
                        const TensorPartition& part, const BlockAdamHyper& hyper) override;
  void block_adam_unfold(const void* grads, void* m, float* v, const TensorPartition& part,
                         const BlockAdamHyper& hyper) override;
  void block_adam_undo_decay(void* m, float* v, const TensorPartition& part,
                             const BlockAdamHyper& hyper) override;

 private:
  struct State;  // stream, cuBLASLt handle and workspace pointers (CUDA types, in the .cu)

  // The reserved scratch for an op that needs `bytes` of it, or an Error naming the missing call.
  void* backward_scratch(const char* op, size_t bytes) const;
  float* optimizer_scratch(const char* op, const TensorPartition& part) const;
  // Replaces *buffer (holding *held bytes) with one of `bytes` when that is larger.
  void grow_workspace(void** buffer, size_t* held, size_t bytes, const char* what);

  DType dtype_;
  std::unique_ptr<State> state_;
};

}  // namespace slim
