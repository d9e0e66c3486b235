#include "train/run_state.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "util/error.h"

namespace slim {

namespace {

std::vector<float> floats_from_blob(const LoadedCheckpoint& ckpt, const std::string& name,
                                    size_t expected) {
  const std::vector<uint8_t>& bytes = ckpt.blob(name);
  if (bytes.size() != expected * 4)
    throw Error(cat("checkpoint ", ckpt.dir, ": blob '", name, "' holds ", bytes.size(),
                    " bytes but the model needs ", expected * 4, " (", expected, " floats)"));
  std::vector<float> out(expected);
  if (expected) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

}  // namespace

PartitionOptions partition_options(const OptimizerConfig& optimizer) {
  PartitionOptions options;
  options.adam_mini_single_block_v = optimizer.adam_mini_single_block_v;
  options.adam_mini_per_position_wpe = optimizer.adam_mini_per_position_wpe;
  options.slim_rules_path = optimizer.slim_rules;
  return options;
}

OptimizerSettings optimizer_settings(const RunConfig& config) {
  const OptimizerConfig& o = config.optimizer;
  OptimizerSettings settings;
  settings.kind = o.kind;
  settings.accumulation = o.accumulation;
  settings.beta1 = o.beta1;
  settings.beta2 = o.beta2;
  settings.eps = o.eps;
  settings.weight_decay = o.weight_decay;
  settings.adama_scale = o.adama_scale;
  settings.master_weights = o.master_weights;
  settings.m_dtype = o.m_dtype;
  settings.seed = config.seed;
  settings.partition = partition_options(o);
  return settings;
}

std::string save_run_checkpoint(const RunConfig& config, GptModel& model, const Optimizer& optimizer,
                                const RunProgress& progress) {
  const std::vector<float> params = model.params_to_host();
  const std::vector<float> m = optimizer.m_to_host();
  const std::vector<float> v = optimizer.v_to_host();
  const std::vector<float> master = optimizer.master_to_host();
  nlohmann::json run;
  run["slimtrain_version"] = SLIMTRAIN_VERSION;
  run["config"] = nlohmann::json::parse(run_config_to_json(config));
  run["step"] = progress.step;
  run["train_cursor"] = progress.train_cursor;
  run["world_size"] = 1;
  run["dtype"] = dtype_name(model.backend().compute_dtype());  // of the weights as trained
  run["optimizer"] = {{"kind", config.optimizer.kind},
                      {"steps_taken", optimizer.steps_taken()},
                      {"accumulation", config.optimizer.accumulation},
                      {"proxy_sum_squares", optimizer.proxy_sum_squares()},
                      {"state", master.empty() ? nlohmann::json{"m", "v"}
                                               : nlohmann::json{"m", "v", "master"}},
                      // The dtypes the run keeps its state in; the blobs hold fp32 either way
                      // (a bf16 m widened exactly, rounded back to nearest on load).
                      {"state_dtype", {{"m", dtype_name(optimizer.m_dtype())}, {"v", "fp32"}}},
                      {"v_entries", optimizer.v_entries()}};
  nlohmann::json tensors = nlohmann::json::array();
  for (const ParamInfo& p : model.table().params)
    tensors.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}});
  run["params"] = tensors;
  std::vector<CheckpointBlob> blobs = {
      {"params", params.data(), params.size() * 4},
      {"optimizer_m", m.data(), m.size() * 4},
      {"optimizer_v", v.data(), v.size() * 4},
  };
  if (!master.empty()) blobs.push_back({"master", master.data(), master.size() * 4});
  return write_checkpoint(config.out_dir, progress.step, run.dump(2), blobs, config.checkpoint.keep);
}

LoadedRun load_run_checkpoint(const std::string& dir, bool with_optimizer) {
  LoadedCheckpoint ckpt = read_checkpoint(dir);
  LoadedRun out;
  out.dir = ckpt.dir;
  nlohmann::json run;
  try {
    run = nlohmann::json::parse(ckpt.run_manifest_json);
    out.config = parse_run_config(run.at("config").dump(), {}, run.value("world_size", 1),
                                  dir + "/manifest.json");
    out.progress.step = run.at("step").get<int64_t>();
    out.progress.train_cursor = run.at("train_cursor").get<std::string>();
    out.optimizer_steps = run.at("optimizer").at("steps_taken").get<int64_t>();
    out.proxy_sum_squares = run.at("optimizer").value("proxy_sum_squares", 0.0);
  } catch (const nlohmann::json::exception& e) {
    throw Error(cat("checkpoint ", dir, ": manifest.json is not a slimtrain run manifest (", e.what(),
                    ")"));
  }
  const size_t n = build_param_table(out.config.model).total_numel;
  out.params = floats_from_blob(ckpt, "params", n);
  if (with_optimizer) {
    const PartitionTable partition =
        build_partition(out.config.optimizer.kind, build_param_table(out.config.model),
                        out.config.model, partition_options(out.config.optimizer));
    out.m = floats_from_blob(ckpt, "optimizer_m", n);
    out.v = floats_from_blob(ckpt, "optimizer_v", size_t(partition.total_v));
    if (ckpt.blobs.count("master")) out.master = floats_from_blob(ckpt, "master", n);
  }
  return out;
}

}  // namespace slim
