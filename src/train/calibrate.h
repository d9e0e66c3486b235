// `slimtrain calibrate`: SlimAdam's offline calibration run (OPTIMIZERS.md section 3.3). Trains
// the config's model with AdamW for K steps on the config's data (same batch, clipping and lr
// schedule, the schedule stretched over the K steps), measures the SNR of AdamW's second moment
// at step 1, every N steps and at the last step (optim/snr.h), and writes the SlimAdam rules
// file that `optimizer.kind=slim_adam optimizer.slim_rules=PATH` then trains with.
//
// The accumulation mode is kept: with optimizer.accumulation=adama, the v measured is AdamA's,
// which is the estimator a SlimAdam+AdamA run will compress (section 5.4).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"
#include "optim/snr.h"

namespace slim {

struct CalibrateOptions {
  int steps = 0;             // K: AdamW steps to train
  int every = 100;           // the SNR is measured at step 1, every N steps and at step K
  double cutoff = 1.0;       // a compression needs mean SNR > cutoff
  std::string out;           // the rules file; "" = <out_dir>/slim_rules.json
  // Only for the command line printed at the end: the config and the --set overrides it was
  // calibrated with (the rules are per tensor, so the train run needs the same model).
  std::string config_path;
  std::vector<std::string> sets;
};

struct CalibrationResult {
  std::string rules_path;
  std::vector<int64_t> measured_steps;
  std::vector<SnrRule> rules;       // one per rules-file key, in parameter-table order
  int64_t slim_v_entries = 0;       // SlimAdam's v with these rules (build_partition)
  int64_t adamw_v_entries = 0;
};

// The config the calibration trains: optimizer.kind adamw (the SlimAdam rules file and Adam-mini
// options of the config dropped), training.steps = options.steps. Throws UsageError for bad
// options (steps < 1, every < 1, cutoff not > 0) and for a warmup longer than the K steps.
RunConfig calibration_config(const RunConfig& config, const CalibrateOptions& options);

// Runs the calibration and prints progress, the SNR table, the rules file's path, its v count
// and how to use it. Checks that the rules file can be written before training. Throws
// UsageError for bad input, Error for a failure during the run (non-finite loss, I/O).
CalibrationResult run_calibration(const RunConfig& config, const CalibrateOptions& options);

}  // namespace slim
