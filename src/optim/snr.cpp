// The SNR statistic of AdamW's v, its accumulation over a calibration run, and the SlimAdam rules
// it yields (snr.h; OPTIMIZERS.md section 3.3).
#include "optim/snr.h"

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace slim {

namespace {

// The outer mean of SNR_K: the ratios (mean_K)^2 / var_K that are finite, averaged.
struct MaskedRatioMean {
  double sum = 0.0;
  int64_t count = 0;
  void add(double mean, double variance) {
    const double ratio = mean * mean / variance;  // x/0 -> inf, 0/0 -> NaN: both masked
    if (std::isfinite(ratio)) {
      sum += ratio;
      ++count;
    }
  }
  double result() const { return count ? sum / double(count) : NAN; }
};

// Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2, which cancels badly
// when v barely varies: exactly the case the statistic has to see.
void add_whole_matrix(const float* v, int64_t n, MaskedRatioMean& out) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += v[i];
  const double mean = sum / double(n);
  double squares = 0.0;
  for (int64_t i = 0; i < n; ++i) squares += (v[i] - mean) * (v[i] - mean);
  out.add(mean, squares / double(n));
}

}  // namespace

const char* compress_dims_text(CompressDims dims) {
  switch (dims) {
    case CompressDims::Dim0: return "(0,)";
    case CompressDims::Dim1: return "(1,)";
    case CompressDims::Both: return "(0,1)";
  }
  return "?";
}

SnrValues matrix_snr(const float* v, int64_t rows, int64_t cols, bool one_dim) {
  SLIM_CHECK(rows >= 1 && cols >= 1, "SNR of an empty ", rows, "x", cols, " block");
  SLIM_CHECK(!one_dim || cols == 1, "a 1-D tensor is rows x 1, not ", rows, "x", cols);
  SnrValues snr;
  if (one_dim) {
    // A 1-D tensor's only dim is 0: mean_(0,) is over the whole vector.
    MaskedRatioMean whole;
    add_whole_matrix(v, rows, whole);
    snr[CompressDims::Dim0] = whole.result();
    return snr;
  }

  // K = (1,): one ratio per row, over its columns.
  MaskedRatioMean per_row;
  for (int64_t r = 0; r < rows; ++r) add_whole_matrix(v + r * cols, cols, per_row);
  snr[CompressDims::Dim1] = per_row.result();

  // K = (0,): one ratio per column, over the rows; rows are walked in memory order.
  std::vector<double> column_mean(size_t(cols), 0.0), column_squares(size_t(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) column_mean[c] += v[r * cols + c];
  for (double& m : column_mean) m /= double(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double d = v[r * cols + c] - column_mean[c];
      column_squares[c] += d * d;
    }
  MaskedRatioMean per_column;
  for (int64_t c = 0; c < cols; ++c) per_column.add(column_mean[c], column_squares[c] / double(rows));
  snr[CompressDims::Dim0] = per_column.result();

  // K = (0,1): one ratio for the whole matrix.
  MaskedRatioMean whole;
  add_whole_matrix(v, rows * cols, whole);
  snr[CompressDims::Both] = whole.result();
  return snr;
}

std::vector<SnrTarget> snr_targets(const ParamTable& params, const PartitionTable& adamw) {
  SLIM_CHECK(adamw.optimizer == "adamw", "SNR calibration reads AdamW's per-element v, not ",
             adamw.optimizer, "'s");
  SLIM_CHECK(adamw.tensors.size() == params.params.size(), "the partition has ",
             adamw.tensors.size(), " tensors, the parameter table ", params.params.size());
  std::vector<SnrTarget> targets;
  for (const TensorPartition& t : adamw.tensors) {
    SLIM_CHECK(t.all_element() && t.v_entries == t.rows * t.cols, t.tensor,
               ": AdamW keeps one v per element");
    for (const PartitionSegment& s : t.segments) {
      SnrTarget target;
      // The same key rule as partition.cpp's rules files: the tensor, or tensor/segment when it
      // is fused from several.
      target.key = slim_rules_key(t.tensor, t.segments.size(), s.what);
      target.param_index = t.param_index;
      target.role = params.params[t.param_index].role;
      target.one_dim = t.ndim == 1;
      target.first_row = s.row_begin;
      target.real_rows = s.real_rows;
      target.cols = t.cols;
      target.v_offset = t.v_offset;
      targets.push_back(std::move(target));
    }
  }
  return targets;
}

void SnrTracker::measure(int64_t step, const std::vector<float>& v) {
  std::vector<SnrValues> measurement;
  measurement.reserve(targets_.size());
  for (const SnrTarget& t : targets_) {
    const int64_t begin = t.v_offset + t.first_row * t.cols;
    SLIM_CHECK(begin + t.real_rows * t.cols <= int64_t(v.size()), t.key, ": v has ", v.size(),
               " entries, fewer than this tensor needs");
    measurement.push_back(matrix_snr(v.data() + begin, t.real_rows, t.cols, t.one_dim));
  }
  steps_.push_back(step);
  history_.push_back(std::move(measurement));
}

SnrValues SnrTracker::mean_snr(size_t target) const {
  SLIM_CHECK(target < targets_.size(), "target ", target, " of ", targets_.size());
  SnrValues mean;
  for (CompressDims k : kAllCompressDims) {
    double sum = 0.0;
    int64_t count = 0;
    for (const auto& measurement : history_)
      if (std::isfinite(measurement[target][k])) {
        sum += measurement[target][k];
        ++count;
      }
    mean[k] = count ? sum / double(count) : NAN;
  }
  return mean;
}

SnrRule choose_slim_rule(const SnrTarget& target, const SnrValues& mean_snr, double cutoff) {
  SLIM_CHECK(cutoff > 0, "cutoff ", cutoff);
  SnrRule rule;
  rule.key = target.key;
  rule.role = target.role;
  rule.one_dim = target.one_dim;
  rule.mean_snr = mean_snr;
  if (target.role == ParamRole::NormWeight || target.role == ParamRole::NormBias) {
    rule.reason = "null: LayerNorm (forced)";
    return rule;
  }
  for (CompressDims k : kAllCompressDims) {
    if (target.one_dim && k != CompressDims::Dim0) continue;
    // NaN compares false, so a K that was never measurable never qualifies. Strictly greater
    // keeps the first K on a tie, as pandas' idxmax does.
    if (mean_snr[k] > cutoff && (!rule.dims || mean_snr[k] > mean_snr[*rule.dims])) rule.dims = k;
  }
  if (rule.dims)
    rule.reason = cat(compress_dims_text(*rule.dims), ": highest SNR above the cutoff ", cutoff);
  else
    rule.reason = cat("null: no SNR above the cutoff ", cutoff);
  return rule;
}

std::vector<SnrRule> extract_slim_rules(const SnrTracker& tracker, double cutoff) {
  std::vector<SnrRule> rules;
  for (size_t t = 0; t < tracker.targets().size(); ++t)
    rules.push_back(choose_slim_rule(tracker.targets()[t], tracker.mean_snr(t), cutoff));
  return rules;
}

std::string slim_rules_file_json(const std::vector<SnrRule>& rules, double cutoff,
                                 const std::vector<int64_t>& measured_steps) {
  // Written by hand, one key per line, so that the file reads as a table and diffs well.
  auto number = [](double x) { return std::isfinite(x) ? nlohmann::json(x).dump() : std::string("null"); };
  std::string out = cat("{\n  \"format\": \"", kSlimRulesFormat, "\",\n  \"version\": ", kSlimRulesVersion,
                        ",\n  \"rules\": {");
  for (size_t i = 0; i < rules.size(); ++i) {
    const SnrRule& r = rules[i];
    std::string value = "null";
    if (r.dims == CompressDims::Dim0) value = "[0]";
    else if (r.dims == CompressDims::Dim1) value = "[1]";
    else if (r.dims == CompressDims::Both) value = "[0, 1]";
    out += cat(i ? ",\n" : "\n", "    ", nlohmann::json(r.key).dump(), ": ", value);
  }
  out += cat("\n  },\n  \"calibration\": {\n    \"cutoff\": ", number(cutoff),
             ",\n    \"measured_steps\": ", nlohmann::json(measured_steps).dump(),
             ",\n    \"mean_snr\": {");
  for (size_t i = 0; i < rules.size(); ++i) {
    const SnrRule& r = rules[i];
    std::string values;
    for (CompressDims k : kAllCompressDims) {
      if (r.one_dim && k != CompressDims::Dim0) continue;
      values += cat(values.empty() ? "" : ", ", "\"", compress_dims_text(k), "\": ", number(r.mean_snr[k]));
    }
    out += cat(i ? ",\n" : "\n", "      ", nlohmann::json(r.key).dump(), ": {", values, "}");
  }
  out += "\n    }\n  }\n}\n";
  return out;
}

}  // namespace slim
