// SlimAdam's SNR calibration (OPTIMIZERS.md section 3.3): the statistic on matrices whose answer
// is worked out by hand, its masking (constant rows, zero variance along a dim, padded vocabulary
// rows, non-finite v), rule extraction (cutoff, highest SNR, LayerNorm forced null, 1-D tensors),
// the rules file through build_partition, and `slimtrain calibrate` end to end followed by a
// SlimAdam run on the rules it wrote.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "data/shard.h"
#include "model/param_table.h"
#include "optim/partition.h"
#include "optim/snr.h"
#include "util/error.h"
#include "util/rng.h"

#include "partition_fixtures.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace slim {
namespace {

constexpr CompressDims kDim0 = CompressDims::Dim0;
constexpr CompressDims kDim1 = CompressDims::Dim1;
constexpr CompressDims kBoth = CompressDims::Both;

// ---- the statistic ----------------------------------------------------------------------

TEST(Snr, HandWorkedMatrix) {
  // V = [[1, 3, 5],
  //      [2, 2, 8]]
  // rows:    row 0: mean 3, var (4+0+4)/3 = 8/3  -> 9/(8/3) = 27/8;  row 1: mean 4, var 24/3 = 8 -> 2
  // columns: [1,2]: mean 1.5, var 0.25 -> 9;  [3,2]: mean 2.5, var 0.25 -> 25;
  //          [5,8]: mean 6.5, var 2.25 -> 42.25/2.25 = 169/9
  // whole:   mean 21/6 = 3.5, var (6.25+0.25+2.25+2.25+2.25+20.25)/6 = 33.5/6 -> 12.25*6/33.5
  const std::vector<float> v = {1, 3, 5, 2, 2, 8};
  const SnrValues snr = matrix_snr(v.data(), 2, 3, false);
  EXPECT_NEAR(snr[kDim1], (27.0 / 8 + 2.0) / 2, 1e-12);
  EXPECT_NEAR(snr[kDim0], (9.0 + 25.0 + 169.0 / 9) / 3, 1e-12);
  EXPECT_NEAR(snr[kBoth], 12.25 * 6 / 33.5, 1e-12);
}

TEST(Snr, ConstantRowsAreMaskedNotInfinite) {
  // Row 0 is constant: x^2/0 = inf, left out; row 1 = [1,2,3]: mean 2, var 2/3 -> 6.
  // Column 1 = [2,2] is constant: left out; columns [2,1] -> 2.25/0.25 = 9 and [2,3] -> 25.
  const std::vector<float> v = {2, 2, 2, 1, 2, 3};
  const SnrValues snr = matrix_snr(v.data(), 2, 3, false);
  EXPECT_DOUBLE_EQ(snr[kDim1], 6.0);
  EXPECT_DOUBLE_EQ(snr[kDim0], (9.0 + 25.0) / 2);
  EXPECT_TRUE(std::isfinite(snr[kBoth]));
}

TEST(Snr, ZeroVarianceAlongADimGivesNaNForThatDimOnly) {
  // Every column is constant (the rows are equal): var over dim 0 is 0 everywhere -> NaN.
  // Each row [1,2,3] -> 6, and the whole matrix holds the same values twice -> 6.
  const std::vector<float> v = {1, 2, 3, 1, 2, 3};
  const SnrValues snr = matrix_snr(v.data(), 2, 3, false);
  EXPECT_TRUE(std::isnan(snr[kDim0]));
  EXPECT_DOUBLE_EQ(snr[kDim1], 6.0);
  EXPECT_DOUBLE_EQ(snr[kBoth], 6.0);

  // All zeros (a tensor that never got a gradient): 0/0 everywhere.
  const std::vector<float> zeros(12, 0.0f);
  const SnrValues none = matrix_snr(zeros.data(), 3, 4, false);
  for (CompressDims k : kAllCompressDims) EXPECT_TRUE(std::isnan(none[k])) << compress_dims_text(k);
}

TEST(Snr, OneDimensionalTensorHasOnlyDimZero) {
  // [1,2,3,4]: mean 2.5, var (2.25+0.25+0.25+2.25)/4 = 1.25 -> 6.25/1.25 = 5.
  const std::vector<float> v = {1, 2, 3, 4};
  const SnrValues snr = matrix_snr(v.data(), 4, 1, true);
  EXPECT_DOUBLE_EQ(snr[kDim0], 5.0);
  EXPECT_TRUE(std::isnan(snr[kDim1]));
  EXPECT_TRUE(std::isnan(snr[kBoth]));
  const std::vector<float> constant = {7, 7, 7};
  EXPECT_TRUE(std::isnan(matrix_snr(constant.data(), 3, 1, true)[kDim0]));
}

TEST(Snr, NonFiniteEntriesOnlyMaskTheirOwnRatios) {
  // Row 0 holds a NaN: its row ratio, its column's ratio and the whole-matrix ratio are masked.
  const std::vector<float> v = {NAN, 3, 5, 2, 2, 8, 1, 2, 3};
  const SnrValues snr = matrix_snr(v.data(), 3, 3, false);
  // Rows 1 and 2: [2,2,8]: mean 4, var 8 -> 2;  [1,2,3] -> 6.
  EXPECT_DOUBLE_EQ(snr[kDim1], 4.0);
  // Columns 1 and 2: [3,2,2]: mean 7/3, var (4/9+1/9+1/9)/3 = 2/9 -> (49/9)/(2/9) = 24.5;
  // [5,8,3]: mean 16/3, var (1/9+64/9+49/9)/3 = 114/27 -> (256/9)/(114/27) = 256*3/114.
  EXPECT_NEAR(snr[kDim0], (24.5 + 256.0 * 3 / 114) / 2, 1e-12);
  EXPECT_TRUE(std::isnan(snr[kBoth]));
}

// An independent reference: the textbook formulas, one entry at a time, in long double.
long double reference_ratio(const std::vector<long double>& x) {
  long double mean = 0, var = 0;
  for (long double e : x) mean += e;
  mean /= x.size();
  for (long double e : x) var += (e - mean) * (e - mean);
  var /= x.size();
  return mean * mean / var;
}

TEST(Snr, RandomMatricesMatchAReferenceAndAreScaleInvariant) {
  Rng rng(3);
  for (auto [rows, cols] : {std::pair<int, int>{5, 7}, {16, 3}, {1, 9}, {9, 1}}) {
    SCOPED_TRACE(testing::Message() << rows << "x" << cols);
    std::vector<float> v(size_t(rows) * cols), scaled(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      v[i] = float(rng.uniform() * rng.uniform());  // skewed and positive, like a second moment
      scaled[i] = v[i] * 1e-6f;  // Adam's v is tiny; the ratio must not care
    }
    auto mean_of = [](const std::vector<long double>& ratios) {
      long double sum = 0;
      int n = 0;
      for (long double r : ratios)
        if (std::isfinite(double(r))) sum += r, ++n;
      return n ? double(sum / n) : double(NAN);
    };
    std::vector<long double> row_ratios, column_ratios;
    for (int r = 0; r < rows; ++r) {
      std::vector<long double> x;
      for (int c = 0; c < cols; ++c) x.push_back(v[r * cols + c]);
      row_ratios.push_back(reference_ratio(x));
    }
    for (int c = 0; c < cols; ++c) {
      std::vector<long double> x;
      for (int r = 0; r < rows; ++r) x.push_back(v[r * cols + c]);
      column_ratios.push_back(reference_ratio(x));
    }
    std::vector<long double> all(v.begin(), v.end());
    const SnrValues snr = matrix_snr(v.data(), rows, cols, false);
    const SnrValues snr_scaled = matrix_snr(scaled.data(), rows, cols, false);
    const double expected[3] = {mean_of(column_ratios), mean_of(row_ratios), mean_of({reference_ratio(all)})};
    for (CompressDims k : kAllCompressDims) {
      SCOPED_TRACE(compress_dims_text(k));
      const double e = expected[int(k)];
      if (std::isnan(e)) {
        EXPECT_TRUE(std::isnan(snr[k]));
        EXPECT_TRUE(std::isnan(snr_scaled[k]));
      } else {
        EXPECT_NEAR(snr[k], e, 1e-9 * std::abs(e));
        EXPECT_NEAR(snr_scaled[k], e, 1e-5 * std::abs(e));
      }
    }
  }
}

// ---- targets and the tracker on a real parameter table ---------------------------------

const SnrTarget& target_named(const std::vector<SnrTarget>& targets, const std::string& key) {
  for (const SnrTarget& t : targets)
    if (t.key == key) return t;
  throw Error("no SNR target " + key);
}

TEST(SnrTracker, TargetsAreTensorsAndQkvSegmentsWithPaddedRowsLeftOut) {
  const ModelConfig model = test::tiny_partition_model();
  const ParamTable params = build_param_table(model);
  const PartitionTable adamw = build_partition("adamw", params, model, {});
  const std::vector<SnrTarget> targets = snr_targets(params, adamw);
  // Every tensor once, except the fused qkv weight of each layer, which is three targets.
  EXPECT_EQ(targets.size(), params.params.size() + 2 * size_t(model.n_layer));
  const SnrTarget& wte = target_named(targets, "wte");
  EXPECT_EQ(wte.real_rows, 10);  // V, not Vp = 16
  EXPECT_EQ(wte.cols, 8);
  const SnrTarget& k = target_named(targets, "h.1.attn.qkv.weight/k");
  EXPECT_EQ(k.first_row, 8);
  EXPECT_EQ(k.real_rows, 8);
  EXPECT_EQ(k.v_offset, int64_t(params.find("h.1.attn.qkv.weight").offset));
  EXPECT_TRUE(target_named(targets, "h.0.attn.qkv.bias").one_dim);
  EXPECT_THROW(target_named(targets, "h.0.attn.qkv.weight"), Error);
  EXPECT_THROW(snr_targets(params, build_partition("slim_adam", params, model, {})), Error);
}

TEST(SnrTracker, MeasuresTheRightRowsOfV) {
  const ModelConfig model = test::tiny_partition_model();
  const ParamTable params = build_param_table(model);
  const std::vector<SnrTarget> targets = snr_targets(params, build_partition("adamw", params, model, {}));
  Rng rng(11);
  std::vector<float> v(params.total_numel);
  for (float& x : v) x = 0.5f + float(rng.uniform());
  // wte's padded rows never get a gradient: their v stays 0. Were they counted, every column of
  // wte would gain zeros and its (0,) ratio would drop.
  const ParamInfo& wte = params.find("wte");
  for (int64_t r = model.vocab_size; r < model.padded_vocab_size; ++r)
    for (int64_t c = 0; c < model.n_embd; ++c) v[wte.offset + r * model.n_embd + c] = 0.0f;
  // The q rows of layer 0 are constant per row, so their (1,) is NaN, while k's is finite.
  const ParamInfo& qkv = params.find("h.0.attn.qkv.weight");
  for (int64_t r = 0; r < model.n_embd; ++r)
    for (int64_t c = 0; c < model.n_embd; ++c) v[qkv.offset + r * model.n_embd + c] = float(r + 1);

  SnrTracker tracker(targets);
  tracker.measure(1, v);
  ASSERT_EQ(tracker.steps(), std::vector<int64_t>{1});
  auto index_of = [&](const std::string& key) {
    return size_t(&target_named(tracker.targets(), key) - tracker.targets().data());
  };
  const SnrValues& wte_snr = tracker.at(index_of("wte"), 0);
  const SnrValues real_only = matrix_snr(v.data() + wte.offset, model.vocab_size, model.n_embd, false);
  const SnrValues with_padding = matrix_snr(v.data() + wte.offset, model.padded_vocab_size, model.n_embd, false);
  for (CompressDims k : kAllCompressDims) EXPECT_EQ(wte_snr[k], real_only[k]) << compress_dims_text(k);
  EXPECT_GT(std::abs(with_padding[kDim0] - real_only[kDim0]), 0.1 * real_only[kDim0]);

  EXPECT_TRUE(std::isnan(tracker.at(index_of("h.0.attn.qkv.weight/q"), 0)[kDim1]));
  EXPECT_TRUE(std::isfinite(tracker.at(index_of("h.0.attn.qkv.weight/k"), 0)[kDim1]));
  const SnrValues& v_segment = tracker.at(index_of("h.0.attn.qkv.weight/v"), 0);
  const SnrValues expected_v = matrix_snr(v.data() + qkv.offset + 2 * 8 * 8, 8, 8, false);
  EXPECT_EQ(v_segment[kDim0], expected_v[kDim0]);

  EXPECT_THROW(tracker.measure(2, std::vector<float>(params.total_numel - 1)), Error);
}

TEST(SnrTracker, MeanOverMeasurementsSkipsNaN) {
  SnrTarget target;
  target.key = "x";
  target.role = ParamRole::AttnProjWeight;
  target.real_rows = 2;
  target.cols = 3;
  SnrTracker tracker({target});
  tracker.measure(1, {1, 3, 5, 2, 2, 8});  // (1,) 2.6875, (0,) (9+25+169/9)/3
  tracker.measure(100, {1, 2, 3, 1, 2, 3});  // (1,) 6, (0,) NaN
  const SnrValues mean = tracker.mean_snr(0);
  EXPECT_DOUBLE_EQ(mean[kDim1], (2.6875 + 6.0) / 2);
  EXPECT_NEAR(mean[kDim0], (9.0 + 25.0 + 169.0 / 9) / 3, 1e-12);  // the one finite measurement
  EXPECT_EQ(tracker.steps(), (std::vector<int64_t>{1, 100}));
}

// ---- rule extraction ----------------------------------------------------------------------

SnrTarget matrix_target(ParamRole role, bool one_dim = false) {
  SnrTarget t;
  t.key = "t";
  t.role = role;
  t.one_dim = one_dim;
  return t;
}

SnrValues values(double dim0, double dim1, double both) {
  SnrValues v;
  v[kDim0] = dim0;
  v[kDim1] = dim1;
  v[kBoth] = both;
  return v;
}

TEST(SlimRules, HighestSnrAboveTheCutoffWins) {
  const SnrTarget w = matrix_target(ParamRole::MlpUpWeight);
  EXPECT_EQ(choose_slim_rule(w, values(0.5, 2.0, 1.5), 1.0).dims, kDim1);
  // The highest wins even though (0,1) would compress more.
  EXPECT_EQ(choose_slim_rule(w, values(3.0, 2.0, 2.5), 1.0).dims, kDim0);
  EXPECT_EQ(choose_slim_rule(w, values(0.5, 2.0, 4.0), 1.0).dims, kBoth);
  // Only options strictly above the cutoff count.
  EXPECT_EQ(choose_slim_rule(w, values(0.5, 2.0, 1.5), 1.6).dims, kDim1);
  EXPECT_FALSE(choose_slim_rule(w, values(0.5, 2.0, 1.5), 2.0).dims.has_value());
  EXPECT_FALSE(choose_slim_rule(w, values(NAN, NAN, NAN), 1.0).dims.has_value());
  EXPECT_EQ(choose_slim_rule(w, values(NAN, 1.2, NAN), 1.0).dims, kDim1);
  // A tie goes to the first in (0,), (1,), (0,1) order, as idxmax does.
  EXPECT_EQ(choose_slim_rule(w, values(2.0, 2.0, 2.0), 1.0).dims, kDim0);
}

TEST(SlimRules, LayerNormIsForcedNullByRole) {
  for (ParamRole role : {ParamRole::NormWeight, ParamRole::NormBias}) {
    const SnrRule rule = choose_slim_rule(matrix_target(role, true), values(50.0, NAN, NAN), 1.0);
    EXPECT_FALSE(rule.dims.has_value()) << param_role_name(role);
    EXPECT_NE(rule.reason.find("LayerNorm"), std::string::npos);
  }
}

TEST(SlimRules, OneDimensionalTensorsCanOnlyGetDimZero) {
  const SnrTarget bias = matrix_target(ParamRole::MlpUpBias, true);
  EXPECT_EQ(choose_slim_rule(bias, values(3.0, NAN, NAN), 1.0).dims, kDim0);
  EXPECT_FALSE(choose_slim_rule(bias, values(0.3, NAN, NAN), 1.0).dims.has_value());
  // Values for dims a 1-D tensor does not have are never chosen.
  EXPECT_EQ(choose_slim_rule(bias, values(2.0, 9.0, 9.0), 1.0).dims, kDim0);
}

// ---- the rules file ------------------------------------------------------------------------

// The v entries SlimAdam keeps for one rule, counted from the shapes alone.
int64_t expected_v(const ParamInfo& p, const SnrTarget& t, const std::optional<CompressDims>& dims) {
  const int64_t rows = t.one_dim ? p.shape[0]
                                 : (p.segments.size() > 1 ? t.real_rows : p.shape[0]);  // wte: all Vp rows
  const int64_t cols = t.one_dim ? 1 : p.shape[1];
  if (!dims) return rows * cols;
  if (t.one_dim) return 1;
  switch (*dims) {
    case CompressDims::Dim0: return cols;
    case CompressDims::Dim1: return rows;
    case CompressDims::Both: return 1;
  }
  return -1;
}

TEST(SlimRules, WrittenFileLoadsThroughBuildPartition) {
  const ModelConfig model = test::tiny_partition_model();
  const ParamTable params = build_param_table(model);
  const std::vector<SnrTarget> targets = snr_targets(params, build_partition("adamw", params, model, {}));
  // Give the targets SNRs that make every outcome appear: target i favours option i % 4 (3 =
  // nothing above the cutoff).
  std::vector<SnrRule> rules;
  int64_t expected_total = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    const int pick = int(i % 4);
    SnrValues snr = values(0.5, 0.5, 0.5);
    if (pick < 3) snr.value[pick] = 5.0;
    if (i == 5) snr = values(NAN, NAN, NAN);  // never measurable: written as null
    rules.push_back(choose_slim_rule(targets[i], snr, 1.0));
    expected_total += expected_v(params.params[targets[i].param_index], targets[i], rules.back().dims);
  }
  const std::string dir = test::fresh_test_dir("calibrate");
  const std::string path = dir + "/rules.json";
  std::ofstream(path) << slim_rules_file_json(rules, 1.0, {1, 100, 150});

  PartitionOptions options;
  options.slim_rules_path = path;
  const PartitionTable slim = build_partition("slim_adam", params, model, options);
  EXPECT_EQ(slim.total_v, expected_total);
  // Segment by segment, the kinds are the rules.
  size_t i = 0;
  for (const TensorPartition& t : slim.tensors)
    for (const PartitionSegment& s : t.segments) {
      const SnrRule& rule = rules[i++];
      SCOPED_TRACE(rule.key);
      BlockKind expected = BlockKind::Element;
      if (rule.dims == kDim0) expected = t.ndim == 1 ? BlockKind::Whole : BlockKind::Column;
      if (rule.dims == kDim1) expected = BlockKind::Row;
      if (rule.dims == kBoth) expected = BlockKind::Whole;
      EXPECT_EQ(s.kind, expected);
    }
  EXPECT_EQ(i, rules.size());

  // The calibration record: measured steps and mean SNRs, NaN as null, 1-D keys with (0,) only.
  const nlohmann::json doc = nlohmann::json::parse(std::ifstream(path));
  EXPECT_EQ(doc["calibration"]["measured_steps"], nlohmann::json({1, 100, 150}));
  EXPECT_EQ(doc["calibration"]["cutoff"], 1.0);
  EXPECT_TRUE(doc["calibration"]["mean_snr"][rules[5].key]["(0,)"].is_null());
  EXPECT_EQ(doc["calibration"]["mean_snr"]["h.0.mlp.fc.bias"].size(), 1u);
  EXPECT_EQ(doc["calibration"]["mean_snr"]["wte"].size(), 3u);
  // The LayerNorm tensors are null whatever their SNR.
  EXPECT_TRUE(doc["rules"]["h.0.ln1.weight"].is_null());
  EXPECT_TRUE(doc["rules"]["lnf.bias"].is_null());
}

// ---- `slimtrain calibrate` end to end ------------------------------------------------------

using test::CommandResult;
constexpr auto run = &test::run_slimtrain;

class CalibrateCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_test_dir("calibrate");
    fs::create_directories(dir_ / "data");
    Rng rng(7);
    // A repeating pattern plus noise, so that training makes progress.
    std::vector<uint16_t> tokens(4000);
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = uint16_t(rng.uniform() < 0.8 ? (i * 7) % 97 : rng.next_u64() % 97);
    write_shard((dir_ / "data/toy_train_000000.bin").string(), tokens);
    // The config asks for slim_adam with a rules file that does not exist: calibrate must train
    // AdamW regardless and say so.
    std::ofstream config(dir_ / "config.json");
    config << R"({
      "model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "vocab_size": 97, "padded_vocab_size": 128,
                "max_seq_len": 16},
      "data": {"train": ")" << (dir_ / "data/toy_train_*.bin").string() << R"(", "val": ""},
      "optimizer": {"kind": "slim_adam", "slim_rules": "missing.json", "lr": 0.003},
      "training": {"steps": 500, "micro_batch": 4, "seq_len": 16, "warmup_steps": 2,
                   "schedule": "cosine", "min_lr_fraction": 0.1},
      "eval": {"every": 0},
      "backend": "cpu", "seed": 5, "out_dir": ")" << (dir_ / "run").string() << R"("
    })";
  }
  std::string config() const { return (dir_ / "config.json").string(); }
  fs::path dir_;
};

// The number after "LABEL" on the line that has it, thousands separators removed; -1 if absent.
int64_t number_after(const std::string& text, const std::string& label) {
  const size_t at = text.find(label);
  if (at == std::string::npos) return -1;
  std::string digits;
  for (size_t i = at + label.size(); i < text.size() && (std::isdigit(text[i]) || text[i] == ','); ++i)
    if (text[i] != ',') digits += text[i];
  return digits.empty() ? -1 : std::stoll(digits);
}

TEST_F(CalibrateCli, WritesRulesThatASlimAdamRunUses) {
  const CommandResult cal = run("calibrate --config " + config() + " --steps 7 --every 3");
  ASSERT_EQ(cal.exit_code, 0) << cal.output;
  EXPECT_NE(cal.output.find("optimizer.kind forced to adamw"), std::string::npos) << cal.output;
  // Progress lines, and measurements at step 1, every 3 steps and the last step.
  EXPECT_NE(cal.output.find("step     7/7 | loss"), std::string::npos) << cal.output;
  const std::string rules_path = (dir_ / "run/slim_rules.json").string();
  const nlohmann::json doc = nlohmann::json::parse(std::ifstream(rules_path));
  EXPECT_EQ(doc["calibration"]["measured_steps"], nlohmann::json({1, 3, 6, 7}));
  // wte, wpe, lnf.weight, lnf.bias, and per layer 12 tensors with the qkv weight as 3 keys.
  EXPECT_EQ(doc["rules"].size(), 4u + 2 * 14u);
  EXPECT_TRUE(doc["rules"]["h.1.ln2.weight"].is_null());
  // The table lists every key with its SNRs and rule.
  EXPECT_TRUE(std::regex_search(cal.output, std::regex(R"(h\.0\.attn\.qkv\.weight/q +[0-9.na-]+ +[0-9.na-]+ +[0-9.na-]+ +(null|\[0\]|\[1\]|\[0, 1\]))")))
      << cal.output;
  EXPECT_NE(cal.output.find("optimizer.kind=slim_adam optimizer.slim_rules=" + rules_path),
            std::string::npos) << cal.output;
  const int64_t calibrated_v = number_after(cal.output, "SlimAdam with these rules keeps ");
  ASSERT_GT(calibrated_v, 0) << cal.output;

  // Build the same partition here from the file: the count printed must be the one it gives.
  ModelConfig model;
  model.n_layer = 2;
  model.n_head = 2;
  model.n_kv_head = 2;
  model.n_embd = 32;
  model.vocab_size = 97;
  model.padded_vocab_size = 128;
  model.max_seq_len = 16;
  model.ffn_hidden = 128;
  PartitionOptions options;
  options.slim_rules_path = rules_path;
  EXPECT_EQ(build_partition("slim_adam", build_param_table(model), model, options).total_v, calibrated_v);

  // A SlimAdam run with these rules trains and reports the same v count.
  const CommandResult slim = run("train --config " + config() + " --set training.steps=3 optimizer.slim_rules=" +
                                 rules_path + " out_dir=" + (dir_ / "slim").string());
  ASSERT_EQ(slim.exit_code, 0) << slim.output;
  EXPECT_EQ(number_after(slim.output, "\nv entries: "), calibrated_v) << slim.output;
  EXPECT_NE(slim.output.find("(rules file)"), std::string::npos) << slim.output;
}

TEST_F(CalibrateCli, KeepsTheAccumulationModeSoAdamAIsCalibratedOnItsOwnV) {
  const std::string rules_path = (dir_ / "adama_rules.json").string();
  const CommandResult cal = run("calibrate --config " + config() + " --steps 4 --every 2 --out " + rules_path +
                                " --set optimizer.accumulation=adama training.total_batch_tokens=128");
  ASSERT_EQ(cal.exit_code, 0) << cal.output;
  EXPECT_NE(cal.output.find("2 accum | accumulation adama"), std::string::npos) << cal.output;
  const nlohmann::json doc = nlohmann::json::parse(std::ifstream(rules_path));
  EXPECT_EQ(doc["calibration"]["measured_steps"], nlohmann::json({1, 2, 4}));
  // Every weight had a finite SNR to choose from: the v read back is AdamA's, not zeros.
  for (const auto& [key, snr] : doc["calibration"]["mean_snr"].items())
    EXPECT_TRUE(snr["(0,)"].is_number()) << key;
}

TEST_F(CalibrateCli, BadArgumentsAreUsageErrorsNamingTheFix) {
  struct Case {
    std::string args, message;
  };
  const std::string blocker = (dir_ / "file").string();
  std::ofstream(blocker) << "x";
  for (const Case& c : std::vector<Case>{
           {"--steps 0", "--steps 0"},
           {"--steps 3 --every 0", "--every 0"},
           {"--steps 3 --cutoff 0", "--cutoff 0"},
           {"--steps 3 --cutoff -1", "--cutoff -1"},
           {"--steps 3 --out " + blocker + "/rules.json", blocker},
           {"--steps 1", "training.warmup_steps"},
           {"--steps 3 --set training.micro_batch=0", "training.micro_batch"},
       }) {
    SCOPED_TRACE(c.args);
    const CommandResult r = run("calibrate --config " + config() + " " + c.args);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("| loss"), std::string::npos) << "no training before the check:\n" << r.output;
  }
  EXPECT_FALSE(fs::exists(dir_ / "run/slim_rules.json"));
}

}  // namespace
}  // namespace slim
