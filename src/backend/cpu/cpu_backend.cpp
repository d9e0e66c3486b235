// CpuBackend: memory is plain aligned host memory; every op forwards to the float instantiation
// of cpu_ops.h.
#include "backend/cpu/cpu_backend.h"

#include "optim/block_adam_cpu.h"
#include "util/error.h"

#include <cstdlib>
#include <cstring>

#include "backend/cpu/cpu_ops.h"

namespace slim {

namespace {
float* f32(void* p) { return static_cast<float*>(p); }
const float* f32(const void* p) { return static_cast<const float*>(p); }
}  // namespace

CpuBackend::CpuBackend() {
  allocator_ = std::make_unique<TaggedAllocator>(
      [](size_t bytes) -> void* {
        // std::aligned_alloc requires the size to be a multiple of the alignment.
        const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
        return std::aligned_alloc(kAlignment, rounded);
      },
      [](void* ptr) { std::free(ptr); });
}

// ---- memory: host to host ------------------------------------------------------------------
void CpuBackend::upload(void* dst, const void* host_src, size_t bytes) {
  std::memcpy(dst, host_src, bytes);
}
void CpuBackend::download(void* host_dst, const void* src, size_t bytes) const {
  std::memcpy(host_dst, src, bytes);
}
void CpuBackend::copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
void CpuBackend::zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
// The compute dtype is fp32, so the conversions are copies.
void CpuBackend::upload_f32_as_x(void* dst, const float* host_src, size_t n) {
  std::memcpy(dst, host_src, n * sizeof(float));
}
void CpuBackend::download_x_as_f32(float* host_dst, const void* src, size_t n) const {
  std::memcpy(host_dst, src, n * sizeof(float));
}

// ---- ops -----------------------------------------------------------------------------------
void CpuBackend::encoder_forward(void* out, const int* tokens, const void* wte, const void* wpe,
                                 int B, int T, int C) {
  cpu::encoder_forward(f32(out), tokens, f32(wte), f32(wpe), B, T, C);
}

void CpuBackend::encoder_backward(void* dwte, void* dwpe, const void* dout, const int* tokens,
                                  int B, int T, int C) {
  cpu::encoder_backward(f32(dwte), f32(dwpe), f32(dout), tokens, B, T, C);
}

void CpuBackend::layernorm_forward(void* out, float* mean, float* rstd, const void* inp,
                                   const void* w, const void* b, int N, int C) {
  cpu::layernorm_forward(f32(out), mean, rstd, f32(inp), f32(w), f32(b), N, C);
}

void CpuBackend::fused_residual_layernorm_forward(void* residual_out, void* out, float* mean,
                                                  float* rstd, const void* a, const void* b,
                                                  const void* w, const void* bias, int N, int C) {
  cpu::fused_residual_layernorm_forward(f32(residual_out), f32(out), mean, rstd, f32(a), f32(b),
                                        f32(w), f32(bias), N, C);
}

void CpuBackend::layernorm_backward(void* dinp, void* dw, void* db, const void* dout,
                                    const void* inp, const void* w, const float* mean,
                                    const float* rstd, int N, int C, bool accumulate_dweight) {
  cpu::layernorm_backward(f32(dinp), f32(dw), f32(db), f32(dout), f32(inp), f32(w), mean, rstd,
                          N, C, accumulate_dweight);
}

void CpuBackend::matmul_forward(void* out, void* gelu_pre, const void* inp, const void* weight,
                                const void* bias, int N, int C, int OC) {
  cpu::matmul_forward(f32(out), f32(gelu_pre), f32(inp), f32(weight), f32(bias), N, C, OC);
}

void CpuBackend::matmul_backward(void* dinp, void* dweight, void* dbias, const void* dout,
                                 const void* inp, const void* weight, const void* gelu_pre_of_inp,
                                 int N, int C, int OC, bool accumulate_dweight) {
  cpu::matmul_backward(f32(dinp), f32(dweight), f32(dbias), f32(dout), f32(inp), f32(weight),
                       f32(gelu_pre_of_inp), N, C, OC, accumulate_dweight);
}

void CpuBackend::attention_forward(void* out, float* lse, const void* qkv, int B, int T, int C,
                                   int NH) {
  cpu::attention_forward(f32(out), lse, f32(qkv), B, T, C, NH);
}

void CpuBackend::attention_backward(void* dqkv, const void* dout, const void* qkv,
                                    const void* out, const float* lse, int B, int T, int C,
                                    int NH) {
  cpu::attention_backward(f32(dqkv), f32(dout), f32(qkv), f32(out), lse, B, T, C, NH);
}

void CpuBackend::fused_classifier(void* logits, float* losses, const int* targets, float dloss,
                                  int N, int V, int Vp, bool write_dlogits) {
  cpu::fused_classifier(f32(logits), losses, targets, dloss, N, V, Vp, write_dlogits);
}

void CpuBackend::gelu_forward(void* out, const void* inp, size_t n) {
  float* o = f32(out);
  const float* x = f32(inp);
#pragma omp parallel for schedule(static)
  for (ptrdiff_t i = 0; i < ptrdiff_t(n); ++i) o[i] = cpu::gelu_tanh(x[i]);
}

double CpuBackend::sum_squares(const void* x, size_t n) { return cpu::sum_squares(f32(x), n); }

void CpuBackend::adamw_update(void* params, float* master, const void* grads, void* m, float* v,
                              size_t n, const AdamWArgs& args) {
  if (args.m_bf16)
    cpu::adamw_update(f32(params), master, f32(grads), static_cast<uint16_t*>(m), v, n, args);
  else
    cpu::adamw_update(f32(params), master, f32(grads), f32(m), v, n, args);
}

void CpuBackend::block_adam_step(void* params, float* master, const void* grads, void* m,
                                 float* v, const TensorPartition& part,
                                 const BlockAdamHyper& hyper) {
  SLIM_CHECK(master == nullptr, "the cpu backend is fp32: its parameters are the master weights");
  block_adam_step_cpu(part, f32(params), f32(grads), m, v, hyper);
}

void CpuBackend::block_adam_fold(const void* grads, void* m, float* v,
                                 const TensorPartition& part, const BlockAdamHyper& hyper,
                                 bool first_fold, FoldStatus* status) {
  // The status is host memory here; the same protocol runs on the GPU without a host round trip.
  if (status->nonfinite) return;
  if (!block_adam_fold_cpu(part, f32(grads), m, v, hyper, first_fold)) {
    status->nonfinite = 1;
    return;
  }
  ++status->committed;
  status->raw_sum_squares += cpu::sum_squares(f32(grads), size_t(part.rows * part.cols));
}

void CpuBackend::block_adam_apply(void* params, float* master, const void* m, const float* v,
                                  const TensorPartition& part, const BlockAdamHyper& hyper) {
  SLIM_CHECK(master == nullptr, "the cpu backend is fp32: its parameters are the master weights");
  block_adam_apply_cpu(part, f32(params), m, v, hyper);
}

void CpuBackend::block_adam_unfold(const void* grads, void* m, float* v,
                                   const TensorPartition& part, const BlockAdamHyper& hyper) {
  block_adam_unfold_cpu(part, f32(grads), m, v, hyper);
}

void CpuBackend::block_adam_undo_decay(void* m, float* v, const TensorPartition& part,
                                       const BlockAdamHyper& hyper) {
  block_adam_undo_decay_cpu(part, m, v, hyper);
}

}  // namespace slim
