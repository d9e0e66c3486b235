// Learning-rate schedules: linear warmup, then cosine | linear | wsd | constant down to
// lr * min_lr_fraction. Steps are 0-based; warmup reaches the peak lr at step warmup_steps - 1.
#pragma once
#include <string>

#include "config/config.h"

namespace slim {

struct LrSchedule {
  std::string kind = "cosine";
  float peak_lr = 6e-4f;
  int total_steps = 1;
  int warmup_steps = 0;
  float min_lr_fraction = 0.0f;
  float wsd_decay_fraction = 0.2f;  // wsd: the last fraction of the steps decays as 1 - sqrt

  float lr_at(int step) const;
};

// The schedule a run config asks for (optimizer.lr, training.*).
LrSchedule schedule_of(const RunConfig& config);

}  // namespace slim
