// GPT-2 as a sequence of Backend ops: the forward and backward passes are written here once, for
// every backend. Owns the flat parameter and gradient buffers and the activation plan; knows
// nothing of CUDA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/model_config.h"
#include "model/param_table.h"

namespace slim {

// One buffer the model allocates: its name, allocator tag and size.
struct BufferPlan {
  std::string what;
  MemTag tag;
  size_t bytes;
};

class GptModel {
 public:
  GptModel(const ModelConfig& config, Backend& backend);
  ~GptModel();
  GptModel(const GptModel&) = delete;
  GptModel& operator=(const GptModel&) = delete;

  const ModelConfig& config() const { return config_; }
  const ParamTable& table() const { return table_; }
  size_t num_params() const { return table_.total_numel; }
  Backend& backend() { return backend_; }

  void* params() { return params_; }            // flat, compute dtype
  void* grads() { return grads_; }              // flat, compute dtype (full mode; else null)
  void* param_ptr(const ParamInfo& p) { return x_at(params_, p.offset); }
  void* grad_ptr(const ParamInfo& p) { return x_at(grads_, p.offset); }

  // GPT-2 init: N(0, init_std) for weights and embeddings, residual projections scaled by
  // 1/sqrt(2*n_layer), biases 0, norm gains 1, padded vocab rows 0. Deterministic from seed.
  void init_weights(uint64_t seed);
  std::vector<float> params_to_host() const;
  void params_from_host(const std::vector<float>& host);

  void allocate_grads();   // the full-model gradient buffer (accumulation mode `grads`)
  void zero_grads();

  // Accumulation mode `adama`: no full gradient buffer. Each micro-batch's weight gradients live
  // in one layer's worth of scratch (reused by every block) plus buffers for the tensors outside
  // the blocks (wte, wpe, lnf); backward() hands each tensor's gradient to `sink` the moment it
  // is final and the buffer is reused right after. Order within a backward (the same every
  // time): lnf.weight, lnf.bias, then each block from the last to the first (its tensors in
  // table order), then wpe, then wte — wte last because the tied embedding gets its two
  // contributions (the head at the start of the backward, the embedding at the end) before it
  // is handed over once.
  using GradSink = std::function<void(size_t param_index, const void* grad)>;
  void allocate_layer_grads(GradSink sink);
  void set_grad_sink(GradSink sink) { sink_ = std::move(sink); }
  bool streams_grads() const { return layer_grads_ != nullptr; }

  // Sizes activations for micro-batches up to B x T (T <= max_seq_len). Called once; later
  // forward calls may use any B' <= B, T' <= T.
  // recompute (llm.c's -r): 0 keeps every activation; 1 recomputes GELU outputs in the backward
  // (one [B,T,4C] buffer instead of one per layer); 2 also recomputes the two LayerNorm outputs
  // of each block (ln1, ln2: one [B,T,C] buffer each).
  void allocate_activations(int B, int T, int recompute = 0);

  // Exactly the buffers allocate_activations / allocate_grads / allocate_layer_grads take, for a
  // model of this config and a compute dtype of x_size bytes, without building a model (the
  // memory planner sums these).
  static std::vector<BufferPlan> activation_plan(const ModelConfig& config, int B, int T,
                                                 int recompute, size_t x_size);
  static std::vector<BufferPlan> gradient_plan(const ModelConfig& config, bool per_layer,
                                               size_t x_size);

  // Forward over inputs[B,T] (host int32). With targets: returns the mean loss over B*T and,
  // when dloss != 0, leaves dloss*(softmax - onehot) in the logits buffer for backward().
  // Without targets: returns 0 and leaves logits.
  float forward(const int* inputs, const int* targets, int B, int T, float dloss);
  // Backward of the last forward (which must have been given targets and dloss != 0);
  // accumulates weight gradients into grads().
  void backward();
  // Logits of the last forward for row (b, t): Vp floats copied to host.
  void logits_row_to_host(int b, int t, float* host_out) const;

 private:
  // Element offsets of one block's tensors in the flat parameter (and gradient) buffer.
  struct LayerOffsets {
    size_t ln1w, ln1b, qkvw, qkvb, projw, projb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb;
  };
  void* x_at(void* base, size_t elems) const;
  const void* P(size_t offset) const { return x_at(params_, offset); }
  // The gradient buffer of the tensor at `offset`: the full buffer, or in adama mode the layer
  // scratch / the outside-the-blocks buffer.
  void* G(size_t offset);
  // Layer l's slice of a per-layer activation, or the one shared buffer when it is recomputed.
  void* ln1_at(int l) const { return x_at(ln1_, recompute_ >= 2 ? 0 : size_t(l) * cur_NC()); }
  void* ln2_at(int l) const { return x_at(ln2_, recompute_ >= 2 ? 0 : size_t(l) * cur_NC()); }
  void* fch_gelu_at(int l) const {
    return x_at(fch_gelu_, recompute_ >= 1 ? 0 : size_t(l) * cur_B_ * cur_T_ * config_.ffn_hidden);
  }
  size_t cur_NC() const { return size_t(cur_B_) * cur_T_ * config_.n_embd; }
  void hand_over(size_t param_index);  // adama: gives the tensor's final gradient to the sink
  void hand_over_layer(int layer);

  ModelConfig config_;
  Backend& backend_;
  ParamTable table_;
  std::vector<LayerOffsets> layers_;
  size_t wte_ = 0, wpe_ = 0, lnfw_ = 0, lnfb_ = 0;
  void* params_ = nullptr;
  void* grads_ = nullptr;
  // adama mode
  void* layer_grads_ = nullptr;      // one block's tensors, at (offset - layer_begin_[l])
  void* outer_grads_ = nullptr;      // wte | wpe | lnf.weight | lnf.bias
  std::vector<size_t> layer_begin_;  // first element of each block in the flat table
  size_t layer_numel_ = 0;           // elements of one block (all blocks are alike)
  std::vector<std::vector<size_t>> layer_params_;  // param indices of each block
  size_t wte_index_ = 0, wpe_index_ = 0, lnfw_index_ = 0, lnfb_index_ = 0;
  GradSink sink_;
  int recompute_ = 0;

  // Activations (llm.c's layout, with flash-style attention: lse instead of a [T,T] matrix).
  int max_B_ = 0, max_T_ = 0;
  int cur_B_ = 0, cur_T_ = 0;
  int* inputs_ = nullptr;     // [B,T]
  int* targets_ = nullptr;    // [B,T]
  void* encoded_ = nullptr;   // [B,T,C]
  void* ln1_ = nullptr;       // [L,B,T,C]
  float* ln1_mean_ = nullptr; // [L,B,T]
  float* ln1_rstd_ = nullptr;
  void* qkv_ = nullptr;       // [L,B,T,3C]
  void* atty_ = nullptr;      // [L,B,T,C]
  float* att_lse_ = nullptr;  // [L,B,NH,T]
  void* residual2_ = nullptr; // [L,B,T,C]
  void* ln2_ = nullptr;       // [L,B,T,C]
  float* ln2_mean_ = nullptr;
  float* ln2_rstd_ = nullptr;
  void* fch_ = nullptr;       // [L,B,T,4C] pre-GELU
  void* fch_gelu_ = nullptr;  // [L,B,T,4C]
  void* residual3_ = nullptr; // [L,B,T,C]
  void* lnf_ = nullptr;       // [B,T,C]
  float* lnf_mean_ = nullptr;
  float* lnf_rstd_ = nullptr;
  void* logits_ = nullptr;    // [B,T,Vp]
  float* losses_ = nullptr;   // [B,T]
  // Backward scratch.
  void* dresidual_ = nullptr; // [B,T,C]
  void* scratch_btc_ = nullptr;   // [B,T,C]: attproj/fcproj outputs in forward, d(ln) in backward
  void* scratch_bt4c_ = nullptr;  // [B,T,4C]: d(fch), d(qkv)
  std::vector<float> host_losses_;
};

}  // namespace slim
