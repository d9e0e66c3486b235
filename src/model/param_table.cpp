#include "model/param_table.h"

#include "util/error.h"

namespace slim {

const char* param_role_name(ParamRole role) {
  switch (role) {
    case ParamRole::TokenEmbedding: return "token_embedding";
    case ParamRole::PositionEmbedding: return "position_embedding";
    case ParamRole::NormWeight: return "norm_weight";
    case ParamRole::NormBias: return "norm_bias";
    case ParamRole::AttnQKVWeight: return "attn_qkv_weight";
    case ParamRole::AttnQKVBias: return "attn_qkv_bias";
    case ParamRole::AttnProjWeight: return "attn_proj_weight";
    case ParamRole::AttnProjBias: return "attn_proj_bias";
    case ParamRole::MlpUpWeight: return "mlp_up_weight";
    case ParamRole::MlpUpBias: return "mlp_up_bias";
    case ParamRole::MlpDownWeight: return "mlp_down_weight";
    case ParamRole::MlpDownBias: return "mlp_down_bias";
    case ParamRole::LmHead: return "lm_head";
  }
  return "?";
}

const ParamInfo& ParamTable::find(const std::string& name) const {
  for (const auto& p : params)
    if (p.name == name) return p;
  throw Error(cat("no parameter named '", name, "' in the model"));
}

namespace {

struct TableBuilder {
  ParamTable table;
  void add(std::string name, std::vector<int64_t> shape, ParamRole role, int layer,
           std::vector<RowSegment> segments = {}, int64_t real_rows = -1) {
    ParamInfo info;
    info.numel = 1;
    for (int64_t d : shape) info.numel *= static_cast<size_t>(d);
    info.name = std::move(name);
    info.shape = std::move(shape);
    info.offset = table.total_numel;
    info.role = role;
    info.layer = layer;
    // llm.c's rule: decoupled weight decay on 2-D tensors only (embeddings and matmul weights).
    info.weight_decay = info.shape.size() == 2;
    info.real_rows = real_rows >= 0 ? real_rows : info.shape[0];
    info.segments = std::move(segments);
    table.total_numel += info.numel;
    table.params.push_back(std::move(info));
  }
};

}  // namespace

ParamTable build_param_table(const ModelConfig& c) {
  if (c.family != "gpt2")
    throw UsageError(cat("model.family '", c.family,
                         "' is not implemented yet; the only family available is \"gpt2\""));
  const int64_t C = c.n_embd, V = c.vocab_size, Vp = c.padded_vocab_size, HS = c.head_dim();
  TableBuilder b;
  b.add("wte", {Vp, C}, ParamRole::TokenEmbedding, -1, {{"tokens", 0, V, 0}}, V);
  b.add("wpe", {c.max_seq_len, C}, ParamRole::PositionEmbedding, -1);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    b.add(p + "ln1.weight", {C}, ParamRole::NormWeight, l);
    b.add(p + "ln1.bias", {C}, ParamRole::NormBias, l);
    b.add(p + "attn.qkv.weight", {3 * C, C}, ParamRole::AttnQKVWeight, l,
          {{"q", 0, C, int(HS)}, {"k", C, 2 * C, int(HS)}, {"v", 2 * C, 3 * C, int(HS)}});
    b.add(p + "attn.qkv.bias", {3 * C}, ParamRole::AttnQKVBias, l);
    b.add(p + "attn.proj.weight", {C, C}, ParamRole::AttnProjWeight, l);
    b.add(p + "attn.proj.bias", {C}, ParamRole::AttnProjBias, l);
    b.add(p + "ln2.weight", {C}, ParamRole::NormWeight, l);
    b.add(p + "ln2.bias", {C}, ParamRole::NormBias, l);
    b.add(p + "mlp.fc.weight", {c.ffn_hidden, C}, ParamRole::MlpUpWeight, l);
    b.add(p + "mlp.fc.bias", {c.ffn_hidden}, ParamRole::MlpUpBias, l);
    b.add(p + "mlp.proj.weight", {C, c.ffn_hidden}, ParamRole::MlpDownWeight, l);
    b.add(p + "mlp.proj.bias", {C}, ParamRole::MlpDownBias, l);
  }
  b.add("lnf.weight", {C}, ParamRole::NormWeight, -1);
  b.add("lnf.bias", {C}, ParamRole::NormBias, -1);
  return std::move(b.table);
}

}  // namespace slim
