// bench_optimizer: milliseconds per optimizer step and bytes of optimizer-related state for every
// optimizer x accumulation mode, on the cpu backend, for the given configs' models (default: the
// tiny quickstart model and GPT-2 124M). Gradients are synthetic (seeded normals), so the numbers
// measure the optimizer alone: grads mode times Optimizer::step over the full gradient buffer;
// adama times one micro-batch's folds of every tensor plus the apply (per additional micro-batch
// a run pays the fold column again).
//
//   build/bench_optimizer [--repeat 5] [--config configs/tiny.json ...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "config/config.h"
#include "model/gpt.h"
#include "optim/optimizer.h"
#include "train/run_state.h"
#include "util/error.h"
#include "util/rng.h"

namespace slim {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void bench_config(const std::string& path, int repeat) {
  const RunConfig base = load_run_config(path, {"backend=cpu"});
  const size_t n = build_param_table(base.model).total_numel;
  std::printf("\n%s: %s parameters (fp32, cpu backend, median of %d steps)\n", path.c_str(),
              format_thousands((long long)n).c_str(), repeat);
  std::printf("%-20s %12s %14s %14s %12s %12s %12s\n", "optimizer/mode", "v entries",
              "m+v bytes", "grad bytes", "B/param", "fold ms", "step ms");
  std::vector<float> gradient(n);
  Rng rng(3);
  for (float& g : gradient) g = float(rng.normal() * 1e-3);
  for (const char* kind : {"adamw", "adam_mini", "slim_adam"})
    for (const char* mode : {"grads", "adama"}) {
      RunConfig config = base;
      config.optimizer.kind = kind;
      config.optimizer.accumulation = mode;
      config.optimizer.adam_mini_single_block_v = config.optimizer.adam_mini_per_position_wpe = false;
      config.optimizer.slim_rules.clear();
      CpuBackend backend;
      GptModel model(config.model, backend);
      const bool adama = config.optimizer.accumulation == "adama";
      if (adama)
        model.allocate_layer_grads(nullptr);
      else
        model.allocate_grads();
      model.init_weights(1);
      Optimizer optimizer(optimizer_settings(config), model);
      if (!adama) backend.upload(model.grads(), gradient.data(), n * 4);
      std::vector<double> fold_s, step_s;
      for (int r = 0; r < repeat + 1; ++r) {  // the first round warms up
        const auto t0 = std::chrono::steady_clock::now();
        double fold_time = 0;
        if (adama) {
          optimizer.begin_folds(1.0f);
          for (const ParamInfo& p : model.table().params)
            optimizer.fold(size_t(&p - model.table().params.data()), gradient.data() + p.offset);
          fold_time = seconds_since(t0);
          optimizer.apply(1e-4f, 0.0f);
        } else {
          optimizer.step(1e-4f, 1.0f);
        }
        if (r > 0) {
          fold_s.push_back(fold_time);
          step_s.push_back(seconds_since(t0));
        }
      }
      const TaggedAllocator& a = backend.allocator();
      const size_t mv = a.bytes(MemTag::OptM) + a.bytes(MemTag::OptV);
      const size_t grads = a.bytes(MemTag::Grads);
      char fold_ms[32];
      std::snprintf(fold_ms, sizeof fold_ms, adama ? "%.1f" : "-", median(fold_s) * 1e3);
      std::printf("%-20s %12s %14s %14s %12.3f %12s %12.1f\n", cat(kind, "/", mode).c_str(),
                  format_thousands((long long)optimizer.v_entries()).c_str(),
                  format_bytes(mv).c_str(), format_bytes(grads).c_str(),
                  double(mv + grads) / double(n), fold_ms, median(step_s) * 1e3);
      std::fflush(stdout);
    }
}

}  // namespace
}  // namespace slim

int main(int argc, char** argv) {
  int repeat = 5;
  std::vector<std::string> configs;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeat") && i + 1 < argc) {
      repeat = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--config") && i + 1 < argc) {
      configs.push_back(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--repeat N] [--config FILE ...]\n", argv[0]);
      return 2;
    }
  }
  if (configs.empty())
    configs = {std::string(SLIMTRAIN_SOURCE_DIR) + "/configs/tiny.json",
               std::string(SLIMTRAIN_SOURCE_DIR) + "/configs/gpt2_124m.json"};
  try {
    for (const std::string& c : configs) slim::bench_config(c, repeat);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
