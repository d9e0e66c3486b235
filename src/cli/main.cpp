// slimtrain's command line: CLI11 subcommands that parse options and call into the library.
// Exit codes: 0 ok, 2 usage or config error (the input can be fixed), 1 runtime error.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"slimtrain: memory-lean GPT pretraining (CUDA backend, CPU reference backend)"};
  app.set_version_flag("--version", std::string("slimtrain ") + SLIMTRAIN_VERSION);
  app.require_subcommand(1);

  slim::TrainArgs train;
  auto* train_cmd = app.add_subcommand("train", "Train a model from a JSON config");
  train_cmd->add_option("--config", train.config, "Run config (JSON), e.g. configs/tiny.json")
      ->required()
      ->check(CLI::ExistingFile);
  train_cmd->add_option("--set", train.sets,
                        "Override a config value: --set training.steps=100 (repeatable)")
      ->take_all();
  train_cmd->add_option("--resume", train.resume,
                        "Continue from a checkpoint directory, or 'auto' for the newest one in "
                        "out_dir (a fresh start if there is none)");

  slim::PrepareArgs prepare;
  auto* prepare_cmd =
      app.add_subcommand("prepare", "Tokenize a UTF-8 text file into train/val token shards");
  prepare_cmd->add_option("--input", prepare.input, "Text file")->required()->check(CLI::ExistingFile);
  prepare_cmd->add_option("--out", prepare.out, "Output directory for the shards")->required();
  prepare_cmd->add_option("--val-fraction", prepare.val_fraction,
                          "Fraction of the text (from its start) used for validation")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  prepare_cmd->add_option("--shard-tokens", prepare.shard_tokens, "Tokens per shard file")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  prepare_cmd->add_option("--tokenizer-dir", prepare.tokenizer_dir,
                          "Directory with encoder.json and vocab.bpe (default: data/tokenizer)");

  slim::EvalArgs eval;
  auto* eval_cmd = app.add_subcommand("eval", "Validation loss of a checkpoint");
  eval_cmd->add_option("--checkpoint", eval.checkpoint, "Checkpoint directory or run out_dir")
      ->required();
  eval_cmd->add_option("--data", eval.data, "Shard glob (default: the run's data.val)");
  eval_cmd->add_option("--batches", eval.batches, "Batches to evaluate (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);

  slim::SampleArgs sample;
  auto* sample_cmd = app.add_subcommand("sample", "Generate text from a checkpoint");
  sample_cmd->add_option("--checkpoint", sample.checkpoint, "Checkpoint directory or run out_dir")
      ->required();
  sample_cmd->add_option("--prompt", sample.prompt, "Text to continue")->required();
  sample_cmd->add_option("--tokens", sample.tokens, "Tokens to generate")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sample_cmd->add_option("--temperature", sample.temperature, "Softmax temperature (0 = greedy)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sample_cmd->add_option("--top-k", sample.top_k, "Keep the k most likely tokens (0 = all)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sample_cmd->add_option("--seed", sample.seed, "Random seed")->capture_default_str();

  slim::ExportArgs exp;
  auto* export_cmd = app.add_subcommand(
      "export", "Write a checkpoint as Hugging Face GPT-2 safetensors (+ config.json)");
  export_cmd->add_option("--checkpoint", exp.checkpoint, "Checkpoint directory or run out_dir")
      ->required();
  export_cmd->add_option("--out", exp.out, "Output file, e.g. hf/model.safetensors")->required();

  slim::MemoryArgs memory;
  auto* memory_cmd = app.add_subcommand(
      "memory", "Predict every buffer a training run allocates, without allocating");
  memory_cmd->add_option("--config", memory.config, "Run config (JSON)")
      ->required()
      ->check(CLI::ExistingFile);
  memory_cmd->add_option("--set", memory.sets, "Override a config value (repeatable)")->take_all();
  memory_cmd->add_option("--gpu-memory", memory.gpu_memory,
                         "Memory to fit in, e.g. 24GiB or 80GB: says whether the run fits");
  memory_cmd->add_flag("--compare", memory.compare,
                       "Also print every optimizer x accumulation mode side by side");

  slim::CalibrateArgs calibrate;
  auto* calibrate_cmd = app.add_subcommand(
      "calibrate",
      "Derive SlimAdam rules: train AdamW for --steps, measure the SNR of its second moment, "
      "write a rules file for optimizer.slim_rules");
  calibrate_cmd->add_option("--config", calibrate.config, "Run config (JSON) of the model to calibrate")
      ->required()
      ->check(CLI::ExistingFile);
  // Ranges are checked by run_calibration, whose errors say what to pass instead.
  calibrate_cmd->add_option("--steps", calibrate.steps,
                            "AdamW steps to train (replaces training.steps; the lr schedule spans them)")
      ->required();
  calibrate_cmd->add_option("--every", calibrate.every,
                            "Measure the SNR at step 1, every N steps and at the last step")
      ->capture_default_str();
  calibrate_cmd->add_option("--cutoff", calibrate.cutoff,
                            "Keep a compression only when its mean SNR exceeds this")
      ->capture_default_str();
  calibrate_cmd->add_option("--out", calibrate.out,
                            "Rules file to write (default: <out_dir>/slim_rules.json)");
  calibrate_cmd->add_option("--set", calibrate.sets,
                            "Override a config value: --set training.micro_batch=4 (repeatable)")
      ->take_all();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (*train_cmd) return slim::cmd_train(train);
    if (*prepare_cmd) return slim::cmd_prepare(prepare);
    if (*eval_cmd) return slim::cmd_eval(eval);
    if (*sample_cmd) return slim::cmd_sample(sample);
    if (*export_cmd) return slim::cmd_export(exp);
    if (*calibrate_cmd) return slim::cmd_calibrate(calibrate);
    if (*memory_cmd) return slim::cmd_memory(memory);
  } catch (const slim::UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
