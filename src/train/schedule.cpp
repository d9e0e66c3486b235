#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace slim {

float LrSchedule::lr_at(int step) const {
  const double peak = peak_lr, floor_lr = double(peak_lr) * min_lr_fraction;
  if (step < warmup_steps) return float(peak * (step + 1) / warmup_steps);
  if (kind == "constant") return float(peak);
  if (kind == "wsd") {
    // Warmup-stable-decay: hold the peak, then decay over the last wsd_decay_fraction of the run
    // with the 1 - sqrt shape (as in llm.c and torchtitan).
    const int decay_steps = std::max(1, int(std::lround(total_steps * wsd_decay_fraction)));
    const int decay_start = total_steps - decay_steps;
    if (step < decay_start) return float(peak);
    const double progress = std::min(1.0, double(step - decay_start + 1) / decay_steps);
    return float(floor_lr + (peak - floor_lr) * (1.0 - std::sqrt(progress)));
  }
  const int span = std::max(1, total_steps - warmup_steps);
  const double ratio = std::clamp(double(step - warmup_steps) / span, 0.0, 1.0);
  if (kind == "cosine") return float(floor_lr + 0.5 * (1.0 + std::cos(M_PI * ratio)) * (peak - floor_lr));
  if (kind == "linear") return float(peak - ratio * (peak - floor_lr));
  throw UsageError(cat("unknown training.schedule '", kind, "'; use cosine | linear | wsd | constant"));
}

LrSchedule schedule_of(const RunConfig& config) {
  const TrainingConfig& t = config.training;
  LrSchedule schedule;
  schedule.kind = t.schedule;
  schedule.peak_lr = config.optimizer.lr;
  schedule.total_steps = t.steps;
  schedule.warmup_steps = t.warmup_steps;
  schedule.min_lr_fraction = t.min_lr_fraction;
  schedule.wsd_decay_fraction = t.wsd_decay_fraction;
  return schedule;
}

}  // namespace slim
