// The run configuration: one JSON file (configs/*.json) plus "--set a.b=value" overrides,
// resolved into a RunConfig. Parsing is strict on purpose: an unknown key, a value of the wrong
// type or out of range is a UsageError naming the JSON path (e.g. `training.micro_batch`), the
// value as written and what is allowed, because a typo that silently falls back to a default
// costs a whole training run.
//
// The JSON schema is these structs: section "model" is ModelConfig field for field, sections
// "data", "optimizer", "training", "eval", "checkpoint", "logging" are the structs below, and
// backend/precision/seed/out_dir sit at the top level. Any field or whole section may be
// omitted; the defaults written here apply. The only keys starting with '_' that are accepted
// are "_comment" (a string, ignored) and "_derived" (written by run_config_to_json, ignored on
// input: derived values are always recomputed).
//
// nlohmann/json stays in config.cpp: this header is included by most of the program.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"

namespace slim {

struct DataConfig {
  std::string train = "data/kjv/kjv_train_*.bin";  // glob of llm.c-format shards
  std::string val = "data/kjv/kjv_val_*.bin";      // may be "" = no validation
  std::string tokenizer_dir = "";                  // "" = default_tokenizer_dir()
  bool shuffle = true;
};

struct OptimizerConfig {
  // adamw | adam_mini | slim_adam (the last two keep v per block: OPTIMIZERS.md sections 2-3).
  std::string kind = "adamw";
  // grads: sum micro-batch gradients into a full gradient buffer, update at the end.
  // adama: fold each micro-batch's gradient into m and v the moment the backward produces it
  // (OPTIMIZERS.md section 5), so no full gradient buffer exists; apply at the end.
  std::string accumulation = "grads";
  // Clipping under adama, where the exact global norm never exists (section 5.3):
  //   lagged: scale every fold of step t by min(1, training.grad_clip / sqrt(P_{t-1})), P the
  //           sum of the previous step's micro-batch ||g_i||^2;
  //   update: clip each tensor's update u = m_hat/(sqrt(v_hat)+eps) to RMS <= update_clip;
  //   none.
  std::string adama_clip = "lagged";
  float update_clip = 1.0f;
  float adama_scale = 1.0f;  // AdamA's s: v += (1-beta2)*s*mean(g_i^2); 1 = variant A
  // bf16 runs: keep fp32 master weights (false: update the bf16 weights in place with
  // stochastic rounding, the leanest layout).
  bool master_weights = true;
  // Storage of the first moment m: fp32 | bf16. bf16 halves m (2 bytes per parameter); every
  // update reads it as fp32 and writes it back with stochastic rounding (unbiased). With bf16
  // weights, master_weights = false and Adam-mini or SlimAdam (v negligible), the training state
  // is about 4 bytes per parameter plus the gradients. v stays fp32 (it is small for the block
  // kinds, and AdamW's per-element v would lose its small values in bf16). Any backend: the cpu
  // backend computes in fp32 but stores m in bf16 the same way.
  std::string m_dtype = "fp32";
  float lr = 6e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  // Adam-mini (OPTIMIZERS.md section 2): one v for the value rows of qkv (the official
  // wv_names={} advice for short runs), and per-position v for wpe (official: one block).
  bool adam_mini_single_block_v = false;
  bool adam_mini_per_position_wpe = false;
  // SlimAdam (section 3): a rules JSON (from `slimtrain calibrate`); "" = the Table 1 defaults.
  std::string slim_rules;
};

struct TrainingConfig {
  int steps = 100;                  // optimizer steps
  int micro_batch = 4;              // B per rank
  int seq_len = 64;                 // T (<= model.max_seq_len)
  int64_t total_batch_tokens = 0;   // tokens per optimizer step over all ranks;
                                    // 0 = micro_batch*seq_len*world (no accumulation)
  int grad_accum = 1;               // DERIVED: total_batch_tokens / (micro_batch*seq_len*world);
                                    // not settable
  std::string schedule = "cosine";  // cosine | linear | wsd | constant
  int warmup_steps = 0;             // linear warmup from 0 to lr
  float min_lr_fraction = 0.0f;     // final lr = lr * min_lr_fraction
  float wsd_decay_fraction = 0.2f;  // wsd: the last fraction of steps decays (1-sqrt)
  float grad_clip = 1.0f;           // global-norm clip; 0 = off
  int recompute = 0;                // 0 keep all activations, 1 recompute GELU, 2 GELU+LayerNorm
};

struct EvalConfig {
  int every = 0;           // validation loss every N steps; 0 = never
  int batches = 0;         // micro-batches per validation; 0 = the whole val set
  int sample_every = 0;    // generate a sample every N steps; 0 = never
  int sample_tokens = 64;  // tokens generated per sample (<= model.max_seq_len)
  std::string sample_prompt = "\n";
};

struct CheckpointConfig {
  int every = 0;  // checkpoint every N steps; 0 = never
  int keep = 3;   // the newest N checkpoints are kept, older ones deleted
};

struct LoggingConfig {
  int every = 1;  // a step line every N steps
};

struct RunConfig {
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  TrainingConfig training;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  std::string backend = "auto";    // cpu | cuda | auto
  std::string precision = "auto";  // fp32 | bf16 | auto
  uint64_t seed = 1337;
  std::string out_dir = "runs/default";
};

// Loads the file at PATH, applies OVERRIDES ("a.b=value", in order, later wins), validates
// every field and derives training.grad_accum for WORLD_SIZE ranks.
// Throws UsageError on any problem, naming the file and the JSON path.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                          int world_size = 1);

// The same for JSON text already in memory; SOURCE_NAME prefixes every error message.
RunConfig parse_run_config(const std::string& json_text, const std::vector<std::string>& overrides,
                           int world_size = 1, const std::string& source_name = "<config>");

// The resolved config, pretty-printed, every field written out (so a run's saved config does not
// depend on today's defaults). training.grad_accum is not a settable key: it is written under
// "_derived" for the reader's information. parse_run_config accepts the output and ignores
// "_derived" (grad_accum is recomputed for the world size of the run that loads it).
std::string run_config_to_json(const RunConfig& config);

// The "model" section alone (checkpoint manifests store it). model_config_from_json reads it back
// with the same checks as the model section of a run config (throws UsageError).
std::string model_config_to_json(const ModelConfig& model);
ModelConfig model_config_from_json(const std::string& json_text,
                                   const std::string& source_name = "<model config>");

}  // namespace slim
