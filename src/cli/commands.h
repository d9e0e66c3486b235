// The bodies of the subcommands, kept apart from main.cpp so CLI11 (slow to compile) is included
// in exactly one translation unit.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace slim {

struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string resume;
};
int cmd_train(const TrainArgs& args);

struct PrepareArgs {
  std::string input;
  std::string out;
  double val_fraction = 0.1;
  uint64_t shard_tokens = 100000000;
  std::string tokenizer_dir;
};
int cmd_prepare(const PrepareArgs& args);

struct EvalArgs {
  std::string checkpoint;
  std::string data;  // "" = the checkpoint's data.val
  int batches = 0;
};
int cmd_eval(const EvalArgs& args);

struct SampleArgs {
  std::string checkpoint;
  std::string prompt;
  int tokens = 64;
  float temperature = 1.0f;
  int top_k = 0;
  uint64_t seed = 1337;
};
int cmd_sample(const SampleArgs& args);

struct ExportArgs {
  std::string checkpoint;
  std::string out;
};
int cmd_export(const ExportArgs& args);

struct CalibrateArgs {
  std::string config;
  std::vector<std::string> sets;
  int steps = 0;
  int every = 100;
  double cutoff = 1.0;
  std::string out;  // "" = <out_dir>/slim_rules.json
};
int cmd_calibrate(const CalibrateArgs& args);

struct MemoryArgs {
  std::string config;
  std::vector<std::string> sets;
  std::string gpu_memory;  // "" = no fit verdict on cuda; cpu plans compare with this machine's RAM
  bool compare = false;    // every optimizer x accumulation mode side by side
};
int cmd_memory(const MemoryArgs& args);

}  // namespace slim
