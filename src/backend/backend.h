// The Backend interface: memory plus every op the model's forward/backward sequence calls.
// The sequence (model/gpt.cpp) is written once against this interface; the CPU reference backend
// and the CUDA backend implement the same ops with the same fusion boundaries, so a CPU run and
// a CUDA run execute the same plan and can be compared op by op.
//
// Pointer conventions:
//   void*  / const void*  : a tensor in the backend's compute dtype ("X": fp32 on the CPU, fp32 or
//                           bf16 on CUDA). Weights, activations and weight gradients are X.
//   float* / const float* : always fp32 (LayerNorm statistics, attention log-sum-exp, per-token
//                           losses, master weights, the second moment v).
//   m (void* in the optimizer ops): the first moment, fp32 or bf16 as AdamWArgs::m_bf16 /
//                           BlockAdamHyper::m_bf16 says (optim/block_adam.h: read as fp32,
//                           written back stochastically rounded with m_seed), on every backend.
//   const int*            : token ids, int32, in backend memory.
// Shapes are given in elements; N = B*T rows for token-wise ops. Row-major everywhere; weights
// of linear layers are [OC, C] (out, in), as in llm.c.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/allocator.h"
#include "model/model_config.h"
#include "optim/block_adam.h"
#include "optim/partition.h"

namespace slim {

enum class DType { F32, BF16 };
inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::F32 ? "fp32" : "bf16"; }

// Arguments of one AdamW update of one tensor (OPTIMIZERS.md section 1).
struct AdamWArgs {
  float lr;            // scheduled learning rate
  float beta1, beta2;
  float eps;           // added to sqrt(v_hat), outside the sqrt
  float weight_decay;  // decoupled, multiplied by lr; 0 for tensors that are not decayed
  float grad_scale;    // multiplies the gradient first (clipping and 1/accumulation live here)
  float bias_correction1;  // 1 - beta1^t
  float bias_correction2;  // 1 - beta2^t
  uint32_t seed = 0;       // stochastic-rounding seed of this step and tensor (bf16 params only)
  bool m_bf16 = false;     // m is stored in bf16 (else fp32)
  uint32_t m_seed = 0;     // stochastic-rounding seed of the bf16 m writes (another than seed)
};

// AdamA's bookkeeping for one optimizer step, kept in backend memory (the optimizer allocates it
// under the Workspace tag and clears it at the step's start) so that a GPU fold never waits for
// the host. The host reads it once per micro-batch.
struct FoldStatus {
  int nonfinite = 0;            // sticky: set by a fold that met a non-finite gradient value
  int committed = 0;            // folds written into m and v since the status was cleared
  double raw_sum_squares = 0.0; // sum over committed folds of ||g||^2, unscaled (lagged-clip proxy)
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual DType compute_dtype() const = 0;
  size_t x_size() const { return dtype_size(compute_dtype()); }
  TaggedAllocator& allocator() { return *allocator_; }

  // ---- memory ---------------------------------------------------------------------------
  void* alloc(size_t bytes, MemTag tag, const std::string& what) {
    return allocator_->allocate(bytes, tag, what);
  }
  void release(void* ptr) { allocator_->release(ptr); }
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) const = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  // Conversions between host fp32 and a backend tensor of the compute dtype (n elements).
  virtual void upload_f32_as_x(void* dst, const float* host_src, size_t n) = 0;
  virtual void download_x_as_f32(float* host_dst, const void* src, size_t n) const = 0;
  virtual void synchronize() {}

  // ---- workspace ----------------------------------------------------------------------------
  // Backends that keep their own device scratch (CUDA: cuda_workspace_plan.h) allocate it here,
  // once the shapes are known, so `slimtrain memory` can predict it; the CPU backend needs none.
  // The model calls the first when it sizes its activations, the optimizer the second.
  virtual void reserve_workspace(const ModelConfig& model, int B, int T) {}
  virtual void reserve_optimizer_workspace(const PartitionTable& partition) {}

  // ---- forward / backward ops -----------------------------------------------------------
  // out[B,T,C] = wte[tokens[b,t]] + wpe[t]
  virtual void encoder_forward(void* out, const int* tokens, const void* wte, const void* wpe,
                               int B, int T, int C) = 0;
  // dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += dout[b,t]. Accumulates (the tied wte also gets
  // the lm_head gradient). Deterministic: the summation order does not depend on threads.
  virtual void encoder_backward(void* dwte, void* dwpe, const void* dout, const int* tokens,
                                int B, int T, int C) = 0;

  // out = LN(inp) * w + b over the last dim; mean/rstd [N] fp32 are kept for the backward.
  virtual void layernorm_forward(void* out, float* mean, float* rstd, const void* inp,
                                 const void* w, const void* b, int N, int C) = 0;
  // residual_out = a + b, then out = LN(residual_out) (the residual stream add fused into LN).
  virtual void fused_residual_layernorm_forward(void* residual_out, void* out, float* mean,
                                                float* rstd, const void* a, const void* b,
                                                const void* w, const void* bias, int N, int C) = 0;
  // dinp += dLN/dinp; dw (+)= ...; db (+)= ... . dinp always accumulates (it is the residual
  // stream's gradient); dw/db accumulate when accumulate_dweight, else they are overwritten.
  virtual void layernorm_backward(void* dinp, void* dw, void* db, const void* dout,
                                  const void* inp, const void* w, const float* mean,
                                  const float* rstd, int N, int C, bool accumulate_dweight) = 0;

  // out[N,OC] = inp[N,C] @ weight[OC,C]^T + bias[OC] (bias may be null).
  // When gelu_pre is not null, gelu_pre receives the matmul result and out = gelu_tanh(gelu_pre).
  virtual void matmul_forward(void* out, void* gelu_pre, const void* inp, const void* weight,
                              const void* bias, int N, int C, int OC) = 0;
  // dinp[N,C] = dout @ weight (overwritten). When gelu_pre_of_inp is not null, the input of this
  // matmul was gelu(gelu_pre_of_inp) and dinp is multiplied by gelu'(gelu_pre_of_inp), so dinp
  // becomes the gradient w.r.t. the pre-activation.
  // dweight[OC,C] (+)= dout^T @ inp; dbias[OC] (+)= column sums of dout (dbias may be null).
  virtual void matmul_backward(void* dinp, void* dweight, void* dbias, const void* dout,
                               const void* inp, const void* weight, const void* gelu_pre_of_inp,
                               int N, int C, int OC, bool accumulate_dweight) = 0;

  // out[n] = gelu_tanh(inp[n]) (the matmul's GELU epilogue on its own: activation recompute).
  virtual void gelu_forward(void* out, const void* inp, size_t n) = 0;

  // Causal multi-head self-attention. qkv[B,T,3C] holds per token q, k, v, each [NH][HS]
  // (HS = C/NH). out[B,T,C] is [NH][HS] per token. lse[B,NH,T] fp32 is the log-sum-exp of each
  // query's scaled scores, kept for the backward; no [T,T] matrix is stored.
  virtual void attention_forward(void* out, float* lse, const void* qkv, int B, int T, int C,
                                 int NH) = 0;
  // dqkv[B,T,3C] (overwritten) from dout[B,T,C], recomputing the scores from qkv and lse.
  virtual void attention_backward(void* dqkv, const void* dout, const void* qkv, const void* out,
                                  const float* lse, int B, int T, int C, int NH) = 0;

  // Fused classifier over logits[N,Vp] (only the first V columns are real tokens):
  // losses[i] = -log softmax(logits[i, :V])[targets[i]]. When write_dlogits, logits[i] is
  // overwritten with dloss * (softmax - onehot(target)) and the padded columns with 0.
  virtual void fused_classifier(void* logits, float* losses, const int* targets, float dloss,
                                int N, int V, int Vp, bool write_dlogits) = 0;

  // ---- optimizer ------------------------------------------------------------------------
  // Sum of squares of n elements of a gradient tensor, in a fixed (deterministic) order.
  virtual double sum_squares(const void* x, size_t n) = 0;
  // AdamW (OPTIMIZERS.md section 1) on n elements. master may be null when the compute dtype is
  // fp32 (params are then the master weights). m is fp32 or bf16 (args.m_bf16).
  virtual void adamw_update(void* params, float* master, const void* grads, void* m, float* v,
                            size_t n, const AdamWArgs& args) = 0;
  // Block-wise Adam (Adam-mini / SlimAdam, OPTIMIZERS.md sections 2-3, grads mode) on one tensor:
  // params/grads/m point at the tensor's first element, v at its first v entry (part.v_offset
  // into the optimizer's v buffer); one v per block of `part`. master as in adamw_update; m fp32
  // or bf16 (hyper.m_bf16) in every block-Adam op.
  virtual void block_adam_step(void* params, float* master, const void* grads, void* m, float* v,
                               const TensorPartition& part, const BlockAdamHyper& hyper) = 0;

  // AdamA (OPTIMIZERS.md sections 5.2 and 5.4), one tensor at a time, pointers as in
  // block_adam_step. status lives in backend memory.
  // Fold one micro-batch gradient into m and v (first_fold: decay m by beta1 and v by beta2 first;
  // hyper.fold_scale is s). When status->nonfinite is already set, or this gradient has a
  // non-finite (grad_scale*g)^2 or block mean, nothing is written and status->nonfinite is set;
  // otherwise m and v are updated, status->committed is incremented and ||g||^2 (unscaled) is
  // added to status->raw_sum_squares. Deterministic. With a bf16 m, each fold rounds m once
  // (hyper.m_seed: the optimizer gives every fold of a step its own).
  virtual void block_adam_fold(const void* grads, void* m, float* v, const TensorPartition& part,
                               const BlockAdamHyper& hyper, bool first_fold,
                               FoldStatus* status) = 0;
  // The step's weight update from the folded m and v. hyper.update_clip > 0 clips the update by
  // its RMS over the tensor's real elements: u = m_hat/(sqrt(v_hat)+eps) is scaled by
  // min(1, update_clip / rms(u)) (weight decay is not scaled).
  virtual void block_adam_apply(void* params, float* master, const void* m, const float* v,
                                const TensorPartition& part, const BlockAdamHyper& hyper) = 0;
  // Take one committed fold of `grads` (same hyper) back out of m and v; undo_decay divides m by
  // beta1 and v by beta2. Used only to restore the state when a step is skipped. A bf16 m is
  // rounded again by each of them, so its restored value carries the roundings of the folds and
  // of the undo (block_adam_cpu.h gives the bound).
  virtual void block_adam_unfold(const void* grads, void* m, float* v,
                                 const TensorPartition& part, const BlockAdamHyper& hyper) = 0;
  virtual void block_adam_undo_decay(void* m, float* v, const TensorPartition& part,
                                     const BlockAdamHyper& hyper) = 0;

 protected:
  std::unique_ptr<TaggedAllocator> allocator_;
};

enum class BackendKind { Cpu, Cuda, Auto };
// Creates the backend a config asks for. "cuda" with no GPU (or no CUDA build) is a UsageError
// that suggests "cpu"; "auto" picks cuda when a device exists.
std::unique_ptr<Backend> make_backend(const std::string& kind, const std::string& precision);
// "cpu" or "cuda": what make_backend picks for `kind` on this machine, without creating it.
std::string resolve_backend_kind(const std::string& kind);

}  // namespace slim
