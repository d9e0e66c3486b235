// SlimAdam's offline rule derivation (OPTIMIZERS.md section 3.3): the signal-to-noise ratio of
// AdamW's uncompressed second moment v along each candidate compression, averaged over a
// calibration run, and the rules file it yields.
//
// The statistic, for a tensor (or one q/k/v segment of the fused qkv weight) seen as its real
// rows x cols matrix V (padded vocabulary rows left out: their v is 0 and says nothing):
//   SNR_K = mean over the remaining dims of (mean_K V)^2 / var_K V
// for K = (0,) (one ratio per column, over the rows), (1,) (one per row, over the columns) and
// (0,1) (one ratio of the whole matrix). var is the population variance (numpy's ddof=0). Ratios
// that are not finite (a constant row: x^2/0; an all-zero row: 0/0) are left out of the outer
// mean; when none is finite, SNR_K is NaN. A 1-D tensor has only dim 0, so only (0,), a ratio of
// the whole vector. Sums run in double, so a constant row has exactly zero variance.
//
// A high SNR_K means v barely varies along K, so one v per remaining index loses little:
// K = (1,) keeps one v per row (partition Row), (0,) one per column (Column), (0,1) one for the
// whole matrix (Whole), exactly SlimAdam's compress_dims.
//
// Rule extraction (get_rules_slim_snr.py): per target, the SNR of each K is averaged over the
// measured steps (steps where it was NaN are skipped, as pandas' mean does); among the K whose
// mean is > cutoff the highest wins (ties: the first in the order (0,), (1,), (0,1), as idxmax);
// if none qualifies the rule is null (a full v). LayerNorm parameters are always null: the
// official script forces its LayerNorm weights (its models have no LayerNorm biases), and its
// Table 1 "norm" rule covers every LayerNorm parameter; here that is decided by ParamRole.
// Biases are 1-D tensors like any other and follow the statistic: [0] (one v for the bias) when
// its (0,) SNR clears the cutoff, null otherwise. The fused qkv bias is one 1-D tensor, so its
// statistic spans q, k and v together, which is exactly the block a [0] rule would average over.
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/param_table.h"
#include "optim/partition.h"

namespace slim {

// The candidate compress dims, in the official enumeration order (itertools.combinations).
enum class CompressDims { Dim0 = 0, Dim1 = 1, Both = 2 };
constexpr int kCompressOptions = 3;
constexpr CompressDims kAllCompressDims[kCompressOptions] = {CompressDims::Dim0, CompressDims::Dim1,
                                                             CompressDims::Both};
const char* compress_dims_text(CompressDims dims);  // "(0,)", "(1,)", "(0,1)"

// SNR_K for each K; NaN where K does not apply (1-D tensors have only (0,)) or every ratio was
// masked.
struct SnrValues {
  double value[kCompressOptions] = {NAN, NAN, NAN};
  double& operator[](CompressDims k) { return value[int(k)]; }
  double operator[](CompressDims k) const { return value[int(k)]; }
};

// The statistic of one row-major rows x cols block of v (rows >= 1, cols >= 1). one_dim: the
// block is a 1-D tensor of `rows` elements (cols must be 1), so only (0,) is computed.
SnrValues matrix_snr(const float* v, int64_t rows, int64_t cols, bool one_dim);

// One measured unit: a whole tensor, or one segment of a fused tensor, under its rules-file key.
struct SnrTarget {
  std::string key;           // rules-file key: "wte", "h.0.attn.qkv.weight/q", ...
  size_t param_index = 0;    // in the ParamTable
  ParamRole role = ParamRole::NormWeight;
  bool one_dim = false;
  int64_t first_row = 0;     // the measured rows are [first_row, first_row + real_rows)
  int64_t real_rows = 0;
  int64_t cols = 0;
  int64_t v_offset = 0;      // the tensor's first element in AdamW's per-element v
};

// Every segment of every tensor of an AdamW partition (one v entry per element), in table order.
// Throws Error if the partition is not AdamW's.
std::vector<SnrTarget> snr_targets(const ParamTable& params, const PartitionTable& adamw);

// Collects the statistic of every target over the measurements of a calibration run.
class SnrTracker {
 public:
  explicit SnrTracker(std::vector<SnrTarget> targets) : targets_(std::move(targets)) {}

  // One measurement at `step` of AdamW's v (Optimizer::v_to_host: not bias-corrected, which the
  // ratio does not see anyway). Throws Error if v is too short for the targets.
  void measure(int64_t step, const std::vector<float>& v);

  const std::vector<SnrTarget>& targets() const { return targets_; }
  const std::vector<int64_t>& steps() const { return steps_; }
  // The measurement `m` (in steps() order) of target `t`.
  const SnrValues& at(size_t t, size_t m) const { return history_[m][t]; }
  // Per K: the mean over the measurements where SNR_K was finite; NaN if it never was.
  SnrValues mean_snr(size_t target) const;

 private:
  std::vector<SnrTarget> targets_;
  std::vector<int64_t> steps_;
  std::vector<std::vector<SnrValues>> history_;  // [measurement][target]
};

struct SnrRule {
  std::string key;
  ParamRole role = ParamRole::NormWeight;
  bool one_dim = false;
  SnrValues mean_snr;
  std::optional<CompressDims> dims;  // nullopt: null, a full v
  std::string reason;                // for the printed table
};

// The rule of one target from its mean SNRs (see the header comment). cutoff > 0.
SnrRule choose_slim_rule(const SnrTarget& target, const SnrValues& mean_snr, double cutoff);
std::vector<SnrRule> extract_slim_rules(const SnrTracker& tracker, double cutoff);

// A rules file in partition.h's format, which build_partition reads. Besides "rules" it carries
// "calibration" (cutoff, measured steps, the mean SNR of every key and K; NaN written as null)
// for the record; build_partition ignores it.
std::string slim_rules_file_json(const std::vector<SnrRule>& rules, double cutoff,
                                 const std::vector<int64_t>& measured_steps);

}  // namespace slim
