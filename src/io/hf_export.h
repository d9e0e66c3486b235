// Export to Hugging Face transformers: a safetensors file with GPT2LMHeadModel's tensor names and
// layouts, plus the config.json that from_pretrained() needs, so a trained model loads with
//   GPT2LMHeadModel.from_pretrained(DIR)
// (transformers looks for DIR/model.safetensors; pass that name, or a directory, as PATH).
#pragma once
#include <string>

#include "model/model_config.h"
#include "model/param_table.h"

namespace slim {

// Writes PATH (a .safetensors file; a directory or a path ending in '/' means PATH/model.safetensors)
// and config.json beside it, from our flat fp32 parameter buffer `params` laid out by `table`.
// Differences from our layout handled here: HF's Conv1D stores linear weights as [in, out] (ours
// are [out, in], so they are transposed), wte keeps only the V real rows (ours is padded to Vp),
// and lm_head is omitted because HF ties it to wte. Models other than tied GPT-2 -> UsageError.
void export_gpt2_hf(const std::string& path, const ModelConfig& config, const ParamTable& table,
                    const float* params);

}  // namespace slim
