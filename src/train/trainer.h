// The training loop: micro-batches with gradient accumulation, global-norm clipping, the LR
// schedule, AdamW, validation, samples, checkpoints, logs and metrics.jsonl. Knows nothing of
// CUDA: everything device-side goes through the Backend the config selects.
#pragma once
#include <functional>
#include <memory>
#include <vector>
#include <string>

#include "config/config.h"
#include "data/loader.h"
#include "model/gpt.h"
#include "optim/optimizer.h"

namespace slim {

struct TrainOptions {
  std::string resume;       // "" (fresh run), "auto" (newest checkpoint in out_dir, if any), or a dir
};

// Runs the whole job. Returns the process exit code (0 also when stopped by a signal after
// writing a checkpoint). Throws slim::Error / UsageError on failure.
int run_training(const RunConfig& config, const TrainOptions& options);

// The model and optimizer of a run on `backend`, built and wired exactly as run_training does:
// the gradient buffers of the accumulation mode (and AdamA's sink into the optimizer),
// activations for training.micro_batch x seq_len with training.recompute, the weights (from
// `weights` when given, fp32 in table order, else the config's seeded init), the optimizer state.
struct TrainingSetup {
  std::unique_ptr<GptModel> model;
  std::unique_ptr<Optimizer> optimizer;
};
TrainingSetup build_training(const RunConfig& config, Backend& backend,
                             const std::vector<float>* weights = nullptr);

// The two halves of an optimizer step, split so the caller can check the loss and gradient norm
// for NaN/Inf before any weight is touched.
struct GradientResult {
  double loss = 0.0;       // mean over the micro-batches
  double grad_norm = 0.0;  // global L2 norm of the accumulated (averaged) gradient, before clipping
};
// Fills inputs[B*T] and targets[B*T] (host) with the next micro-batch.
using BatchSource = std::function<void(int* inputs, int* targets)>;
// Zeroes the gradients, then runs forward+backward over `accum` micro-batches of B x T.
GradientResult compute_gradients(GptModel& model, const BatchSource& next_batch, int B, int T,
                                 int accum);
// Clips by global norm (grad_clip > 0 and grad_norm > grad_clip: scale grad_clip/grad_norm, as
// llm.c does) and applies one optimizer update at learning rate lr. Returns the scale used.
float apply_update(Optimizer& optimizer, double grad_norm, float lr, float grad_clip);

// How a step clips. grads mode: exact global-norm clipping ("global_norm", threshold
// training.grad_clip) or "none". adama mode (OPTIMIZERS.md section 5.3): "lagged" (the previous
// step's proxy norm against training.grad_clip), "update" (each tensor's update RMS against
// optimizer.update_clip) or "none".
struct ClipPolicy {
  std::string mode = "none";
  float threshold = 0.0f;
  std::string describe() const;  // the line the run prints at start
};
ClipPolicy clip_policy(const RunConfig& config);

struct StepResult {
  double loss = 0.0;        // mean over the micro-batches (over those run, when skipped)
  // grads: the exact global norm before clipping. adama: the proxy sqrt(sum_i ||g_i||^2) over
  // the step's micro-batch gradients (unscaled), which is what lagged clipping uses next step.
  double grad_norm = 0.0;
  float grad_scale = 1.0f;  // the clip multiplier the gradients got (1 = none)
  bool updated = false;     // the weights and optimizer state moved
  // adama: a micro-batch gradient was not finite, so the step was skipped and m and v restored
  // (Optimizer::undo_folds). grads mode never skips: a non-finite loss or norm leaves
  // updated == false and the caller stops.
  bool skipped = false;
  int bad_micro_batch = -1;
};
// One optimizer step over `accum` micro-batches of B x T, in the optimizer's accumulation mode.
// adama needs the model's gradient sink to be the optimizer's fold (see run_training).
StepResult train_step(GptModel& model, Optimizer& optimizer, const BatchSource& next_batch, int B,
                      int T, int accum, float lr, const ClipPolicy& clip);

// Mean loss over up to max_batches batches of `loader` from its start (0 = one whole epoch).
double evaluate_loss(GptModel& model, DataLoader& loader, int max_batches);

}  // namespace slim
