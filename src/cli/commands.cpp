#include "cli/commands.h"

#include <cstdio>
#include <filesystem>

#include "backend/backend.h"
#include "config/config.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "io/hf_export.h"
#include "model/gpt.h"
#include "train/generate.h"
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

}  // namespace slim
