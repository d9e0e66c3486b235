// The parameter table: every trainable tensor with its name, shape, place in the one flat
// parameter buffer, role, weight decay and the partition hint the block optimizers (Adam-mini,
// SlimAdam) read. Optimizers, checkpoints and export all walk this table; nothing matches names.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"

namespace slim {

enum class ParamRole {
  TokenEmbedding,     // wte [Vp, C]; also the lm_head when tied
  PositionEmbedding,  // wpe [maxT, C]
  NormWeight,         // LayerNorm / RMSNorm gain [C]
  NormBias,           // LayerNorm bias [C]
  AttnQKVWeight,      // fused [3C, C]: rows q(C) | k(C) | v(C), each [NH][HS]
  AttnQKVBias,        // [3C]
  AttnProjWeight,     // [C, C]
  AttnProjBias,       // [C]
  MlpUpWeight,        // [4C, C]
  MlpUpBias,          // [4C]
  MlpDownWeight,      // [C, 4C]
  MlpDownBias,        // [C]
  LmHead,             // untied output head [Vp, C] (Llama)
};
const char* param_role_name(ParamRole role);

// A contiguous run of rows of a 2-D weight with one meaning, e.g. the q rows of a fused qkv
// weight. head_dim > 0 says the rows group into heads of that many rows.
struct RowSegment {
  std::string what;  // "q", "k", "v", "rows"
  int64_t row_begin = 0;
  int64_t row_end = 0;
  int head_dim = 0;
};

struct ParamInfo {
  std::string name;            // our name, e.g. "h.3.attn.qkv.weight"
  std::vector<int64_t> shape;  // row-major
  size_t offset = 0;           // elements from the start of the flat parameter buffer
  size_t numel = 0;
  ParamRole role;
  int layer = -1;              // -1 for tensors outside the blocks
  bool weight_decay = false;   // decoupled weight decay applies (2-D weights, llm.c's rule)
  int64_t real_rows = 0;       // rows that carry meaning (V for a padded [Vp, C] embedding)
  std::vector<RowSegment> segments;  // the partition hint; empty = one meaning for all rows
};

struct ParamTable {
  std::vector<ParamInfo> params;
  size_t total_numel = 0;

  const ParamInfo& find(const std::string& name) const;  // throws Error naming the tensor
};

// Builds the table for a model config (GPT-2 order: wte, wpe, per layer ln1.w, ln1.b, qkv.w,
// qkv.b, proj.w, proj.b, ln2.w, ln2.b, fc.w, fc.b, fcproj.w, fcproj.b, then lnf.w, lnf.b).
ParamTable build_param_table(const ModelConfig& config);

}  // namespace slim
