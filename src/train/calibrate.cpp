// SlimAdam's calibration run (calibrate.h): AdamW training with SNR measurements of v, then the
// rules, their table and the file.
#include "train/calibrate.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "backend/backend.h"
#include "data/loader.h"
#include "model/gpt.h"
#include "optim/optimizer.h"
#include "optim/partition.h"
#include "train/run_state.h"
#include "train/schedule.h"
#include "train/trainer.h"
#include "util/error.h"

namespace slim {

namespace fs = std::filesystem;

namespace {

std::string rules_path_of(const RunConfig& config, const CalibrateOptions& options) {
  return options.out.empty() ? (fs::path(config.out_dir) / "slim_rules.json").string() : options.out;
}

// The probe file beside the rules file; the final file is written to it and renamed, so a run
// that fails half-way never leaves a truncated rules file behind.
std::string temporary_path(const std::string& path) { return path + ".tmp"; }

// Fails before any training if the rules file cannot be written (a calibration run can be long).
void check_writable(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec)
    throw UsageError(cat("cannot write the rules file '", path, "': cannot create its directory '",
                         parent.string(), "' (", ec.message(), "); pass --out with a writable path"));
  if (fs::is_directory(path))
    throw UsageError(cat("cannot write the rules file '", path,
                         "': it is a directory; pass --out with a file name, e.g. ", path,
                         "/slim_rules.json"));
  const std::string probe = temporary_path(path);
  {
    std::ofstream out(probe, std::ios::trunc);
    if (!out)
      throw UsageError(cat("cannot write the rules file '", path, "' (", std::strerror(errno),
                           "); pass --out with a writable path"));
  }
  fs::remove(probe, ec);
}

void write_rules_file(const std::string& path, const std::string& text) {
  const std::string temporary = temporary_path(path);
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw Error(cat("writing ", temporary, " failed: ", std::strerror(errno)));
  }
  std::error_code ec;
  fs::rename(temporary, path, ec);
  if (ec) throw Error(cat("cannot move ", temporary, " to ", path, ": ", ec.message()));
}

std::string rule_text(const SnrRule& rule) {
  if (!rule.dims) return "null";
  switch (*rule.dims) {
    case CompressDims::Dim0: return "[0]";
    case CompressDims::Dim1: return "[1]";
    case CompressDims::Both: return "[0, 1]";
  }
  return "?";
}

// One SNR cell: "-" where the option does not exist (1-D tensors), "nan" where it was never
// measurable.
std::string snr_text(const SnrRule& rule, CompressDims k) {
  if (rule.one_dim && k != CompressDims::Dim0) return "-";
  if (!std::isfinite(rule.mean_snr[k])) return "nan";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.3f", rule.mean_snr[k]);
  return buffer;
}

// key | SNR (0,) | SNR (1,) | SNR (0,1) | rule | v entries | why
std::string format_rules_table(const std::vector<SnrRule>& rules, const PartitionTable& slim) {
  std::vector<int64_t> v_entries;
  for (const TensorPartition& t : slim.tensors)
    for (const PartitionSegment& s : t.segments) v_entries.push_back(s.v_entries);
  SLIM_CHECK(v_entries.size() == rules.size(), v_entries.size(), " segments, ", rules.size(), " rules");
  size_t key_width = 14;
  for (const SnrRule& r : rules) key_width = std::max(key_width, r.key.size());
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-*s  %10s %10s %10s  %-7s %12s  %s\n", int(key_width),
                "tensor/segment", "SNR (0,)", "SNR (1,)", "SNR (0,1)", "rule", "v entries", "why");
  out += line;
  for (size_t i = 0; i < rules.size(); ++i) {
    const SnrRule& r = rules[i];
    std::snprintf(line, sizeof line, "%-*s  %10s %10s %10s  %-7s %12s  %s\n", int(key_width),
                  r.key.c_str(), snr_text(r, CompressDims::Dim0).c_str(),
                  snr_text(r, CompressDims::Dim1).c_str(), snr_text(r, CompressDims::Both).c_str(),
                  rule_text(r).c_str(), with_thousands(v_entries[i]).c_str(), r.reason.c_str());
    out += line;
  }
  return out;
}

}  // namespace

RunConfig calibration_config(const RunConfig& config, const CalibrateOptions& options) {
  if (options.steps < 1)
    throw UsageError(cat("--steps ", options.steps,
                         " is out of range: calibration needs at least 1 AdamW step (the official "
                         "runs measure every 100 steps over thousands; try --steps 1000)"));
  if (options.every < 1)
    throw UsageError(cat("--every ", options.every,
                         " is out of range: measure every N >= 1 steps (default 100)"));
  if (!(options.cutoff > 0) || !std::isfinite(options.cutoff))
    throw UsageError(cat("--cutoff ", options.cutoff,
                         " is out of range: a compression is kept when its mean SNR exceeds the "
                         "cutoff, which must be a positive number (default 1.0)"));
  if (config.training.warmup_steps > options.steps)
    throw UsageError(cat("training.warmup_steps = ", config.training.warmup_steps,
                         " is longer than the calibration's --steps ", options.steps,
                         ": pass --steps >= ", config.training.warmup_steps,
                         " or --set training.warmup_steps=N with N <= ", options.steps));
  RunConfig calibration = config;
  calibration.optimizer.kind = "adamw";
  calibration.optimizer.slim_rules.clear();
  calibration.optimizer.adam_mini_single_block_v = false;
  calibration.optimizer.adam_mini_per_position_wpe = false;
  calibration.training.steps = options.steps;
  return calibration;
}

CalibrationResult run_calibration(const RunConfig& config_in, const CalibrateOptions& options) {
  const RunConfig config = calibration_config(config_in, options);
  const TrainingConfig& tc = config.training;
  const int B = tc.micro_batch, T = tc.seq_len, accum = tc.grad_accum;
  CalibrationResult result;
  result.rules_path = rules_path_of(config, options);
  check_writable(result.rules_path);

  std::unique_ptr<Backend> backend = make_backend(config.backend, config.precision);
  std::printf("slimtrain %s calibrate | backend %s (%s)\n", SLIMTRAIN_VERSION,
              backend->name().c_str(), dtype_name(backend->compute_dtype()));
  std::printf("optimizer.kind forced to adamw%s: the SNR is measured on AdamW's full second "
              "moment\n",
              config_in.optimizer.kind == "adamw" ? "" : cat(" (the config says ", config_in.optimizer.kind, ")").c_str());
  std::printf("%d steps (training.steps = %d of the config is replaced; the lr schedule spans the "
              "%d steps), SNR measured at step 1, every %d steps and at step %d; cutoff %g\n",
              options.steps, config_in.training.steps, options.steps, options.every, options.steps,
              options.cutoff);

  TrainingSetup setup = build_training(config, *backend);
  GptModel& model = *setup.model;
  Optimizer& optimizer = *setup.optimizer;
  const ClipPolicy clip = clip_policy(config);
  DataLoader train_loader(config.data.train, B, T, 0, 1, config.data.shuffle, config.seed,
                          config.model.vocab_size);
  std::printf("model: %s, %s parameters | batch %d x %d x %d accum | accumulation %s | clipping %s\n",
              config.model.family.c_str(), format_thousands((long long)model.num_params()).c_str(),
              B, T, accum, config.optimizer.accumulation.c_str(), clip.describe().c_str());
  std::fflush(stdout);

  const LrSchedule schedule = schedule_of(config);

  const PartitionTable& adamw = optimizer.partition();
  result.adamw_v_entries = adamw.total_v;
  SnrTracker tracker(snr_targets(model.table(), adamw));
  // adama skips a step whose micro-batch gradient is not finite; this many in a row stop the run.
  constexpr int kMaxConsecutiveSkips = 5;
  int consecutive_skips = 0;
  for (int step = 0; step < tc.steps; ++step) {
    const float lr = schedule.lr_at(step);
    const StepResult r = train_step(
        model, optimizer, [&](int* in, int* tg) { train_loader.next_batch(in, tg); }, B, T, accum,
        lr, clip);
    const int completed = step + 1;
    if (r.skipped) {
      ++consecutive_skips;
      std::printf("step %5d/%d | SKIPPED: micro-batch %d had a non-finite %s (%d in a row)\n",
                  completed, tc.steps, r.bad_micro_batch + 1,
                  std::isfinite(r.loss) ? "gradient" : "loss", consecutive_skips);
      if (consecutive_skips >= kMaxConsecutiveSkips)
        throw Error(cat("calibration step ", completed, ": ", consecutive_skips,
                        " steps in a row were skipped for non-finite gradients; try a lower "
                        "optimizer.lr (--set optimizer.lr=...)"));
    } else if (!r.updated) {
      throw Error(cat("calibration step ", completed, ": non-finite ",
                      std::isfinite(r.loss) ? "gradient norm" : "train loss", " (loss ", r.loss,
                      ", grad norm ", r.grad_norm, "); try a lower optimizer.lr (--set optimizer.lr=...)"));
    } else {
      consecutive_skips = 0;
    }
    // Measured after the step's update, as the official SNRTracker reads the optimizer state.
    const bool measure = completed == 1 || completed % options.every == 0 || completed == tc.steps;
    if (measure) tracker.measure(completed, optimizer.v_to_host());
    if (!r.skipped && (measure || completed % config.logging.every == 0))
      std::printf("step %5d/%d | loss %.4f | lr %.2e | norm%s %.4f%s\n", completed, tc.steps, r.loss,
                  lr, optimizer.adama() ? "~" : "", r.grad_norm, measure ? " | SNR measured" : "");
    std::fflush(stdout);
  }

  result.measured_steps = tracker.steps();
  result.rules = extract_slim_rules(tracker, options.cutoff);
  write_rules_file(result.rules_path,
                   slim_rules_file_json(result.rules, options.cutoff, result.measured_steps));

  PartitionOptions partition;
  partition.slim_rules_path = result.rules_path;
  const PartitionTable slim = build_partition("slim_adam", model.table(), config.model, partition);
  const PartitionTable defaults = build_partition("slim_adam", model.table(), config.model, {});
  result.slim_v_entries = slim.total_v;

  std::printf("\nmean SNR over %zu measurements (steps", result.measured_steps.size());
  for (int64_t s : result.measured_steps) std::printf(" %lld", (long long)s);
  std::printf("), cutoff %g:\n%s", options.cutoff, format_rules_table(result.rules, slim).c_str());
  std::printf("rules written to %s\n", result.rules_path.c_str());
  std::printf("SlimAdam with these rules keeps %s v entries (%.4f%% of AdamW's %s; Table 1 "
              "defaults: %s)\n",
              with_thousands(slim.total_v).c_str(), 100.0 * double(slim.total_v) / double(adamw.total_v),
              with_thousands(adamw.total_v).c_str(), with_thousands(defaults.total_v).c_str());
  std::string sets;
  for (const std::string& set : options.sets) sets += set + " ";
  std::printf("use them with:\n  slimtrain train --config %s --set %soptimizer.kind=slim_adam "
              "optimizer.slim_rules=%s\nor in the config: \"optimizer\": {\"kind\": \"slim_adam\", "
              "\"slim_rules\": \"%s\"}\n",
              options.config_path.empty() ? "CONFIG" : options.config_path.c_str(), sets.c_str(),
              result.rules_path.c_str(), result.rules_path.c_str());
  return result;
}

}  // namespace slim
