#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "optim/optimizer.h"
#include "train/generate.h"
#include "train/run_state.h"
#include "train/schedule.h"
#include "train/signals.h"
#include "util/error.h"

namespace slim {

namespace fs = std::filesystem;

double evaluate_loss(GptModel& model, DataLoader& loader, int max_batches) {
  loader.reset();
  uint64_t batches = loader.batches_per_epoch();
  if (max_batches > 0) batches = std::min<uint64_t>(batches, uint64_t(max_batches));
  const int B = loader.B(), T = loader.T();
  std::vector<int> inputs(size_t(B) * T), targets(size_t(B) * T);
  double sum = 0.0;
  for (uint64_t i = 0; i < batches; ++i) {
    loader.next_batch(inputs.data(), targets.data());
    sum += model.forward(inputs.data(), targets.data(), B, T, 0.0f);
  }
  return batches ? sum / double(batches) : NAN;
}

GradientResult compute_gradients(GptModel& model, const BatchSource& next_batch, int B, int T,
                                 int accum) {
  std::vector<int> inputs(size_t(B) * T), targets(size_t(B) * T);
  const float dloss = 1.0f / float(size_t(B) * T * accum);
  model.zero_grads();
  double loss_sum = 0.0;
  for (int micro = 0; micro < accum; ++micro) {
    next_batch(inputs.data(), targets.data());
    loss_sum += model.forward(inputs.data(), targets.data(), B, T, dloss);
    model.backward();
  }
  GradientResult result;
  result.loss = loss_sum / accum;
  result.grad_norm = std::sqrt(model.backend().sum_squares(model.grads(), model.num_params()));
  return result;
}

float apply_update(Optimizer& optimizer, double grad_norm, float lr, float grad_clip) {
  const float grad_scale =
      grad_clip > 0 && grad_norm > grad_clip ? float(grad_clip / grad_norm) : 1.0f;
  optimizer.step(lr, grad_scale);
  return grad_scale;
}

TrainingSetup build_training(const RunConfig& config, Backend& backend,
                             const std::vector<float>* weights) {
  TrainingSetup setup;
  setup.model = std::make_unique<GptModel>(config.model, backend);
  GptModel& model = *setup.model;
  const bool adama = config.optimizer.accumulation == "adama";
  if (adama)
    model.allocate_layer_grads(nullptr);
  else
    model.allocate_grads();
  model.allocate_activations(config.training.micro_batch, config.training.seq_len,
                             config.training.recompute);
  if (weights)
    model.params_from_host(*weights);
  else
    model.init_weights(config.seed);
  // After the weights: master weights start as a copy of them.
  setup.optimizer = std::make_unique<Optimizer>(optimizer_settings(config), model);
  if (adama) {
    Optimizer* optimizer = setup.optimizer.get();
    model.set_grad_sink([optimizer](size_t index, const void* grad) { optimizer->fold(index, grad); });
  }
  return setup;
}

std::string ClipPolicy::describe() const {
  if (mode == "global_norm") return cat("global norm ", threshold, " (exact)");
  if (mode == "lagged")
    return cat("lagged proxy norm ", threshold,
               " (adama: step t's folds are scaled by min(1, ", threshold,
               "/sqrt(sum of step t-1's micro-batch ||g_i||^2)))");
  if (mode == "update")
    return cat("update RMS ", threshold, " (adama: each tensor's m_hat/(sqrt(v_hat)+eps))");
  return "off";
}

ClipPolicy clip_policy(const RunConfig& config) {
  ClipPolicy policy;
  const float clip = config.training.grad_clip;
  if (config.optimizer.accumulation != "adama") {
    if (clip > 0) policy = {"global_norm", clip};
    return policy;
  }
  const std::string& mode = config.optimizer.adama_clip;
  if (mode == "lagged" && clip > 0) policy = {"lagged", clip};
  if (mode == "update") policy = {"update", config.optimizer.update_clip};
  return policy;
}

StepResult train_step(GptModel& model, Optimizer& optimizer, const BatchSource& next_batch, int B,
                      int T, int accum, float lr, const ClipPolicy& clip) {
  StepResult result;
  if (!optimizer.adama()) {
    const GradientResult grads = compute_gradients(model, next_batch, B, T, accum);
    result.loss = grads.loss;
    result.grad_norm = grads.grad_norm;
    if (!std::isfinite(grads.loss) || !std::isfinite(grads.grad_norm)) return result;
    result.grad_scale = apply_update(optimizer, grads.grad_norm, lr,
                                     clip.mode == "global_norm" ? clip.threshold : 0.0f);
    result.updated = true;
    return result;
  }
  // adama. The lagged proxy of the previous step sets this step's fold scale.
  const double proxy = std::sqrt(optimizer.proxy_sum_squares());
  if (clip.mode == "lagged" && proxy > clip.threshold) result.grad_scale = float(clip.threshold / proxy);
  const size_t BT = size_t(B) * T;
  // The step's tokens are kept (a few KiB) so that a skipped step can replay its backward.
  std::vector<int> inputs(BT * accum), targets(BT * accum);
  const float dloss = 1.0f / float(BT * accum);
  optimizer.begin_folds(result.grad_scale);
  double loss_sum = 0.0;
  for (int micro = 0; micro < accum; ++micro) {
    int* in = inputs.data() + micro * BT;
    int* tg = targets.data() + micro * BT;
    next_batch(in, tg);
    const float loss = model.forward(in, tg, B, T, dloss);
    loss_sum += loss;
    model.backward();
    if (!std::isfinite(loss) || optimizer.fold_status().nonfinite) {
      result.loss = loss_sum / (micro + 1);
      result.skipped = true;
      result.bad_micro_batch = micro;
      result.grad_norm = NAN;
      // The skipped step still consumes its share of the data, so the data a step sees does not
      // depend on whether an earlier step was skipped.
      std::vector<int> unused_inputs(BT), unused_targets(BT);
      for (int rest = micro + 1; rest < accum; ++rest)
        next_batch(unused_inputs.data(), unused_targets.data());
      optimizer.undo_folds([&](int i) {
        model.forward(inputs.data() + i * BT, targets.data() + i * BT, B, T, dloss);
        model.backward();
      });
      return result;
    }
  }
  optimizer.apply(lr, clip.mode == "update" ? clip.threshold : 0.0f);
  result.loss = loss_sum / accum;
  // apply() kept the step's sum of ||g_i||^2 as the next step's lagged-clip proxy.
  result.grad_norm = std::sqrt(optimizer.proxy_sum_squares());
  result.updated = true;
  return result;
}

namespace {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

// metrics.jsonl: one JSON object per line. On resume, records past the checkpoint's step (written
// by the interrupted run after its last checkpoint) are dropped so the file describes one run.
class MetricsLog {
 public:
  MetricsLog(const std::string& path, int64_t keep_up_to_step) : path_(path) {
    std::vector<std::string> kept;
    if (keep_up_to_step > 0) {
      std::ifstream in(path);
      std::string line;
      while (std::getline(in, line)) {
        auto record = nlohmann::json::parse(line, nullptr, false);
        if (!record.is_discarded() && record.value("step", int64_t(0)) <= keep_up_to_step)
          kept.push_back(line);
      }
    }
    out_.open(path, std::ios::trunc);
    if (!out_) throw Error(cat("cannot write ", path, ": ", std::strerror(errno)));
    for (const auto& line : kept) out_ << line << '\n';
    out_.flush();
  }
  void write(const nlohmann::ordered_json& record) {
    out_ << record.dump() << '\n';
    out_.flush();
    if (!out_) throw Error(cat("writing ", path_, " failed (disk full?)"));
  }

 private:
  std::string path_;
  std::ofstream out_;
};

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text << '\n';
  if (!out) throw Error(cat("cannot write ", path, ": ", std::strerror(errno)));
}

}  // namespace

int run_training(const RunConfig& config_in, const TrainOptions& options) {
  RunConfig config = config_in;
  const TrainingConfig& tc = config.training;
  const int B = tc.micro_batch, T = tc.seq_len, accum = tc.grad_accum;

  // ---- resume -------------------------------------------------------------------------------
  std::string resume_dir;
  if (!options.resume.empty()) {
    const bool auto_mode = options.resume == "auto";
    resume_dir = resolve_checkpoint(auto_mode ? config.out_dir : options.resume, auto_mode);
    if (resume_dir.empty())
      std::printf("resume: no checkpoint in %s yet, starting a fresh run\n", config.out_dir.c_str());
  }
  std::unique_ptr<LoadedRun> loaded;
  if (!resume_dir.empty()) {
    loaded = std::make_unique<LoadedRun>(load_run_checkpoint(resume_dir, true));
    const RunConfig& saved = loaded->config;
    if (model_config_to_json(saved.model) != model_config_to_json(config.model))
      throw UsageError(cat("cannot resume from ", resume_dir,
                           ": its model differs from the config's model section.\ncheckpoint: ",
                           model_config_to_json(saved.model), "\nconfig:     ",
                           model_config_to_json(config.model)));
    auto same = [&](bool equal, const char* what) {
      if (!equal)
        throw UsageError(cat("cannot resume from ", resume_dir, ": ", what,
                             " differs from the checkpoint's run; the data cursor and optimizer "
                             "state only make sense with the same value"));
    };
    same(saved.training.micro_batch == B, "training.micro_batch");
    same(saved.training.seq_len == T, "training.seq_len");
    same(saved.data.train == config.data.train, "data.train");
    same(saved.data.shuffle == config.data.shuffle, "data.shuffle");
    same(saved.seed == config.seed, "seed");
    same(saved.optimizer.kind == config.optimizer.kind, "optimizer.kind");
    if (loaded->progress.step >= tc.steps)
      throw UsageError(cat("checkpoint ", resume_dir, " is at step ", loaded->progress.step,
                           ", already >= training.steps = ", tc.steps,
                           "; raise training.steps (--set training.steps=N) to train further"));
  }
  const int64_t start_step = loaded ? loaded->progress.step : 0;

  // ---- setup --------------------------------------------------------------------------------
  std::unique_ptr<Backend> backend = make_backend(config.backend, config.precision);
  std::error_code ec;
  fs::create_directories(config.out_dir, ec);
  if (ec) throw Error(cat("cannot create out_dir ", config.out_dir, ": ", ec.message()));
  const std::string resolved = run_config_to_json(config);
  write_text_file(config.out_dir + "/config.json", resolved);
  std::printf("slimtrain %s | backend %s (%s)\nresolved config (saved to %s/config.json):\n%s\n",
              SLIMTRAIN_VERSION, backend->name().c_str(), dtype_name(backend->compute_dtype()),
              config.out_dir.c_str(), resolved.c_str());

  const bool adama = config.optimizer.accumulation == "adama";
  TrainingSetup setup = build_training(config, *backend, loaded ? &loaded->params : nullptr);
  GptModel& model = *setup.model;
  Optimizer& optimizer = *setup.optimizer;
  const ClipPolicy clip = clip_policy(config);

  DataLoader train_loader(config.data.train, B, T, 0, 1, config.data.shuffle, config.seed,
                          config.model.vocab_size);
  std::unique_ptr<DataLoader> val_loader;
  if (config.eval.every > 0 && !config.data.val.empty())
    val_loader = std::make_unique<DataLoader>(config.data.val, B, T, 0, 1, false, config.seed,
                                              config.model.vocab_size);
  std::unique_ptr<Gpt2Tokenizer> tokenizer;
  if (config.eval.sample_every > 0)
    tokenizer = std::make_unique<Gpt2Tokenizer>(Gpt2Tokenizer::load(
        config.data.tokenizer_dir.empty() ? default_tokenizer_dir() : config.data.tokenizer_dir));
  if (loaded) {
    train_loader.restore(cursor_from_string(loaded->progress.train_cursor));
    optimizer.load_state(loaded->m, loaded->v, loaded->master, loaded->optimizer_steps,
                         loaded->proxy_sum_squares);
    loaded->params.clear();
    loaded->m.clear();
    loaded->v.clear();
    std::printf("resumed from %s at step %lld\n", resume_dir.c_str(), (long long)start_step);
  }

  const size_t n_params = model.num_params();
  const uint64_t tokens_per_step = uint64_t(B) * T * accum;
  std::printf("model: %s, %s parameters | batch %d x %d x %d accum = %s tokens/step | %s train tokens\n",
              config.model.family.c_str(), format_thousands((long long)n_params).c_str(), B, T,
              accum, format_thousands((long long)tokens_per_step).c_str(),
              format_thousands((long long)train_loader.total_tokens()).c_str());
  std::printf("optimizer %s, accumulation %s%s, second-moment partition:\n%s",
              config.optimizer.kind.c_str(), config.optimizer.accumulation.c_str(),
              adama ? cat(" (s = ", config.optimizer.adama_scale, ")").c_str() : "",
              optimizer.partition().format().c_str());
  std::printf("memory (bytes held by the allocator):\n%s", backend->allocator().table(n_params).c_str());
  std::printf("clipping: %s\n", clip.describe().c_str());
  std::fflush(stdout);

  const LrSchedule schedule = schedule_of(config);

  MetricsLog metrics(config.out_dir + "/metrics.jsonl", start_step);
  install_stop_handlers();
  double timed_seconds = 0.0;
  // adama skips a step whose micro-batch gradient is not finite; this many in a row stop the run.
  constexpr int kMaxConsecutiveSkips = 5;
  int consecutive_skips = 0;
  int timed_steps = 0;
  std::string last_checkpoint = resume_dir;

  auto checkpoint = [&](int64_t completed) {
    RunProgress progress{completed, cursor_to_string(train_loader.cursor())};
    last_checkpoint = save_run_checkpoint(config, model, optimizer, progress);
    std::printf("checkpoint: %s\n", last_checkpoint.c_str());
  };

  for (int64_t step = start_step; step < tc.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const float lr = schedule.lr_at(int(step));
    const StepResult result = train_step(
        model, optimizer, [&](int* in, int* tg) { train_loader.next_batch(in, tg); }, B, T, accum,
        lr, clip);
    const double loss = result.loss, grad_norm = result.grad_norm;
    const int64_t completed = step + 1;
    if (result.skipped) {
      ++consecutive_skips;
      std::printf("step %5lld/%d | SKIPPED: micro-batch %d of %d had a non-finite %s; m and v were "
                  "restored to their values before the step and no weight moved (%d in a row)\n",
                  (long long)completed, tc.steps, result.bad_micro_batch + 1, accum,
                  std::isfinite(loss) ? "gradient" : "loss", consecutive_skips);
      std::fflush(stdout);
      metrics.write({{"step", completed}, {"skipped", true}, {"train_loss", loss}, {"lr", lr}});
      if (consecutive_skips >= kMaxConsecutiveSkips)
        throw Error(cat("step ", completed, ": ", consecutive_skips,
                        " steps in a row were skipped for non-finite gradients; stopping. ",
                        last_checkpoint.empty() ? std::string("No checkpoint was written yet.")
                                                : cat("Last checkpoint: ", last_checkpoint,
                                                      " (resume with --resume auto, perhaps with "
                                                      "a lower optimizer.lr)")));
    } else {
      consecutive_skips = 0;
    }
    if (!result.skipped && !result.updated)
      throw Error(cat("step ", completed, ": non-finite ", !std::isfinite(loss) ? "train loss" : "gradient norm",
                      " (loss ", loss, ", grad norm ", grad_norm,
                      "); stopped before the update so no weight was touched. ",
                      last_checkpoint.empty() ? std::string("No checkpoint was written yet.")
                                              : cat("Last checkpoint: ", last_checkpoint,
                                                    " (resume with --resume auto, perhaps with a lower optimizer.lr)")));
    backend->synchronize();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // The first step of a process warms caches and thread pools: leave it out of the ETA average.
    if (step > start_step) {
      timed_seconds += seconds;
      ++timed_steps;
    }
    const double avg = timed_steps ? timed_seconds / timed_steps : seconds;
    const double tokens_per_s = tokens_per_step / seconds;
    if (!result.skipped && (completed % config.logging.every == 0 || completed == tc.steps || completed == 1)) {
      std::printf("step %5lld/%d | loss %.4f | lr %.2e | norm%s %.4f | %s tok/s | %.1f ms | eta %s\n",
                  (long long)completed, tc.steps, loss, lr, adama ? "~" : "", grad_norm,
                  format_thousands(std::llround(tokens_per_s)).c_str(), seconds * 1e3,
                  (timed_steps ? format_duration(avg * double(tc.steps - completed)) : std::string("-")).c_str());
      std::fflush(stdout);
    }
    if (!result.skipped)
      metrics.write({{"step", completed}, {"train_loss", loss}, {"lr", lr},
                     {adama ? "grad_norm_proxy" : "grad_norm", grad_norm},
                     {"grad_scale", result.grad_scale}, {"tokens_per_s", tokens_per_s},
                     {"ms_per_step", seconds * 1e3}});

    if (val_loader && (completed % config.eval.every == 0 || completed == tc.steps)) {
      const double val_loss = evaluate_loss(model, *val_loader, config.eval.batches);
      std::printf("eval %5lld/%d | val loss %.4f\n", (long long)completed, tc.steps, val_loss);
      std::fflush(stdout);
      metrics.write({{"step", completed}, {"val_loss", val_loss}});
    }
    if (tokenizer && completed % config.eval.sample_every == 0) {
      std::vector<int> prompt = tokenizer->encode(config.eval.sample_prompt);
      if (prompt.empty()) prompt.push_back(tokenizer->eot_token());
      SampleOptions sopts;
      sopts.tokens = config.eval.sample_tokens;
      sopts.seed = config.seed + uint64_t(completed);
      std::vector<int> out = generate(model, prompt, sopts, T);
      std::vector<int> generated(out.begin() + prompt.size(), out.end());
      std::printf("sample %lld | %s%s\n", (long long)completed, config.eval.sample_prompt.c_str(),
                  tokenizer->decode(generated).c_str());
      std::fflush(stdout);
    }
    const bool stopping = stop_requested();
    if ((config.checkpoint.every > 0 && completed % config.checkpoint.every == 0) ||
        completed == tc.steps || stopping)
      checkpoint(completed);
    if (stopping && completed < tc.steps) {
      // The resolved config in out_dir carries every --set override of this run.
      std::printf("stopped by signal %d after step %lld; checkpoint written to %s\n"
                  "resume with: slimtrain train --config %s/config.json --resume auto\n",
                  stop_signal(), (long long)completed, last_checkpoint.c_str(),
                  config.out_dir.c_str());
      return 0;
    }
  }
  std::printf("done: %d steps, %s tokens/step, average %.1f ms/step\n", tc.steps,
              format_thousands((long long)tokens_per_step).c_str(),
              1e3 * (timed_steps ? timed_seconds / timed_steps : 0.0));
  return 0;
}

}  // namespace slim
