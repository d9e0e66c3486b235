#include "cli/commands.h"

#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "backend/backend.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "io/hf_export.h"
#include "model/gpt.h"
#include "train/calibrate.h"
#include "train/generate.h"
#include "train/memory_plan.h"
#include "train/run_state.h"
#include "train/trainer.h"
#include "util/error.h"

namespace slim {

namespace {

// --checkpoint accepts a checkpoint directory or a run's out_dir (its newest checkpoint).
std::string find_checkpoint(const std::string& path) {
  std::string dir = resolve_checkpoint(path, true);
  if (dir.empty())
    throw UsageError(cat("no checkpoint found in ", path,
                         "; pass a step_* checkpoint directory or a run's out_dir"));
  return dir;
}

std::string tokenizer_dir_of(const RunConfig& config) {
  return config.data.tokenizer_dir.empty() ? default_tokenizer_dir() : config.data.tokenizer_dir;
}

}  // namespace

int cmd_train(const TrainArgs& args) {
  RunConfig config = load_run_config(args.config, args.sets);
  TrainOptions options;
  options.resume = args.resume;
  return run_training(config, options);
}

int cmd_prepare(const PrepareArgs& args) {
  PrepareResult result = prepare_text(args.input, args.out, args.val_fraction, args.shard_tokens,
                                      args.tokenizer_dir.empty() ? default_tokenizer_dir()
                                                                 : args.tokenizer_dir);
  std::printf("prepared %s train + %s val tokens:\n",
              format_thousands((long long)result.train_tokens).c_str(),
              format_thousands((long long)result.val_tokens).c_str());
  for (const auto& file : result.files) std::printf("  %s\n", file.c_str());
  return 0;
}

int cmd_eval(const EvalArgs& args) {
  const std::string dir = find_checkpoint(args.checkpoint);
  LoadedRun run = load_run_checkpoint(dir, false);
  const std::string data = args.data.empty() ? run.config.data.val : args.data;
  if (data.empty())
    throw UsageError("the checkpoint's run has no validation data (data.val); pass --data GLOB");
  auto backend = make_backend(run.config.backend, run.config.precision);
  GptModel model(run.config.model, *backend);
  const int B = run.config.training.micro_batch, T = run.config.training.seq_len;
  model.allocate_activations(B, T);
  model.params_from_host(run.params);
  DataLoader loader(data, B, T, 0, 1, false, run.config.seed, run.config.model.vocab_size);
  const double loss = evaluate_loss(model, loader, args.batches);
  const uint64_t batches = args.batches > 0 ? std::min<uint64_t>(args.batches, loader.batches_per_epoch())
                                            : loader.batches_per_epoch();
  std::printf("checkpoint %s (step %lld)\ndata %s: %llu batches of %d x %d tokens\nval loss %.4f\n",
              dir.c_str(), (long long)run.progress.step, data.c_str(), (unsigned long long)batches,
              B, T, loss);
  return 0;
}

int cmd_sample(const SampleArgs& args) {
  const std::string dir = find_checkpoint(args.checkpoint);
  LoadedRun run = load_run_checkpoint(dir, false);
  Gpt2Tokenizer tokenizer = Gpt2Tokenizer::load(tokenizer_dir_of(run.config));
  auto backend = make_backend(run.config.backend, run.config.precision);
  GptModel model(run.config.model, *backend);
  const int window = run.config.model.max_seq_len;
  model.allocate_activations(1, window);
  model.params_from_host(run.params);
  std::vector<int> prompt = tokenizer.encode(args.prompt);
  if (prompt.empty()) prompt.push_back(tokenizer.eot_token());
  SampleOptions opts;
  opts.tokens = args.tokens;
  opts.temperature = args.temperature;
  opts.top_k = args.top_k;
  opts.seed = args.seed;
  std::fputs(args.prompt.c_str(), stdout);
  // Tokens are printed as they come; a token may end inside a UTF-8 sequence, so bytes are
  // written raw and the terminal assembles them.
  generate(model, prompt, opts, window, [&](int token) {
    std::string piece = tokenizer.decode_token(token);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  return 0;
}

int cmd_export(const ExportArgs& args) {
  const std::string dir = find_checkpoint(args.checkpoint);
  LoadedRun run = load_run_checkpoint(dir, false);
  ParamTable table = build_param_table(run.config.model);
  export_gpt2_hf(args.out, run.config.model, table, run.params.data());
  std::printf("exported %s (step %lld) to %s (+ config.json beside it)\n", dir.c_str(),
              (long long)run.progress.step, args.out.c_str());
  return 0;
}

namespace {

// The config with another optimizer kind and accumulation mode; options that belong to one kind
// only are dropped for the others.
RunConfig with_optimizer(RunConfig config, const std::string& kind, const std::string& mode) {
  if (kind != config.optimizer.kind) {
    config.optimizer.adam_mini_single_block_v = false;
    config.optimizer.adam_mini_per_position_wpe = false;
    config.optimizer.slim_rules.clear();
  }
  config.optimizer.kind = kind;
  config.optimizer.accumulation = mode;
  return config;
}

std::string fit_verdict(size_t planned, size_t available, const std::string& what) {
  const double share = 100.0 * double(planned) / double(available);
  if (planned <= available)
    return cat("fits in ", human_bytes(double(available)), " of ", what, ": ",
               human_bytes(double(planned)), " planned (", std::lround(share), "%), ",
               human_bytes(double(available - planned)), " left");
  return cat("does NOT fit in ", human_bytes(double(available)), " of ", what, ": ",
             human_bytes(double(planned)), " planned, ", human_bytes(double(planned - available)),
             " too much. Lighter options: training.recompute=2, a smaller training.micro_batch "
             "(same total_batch_tokens), optimizer.accumulation=adama, optimizer.kind=adam_mini "
             "or slim_adam; `slimtrain memory --compare` shows their sizes");
}

}  // namespace

int cmd_memory(const MemoryArgs& args) {
  const RunConfig config = load_run_config(args.config, args.sets);
  const std::string backend = resolve_backend_kind(config.backend);
  const MemoryPlan plan = plan_memory(config, backend);
  const TrainingConfig& t = config.training;
  std::printf("memory plan for %s: %s parameters | backend %s (%s%s) | optimizer %s, "
              "accumulation %s, m %s | micro-batch %d x %d, recompute %d\n",
              args.config.c_str(), format_thousands((long long)plan.n_params).c_str(),
              backend.c_str(), dtype_name(plan.dtype),
              plan.dtype == DType::F32 ? ""
              : config.optimizer.master_weights ? ", fp32 master weights"
                                                : ", no master weights",
              config.optimizer.kind.c_str(), config.optimizer.accumulation.c_str(),
              config.optimizer.m_dtype.c_str(), t.micro_batch, t.seq_len, t.recompute);
  std::printf("%s", plan.table().c_str());
  if (backend == "cuda")
    std::printf("(not counted: the CUDA context and library handles, a few hundred MiB per GPU)\n");
  if (!args.gpu_memory.empty()) {
    std::printf("%s\n", fit_verdict(plan.total(), parse_memory_size(args.gpu_memory),
                                     backend == "cuda" ? "GPU memory" : "memory").c_str());
  } else if (backend == "cpu") {
    const size_t ram = size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGE_SIZE));
    std::printf("%s\n", fit_verdict(plan.total(), ram, "this machine's RAM").c_str());
  } else {
    std::printf("add --gpu-memory 80GiB (your GPU's size) for a fit verdict\n");
  }
  if (!args.compare) return 0;

  std::printf("\nevery optimizer x accumulation mode (MiB; same model, batch, backend):\n");
  struct Column {
    std::string name;
    MemoryPlan plan;
  };
  std::vector<Column> columns;
  for (const char* kind : {"adamw", "adam_mini", "slim_adam"})
    for (const char* mode : {"grads", "adama"})
      columns.push_back({cat(kind, "/", mode), plan_memory(with_optimizer(config, kind, mode), backend)});
  std::string header = cat("                  ");
  char cell[64];
  for (const Column& c : columns) {
    std::snprintf(cell, sizeof cell, "%17s", c.name.c_str());
    header += cell;
  }
  std::printf("%s\n", header.c_str());
  auto row = [&](const char* label, auto value) {
    std::string line = cat(label);
    line.resize(18, ' ');
    for (const Column& c : columns) {
      std::snprintf(cell, sizeof cell, "%17.2f", double(value(c.plan)));
      line += cell;
    }
    std::printf("%s\n", line.c_str());
  };
  for (int tag = 0; tag < kMemTagCount; ++tag)
    row(mem_tag_name(MemTag(tag)), [&](const MemoryPlan& p) { return p.by_tag()[tag] / 1048576.0; });
  row("total", [](const MemoryPlan& p) { return p.total() / 1048576.0; });
  row("total B/param", [](const MemoryPlan& p) { return double(p.total()) / double(p.n_params); });
  // What the optimizer choice changes: weights, master, gradients, m and v.
  row("state B/param", [](const MemoryPlan& p) {
    const auto b = p.by_tag();
    const size_t state = b[int(MemTag::Params)] + b[int(MemTag::Master)] +
                         b[int(MemTag::Grads)] + b[int(MemTag::OptM)] + b[int(MemTag::OptV)];
    return double(state) / double(p.n_params);
  });
  if (!args.gpu_memory.empty()) {
    const size_t available = parse_memory_size(args.gpu_memory);
    std::string line = "fits";
    line.resize(18, ' ');
    for (const Column& c : columns) {
      std::snprintf(cell, sizeof cell, "%17s", c.plan.total() <= available ? "yes" : "no");
      line += cell;
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

int cmd_calibrate(const CalibrateArgs& args) {
  const RunConfig config = load_run_config(args.config, args.sets);
  CalibrateOptions options;
  options.steps = args.steps;
  options.every = args.every;
  options.cutoff = args.cutoff;
  options.out = args.out;
  options.config_path = args.config;
  options.sets = args.sets;
  run_calibration(config, options);
  return 0;
}

}  // namespace slim
