// Block-wise Adam on the CPU (block_adam_cpu.h): every block kind against straightforward
// double loops of the formula; Element partitions and blocks of one element against the CPU
// backend's AdamW; AdamA with one micro-batch == grads mode; AdamA's m after N folds == the
// grads-mode m of the summed gradient; a non-finite fold (padded rows included) leaves the state
// untouched, and unfold + undo_decay bring the state back; reductions independent of the thread
// count. AdamA's update clipping: off or not reached is the old apply bit for bit; clipped, the
// applied direction's RMS over the real elements is the clip, one scale for the whole tensor,
// weight decay unscaled, independent of the thread count. A bf16 m: the stochastic rounding is
// unbiased (in isolation and through AdamW's step), bf16-m steps track fp32-m steps within the
// accumulated rounding, AdamA with one micro-batch folds grads mode's m bit for bit, and the skip
// protocol restores m within its documented bound.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "model/param_table.h"
#include "optim/block_adam.h"
#include "optim/block_adam_cpu.h"

#include "partition_fixtures.h"
#include "optim/partition.h"

#ifndef SLIMTRAIN_TEST_TMP
#define SLIMTRAIN_TEST_TMP "/tmp/slim_test"
#endif

using namespace slim;

namespace {

using test::one_segment;

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> x(n);
  for (float& e : x) e = normal(rng);
  return x;
}

std::vector<float> positive_vector(size_t n, uint32_t seed, float scale) {
  std::vector<float> x = random_vector(n, seed, 1.0f);
  for (float& e : x) e = scale * (0.1f + std::fabs(e));
  return x;
}

BlockAdamHyper hyper_at_step(int t, float grad_scale = 1.0f, float weight_decay = 0.1f) {
  BlockAdamHyper h;
  h.lr = 1e-2f;
  h.beta1 = 0.9f;
  h.beta2 = 0.95f;
  h.eps = 1e-8f;
  h.weight_decay = weight_decay;
  h.grad_scale = grad_scale;
  h.bias_correction1 = float(1.0 - std::pow(0.9, t));
  h.bias_correction2 = float(1.0 - std::pow(0.95, t));
  return h;
}

AdamWArgs adamw_args(const BlockAdamHyper& h) {
  AdamWArgs a;
  a.lr = h.lr;
  a.beta1 = h.beta1;
  a.beta2 = h.beta2;
  a.eps = h.eps;
  a.weight_decay = h.weight_decay;
  a.grad_scale = h.grad_scale;
  a.bias_correction1 = h.bias_correction1;
  a.bias_correction2 = h.bias_correction2;
  return a;
}

// Distance in units in the last place between two finite floats.
int64_t ulp_distance(float a, float b) {
  auto key = [](float x) {
    int32_t i;
    std::memcpy(&i, &x, 4);
    return i < 0 ? int64_t(INT32_MIN) - i : int64_t(i);
  };
  const int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

float max_abs(const std::vector<float>& x) {
  float worst = 0.0f;
  for (float e : x) worst = std::max(worst, std::fabs(e));
  return worst;
}

int64_t max_ulp_distance(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  int64_t worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, ulp_distance(a[i], b[i]));
  return worst;
}

void expect_near_all(const std::vector<float>& got, const std::vector<double>& want, double rel,
                     double abs, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], abs + rel * std::fabs(want[i])) << what << " [" << i << "]";
}

void expect_near_all(const std::vector<float>& got, const std::vector<float>& want, double rel,
                     double abs, const std::string& what) {
  expect_near_all(got, std::vector<double>(want.begin(), want.end()), rel, abs, what);
}

// ---- the formula in double, with its own block numbering ------------------------------------

struct Reference {
  BlockKind kind;
  int64_t rows, cols, head_dim, real_rows;
  std::vector<double> w, m, v;

  int64_t blocks() const {
    switch (kind) {
      case BlockKind::Element: return rows * cols;
      case BlockKind::Row: return rows;
      case BlockKind::Head: return rows / head_dim;
      case BlockKind::Column: return cols;
      case BlockKind::Whole: return 1;
    }
    return 0;
  }
  int64_t block_of(int64_t r, int64_t c) const {
    switch (kind) {
      case BlockKind::Element: return r * cols + c;
      case BlockKind::Row: return r;
      case BlockKind::Head: return r / head_dim;
      case BlockKind::Column: return c;
      case BlockKind::Whole: return 0;
    }
    return 0;
  }
  // Column and Whole means run over the real rows only.
  bool counted(int64_t r) const {
    return !(kind == BlockKind::Column || kind == BlockKind::Whole) || r < real_rows;
  }
  std::vector<double> mean_squares(const std::vector<float>& g, double scale) const {
    std::vector<double> sum(size_t(blocks()), 0.0), count(size_t(blocks()), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        if (!counted(r)) continue;
        const double x = scale * double(g[size_t(r * cols + c)]);
        sum[size_t(block_of(r, c))] += x * x;
        count[size_t(block_of(r, c))] += 1.0;
      }
    for (size_t b = 0; b < sum.size(); ++b) sum[b] /= count[b];
    return sum;
  }
  void step(const std::vector<float>& g, const BlockAdamHyper& h) {
    const double b1 = h.beta1, b2 = h.beta2;
    const std::vector<double> r = mean_squares(g, h.grad_scale);
    for (size_t b = 0; b < v.size(); ++b) v[b] = b2 * v[b] + (1 - b2) * r[b];
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t c = 0; c < cols; ++c) {
        const size_t i = size_t(row * cols + c);
        m[i] = b1 * m[i] + (1 - b1) * double(h.grad_scale) * g[i];
        const double v_hat = v[size_t(block_of(row, c))] / double(h.bias_correction2);
        w[i] -= double(h.lr) * ((m[i] / double(h.bias_correction1)) / (std::sqrt(v_hat) + double(h.eps)) +
                                double(h.weight_decay) * w[i]);
      }
  }
};

struct FloatState {
  std::vector<float> w, m, v;
};

// Starting state shared by the float run and the reference: random w and m, positive v.
FloatState start_state(const TensorPartition& t, uint32_t seed) {
  const size_t n = size_t(t.rows * t.cols);
  return {random_vector(n, seed), random_vector(n, seed + 1, 0.01f),
          positive_vector(size_t(t.v_entries), seed + 2, 1e-4f)};
}

Reference reference_of(const TensorPartition& t, const FloatState& s) {
  const PartitionSegment& seg = t.segments[0];
  return {seg.kind, t.rows, t.cols, seg.head_dim, seg.real_rows,
          std::vector<double>(s.w.begin(), s.w.end()), std::vector<double>(s.m.begin(), s.m.end()),
          std::vector<double>(s.v.begin(), s.v.end())};
}

std::string kind_label(const TensorPartition& t) {
  const PartitionSegment& s = t.segments[0];
  return cat(block_kind_name(s.kind), " ", t.rows, "x", t.cols, " real ", s.real_rows);
}

// A gradient whose padded rows (at and beyond real_rows) are zero, as the model makes them.
std::vector<float> gradient_for(const TensorPartition& t, uint32_t seed) {
  std::vector<float> g = random_vector(size_t(t.rows * t.cols), seed, 0.3f);
  const int64_t real = t.segments[0].real_rows;
  std::fill(g.begin() + real * t.cols, g.end(), 0.0f);
  return g;
}

std::vector<TensorPartition> small_examples() {
  return {one_segment("test", 4, 6, BlockKind::Element), one_segment("test", 4, 6, BlockKind::Row),
          one_segment("test", 4, 6, BlockKind::Head, 2), one_segment("test", 4, 6, BlockKind::Column),
          one_segment("test", 4, 6, BlockKind::Whole),
          // a padded vocabulary: 6 rows of which 4 are real
          one_segment("test", 6, 4, BlockKind::Row, 0, 4), one_segment("test", 6, 4, BlockKind::Column, 0, 4),
          one_segment("test", 6, 4, BlockKind::Whole, 0, 4)};
}

// Zeroes the padded wte rows of a flat gradient.
void zero_padding(const ParamTable& params, std::vector<float>& g) {
  for (const ParamInfo& p : params.params) {
    const int64_t cols = p.shape.size() == 2 ? p.shape[1] : 1;
    std::fill(g.begin() + int64_t(p.offset) + p.real_rows * cols, g.begin() + int64_t(p.offset + p.numel), 0.0f);
  }
}

}  // namespace

TEST(BlockAdam, GeometryOfEveryKind) {
  BlockGeometry g{BlockKind::Head, 4, 4, 6, 2};
  EXPECT_EQ(block_count(g), 2);
  EXPECT_EQ(block_index(g, 3, 5), 1);
  EXPECT_EQ(block_mean_count(g), 12);
  g.kind = BlockKind::Column;
  g.real_rows = 3;
  EXPECT_EQ(block_count(g), 6);
  EXPECT_EQ(block_index(g, 3, 5), 5);
  EXPECT_EQ(row_v_base(g, 3) + 5 * col_v_stride(g), 5);
  EXPECT_EQ(block_mean_count(g), 3);
  g.kind = BlockKind::Element;
  EXPECT_EQ(block_index(g, 3, 5), 23);
  EXPECT_EQ(row_v_base(g, 3) + 5 * col_v_stride(g), 23);
  g.kind = BlockKind::Whole;
  EXPECT_EQ(block_mean_count(g), 18);
  EXPECT_EQ(row_v_base(g, 3) + 5 * col_v_stride(g), 0);
}

TEST(BlockAdam, MeanSquaresOfEveryKindMatchDoubleLoops) {
  for (const TensorPartition& t : small_examples()) {
    const std::vector<float> g = gradient_for(t, 7);
    std::vector<float> got(size_t(t.v_entries));
    ASSERT_TRUE(block_mean_squares_cpu(t, g.data(), 0.5f, got.data()));
    const Reference ref = reference_of(t, start_state(t, 1));
    expect_near_all(got, ref.mean_squares(g, 0.5), 1e-6, 0.0, kind_label(t));
  }
}

TEST(BlockAdam, GradsModeStepsOfEveryKindMatchDoubleLoops) {
  for (const TensorPartition& t : small_examples()) {
    FloatState s = start_state(t, 11);
    Reference ref = reference_of(t, s);
    for (int step = 1; step <= 5; ++step) {
      const BlockAdamHyper h = hyper_at_step(step, 0.7f);
      const std::vector<float> g = gradient_for(t, 100 + step);
      block_adam_step_cpu(t, s.w.data(), g.data(), s.m.data(), s.v.data(), h);
      ref.step(g, h);
      const std::string label = cat(kind_label(t), " step ", step);
      expect_near_all(s.m, ref.m, 1e-5, 1e-8, label + " m");
      expect_near_all(s.v, ref.v, 1e-5, 1e-12, label + " v");
      expect_near_all(s.w, ref.w, 1e-6, 1e-6, label + " w");
    }
  }
}

TEST(BlockAdam, ElementPartitionIsTheBackendsAdamW) {
  // Big enough for the parallel loops of both implementations.
  const TensorPartition t = one_segment("test", 300, 257, BlockKind::Element);
  FloatState mine = start_state(t, 21);
  FloatState adamw = mine;
  for (int step = 1; step <= 4; ++step) {
    const BlockAdamHyper h = hyper_at_step(step, 0.8f);
    const std::vector<float> g = random_vector(mine.w.size(), 200 + step, 0.3f);
    block_adam_step_cpu(t, mine.w.data(), g.data(), mine.m.data(), mine.v.data(), h);
    cpu::adamw_update<float>(adamw.w.data(), nullptr, g.data(), adamw.m.data(), adamw.v.data(),
                             adamw.w.size(), adamw_args(h));
  }
  // The same expressions in the same order: equal unless the compiler contracts differently.
  EXPECT_LE(max_ulp_distance(mine.m, adamw.m), 1);
  EXPECT_LE(max_ulp_distance(mine.v, adamw.v), 1);
  EXPECT_LE(max_ulp_distance(mine.w, adamw.w), 1);
}

TEST(BlockAdam, BlocksOfOneElementAreAdamW) {
  // Row of one column, Head of one row and one column, Column of one row, Whole of one element:
  // every block holds one element, so Adam-mini's/SlimAdam's machinery must be AdamW.
  const std::vector<TensorPartition> cases = {
      one_segment("test", 5000, 1, BlockKind::Row), one_segment("test", 5000, 1, BlockKind::Head, 1),
      one_segment("test", 1, 5000, BlockKind::Column), one_segment("test", 1, 1, BlockKind::Whole)};
  for (const TensorPartition& t : cases) {
    FloatState mine = start_state(t, 31);
    mine.v = positive_vector(mine.w.size(), 33, 1e-4f);
    FloatState adamw = mine;
    for (int step = 1; step <= 5; ++step) {
      const BlockAdamHyper h = hyper_at_step(step, 0.6f);
      const std::vector<float> g = random_vector(mine.w.size(), 300 + step, 0.3f);
      block_adam_step_cpu(t, mine.w.data(), g.data(), mine.m.data(), mine.v.data(), h);
      cpu::adamw_update<float>(adamw.w.data(), nullptr, g.data(), adamw.m.data(), adamw.v.data(),
                               adamw.w.size(), adamw_args(h));
    }
    const std::string label = kind_label(t);
    EXPECT_EQ(mine.m, adamw.m) << label;  // m never sees the block path
    expect_near_all(mine.v, adamw.v, 5e-7, 0.0, label + " v");
    expect_near_all(mine.w, adamw.w, 1e-7, 1e-7, label + " w");
  }
}

TEST(BlockAdam, SlimAdamWithNoCompressedDimsIsAdamW) {
  const ModelConfig model = test::tiny_padded_model(2);
  const ParamTable params = build_param_table(model);
  const std::filesystem::path dir = std::filesystem::path(SLIMTRAIN_TEST_TMP) / "block_adam";
  std::filesystem::create_directories(dir);
  PartitionOptions options;
  options.slim_rules_path = (dir / "no_compression.json").string();
  std::ofstream(options.slim_rules_path)
      << slim_rules_to_json(build_partition("adamw", params, model, {}));
  const PartitionTable table = build_partition("slim_adam", params, model, options);
  ASSERT_EQ(size_t(table.total_v), params.total_numel);

  const size_t n = params.total_numel;
  std::vector<float> w = random_vector(n, 41), m(n, 0.0f), v(n, 0.0f);
  std::vector<float> w_ref = w, m_ref = m, v_ref = v;
  for (int step = 1; step <= 3; ++step) {
    std::vector<float> g = random_vector(n, 400 + step, 0.2f);
    zero_padding(params, g);
    for (const TensorPartition& t : table.tensors) {
      const ParamInfo& p = params.params[t.param_index];
      const BlockAdamHyper h = hyper_at_step(step, 0.9f, p.weight_decay ? 0.1f : 0.0f);
      block_adam_step_cpu(t, w.data() + p.offset, g.data() + p.offset, m.data() + p.offset,
                          v.data() + t.v_offset, h);
      cpu::adamw_update<float>(w_ref.data() + p.offset, nullptr, g.data() + p.offset,
                               m_ref.data() + p.offset, v_ref.data() + p.offset, p.numel, adamw_args(h));
    }
  }
  EXPECT_LE(max_ulp_distance(w, w_ref), 1);
  EXPECT_LE(max_ulp_distance(m, m_ref), 1);
  EXPECT_LE(max_ulp_distance(v, v_ref), 1);
}

// AdamA with one micro-batch per step (fold, then apply) is grads mode, bit for bit, for every
// tensor of the tiny model under every optimizer's partition.
TEST(BlockAdam, AdamAWithOneMicroBatchIsGradsMode) {
  const ModelConfig model = test::tiny_padded_model(2);
  const ParamTable params = build_param_table(model);
  for (const char* optimizer : {"adamw", "adam_mini", "slim_adam"}) {
    const PartitionTable table = build_partition(optimizer, params, model, {});
    const size_t n = params.total_numel, nv = size_t(table.total_v);
    std::vector<float> w = random_vector(n, 51), m(n, 0.0f), v(nv, 0.0f);
    std::vector<float> wa = w, ma = m, va = v;
    for (int step = 1; step <= 3; ++step) {
      std::vector<float> g = random_vector(n, 500 + step, 0.2f);
      zero_padding(params, g);
      for (const TensorPartition& t : table.tensors) {
        const ParamInfo& p = params.params[t.param_index];
        const BlockAdamHyper h = hyper_at_step(step, 0.9f, p.weight_decay ? 0.1f : 0.0f);
        block_adam_step_cpu(t, w.data() + p.offset, g.data() + p.offset, m.data() + p.offset,
                            v.data() + t.v_offset, h);
        ASSERT_TRUE(block_adam_fold_cpu(t, g.data() + p.offset, ma.data() + p.offset,
                                        va.data() + t.v_offset, h, /*first_fold=*/true));
        block_adam_apply_cpu(t, wa.data() + p.offset, ma.data() + p.offset, va.data() + t.v_offset, h);
      }
    }
    EXPECT_EQ(m, ma) << optimizer;
    EXPECT_EQ(v, va) << optimizer;
    EXPECT_EQ(w, wa) << optimizer;
    // And with adamw's partition that is the backend's AdamW.
    if (std::string(optimizer) == "adamw") {
      std::vector<float> wr = random_vector(n, 51), mr(n, 0.0f), vr(n, 0.0f);
      for (int step = 1; step <= 3; ++step) {
        std::vector<float> g = random_vector(n, 500 + step, 0.2f);
        zero_padding(params, g);
        for (const ParamInfo& p : params.params) {
          const BlockAdamHyper h = hyper_at_step(step, 0.9f, p.weight_decay ? 0.1f : 0.0f);
          cpu::adamw_update<float>(wr.data() + p.offset, nullptr, g.data() + p.offset,
                                   mr.data() + p.offset, vr.data() + p.offset, p.numel, adamw_args(h));
        }
      }
      EXPECT_LE(max_ulp_distance(wa, wr), 1);
      EXPECT_LE(max_ulp_distance(ma, mr), 1);
      EXPECT_LE(max_ulp_distance(va, vr), 1);
    }
  }
}

// After N folds AdamA's m is the grads-mode m of the summed gradient; its v is
// b2*v + (1-b2)*s*sum_i mean_B(g_i^2) (sum of squares, not square of the sum).
TEST(BlockAdam, AdamAFoldsAccumulateMicroBatches) {
  const int micro_batches = 4;
  for (const TensorPartition& t : small_examples()) {
    FloatState grads_mode = start_state(t, 61);
    FloatState folded = grads_mode;
    Reference ref = reference_of(t, grads_mode);
    BlockAdamHyper h = hyper_at_step(1, 0.8f);
    h.fold_scale = 2.0f;
    std::vector<float> sum(grads_mode.w.size(), 0.0f);
    std::vector<double> fold_sum_of_means(size_t(t.v_entries), 0.0);
    for (int i = 0; i < micro_batches; ++i) {
      // The micro-batch loss is scaled by 1/N, so is its gradient.
      std::vector<float> g = gradient_for(t, 600 + i);
      for (float& x : g) x /= float(micro_batches);
      for (size_t e = 0; e < g.size(); ++e) sum[e] += g[e];
      const std::vector<double> r = ref.mean_squares(g, h.grad_scale);
      for (size_t b = 0; b < r.size(); ++b) fold_sum_of_means[b] += r[b];
      ASSERT_TRUE(block_adam_fold_cpu(t, g.data(), folded.m.data(), folded.v.data(), h, i == 0));
    }
    block_adam_step_cpu(t, grads_mode.w.data(), sum.data(), grads_mode.m.data(), grads_mode.v.data(), h);
    const std::string label = kind_label(t);
    expect_near_all(folded.m, grads_mode.m, 1e-5, 1e-8, label + " m");
    std::vector<double> v_want(ref.v.size());
    for (size_t b = 0; b < v_want.size(); ++b)
      v_want[b] = 0.95 * ref.v[b] + (1 - 0.95) * double(h.fold_scale) * fold_sum_of_means[b];
    expect_near_all(folded.v, v_want, 1e-5, 1e-12, label + " v");
    // apply = the update line with the folded m and v.
    std::vector<double> w_want(folded.w.size());
    for (int64_t r = 0; r < t.rows; ++r)
      for (int64_t c = 0; c < t.cols; ++c) {
        const size_t e = size_t(r * t.cols + c);
        const double v_hat = folded.v[size_t(ref.block_of(r, c))] / double(h.bias_correction2);
        w_want[e] = folded.w[e] - double(h.lr) * ((folded.m[e] / double(h.bias_correction1)) /
                                                      (std::sqrt(v_hat) + double(h.eps)) +
                                                  double(h.weight_decay) * folded.w[e]);
      }
    block_adam_apply_cpu(t, folded.w.data(), folded.m.data(), folded.v.data(), h);
    expect_near_all(folded.w, w_want, 1e-6, 1e-7, label + " w");
  }
}

TEST(BlockAdam, NonFiniteFoldIsFlaggedAndLeavesTheStateAlone) {
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(), 1e30f /* its square overflows */};
  std::vector<TensorPartition> cases = small_examples();
  cases.push_back(one_segment("test", 300, 300, BlockKind::Element));  // the parallel check
  cases.push_back(one_segment("test", 300, 300, BlockKind::Whole));
  for (const TensorPartition& t : cases)
    for (float bad : bad_values)
      for (bool first_fold : {true, false}) {
        const FloatState before = start_state(t, 71);
        FloatState s = before;
        std::vector<float> g = gradient_for(t, 700);
        g[g.size() / 2 - 1] = bad;  // a real row in every example
        EXPECT_FALSE(block_adam_fold_cpu(t, g.data(), s.m.data(), s.v.data(), hyper_at_step(1), first_fold))
            << kind_label(t) << " value " << bad;
        EXPECT_EQ(s.m, before.m) << kind_label(t);
        EXPECT_EQ(s.v, before.v) << kind_label(t);
        std::vector<float> means(size_t(t.v_entries));
        EXPECT_FALSE(block_mean_squares_cpu(t, g.data(), 1.0f, means.data())) << kind_label(t);
      }
}

// The protocol for skipping a step whose micro-batch k failed: unfold the folds already made
// (from recomputed gradients), undo the decay, and the state is the pre-step state again.
TEST(BlockAdam, UnfoldAndUndoDecayRestoreThePreStepState) {
  for (const TensorPartition& t : small_examples()) {
    const FloatState before = start_state(t, 81);
    FloatState s = before;
    BlockAdamHyper h = hyper_at_step(3, 0.5f);
    h.fold_scale = 1.5f;
    std::vector<std::vector<float>> folded;
    for (int i = 0; i < 3; ++i) {
      folded.push_back(gradient_for(t, 800 + i));
      ASSERT_TRUE(block_adam_fold_cpu(t, folded.back().data(), s.m.data(), s.v.data(), h, i == 0));
    }
    std::vector<float> bad = gradient_for(t, 899);
    bad[0] = std::numeric_limits<float>::quiet_NaN();
    ASSERT_FALSE(block_adam_fold_cpu(t, bad.data(), s.m.data(), s.v.data(), h, false));
    const std::vector<float> m_folded = s.m, v_folded = s.v;
    for (int i = 2; i >= 0; --i) block_adam_unfold_cpu(t, folded[size_t(i)].data(), s.m.data(), s.v.data(), h);
    block_adam_undo_decay_cpu(t, s.m.data(), s.v.data(), h);
    // Back to the pre-step values up to fp32 rounding of the folded magnitudes.
    expect_near_all(s.m, before.m, 0.0, 1e-6 * max_abs(m_folded), kind_label(t) + " m");
    expect_near_all(s.v, before.v, 0.0, 1e-6 * max_abs(v_folded), kind_label(t) + " v");
    for (float x : s.v) EXPECT_GE(x, 0.0f);
  }
}

TEST(BlockAdam, ReductionsDoNotDependOnTheThreadCount) {
  const std::vector<TensorPartition> cases = {
      one_segment("test", 700, 333, BlockKind::Row), one_segment("test", 700, 333, BlockKind::Head, 7),
      one_segment("test", 700, 333, BlockKind::Column, 0, 650), one_segment("test", 700, 333, BlockKind::Whole, 0, 690)};
  const int threads = omp_get_max_threads();
  for (const TensorPartition& t : cases) {
    const std::vector<float> g = random_vector(size_t(t.rows * t.cols), 91, 2.0f);
    std::vector<float> one(size_t(t.v_entries)), many(size_t(t.v_entries));
    omp_set_num_threads(1);
    ASSERT_TRUE(block_mean_squares_cpu(t, g.data(), 0.9f, one.data()));
    omp_set_num_threads(std::max(3, threads));
    ASSERT_TRUE(block_mean_squares_cpu(t, g.data(), 0.9f, many.data()));
    omp_set_num_threads(threads);
    EXPECT_EQ(one, many) << kind_label(t);
    // fp32 partials into double: within a few fp32 ulps of the double sum.
    const Reference ref = reference_of(t, start_state(t, 1));
    expect_near_all(one, ref.mean_squares(g, 0.9), 1e-6, 0.0, kind_label(t));
  }
}

// ---- AdamA update clipping (block_adam_apply_cpu with hyper.update_clip) ---------------------

namespace {

// The old apply (before update clipping existed): adam_apply on every element.
std::vector<float> plain_apply(const TensorPartition& t, std::vector<float> w, const std::vector<float>& m,
                               const std::vector<float>& v, const BlockAdamHyper& h) {
  for (const PartitionSegment& s : t.segments) {
    const BlockGeometry geo = s.geometry(t.cols);
    for (int64_t r = 0; r < geo.rows; ++r)
      for (int64_t c = 0; c < geo.cols; ++c) {
        const size_t i = size_t((s.row_begin + r) * t.cols + c);
        w[i] = adam_apply(w[i], m[i], v[size_t(s.v_offset + block_index(geo, r, c))], h);
      }
  }
  return w;
}

// The RMS of u = m_hat/(sqrt(v_hat)+eps) over the real elements, in double.
double direction_rms(const TensorPartition& t, const std::vector<float>& m, const std::vector<float>& v,
                     const BlockAdamHyper& h) {
  double sum = 0.0;
  int64_t count = 0;
  for (const PartitionSegment& s : t.segments) {
    const BlockGeometry geo = s.geometry(t.cols);
    for (int64_t r = 0; r < geo.real_rows; ++r)
      for (int64_t c = 0; c < geo.cols; ++c) {
        const size_t i = size_t((s.row_begin + r) * t.cols + c);
        const double v_hat = double(v[size_t(s.v_offset + block_index(geo, r, c))]) / h.bias_correction2;
        const double u = (double(m[i]) / h.bias_correction1) / (std::sqrt(v_hat) + double(h.eps));
        sum += u * u;
        ++count;
      }
  }
  return std::sqrt(sum / double(count));
}

// A tensor of three segments with different kinds and a padded last segment, like the fused qkv
// of build_partition (the padding is there to check that only real rows count).
TensorPartition three_segments() {
  TensorPartition t;
  t.tensor = "three";
  t.rows = 12;
  t.cols = 5;
  const BlockKind kinds[3] = {BlockKind::Head, BlockKind::Row, BlockKind::Column};
  for (int k = 0; k < 3; ++k) {
    PartitionSegment s;
    s.what = std::string(1, "qkv"[k]);
    s.row_begin = 4 * k;
    s.row_end = 4 * k + 4;
    s.real_rows = k == 2 ? 3 : 4;
    s.kind = kinds[k];
    s.head_dim = k == 0 ? 2 : 0;
    s.v_offset = t.v_entries;
    s.v_entries = block_count(s.geometry(t.cols));
    t.v_entries += s.v_entries;
    t.segments.push_back(s);
  }
  return t;
}

}  // namespace

TEST(BlockAdamUpdateClip, OffAndUnderTheClipAreTheOldApplyBitForBit) {
  std::vector<TensorPartition> cases = small_examples();
  cases.push_back(three_segments());
  for (const TensorPartition& t : cases) {
    const FloatState s = start_state(t, 1001);
    BlockAdamHyper h = hyper_at_step(4);
    const std::vector<float> want = plain_apply(t, s.w, s.m, s.v, h);
    std::vector<float> off = s.w;
    block_adam_apply_cpu(t, off.data(), s.m.data(), s.v.data(), h);  // update_clip = 0
    EXPECT_EQ(off, want) << kind_label(t);
    const double rms = direction_rms(t, s.m, s.v, h);
    h.update_clip = float(rms * 1.01);  // just above the RMS: no clipping
    std::vector<float> under = s.w;
    block_adam_apply_cpu(t, under.data(), s.m.data(), s.v.data(), h);
    EXPECT_EQ(under, want) << kind_label(t) << " rms " << rms;
  }
}

// Weights and weight decay at 0, so the applied direction is exactly -w_new / lr.
TEST(BlockAdamUpdateClip, ClippedDirectionHasTheClipAsItsRms) {
  std::vector<TensorPartition> cases = small_examples();
  cases.push_back(three_segments());
  cases.push_back(one_segment("test", 300, 257, BlockKind::Element));  // parallel loops
  for (const TensorPartition& t : cases) {
    FloatState s = start_state(t, 1101);
    // Large m on the padded rows: they must not count in the RMS (the model leaves them at 0,
    // so a mistake would go unseen otherwise), but their update is scaled like every other.
    for (const PartitionSegment& seg : t.segments)
      for (int64_t r = seg.row_begin + seg.real_rows; r < seg.row_end; ++r)
        for (int64_t c = 0; c < t.cols; ++c) s.m[size_t(r * t.cols + c)] = 5.0f;
    BlockAdamHyper h = hyper_at_step(2, 1.0f, /*weight_decay=*/0.0f);
    const double rms = direction_rms(t, s.m, s.v, h);
    h.update_clip = float(rms / 3.0);
    EXPECT_NEAR(block_update_mean_square_cpu(t, s.m.data(), s.v.data(), h), rms * rms, 1e-6 * rms * rms)
        << kind_label(t);
    std::vector<float> w(s.w.size(), 0.0f);
    block_adam_apply_cpu(t, w.data(), s.m.data(), s.v.data(), h);
    // The direction each element received, over the real elements.
    std::vector<float> direction(w.size());
    for (size_t i = 0; i < w.size(); ++i) direction[i] = -w[i] / h.lr;
    double sum = 0.0;
    int64_t count = 0;
    for (const PartitionSegment& seg : t.segments)
      for (int64_t r = seg.row_begin; r < seg.row_begin + seg.real_rows; ++r)
        for (int64_t c = 0; c < t.cols; ++c, ++count) sum += double(direction[size_t(r * t.cols + c)]) *
                                                          direction[size_t(r * t.cols + c)];
    EXPECT_NEAR(std::sqrt(sum / double(count)), h.update_clip, 1e-5 * h.update_clip) << kind_label(t);
    // One scale for the whole tensor (all segments, padded rows included): every element's
    // direction is its unclipped u times update_clip / rms.
    const std::vector<float> unclipped = plain_apply(t, std::vector<float>(w.size(), 0.0f), s.m, s.v, h);
    for (size_t i = 0; i < w.size(); ++i)
      ASSERT_NEAR(w[i], unclipped[i] * (h.update_clip / rms), 1e-5 * std::fabs(unclipped[i]) + 1e-12)
          << kind_label(t) << " [" << i << "]";
  }
}

// Weight decay is applied in full: w_new = w - lr*(s*u + wd*w), against double loops.
TEST(BlockAdamUpdateClip, WeightDecayIsNotScaled) {
  const TensorPartition t = three_segments();
  const FloatState s = start_state(t, 1201);
  BlockAdamHyper h = hyper_at_step(3, 1.0f, /*weight_decay=*/0.1f);
  const double rms = direction_rms(t, s.m, s.v, h);
  h.update_clip = float(rms / 4.0);
  const double scale = double(h.update_clip) / rms;
  std::vector<float> w = s.w;
  block_adam_apply_cpu(t, w.data(), s.m.data(), s.v.data(), h);
  std::vector<double> want(w.size());
  for (const PartitionSegment& seg : t.segments) {
    const BlockGeometry geo = seg.geometry(t.cols);
    for (int64_t r = 0; r < geo.rows; ++r)
      for (int64_t c = 0; c < geo.cols; ++c) {
        const size_t i = size_t((seg.row_begin + r) * t.cols + c);
        const double v_hat = double(s.v[size_t(seg.v_offset + block_index(geo, r, c))]) / h.bias_correction2;
        const double u = (double(s.m[i]) / h.bias_correction1) / (std::sqrt(v_hat) + double(h.eps));
        want[i] = double(s.w[i]) - double(h.lr) * (scale * u + double(h.weight_decay) * s.w[i]);
      }
  }
  expect_near_all(w, want, 1e-6, 1e-7, "three segments, clipped, wd 0.1");
}

TEST(BlockAdamUpdateClip, DoesNotDependOnTheThreadCount) {
  const std::vector<TensorPartition> cases = {
      one_segment("test", 700, 333, BlockKind::Element, 0, 650), one_segment("test", 700, 333, BlockKind::Head, 7),
      one_segment("test", 700, 333, BlockKind::Column, 0, 650), one_segment("test", 700, 333, BlockKind::Whole)};
  const int threads = omp_get_max_threads();
  for (const TensorPartition& t : cases) {
    const FloatState s = start_state(t, 1301);
    BlockAdamHyper h = hyper_at_step(5);
    h.update_clip = float(direction_rms(t, s.m, s.v, h) / 2.0);
    std::vector<float> one = s.w, many = s.w;
    omp_set_num_threads(1);
    const double mean_one = block_update_mean_square_cpu(t, s.m.data(), s.v.data(), h);
    block_adam_apply_cpu(t, one.data(), s.m.data(), s.v.data(), h);
    omp_set_num_threads(std::max(3, threads));
    const double mean_many = block_update_mean_square_cpu(t, s.m.data(), s.v.data(), h);
    block_adam_apply_cpu(t, many.data(), s.m.data(), s.v.data(), h);
    omp_set_num_threads(threads);
    EXPECT_EQ(mean_one, mean_many) << kind_label(t);
    EXPECT_EQ(one, many) << kind_label(t);
  }
}

// Column and Whole means leave the padded rows out, but the fold's finiteness check covers them.
TEST(BlockAdam, NonFiniteValueInPaddedRowsStopsTheFold) {
  for (BlockKind kind : {BlockKind::Column, BlockKind::Whole}) {
    const TensorPartition t = one_segment("test", 6, 4, kind, 0, 4);
    const FloatState before = start_state(t, 1401);
    FloatState s = before;
    std::vector<float> g = gradient_for(t, 1402);
    g[5 * 4 + 1] = std::numeric_limits<float>::infinity();  // a padded row
    EXPECT_FALSE(block_adam_fold_cpu(t, g.data(), s.m.data(), s.v.data(), hyper_at_step(1), true))
        << kind_label(t);
    EXPECT_EQ(s.m, before.m) << kind_label(t);
    EXPECT_EQ(s.v, before.v) << kind_label(t);
  }
}

// ---- bf16 first moment (hyper.m_bf16: m stored as bf16 bits, rounded stochastically) ----------

namespace {

// bf16 bits of fp32 values that are bf16 values already (exact).
std::vector<uint16_t> to_bf16_bits(const std::vector<float>& x) {
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) bits[i] = round_to_nearest_bf16_bits(x[i]);
  return bits;
}

std::vector<float> from_bf16_bits(const std::vector<uint16_t>& bits) {
  std::vector<float> x(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = bf16_bits_to_float(bits[i]);
  return x;
}

// The values a bf16 m can hold: x rounded to nearest.
std::vector<float> bf16_values(const std::vector<float>& x) {
  return from_bf16_bits(to_bf16_bits(x));
}

// One bf16 ulp at |x| (the spacing of bf16 values in x's binade; x normal).
double bf16_ulp(double x) {
  int exponent = 0;
  std::frexp(std::fabs(x), &exponent);  // |x| = f * 2^exponent, f in [0.5, 1)
  return std::ldexp(1.0, exponent - 8);
}

// The same hyperparameters with a bf16 m.
BlockAdamHyper with_bf16_m(BlockAdamHyper h, uint32_t m_seed) {
  h.m_bf16 = true;
  h.m_seed = m_seed;
  return h;
}

}  // namespace

// The rounding itself: always one of the two bf16 neighbours, up with probability equal to the
// remainder (so the mean of many draws is the value), the same bits for the same (seed, index);
// to-nearest ties to even; infinities and NaNs survive both.
TEST(Bf16Moment, StochasticRoundingIsUnbiased) {
  std::mt19937 rng(2024);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  const int kValues = 200, kDraws = 4000;
  double worst_sigmas = 0.0;
  for (int k = 0; k < kValues; ++k) {
    const float x = (k % 2 ? -1.0f : 1.0f) * std::ldexp(mantissa(rng), k % 40 - 30);
    const float down = bf16_bits_to_float(uint16_t(float_bits(x) >> 16));
    const double ulp = bf16_ulp(x);
    const double p_up = std::fabs(double(x) - down) / ulp;
    double sum = 0.0;
    for (int d = 0; d < kDraws; ++d) {
      const float r =
          bf16_bits_to_float(stochastic_round_bf16_bits(x, random_bits(uint32_t(k), uint64_t(d))));
      ASSERT_TRUE(r == down || std::fabs(double(r) - down) == ulp) << x << " -> " << r;
      sum += r;
    }
    // The mean of kDraws Bernoulli(p_up) ulp steps: standard deviation ulp*sqrt(p(1-p)/kDraws).
    const double sigma = ulp * std::sqrt(std::max(p_up * (1 - p_up), 1e-12) / kDraws);
    const double sigmas = std::fabs(sum / kDraws - double(x)) / sigma;
    worst_sigmas = std::max(worst_sigmas, sigmas);
    EXPECT_LT(sigmas, 5.0) << x << ": mean " << sum / kDraws << " p_up " << p_up;
  }
  std::printf(
      "[  errors  ] bf16 stochastic rounding: worst |mean - x| over %d draws = %.2f sigma\n",
      kDraws, worst_sigmas);
  EXPECT_EQ(stochastic_round_bf16_bits(1.3f, random_bits(7, 9)),
            stochastic_round_bf16_bits(1.3f, random_bits(7, 9)));
  EXPECT_EQ(round_to_nearest_bf16_bits(1.0f + 1.0f / 256), 0x3f80);  // a tie: to the even 1.0
  EXPECT_EQ(round_to_nearest_bf16_bits(1.0f + 3.0f / 256), 0x3f82);  // a tie: to the even 1+2^-6
  EXPECT_EQ(round_to_nearest_bf16_bits(1.0f + 1.5f / 256), 0x3f81);
  for (uint32_t random : {0u, 0xffffffffu}) {
    EXPECT_EQ(bf16_bits_to_float(stochastic_round_bf16_bits(INFINITY, random)), INFINITY);
    EXPECT_TRUE(std::isnan(bf16_bits_to_float(stochastic_round_bf16_bits(NAN, random))));
  }
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(round_to_nearest_bf16_bits(NAN))));
  EXPECT_EQ(bf16_bits_to_float(round_to_nearest_bf16_bits(-INFINITY)), -INFINITY);
}

// The update path: one AdamW step (cpu_ops.h) from the same state with many m seeds; each stored
// m is a bf16 neighbour of the fp32-m step's m, and their mean over the seeds is that m.
TEST(Bf16Moment, AdamWStepRoundsMUnbiased) {
  const size_t n = 256;
  const int kSeeds = 2000;
  const std::vector<float> m0 = bf16_values(random_vector(n, 1501, 0.01f)),
                           v0 = positive_vector(n, 1502, 1e-4f), w0 = random_vector(n, 1503),
                           g = random_vector(n, 1504, 0.3f);
  const BlockAdamHyper h = hyper_at_step(3, 0.7f);
  std::vector<float> w = w0, m = m0, v = v0;
  cpu::adamw_update<float>(w.data(), nullptr, g.data(), m.data(), v.data(), n, adamw_args(h));
  std::vector<double> mean(n, 0.0);
  for (int s = 0; s < kSeeds; ++s) {
    AdamWArgs args = adamw_args(h);
    args.m_bf16 = true;
    args.m_seed = uint32_t(s);
    std::vector<float> wb = w0, vb = v0;
    std::vector<uint16_t> mb = to_bf16_bits(m0);
    cpu::adamw_update<float, uint16_t>(wb.data(), nullptr, g.data(), mb.data(), vb.data(), n, args);
    if (s == 0) {
      // v and the weights do not see m's rounding: the step applies the fp32 m it computed.
      EXPECT_EQ(vb, v);
      EXPECT_EQ(wb, w);
    }
    for (size_t i = 0; i < n; ++i) {
      const float got = bf16_bits_to_float(mb[i]);
      ASSERT_LT(std::fabs(double(got) - m[i]), bf16_ulp(m[i])) << i;
      mean[i] += got / double(kSeeds);
    }
  }
  double worst_sigmas = 0.0;
  for (size_t i = 0; i < n; ++i) {
    // At most ulp/2 per draw of standard deviation.
    const double sigma = bf16_ulp(m[i]) * 0.5 / std::sqrt(double(kSeeds));
    worst_sigmas = std::max(worst_sigmas, std::fabs(mean[i] - m[i]) / sigma);
  }
  std::printf("[  errors  ] adamw bf16 m: worst |mean over %d seeds - fp32 m| = %.2f sigma\n",
              kSeeds, worst_sigmas);
  EXPECT_LT(worst_sigmas, 5.0);
}

// Five grads-mode steps of every block kind (and AdamW's own loop) with a bf16 m track the fp32-m
// steps: v is bit for bit the same (it never reads m), m within the accumulated rounding and the
// weights' total change within a small fraction of itself.
// Bound on m: each step's rounding is off by less than one ulp of the stored value and is then
// decayed by beta1, so after 5 steps |m_bf16 - m_fp32| < (1 + b1 + ... + b1^4) ulps of the largest
// |m| < 4.1 ulps; norm-wise the roundings are independent with RMS <= ulp/2 (<= 2^-8 of |m|),
// adding to sqrt(1 + b1^2 + ...) <= 2.3 times that: < 2^-6 relative with margin.
TEST(Bf16Moment, GradsModeStepsTrackTheFp32Moment) {
  std::vector<TensorPartition> cases = small_examples();
  cases.push_back(one_segment("test", 300, 257, BlockKind::Element));  // parallel loops
  cases.push_back(one_segment("test", 300, 257, BlockKind::Row));
  cases.push_back(three_segments());
  for (const TensorPartition& t : cases) {
    FloatState fp32 = start_state(t, 1601);
    fp32.m = bf16_values(fp32.m);
    FloatState bf16 = fp32;
    std::vector<uint16_t> m_bits = to_bf16_bits(bf16.m);
    double largest_m = 0.0;
    for (int step = 1; step <= 5; ++step) {
      const BlockAdamHyper h = hyper_at_step(step, 0.7f);
      const std::vector<float> g = gradient_for(t, 1610 + step);
      block_adam_step_cpu(t, fp32.w.data(), g.data(), fp32.m.data(), fp32.v.data(), h);
      block_adam_step_cpu(t, bf16.w.data(), g.data(), m_bits.data(), bf16.v.data(),
                          with_bf16_m(h, 77u + step));
      largest_m =
          std::max({largest_m, double(max_abs(fp32.m)), double(max_abs(from_bf16_bits(m_bits)))});
    }
    bf16.m = from_bf16_bits(m_bits);
    const std::string label = kind_label(t);
    EXPECT_EQ(bf16.v, fp32.v) << label;
    expect_near_all(bf16.m, fp32.m, 0.0, 4.1 * bf16_ulp(largest_m), label + " m");
    double diff = 0, norm = 0, dw = 0, change = 0;
    const FloatState start = start_state(t, 1601);
    for (size_t i = 0; i < fp32.m.size(); ++i) {
      diff += std::pow(double(bf16.m[i]) - fp32.m[i], 2);
      norm += std::pow(double(fp32.m[i]), 2);
      dw += std::pow(double(bf16.w[i]) - fp32.w[i], 2);
      change += std::pow(double(fp32.w[i]) - start.w[i], 2);
    }
    EXPECT_LT(std::sqrt(diff / norm), 1.0 / 64) << label << " m, norm-wise";
    EXPECT_LT(std::sqrt(dw / change), 1.0 / 64) << label << " weight change, norm-wise";
  }
}

// With adamw's and adam_mini's partitions over the tiny model: the bf16-m steps equal AdamW's own
// loop (cpu_ops.h) with a bf16 m within an fp32 ulp (the same draws: element index in the tensor
// and the seed), and AdamA with one micro-batch folds grads mode's m and v bit for bit (the first
// fold and a grads-mode step share the m seed); its weights differ by m's rounding only (grads
// mode applies the fp32 m, AdamA's apply the stored one): per step at most lr * |u| * 2^-7.
TEST(Bf16Moment, ElementPartitionIsAdamWAndOneFoldIsGradsMode) {
  const ModelConfig model = test::tiny_padded_model(2);
  const ParamTable params = build_param_table(model);
  for (const char* optimizer : {"adamw", "adam_mini"}) {
    const PartitionTable table = build_partition(optimizer, params, model, {});
    const size_t n = params.total_numel, nv = size_t(table.total_v);
    const std::vector<float> w0 = random_vector(n, 1701);
    std::vector<float> w = w0, v(nv, 0.0f), wa = w0, va = v, wr = w0, vr(n, 0.0f);
    std::vector<uint16_t> m(n, 0), ma = m, mr = m;
    for (int step = 1; step <= 3; ++step) {
      std::vector<float> g = random_vector(n, 1710 + step, 0.2f);
      zero_padding(params, g);
      for (const TensorPartition& t : table.tensors) {
        const ParamInfo& p = params.params[t.param_index];
        const BlockAdamHyper h =
            with_bf16_m(hyper_at_step(step, 0.9f, p.weight_decay ? 0.1f : 0.0f),
                        uint32_t(1000 * step + t.param_index));
        block_adam_step_cpu(t, w.data() + p.offset, g.data() + p.offset, m.data() + p.offset,
                            v.data() + t.v_offset, h);
        ASSERT_TRUE(block_adam_fold_cpu(t, g.data() + p.offset, ma.data() + p.offset,
                                        va.data() + t.v_offset, h, /*first_fold=*/true));
        block_adam_apply_cpu(t, wa.data() + p.offset, ma.data() + p.offset, va.data() + t.v_offset,
                             h);
        AdamWArgs args = adamw_args(h);
        args.m_bf16 = true;
        args.m_seed = h.m_seed;
        cpu::adamw_update<float, uint16_t>(wr.data() + p.offset, nullptr, g.data() + p.offset,
                                           mr.data() + p.offset, vr.data() + p.offset, p.numel,
                                           args);
      }
    }
    EXPECT_EQ(m, ma) << optimizer;
    EXPECT_EQ(v, va) << optimizer;
    // The grads-mode step applies the fp32 m it computed, AdamA's apply the stored (rounded) m.
    const std::vector<float> m_values = from_bf16_bits(m);
    double worst = 0;
    for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(wa[i]) - w[i]));
    EXPECT_LT(worst, 3 * 1e-2 * 3 / 128.0) << optimizer << ": 3 steps of lr * u * 2^-7";
    if (std::string(optimizer) == "adamw") {
      EXPECT_LE(max_ulp_distance(w, wr), 1);
      EXPECT_LE(max_ulp_distance(v, vr), 1);
      // Identical fp32 values round to identical bits; a contraction difference of an fp32 ulp
      // flips a rounding with probability ~2^-16, so almost every bit pattern agrees.
      EXPECT_LE(max_ulp_distance(m_values, from_bf16_bits(mr)), 1 << 16) << "one bf16 ulp";
    }
  }
}

// fold x3, unfold x3, undo_decay with a bf16 m: back to the pre-step m within the bound of
// block_adam_cpu.h, (2F + 1) / beta1 bf16 ulps of the largest |m| held (F = 3 folds); v as with
// an fp32 m (v never reads m).
TEST(Bf16Moment, UnfoldAndUndoDecayRestoreWithinTheRoundingBound) {
  std::vector<TensorPartition> cases = small_examples();
  cases.push_back(one_segment("test", 300, 257, BlockKind::Head, 3));
  for (const TensorPartition& t : cases) {
    FloatState before = start_state(t, 1801);
    before.m = bf16_values(before.m);
    std::vector<uint16_t> m = to_bf16_bits(before.m);
    std::vector<float> v = before.v;
    BlockAdamHyper h = hyper_at_step(3, 0.5f);
    h.fold_scale = 1.5f;
    const int folds = 3;
    std::vector<std::vector<float>> grads;
    double largest = max_abs(before.m);
    for (int i = 0; i < folds; ++i) {
      grads.push_back(gradient_for(t, 1810 + i));
      ASSERT_TRUE(block_adam_fold_cpu(t, grads.back().data(), m.data(), v.data(),
                                      with_bf16_m(h, 10u + i), i == 0));
      largest = std::max(largest, double(max_abs(from_bf16_bits(m))));
    }
    for (int i = folds - 1; i >= 0; --i) {
      block_adam_unfold_cpu(t, grads[size_t(i)].data(), m.data(), v.data(),
                            with_bf16_m(h, 20u + i));
      largest = std::max(largest, double(max_abs(from_bf16_bits(m))));
    }
    block_adam_undo_decay_cpu(t, m.data(), v.data(), with_bf16_m(h, 30u));
    const double bound = (2 * folds + 1) / double(h.beta1) * bf16_ulp(largest);
    const std::vector<float> restored = from_bf16_bits(m);
    double worst = 0;
    for (size_t i = 0; i < restored.size(); ++i)
      worst = std::max(worst, std::fabs(double(restored[i]) - before.m[i]));
    std::printf(
        "[  errors  ] %-28s bf16 m restore: worst %.3g = %.2f ulps of max|m| (bound %.2f)\n",
        kind_label(t).c_str(), worst, worst / bf16_ulp(largest), bound / bf16_ulp(largest));
    EXPECT_LE(worst, bound) << kind_label(t);
    FloatState fp32 = before;
    for (int i = 0; i < folds; ++i)
      ASSERT_TRUE(
          block_adam_fold_cpu(t, grads[size_t(i)].data(), fp32.m.data(), fp32.v.data(), h, i == 0));
    for (int i = folds - 1; i >= 0; --i)
      block_adam_unfold_cpu(t, grads[size_t(i)].data(), fp32.m.data(), fp32.v.data(), h);
    block_adam_undo_decay_cpu(t, fp32.m.data(), fp32.v.data(), h);
    EXPECT_EQ(v, fp32.v) << kind_label(t);
  }
}

TEST(Bf16Moment, DoesNotDependOnTheThreadCount) {
  const std::vector<TensorPartition> cases = {one_segment("test", 700, 333, BlockKind::Element),
                                              one_segment("test", 700, 333, BlockKind::Column, 0, 650)};
  const int threads = omp_get_max_threads();
  for (const TensorPartition& t : cases) {
    const FloatState s = start_state(t, 1901);
    const std::vector<float> g = gradient_for(t, 1902);
    const BlockAdamHyper h = with_bf16_m(hyper_at_step(2), 5u);
    std::vector<float> w_one = s.w, v_one = s.v, w_many = s.w, v_many = s.v;
    std::vector<uint16_t> m_one = to_bf16_bits(s.m), m_many = m_one;
    omp_set_num_threads(1);
    block_adam_step_cpu(t, w_one.data(), g.data(), m_one.data(), v_one.data(), h);
    omp_set_num_threads(std::max(3, threads));
    block_adam_step_cpu(t, w_many.data(), g.data(), m_many.data(), v_many.data(), h);
    omp_set_num_threads(threads);
    EXPECT_EQ(m_one, m_many) << kind_label(t);
    EXPECT_EQ(w_one, w_many) << kind_label(t);
  }
}
