// GPT-2 export to Hugging Face names and layouts. The mapping is one table below (our tensor ->
// HF tensor, copied or transposed); every tensor of our parameter table must be exported exactly
// once, which is checked, so a parameter added later cannot be dropped from exports silently.
#include "io/hf_export.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "util/error.h"

namespace slim {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// GPT-2's <|endoftext|>, used as both bos and eos by the GPT-2 tokenizer.
constexpr int kGpt2EndOfText = 50256;

// out[c][r] = in[r][c] for in [rows, cols]. Tiles of 32x32 keep both the reads and the writes in
// cache lines that are used fully; tiles are independent, so threads share them out.
void transpose(const float* in, int64_t rows, int64_t cols, float* out) {
  constexpr int64_t kTile = 32;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[c * rows + r] = in[r * cols + c];
    }
}

void reject_unless(bool supported, const std::string& what) {
  if (!supported)
    throw UsageError(cat("Hugging Face GPT-2 export needs ", what,
                         "; this model is not a GPT-2 that GPT2LMHeadModel can hold"));
}

// float -> the shortest decimal that reads back as the same float, so config.json says 1e-05
// rather than 9.99999974737875e-06.
double as_short_decimal(float value) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, value);
    if (std::strtof(text, nullptr) == value) break;
  }
  return std::strtod(text, nullptr);
}

}  // namespace

void export_gpt2_hf(const std::string& path, const ModelConfig& config, const ParamTable& table,
                    const float* params) {
  reject_unless(config.family == "gpt2", cat("model.family \"gpt2\" (it is \"", config.family, "\")"));
  reject_unless(config.tied_embeddings, "tied embeddings (lm_head shares wte)");
  reject_unless(config.bias, "linear and norm biases");
  reject_unless(config.norm == "layernorm", cat("layernorm (it is \"", config.norm, "\")"));
  reject_unless(config.position == "learned",
                cat("learned positions (it is \"", config.position, "\")"));
  reject_unless(config.mlp == "gelu", cat("a gelu MLP (it is \"", config.mlp, "\")"));
  SLIM_CHECK(params != nullptr, "no parameter buffer to export");
  SLIM_CHECK(config.vocab_size <= config.padded_vocab_size, "V=", config.vocab_size,
             " > Vp=", config.padded_vocab_size);

  // Where the files go: transformers loads DIR/model.safetensors + DIR/config.json.
  fs::path weights_path(path);
  if (path.empty())
    throw UsageError("the export path is empty; give a .safetensors file or a directory");
  if (path.back() == '/' || fs::is_directory(weights_path))
    weights_path /= "model.safetensors";
  else if (weights_path.extension() != ".safetensors")
    throw UsageError(cat("export path '", path, "' should end in .safetensors (transformers "
                         "loads DIR/model.safetensors) or name a directory"));
  const fs::path dir = weights_path.has_parent_path() ? weights_path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(cat("cannot create the export directory '", dir.string(), "': ", ec.message()));

  const int64_t C = config.n_embd, V = config.vocab_size;
  std::vector<StTensor> tensors;
  std::vector<std::unique_ptr<float[]>> transposed_storage;  // owns the [in, out] copies
  std::set<std::string> exported;

  // Our tensor as is (or its first `rows` rows, for the unpadded wte).
  const auto copy = [&](const std::string& ours, const std::string& theirs, int64_t rows = -1) {
    const ParamInfo& info = table.find(ours);
    std::vector<int64_t> shape = info.shape;
    if (rows >= 0) {
      SLIM_CHECK(shape.size() == 2 && rows <= shape[0], ours, ": cannot keep ", rows, " rows");
      shape[0] = rows;  // rows are contiguous, so the first `rows` rows need no copy
    }
    tensors.push_back({theirs, StDType::F32, shape, params + info.offset});
    exported.insert(ours);
  };
  // Our [out, in] linear weight as HF's Conv1D [in, out].
  const auto transpose_weight = [&](const std::string& ours, const std::string& theirs) {
    const ParamInfo& info = table.find(ours);
    SLIM_CHECK(info.shape.size() == 2, ours, " is not 2-D");
    const int64_t out_features = info.shape[0], in_features = info.shape[1];
    auto storage = std::make_unique<float[]>(info.numel);
    transpose(params + info.offset, out_features, in_features, storage.get());
    tensors.push_back({theirs, StDType::F32, {in_features, out_features}, storage.get()});
    transposed_storage.push_back(std::move(storage));
    exported.insert(ours);
  };

  copy("wte", "transformer.wte.weight", V);
  copy("wpe", "transformer.wpe.weight");
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string ours = cat("h.", l, "."), theirs = cat("transformer.h.", l, ".");
    copy(ours + "ln1.weight", theirs + "ln_1.weight");
    copy(ours + "ln1.bias", theirs + "ln_1.bias");
    // Our fused qkv rows are q | k | v, each split into heads in order; HF's c_attn columns are
    // split the same way, so a plain transpose is the whole conversion.
    transpose_weight(ours + "attn.qkv.weight", theirs + "attn.c_attn.weight");
    copy(ours + "attn.qkv.bias", theirs + "attn.c_attn.bias");
    transpose_weight(ours + "attn.proj.weight", theirs + "attn.c_proj.weight");
    copy(ours + "attn.proj.bias", theirs + "attn.c_proj.bias");
    copy(ours + "ln2.weight", theirs + "ln_2.weight");
    copy(ours + "ln2.bias", theirs + "ln_2.bias");
    transpose_weight(ours + "mlp.fc.weight", theirs + "mlp.c_fc.weight");
    copy(ours + "mlp.fc.bias", theirs + "mlp.c_fc.bias");
    transpose_weight(ours + "mlp.proj.weight", theirs + "mlp.c_proj.weight");
    copy(ours + "mlp.proj.bias", theirs + "mlp.c_proj.bias");
  }
  copy("lnf.weight", "transformer.ln_f.weight");
  copy("lnf.bias", "transformer.ln_f.bias");
  for (const ParamInfo& info : table.params)
    SLIM_CHECK(exported.count(info.name) == 1, "parameter '", info.name,
               "' has no Hugging Face GPT-2 counterpart in the export mapping");
  SLIM_CHECK(table.find("wte").shape == std::vector<int64_t>({config.padded_vocab_size, C}),
             "wte shape does not match the config");

  write_safetensors(weights_path.string(), tensors, {{"format", "pt"}});

  // A real GPT-2 vocabulary ends in <|endoftext|> (50256); a smaller test vocabulary has no such
  // token, so its last id stands in rather than an id outside the embedding.
  const int end_of_text = V > kGpt2EndOfText ? kGpt2EndOfText : int(V - 1);
  const json hf_config = {
      {"model_type", "gpt2"},
      {"architectures", {"GPT2LMHeadModel"}},
      {"vocab_size", V},
      {"n_positions", config.max_seq_len},
      {"n_ctx", config.max_seq_len},
      {"n_embd", config.n_embd},
      {"n_layer", config.n_layer},
      {"n_head", config.n_head},
      // null means 4 * n_embd to transformers; any other hidden size is spelled out.
      {"n_inner", config.ffn_hidden == 4 * config.n_embd ? json(nullptr) : json(config.ffn_hidden)},
      {"activation_function", "gelu_new"},  // the tanh approximation, as in our GELU
      {"layer_norm_epsilon", as_short_decimal(config.norm_eps)},
      {"tie_word_embeddings", true},
      {"bos_token_id", end_of_text},
      {"eos_token_id", end_of_text},
      {"torch_dtype", "float32"},
  };
  const std::string config_text = hf_config.dump(2) + "\n";
  write_file_atomic((dir / "config.json").string(), {{config_text.data(), config_text.size()}});
}

}  // namespace slim
