// CpuBackend: the fp32 reference implementation of the Backend interface. Host memory (64-byte
// aligned), BLAS sgemm for every GEMM, OpenMP for the rest. Each op is a thin cast onto the
// float instantiation of the templates in cpu_ops.h, so the math tested in double by
// tests/test_cpu_ops.cpp is the math this backend runs.
#pragma once
#include <string>

#include "backend/backend.h"

namespace slim {

class CpuBackend : public Backend {
 public:
  // Alignment of every allocation: one cache line, and a full AVX-512 vector.
  static constexpr size_t kAlignment = 64;

  CpuBackend();
  std::string name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::F32; }

  void upload(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) const override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void upload_f32_as_x(void* dst, const float* host_src, size_t n) override;
  void download_x_as_f32(float* host_dst, const void* src, size_t n) const override;

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

  double sum_squares(const void* x, size_t n) override;
  // m is fp32 or, when the hyperparameters say m_bf16, bf16 bits: the CPU computes in fp32 but
  // stores such an m as the CUDA backend does (the reference its kernels are tested against).
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
};

}  // namespace slim
