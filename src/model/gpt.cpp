// The GPT-2 forward/backward sequence against the Backend interface. The buffer layout follows
// llm.c: per-layer activations are stored [L, B, T, ...] so layer l's slice starts at l*B*T*...;
// the attention keeps only its log-sum-exp (flash-style), never a [T, T] matrix.
#include "model/gpt.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/rng.h"

namespace slim {

GptModel::GptModel(const ModelConfig& config, Backend& backend)
    : config_(config), backend_(backend), table_(build_param_table(config)) {
  auto at = [&](const std::string& name) { return table_.find(name).offset; };
  wte_ = at("wte");
  wpe_ = at("wpe");
  lnfw_ = at("lnf.weight");
  lnfb_ = at("lnf.bias");
  for (int l = 0; l < config_.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    layers_.push_back({at(h + "ln1.weight"), at(h + "ln1.bias"), at(h + "attn.qkv.weight"),
                       at(h + "attn.qkv.bias"), at(h + "attn.proj.weight"),
                       at(h + "attn.proj.bias"), at(h + "ln2.weight"), at(h + "ln2.bias"),
                       at(h + "mlp.fc.weight"), at(h + "mlp.fc.bias"), at(h + "mlp.proj.weight"),
                       at(h + "mlp.proj.bias")});
  }
  params_ = backend_.alloc(table_.total_numel * backend_.x_size(), MemTag::Params, "parameters");

  auto index_of = [&](const std::string& name) {
    return size_t(&table_.find(name) - table_.params.data());
  };
  wte_index_ = index_of("wte");
  wpe_index_ = index_of("wpe");
  lnfw_index_ = index_of("lnf.weight");
  lnfb_index_ = index_of("lnf.bias");
  layer_params_.resize(config_.n_layer);
  layer_begin_.assign(config_.n_layer, table_.total_numel);
  std::vector<size_t> layer_end(config_.n_layer, 0);
  for (size_t i = 0; i < table_.params.size(); ++i) {
    const ParamInfo& p = table_.params[i];
    if (p.layer < 0) continue;
    layer_params_[p.layer].push_back(i);
    layer_begin_[p.layer] = std::min(layer_begin_[p.layer], p.offset);
    layer_end[p.layer] = std::max(layer_end[p.layer], p.offset + p.numel);
  }
  layer_numel_ = layer_end[0] - layer_begin_[0];
  for (int l = 0; l < config_.n_layer; ++l) {
    size_t sum = 0;
    for (size_t i : layer_params_[l]) sum += table_.params[i].numel;
    // The layer scratch maps a block's tensors by their offset within the block.
    SLIM_CHECK(layer_end[l] - layer_begin_[l] == layer_numel_ && sum == layer_numel_,
               "block ", l, " is not one contiguous run of the parameter table like block 0");
  }
}

GptModel::~GptModel() {
  for (void* ptr : {(void*)inputs_, (void*)targets_, encoded_, ln1_, (void*)ln1_mean_,
                    (void*)ln1_rstd_, qkv_, atty_, (void*)att_lse_, residual2_, ln2_,
                    (void*)ln2_mean_, (void*)ln2_rstd_, fch_, fch_gelu_, residual3_, lnf_,
                    (void*)lnf_mean_, (void*)lnf_rstd_, logits_, (void*)losses_, dresidual_,
                    scratch_btc_, scratch_bt4c_, grads_, layer_grads_, outer_grads_, params_})
    backend_.release(ptr);
}

void* GptModel::x_at(void* base, size_t elems) const {
  return static_cast<char*>(base) + elems * backend_.x_size();
}

void GptModel::init_weights(uint64_t seed) {
  std::vector<float> host(table_.total_numel, 0.0f);
  Rng rng(seed);
  const float residual_std = config_.init_std / std::sqrt(2.0f * config_.n_layer);
  for (const ParamInfo& info : table_.params) {
    float* w = host.data() + info.offset;
    switch (info.role) {
      case ParamRole::NormWeight:
        for (size_t i = 0; i < info.numel; ++i) w[i] = 1.0f;
        break;
      case ParamRole::NormBias:
      case ParamRole::AttnQKVBias:
      case ParamRole::AttnProjBias:
      case ParamRole::MlpUpBias:
      case ParamRole::MlpDownBias:
        break;  // zeros
      default: {
        const bool residual_projection =
            info.role == ParamRole::AttnProjWeight || info.role == ParamRole::MlpDownWeight;
        const float stddev = residual_projection ? residual_std : config_.init_std;
        // Only the real rows are drawn: padded vocab rows stay zero (they are never a target and
        // their logits get zero gradient through the classifier).
        const size_t real = size_t(info.real_rows) * (info.numel / size_t(info.shape[0]));
        for (size_t i = 0; i < real; ++i) w[i] = float(rng.normal() * stddev);
      }
    }
  }
  params_from_host(host);
}

std::vector<float> GptModel::params_to_host() const {
  std::vector<float> host(table_.total_numel);
  backend_.download_x_as_f32(host.data(), params_, host.size());
  return host;
}

void GptModel::params_from_host(const std::vector<float>& host) {
  SLIM_CHECK(host.size() == table_.total_numel, "parameter count mismatch");
  backend_.upload_f32_as_x(params_, host.data(), host.size());
}

void GptModel::allocate_grads() {
  if (!grads_) {
    const BufferPlan plan = gradient_plan(config_, false, backend_.x_size())[0];
    grads_ = backend_.alloc(plan.bytes, plan.tag, plan.what);
  }
  zero_grads();
}

void GptModel::zero_grads() {
  if (grads_) backend_.zero(grads_, table_.total_numel * backend_.x_size());
}

void GptModel::allocate_layer_grads(GradSink sink) {
  SLIM_CHECK(!grads_ && !layer_grads_, "gradient buffers are allocated once");
  const std::vector<BufferPlan> plan = gradient_plan(config_, true, backend_.x_size());
  layer_grads_ = backend_.alloc(plan[0].bytes, plan[0].tag, plan[0].what);
  outer_grads_ = backend_.alloc(plan[1].bytes, plan[1].tag, plan[1].what);
  sink_ = std::move(sink);
}

void* GptModel::G(size_t offset) {
  if (grads_) return x_at(grads_, offset);
  SLIM_CHECK(layer_grads_, "backward before allocate_grads() or allocate_layer_grads()");
  // Outside the blocks: wte | wpe | lnf.weight | lnf.bias, packed in that order.
  size_t packed = 0;
  for (size_t index : {wte_index_, wpe_index_, lnfw_index_, lnfb_index_}) {
    const ParamInfo& p = table_.params[index];
    if (offset >= p.offset && offset < p.offset + p.numel)
      return x_at(outer_grads_, packed + (offset - p.offset));
    packed += p.numel;
  }
  for (size_t l = 0; l < layer_begin_.size(); ++l)
    if (offset >= layer_begin_[l] && offset < layer_begin_[l] + layer_numel_)
      return x_at(layer_grads_, offset - layer_begin_[l]);
  throw Error(cat("internal: no gradient buffer for parameter offset ", offset));
}

void GptModel::hand_over(size_t param_index) {
  if (grads_) return;  // full mode: gradients stay in the buffer for the optimizer step
  SLIM_CHECK(sink_, "adama mode needs a gradient sink");
  sink_(param_index, G(table_.params[param_index].offset));
}

void GptModel::hand_over_layer(int layer) {
  for (size_t index : layer_params_[layer]) hand_over(index);
}

std::vector<BufferPlan> GptModel::activation_plan(const ModelConfig& config, int B, int T,
                                                  int recompute, size_t x_size) {
  const size_t BT = size_t(B) * T, C = config.n_embd, L = config.n_layer, NH = config.n_head,
               F = config.ffn_hidden, Vp = config.padded_vocab_size;
  // Recomputed activations keep one layer's buffer, refilled in the backward.
  const size_t ln_layers = recompute >= 2 ? 1 : L, gelu_layers = recompute >= 1 ? 1 : L;
  const size_t xs = x_size;
  const MemTag A = MemTag::Activations, S = MemTag::Scratch;
  // The order is the order of the member pointers allocate_activations binds them to.
  return {
      {"inputs", A, BT * 4},
      {"targets", A, BT * 4},
      {"encoded", A, BT * C * xs},
      {"ln1", A, ln_layers * BT * C * xs},
      {"ln1_mean", A, L * BT * 4},
      {"ln1_rstd", A, L * BT * 4},
      {"qkv", A, L * BT * 3 * C * xs},
      {"atty", A, L * BT * C * xs},
      {"att_lse", A, L * BT * NH * 4},
      {"residual2", A, L * BT * C * xs},
      {"ln2", A, ln_layers * BT * C * xs},
      {"ln2_mean", A, L * BT * 4},
      {"ln2_rstd", A, L * BT * 4},
      {"fch", A, L * BT * F * xs},
      {"fch_gelu", A, gelu_layers * BT * F * xs},
      {"residual3", A, L * BT * C * xs},
      {"lnf", A, BT * C * xs},
      {"lnf_mean", A, BT * 4},
      {"lnf_rstd", A, BT * 4},
      {"logits", A, BT * Vp * xs},
      {"losses", A, BT * 4},
      {"dresidual", S, BT * C * xs},
      {"scratch_btc", S, BT * C * xs},
      {"scratch_bt4c", S, BT * std::max(F, 3 * C) * xs},
  };
}

std::vector<BufferPlan> GptModel::gradient_plan(const ModelConfig& config, bool per_layer,
                                                size_t x_size) {
  const ParamTable table = build_param_table(config);
  if (!per_layer) return {{"gradients", MemTag::Grads, table.total_numel * x_size}};
  size_t block = 0, outer = 0;
  for (const ParamInfo& p : table.params) {
    if (p.layer == 0) block += p.numel;  // every block is alike (checked in the constructor)
    if (p.layer < 0) outer += p.numel;   // wte, wpe, lnf
  }
  return {{"one block's gradients", MemTag::Grads, block * x_size},
          {"wte/wpe/lnf gradients", MemTag::Grads, outer * x_size}};
}

void GptModel::allocate_activations(int B, int T, int recompute) {
  SLIM_CHECK(!encoded_, "activations are allocated once");
  // The config validates training.recompute for users; this guards library callers.
  SLIM_CHECK(recompute >= 0 && recompute <= 2, "recompute level ", recompute, " is not 0, 1 or 2");
  if (T > config_.max_seq_len)
    throw UsageError(cat("training.seq_len ", T, " exceeds model.max_seq_len ",
                         config_.max_seq_len, "; lower seq_len or raise max_seq_len"));
  recompute_ = recompute;
  max_B_ = B;
  max_T_ = T;
  void** slots[] = {(void**)&inputs_,    (void**)&targets_,  &encoded_,  &ln1_,
                    (void**)&ln1_mean_,  (void**)&ln1_rstd_, &qkv_,      &atty_,
                    (void**)&att_lse_,   &residual2_,        &ln2_,      (void**)&ln2_mean_,
                    (void**)&ln2_rstd_,  &fch_,              &fch_gelu_, &residual3_,
                    &lnf_,               (void**)&lnf_mean_, (void**)&lnf_rstd_, &logits_,
                    (void**)&losses_,    &dresidual_,        &scratch_btc_, &scratch_bt4c_};
  const std::vector<BufferPlan> plan =
      activation_plan(config_, B, T, recompute, backend_.x_size());
  SLIM_CHECK(plan.size() == std::size(slots), "activation plan and buffers disagree");
  for (size_t i = 0; i < plan.size(); ++i)
    *slots[i] = backend_.alloc(plan[i].bytes, plan[i].tag, plan[i].what);
  host_losses_.resize(size_t(B) * T);
  backend_.reserve_workspace(config_, B, T);
}

float GptModel::forward(const int* inputs, const int* targets, int B, int T, float dloss) {
  SLIM_CHECK(encoded_, "forward before allocate_activations()");
  SLIM_CHECK(B <= max_B_ && T <= max_T_ && B > 0 && T > 0, "micro-batch ", B, "x", T,
             " exceeds the allocated ", max_B_, "x", max_T_);
  const int C = config_.n_embd, L = config_.n_layer, NH = config_.n_head,
            F = config_.ffn_hidden, V = config_.vocab_size, Vp = config_.padded_vocab_size;
  const int N = B * T;
  const size_t NC = size_t(N) * C;
  for (int i = 0; i < N; ++i)
    if (inputs[i] < 0 || inputs[i] >= V || (targets && (targets[i] < 0 || targets[i] >= V)))
      throw Error(cat("token id out of range at position ", i, " of the micro-batch: input ",
                      inputs[i], targets ? cat(", target ", targets[i]) : std::string(),
                      " (vocab_size ", V, ")"));
  cur_B_ = B;
  cur_T_ = T;
  backend_.upload(inputs_, inputs, size_t(N) * 4);
  if (targets) backend_.upload(targets_, targets, size_t(N) * 4);

  backend_.encoder_forward(encoded_, inputs_, P(wte_), P(wpe_), B, T, C);
  // Layer 0's first LayerNorm has no residual add in front of it; every later LayerNorm
  // (ln1 of layer l>0, ln2, lnf) is fused with the residual add that precedes it.
  backend_.layernorm_forward(ln1_at(0), ln1_mean_, ln1_rstd_, encoded_, P(layers_[0].ln1w),
                             P(layers_[0].ln1b), N, C);
  for (int l = 0; l < L; ++l) {
    const LayerOffsets& w = layers_[l];
    const void* residual = l == 0 ? encoded_ : x_at(residual3_, (l - 1) * NC);
    void* l_ln1 = ln1_at(l);
    void* l_qkv = x_at(qkv_, l * NC * 3);
    void* l_atty = x_at(atty_, l * NC);
    void* l_residual2 = x_at(residual2_, l * NC);
    void* l_ln2 = ln2_at(l);
    void* l_fch = x_at(fch_, l * size_t(N) * F);
    void* l_fch_gelu = fch_gelu_at(l);
    void* l_residual3 = x_at(residual3_, l * NC);

    backend_.matmul_forward(l_qkv, nullptr, l_ln1, P(w.qkvw), P(w.qkvb), N, C, 3 * C);
    backend_.attention_forward(l_atty, att_lse_ + size_t(l) * N * NH, l_qkv, B, T, C, NH);
    backend_.matmul_forward(scratch_btc_, nullptr, l_atty, P(w.projw), P(w.projb), N, C, C);
    backend_.fused_residual_layernorm_forward(l_residual2, l_ln2, ln2_mean_ + size_t(l) * N,
                                              ln2_rstd_ + size_t(l) * N, residual, scratch_btc_,
                                              P(w.ln2w), P(w.ln2b), N, C);
    backend_.matmul_forward(l_fch_gelu, l_fch, l_ln2, P(w.fcw), P(w.fcb), N, C, F);
    backend_.matmul_forward(scratch_btc_, nullptr, l_fch_gelu, P(w.fcprojw), P(w.fcprojb), N, F,
                            C);
    // The residual add after the MLP is fused with the next LayerNorm: ln1 of layer l+1, or lnf.
    if (l + 1 < L) {
      backend_.fused_residual_layernorm_forward(
          l_residual3, ln1_at(l + 1), ln1_mean_ + size_t(l + 1) * N,
          ln1_rstd_ + size_t(l + 1) * N, l_residual2, scratch_btc_, P(layers_[l + 1].ln1w),
          P(layers_[l + 1].ln1b), N, C);
    } else {
      backend_.fused_residual_layernorm_forward(l_residual3, lnf_, lnf_mean_, lnf_rstd_,
                                                l_residual2, scratch_btc_, P(lnfw_), P(lnfb_), N,
                                                C);
    }
  }
  // Tied head: logits = lnf @ wte^T over all Vp rows (padded rows are zero and get no gradient).
  backend_.matmul_forward(logits_, nullptr, lnf_, P(wte_), nullptr, N, C, Vp);
  if (!targets) return 0.0f;
  backend_.fused_classifier(logits_, losses_, targets_, dloss, N, V, Vp, dloss != 0.0f);
  backend_.download(host_losses_.data(), losses_, size_t(N) * 4);
  double sum = 0.0;
  for (int i = 0; i < N; ++i) sum += host_losses_[i];
  return float(sum / N);
}

void GptModel::backward() {
  SLIM_CHECK(grads_ || layer_grads_, "backward before allocate_grads() or allocate_layer_grads()");
  const int B = cur_B_, T = cur_T_;
  const int C = config_.n_embd, L = config_.n_layer, NH = config_.n_head,
            F = config_.ffn_hidden, Vp = config_.padded_vocab_size;
  const int N = B * T;
  const size_t NC = size_t(N) * C;
  // Full mode: weight gradients accumulate over micro-batches into grads(). adama mode: every
  // micro-batch's gradient is fresh, so each op overwrites its slot of the reused buffers (wpe
  // is zeroed because the embedding backward always accumulates; wte is first written by the
  // head's backward, then accumulated into by the embedding's).
  const bool acc = grads_ != nullptr;
  if (!acc) backend_.zero(G(wpe_), table_.params[wpe_index_].numel * backend_.x_size());

  backend_.zero(dresidual_, NC * backend_.x_size());
  // logits_ holds dlogits (written by the fused classifier).
  backend_.matmul_backward(scratch_btc_, G(wte_), nullptr, logits_, lnf_, P(wte_), nullptr, N, C,
                           Vp, acc);
  backend_.layernorm_backward(dresidual_, G(lnfw_), G(lnfb_), scratch_btc_,
                              x_at(residual3_, (L - 1) * NC), P(lnfw_), lnf_mean_, lnf_rstd_, N,
                              C, acc);
  hand_over(lnfw_index_);
  hand_over(lnfb_index_);
  for (int l = L - 1; l >= 0; --l) {
    const LayerOffsets& w = layers_[l];
    const void* residual = l == 0 ? encoded_ : x_at(residual3_, (l - 1) * NC);
    float* ln1_mean = ln1_mean_ + size_t(l) * N;
    float* ln1_rstd = ln1_rstd_ + size_t(l) * N;
    float* ln2_mean = ln2_mean_ + size_t(l) * N;
    float* ln2_rstd = ln2_rstd_ + size_t(l) * N;
    const void* l_fch = x_at(fch_, l * size_t(N) * F);
    // Recomputed activations are rebuilt from what was kept: GELU from its input, the LayerNorm
    // outputs from the residual stream they normalize (the statistics come out the same).
    if (recompute_ >= 1) backend_.gelu_forward(fch_gelu_at(l), l_fch, size_t(N) * F);
    if (recompute_ >= 2) {
      backend_.layernorm_forward(ln2_at(l), ln2_mean, ln2_rstd, x_at(residual2_, l * NC),
                                 P(w.ln2w), P(w.ln2b), N, C);
    }
    // dresidual is the gradient w.r.t. residual3[l] = residual2[l] + fcproj.
    backend_.matmul_backward(scratch_bt4c_, G(w.fcprojw), G(w.fcprojb), dresidual_,
                             fch_gelu_at(l), P(w.fcprojw), l_fch, N, F, C, acc);
    backend_.matmul_backward(scratch_btc_, G(w.fcw), G(w.fcb), scratch_bt4c_, ln2_at(l),
                             P(w.fcw), nullptr, N, C, F, acc);
    backend_.layernorm_backward(dresidual_, G(w.ln2w), G(w.ln2b), scratch_btc_,
                                x_at(residual2_, l * NC), P(w.ln2w), ln2_mean, ln2_rstd, N, C,
                                acc);
    // dresidual is now the gradient w.r.t. residual2[l] = residual + attproj.
    backend_.matmul_backward(scratch_btc_, G(w.projw), G(w.projb), dresidual_, x_at(atty_, l * NC),
                             P(w.projw), nullptr, N, C, C, acc);
    backend_.attention_backward(scratch_bt4c_, scratch_btc_, x_at(qkv_, l * NC * 3),
                                x_at(atty_, l * NC), att_lse_ + size_t(l) * N * NH, B, T, C, NH);
    if (recompute_ >= 2)
      backend_.layernorm_forward(ln1_at(l), ln1_mean, ln1_rstd, residual, P(w.ln1w), P(w.ln1b), N,
                                 C);
    backend_.matmul_backward(scratch_btc_, G(w.qkvw), G(w.qkvb), scratch_bt4c_, ln1_at(l),
                             P(w.qkvw), nullptr, N, C, 3 * C, acc);
    backend_.layernorm_backward(dresidual_, G(w.ln1w), G(w.ln1b), scratch_btc_, residual,
                                P(w.ln1w), ln1_mean, ln1_rstd, N, C, acc);
    hand_over_layer(l);
  }
  backend_.encoder_backward(G(wte_), G(wpe_), dresidual_, inputs_, B, T, C);
  hand_over(wpe_index_);
  hand_over(wte_index_);
}

void GptModel::logits_row_to_host(int b, int t, float* host_out) const {
  const size_t Vp = config_.padded_vocab_size;
  const size_t row = size_t(b) * cur_T_ + t;
  backend_.download_x_as_f32(host_out, x_at(logits_, row * Vp), Vp);
}

}  // namespace slim
