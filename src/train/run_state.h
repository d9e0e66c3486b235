// Saving and loading a run's state through the checkpoint store: weights, optimizer moments, the
// data cursor and the resolved config, so `--resume` continues bit-identically and eval/sample/
// export can rebuild the model from a checkpoint alone.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "model/gpt.h"
#include "optim/optimizer.h"

namespace slim {

struct RunProgress {
  int64_t step = 0;           // optimizer steps completed
  std::string train_cursor;   // DataLoader cursor (cursor_to_string) of the next batch
};

// The partition options a config asks for (optimizer section).
PartitionOptions partition_options(const OptimizerConfig& optimizer);
// Everything the Optimizer needs from a run config (optimizer section and seed).
OptimizerSettings optimizer_settings(const RunConfig& config);

// Writes OUT_DIR/step_<step>/ and prunes to config.checkpoint.keep. Returns the directory.
std::string save_run_checkpoint(const RunConfig& config, GptModel& model, const Optimizer& optimizer,
                                const RunProgress& progress);

struct LoadedRun {
  std::string dir;
  RunConfig config;             // as resolved when the checkpoint was written
  RunProgress progress;
  int64_t optimizer_steps = 0;
  double proxy_sum_squares = 0.0;  // AdamA's lagged-clipping proxy
  std::vector<float> params;    // fp32, flat, in parameter-table order
  std::vector<float> m, v;      // empty unless with_optimizer
  std::vector<float> master;    // fp32 master weights; empty when the run had none
};

// Reads a checkpoint directory written by save_run_checkpoint. Errors name the directory.
LoadedRun load_run_checkpoint(const std::string& dir, bool with_optimizer);

}  // namespace slim
