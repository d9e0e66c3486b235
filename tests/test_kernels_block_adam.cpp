// Emulated tests of kernels/block_adam.cuh against the CPU reference block_adam_cpu.h (AdamW,
// Adam-mini, SlimAdam in grads mode; AdamA fold / apply / unfold / undo_decay):
//   * every launcher on every block kind: the partitions build_partition makes for a tiny GPT-2
//     with a padded vocabulary (adam_mini, slim_adam: real_rows < rows on wte, three-segment qkv,
//     1-D tensors) and hand-built geometries with tails (odd sizes, a Whole block larger than one
//     reduce block's span, rows longer than a chunk, a Column over 9000 rows, padded Column and
//     Whole segments); fp32 at fp32 tolerance, bf16 params / gradients at bf16 tolerance (the CPU
//     sees the same bf16-rounded inputs, so only the kernels' own rounding is measured);
//   * an Element partition is adamw_update bit for bit; AdamA with one micro-batch and update
//     clipping off is grads mode (within one ulp: separately compiled kernels may contract
//     differently), and a clip that is not reached changes no bit;
//   * FoldStatus: committed counts, raw_sum_squares is ||g||^2; a NaN / infinity / overflowing
//     square anywhere (padded rows included) writes nothing and sets nonfinite, after which no
//     fold writes; unfold + undo_decay restore the pre-step state; an unfold of a non-finite
//     gradient writes nothing;
//   * update clipping: the applied direction's RMS over the real elements is the clip;
//   * a bf16 m (hyper.m_bf16): step, fold, apply, unfold and undo_decay store the CPU reference's
//     bits (the same draws; an element may differ by one bf16 ulp where the two sides' fp32 values
//     differ by a contraction), v and the weights as with an fp32 m, the skip protocol restores m
//     within block_adam_cpu.h's bound, and an Element partition is adamw_update bit for bit;
//   * every case under two schedule orders, bitwise identical (run_in_both_orders);
//   * the launchers reject bad arguments; the scratch plan stays small for GPT-2 124M.
#include "kernel_test_support.h"  // first: brings in cuda_compat.h

#include <map>

#include "kernels/adamw.cuh"
#include "kernels/block_adam.cuh"
#include "model/param_table.h"
#include "optim/block_adam_cpu.h"
#include "optim/partition.h"

#include "partition_fixtures.h"

namespace slim::kernel_test {
namespace {

using bf16 = __nv_bfloat16;

// ---- cases --------------------------------------------------------------------------------------

using test::one_segment;

struct Case {
  std::string label;
  TensorPartition part;
  int64_t numel() const { return part.rows * part.cols; }
};

std::vector<Case> model_cases(const std::string& optimizer) {
  const ModelConfig model = test::tiny_padded_model(1);
  const ParamTable params = build_param_table(model);
  const PartitionTable table = build_partition(optimizer, params, model, {});
  std::vector<Case> cases;
  for (const TensorPartition& t : table.tensors) cases.push_back({optimizer + " " + t.tensor, t});
  return cases;
}

// Tails and sizes the tiny model does not reach (block_adam_sizes.h: kChunk = 1024 elements per
// warp, 8 warps per reduce block, column chunks of at least 32 rows and at most 256 per column).
std::vector<Case> hand_built_cases() {
  return {
      {"whole 97x101 real 90 (10 chunks)", one_segment("whole", 97, 101, BlockKind::Whole, 0, 90)},
      {"column 9000x3 real 8990 (250 row chunks of 36)",
       one_segment("column_tall", 9000, 3, BlockKind::Column, 0, 8990)},
      {"column 33x65", one_segment("column_odd", 33, 65, BlockKind::Column)},
      {"row 5x2500 (3 chunks a row)", one_segment("row_long", 5, 2500, BlockKind::Row)},
      {"head 12x333 head_dim 4", one_segment("head", 12, 333, BlockKind::Head, 4)},
      {"element 37x29", one_segment("element", 37, 29, BlockKind::Element)},
  };
}

std::vector<Case> all_cases() {
  std::vector<Case> cases = model_cases("adam_mini");
  for (Case& c : model_cases("slim_adam")) cases.push_back(std::move(c));
  for (Case& c : hand_built_cases()) cases.push_back(std::move(c));
  return cases;
}

// ---- inputs -------------------------------------------------------------------------------------

BlockAdamHyper hyper_at_step(int t, float weight_decay = 0.1f) {
  BlockAdamHyper h;
  h.lr = 1e-2f;
  h.beta1 = 0.9f;
  h.beta2 = 0.95f;
  h.eps = 1e-8f;
  h.weight_decay = weight_decay;
  h.grad_scale = 0.7f;
  h.bias_correction1 = float(1.0 - std::pow(0.9, t));
  h.bias_correction2 = float(1.0 - std::pow(0.95, t));
  h.seed = 4242u + uint32_t(t);
  return h;
}

struct State {
  std::vector<float> w, m, v;
};

// Weights in [-1, 1], a small m, a positive v; the weights already bf16 values when T is bf16.
template <typename T>
State start_state(const Case& c, uint32_t seed) {
  State s{round_through<T>(random_floats(size_t(c.numel()), -1, 1, seed)),
          random_floats(size_t(c.numel()), -0.01f, 0.01f, seed + 1),
          random_floats(size_t(c.part.v_entries), 1e-5f, 2e-4f, seed + 2)};
  return s;
}

// A gradient as the model makes it: zero on the padded rows, bf16 values when T is bf16.
template <typename T>
std::vector<float> gradient(const Case& c, uint32_t seed) {
  std::vector<float> g = round_through<T>(random_floats(size_t(c.numel()), -0.3f, 0.3f, seed));
  for (const PartitionSegment& s : c.part.segments)
    std::fill(g.begin() + (s.row_begin + s.real_rows) * c.part.cols,
              g.begin() + s.row_end * c.part.cols, 0.0f);
  return g;
}

double sum_of_squares(const std::vector<float>& g) {
  double total = 0.0;
  for (float x : g) total += double(x) * double(x);
  return total;
}

// ---- comparisons --------------------------------------------------------------------------------

// Compares each case and keeps the worst errors of every quantity, printed once per test (the
// figures the report quotes).
class Tally {
 public:
  void check(const std::string& quantity, const std::string& label, const std::vector<float>& got,
             const std::vector<float>& ref, Tolerance tol) {
    const Comparison c = compare(got, ref, tol);
    Worst& w = worst_[quantity];
    w.abs = std::max(w.abs, c.max_abs_error);
    w.rel = std::max(w.rel, c.max_rel_error);
    w.count += c.count;
    EXPECT_EQ(c.mismatches, 0u) << quantity << " of " << label << ": " << c.mismatches << " of "
                                << c.count << " outside atol=" << tol.atol << " rtol=" << tol.rtol
                                << "; first: " << c.first_mismatch;
  }
  ~Tally() {
    for (const auto& [quantity, w] : worst_)
      std::printf("[  errors  ] %-40s n=%-8zu max_abs=%.3e max_rel=%.3e\n", quantity.c_str(),
                  w.count, w.abs, w.rel);
  }

 private:
  struct Worst {
    double abs = 0, rel = 0;
    size_t count = 0;
  };
  std::map<std::string, Worst> worst_;
};

// fp32 tolerances: m is element-wise (the same expression as the CPU); v and the weights see a
// block mean summed in another order than the CPU's (a few fp32 ulps).
// m = b1*m + (1-b1)*g: where the two terms nearly cancel, a fused multiply-add in one build and
// not the other (slimcore's CPU reference is compiled with -march=native, the emulated kernel is
// not; nvcc contracts as it likes) differs by an ulp of the terms (|m| <= 0.04 here: ~4e-9), not
// of the result, hence the absolute floor.
constexpr Tolerance kMomentTol{1e-8, 1e-6};
constexpr Tolerance kVTol{1e-12, 2e-6};
constexpr Tolerance kWeightTol{1e-7, 2e-6};

// Params stored in bf16 must be one of the two bf16 neighbours of the fp32 weight (or of a value
// within 2 fp32 ulps of it, where the weight is the CPU's and may round differently).
size_t off_bf16_grid(const std::vector<float>& params, const std::vector<float>& weights) {
  size_t off = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const float w = weights[i];
    bool ok = false;
    for (float near : {w, std::nextafter(w, 2 * w + 1), std::nextafter(w, 0.0f)}) {
      const auto [down, up] = bf16_neighbours(near);
      ok |= params[i] == down || params[i] == up;
    }
    off += !ok;
  }
  return off;
}

// ---- grads mode ---------------------------------------------------------------------------------

constexpr int kSteps = 3;

// kSteps grads-mode steps of every case; fp32 params alone and with master weights, bf16 params
// with master weights. The CPU runs the fp32 weights (the master).
template <typename T>
void check_steps(bool with_master, uint32_t seed) {
  Tally tally;
  const std::string tag = std::string(dtype_label<T>()) + (with_master ? " master" : "");
  for (const Case& c : all_cases()) {
    const State start = start_state<T>(c, seed);
    std::vector<std::vector<float>> grads;
    for (int t = 0; t < kSteps; ++t) grads.push_back(gradient<T>(c, seed + 10 + t));
    const size_t n = size_t(c.numel());
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<T> params(to_storage<T>(start.w)), g(n);
      DeviceArray<float> master(start.w), m(start.m), v(start.v),
          scratch(block_adam_scratch_floats(c.part));
      for (int t = 1; t <= kSteps; ++t) {
        g.upload(to_storage<T>(grads[size_t(t - 1)]));
        block_adam_step<T>(params.get(), with_master ? master.get() : nullptr, g.get(), m.get(),
                           v.get(), c.part, hyper_at_step(t), scratch.get(), nullptr);
      }
      return Outputs{to_floats(params.download()), master.download(), m.download(), v.download()};
    });
    State ref = start;
    for (int t = 1; t <= kSteps; ++t)
      block_adam_step_cpu(c.part, ref.w.data(), grads[size_t(t - 1)].data(), ref.m.data(),
                          ref.v.data(), hyper_at_step(t));
    tally.check("step m " + tag, c.label, got[2], ref.m, kMomentTol);
    tally.check("step v " + tag, c.label, got[3], ref.v, kVTol);
    if constexpr (std::is_same_v<T, float>) {
      tally.check("step weights " + tag, c.label, with_master ? got[1] : got[0], ref.w, kWeightTol);
      if (with_master) {
        EXPECT_TRUE(bitwise_equal({got[0]}, {got[1]})) << c.label << ": fp32 params are the master";
      }
    } else {
      tally.check("step master " + tag, c.label, got[1], ref.w, kWeightTol);
      EXPECT_EQ(off_bf16_grid(got[0], got[1]), 0u) << c.label << ": params not a bf16 neighbour";
    }
  }
}

TEST(BlockAdamKernels, StepMatchesCpuFp32) {
  check_steps<float>(false, 100);
  check_steps<float>(true, 200);
}

TEST(BlockAdamKernels, StepMatchesCpuBf16) { check_steps<bf16>(true, 300); }

// bf16 params without master weights: one step from bf16 weights, which the CPU also starts from.
TEST(BlockAdamKernels, StepBf16WithoutMasterRoundsTheCpuWeights) {
  Tally tally;
  for (const Case& c : all_cases()) {
    const State start = start_state<bf16>(c, 400);
    const std::vector<float> g0 = gradient<bf16>(c, 401);
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<bf16> params(to_storage<bf16>(start.w)), g(to_storage<bf16>(g0));
      DeviceArray<float> m(start.m), v(start.v), scratch(block_adam_scratch_floats(c.part));
      block_adam_step<bf16>(params.get(), nullptr, g.get(), m.get(), v.get(), c.part,
                            hyper_at_step(1), scratch.get(), nullptr);
      return Outputs{to_floats(params.download()), m.download(), v.download()};
    });
    State ref = start;
    block_adam_step_cpu(c.part, ref.w.data(), g0.data(), ref.m.data(), ref.v.data(), hyper_at_step(1));
    tally.check("step m bf16", c.label, got[1], ref.m, kMomentTol);
    tally.check("step v bf16", c.label, got[2], ref.v, kVTol);
    EXPECT_EQ(off_bf16_grid(got[0], ref.w), 0u) << c.label << ": params not a bf16 neighbour";
  }
}

// One Element segment is AdamW: the same bits as adamw_update (same expressions, same
// stochastic-rounding index and seed).
template <typename T, typename M = float>
void check_element_is_adamw(const Case& c) {
  const size_t n = size_t(c.numel());
  const State start = start_state<T>(c, 500);
  const std::vector<float> g0 = gradient<T>(c, 501);
  BlockAdamHyper h = hyper_at_step(2);
  h.m_bf16 = std::is_same_v<M, bf16>;
  h.m_seed = 31u;
  AdamWArgs args{h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.grad_scale, h.bias_correction1,
                 h.bias_correction2, h.seed, h.m_bf16, h.m_seed};
  auto run = [&](bool block) {
    DeviceArray<T> params(to_storage<T>(start.w)), g(to_storage<T>(g0));
    DeviceArray<M> m(to_storage<M>(start.m));
    DeviceArray<float> master(start.w), v(start.v), scratch(block_adam_scratch_floats(c.part));
    if (block)
      block_adam_step<T>(params.get(), master.get(), g.get(), m.get(), v.get(), c.part, h,
                         scratch.get(), nullptr);
    else
      adamw_update<T>(params.get(), master.get(), g.get(), m.get(), v.get(), n, args, h.seed, nullptr);
    return Outputs{to_floats(params.download()), master.download(), to_floats(m.download()),
                   v.download()};
  };
  EXPECT_TRUE(bitwise_equal(run(true), run(false)))
      << c.label << " " << dtype_label<T>() << " params, " << dtype_label<M>() << " m";
}

TEST(BlockAdamKernels, ElementPartitionIsAdamWBitForBit) {
  for (const Case& c : model_cases("adamw")) {
    check_element_is_adamw<float>(c);
    check_element_is_adamw<bf16>(c);
    check_element_is_adamw<float, bf16>(c);
    check_element_is_adamw<bf16, bf16>(c);
  }
}

// ---- AdamA --------------------------------------------------------------------------------------

constexpr int kMicroBatches = 3;

FoldStatus download_status(const DeviceArray<FoldStatus>& status) { return status.download()[0]; }

// Folds kMicroBatches gradients (fold_scale 2), then applies with update clipping off and on; fp32
// or bf16 gradients and params (bf16 params with master weights).
template <typename T>
void check_folds_and_apply(uint32_t seed) {
  Tally tally;
  const std::string tag = dtype_label<T>();
  for (const Case& c : all_cases()) {
    const size_t n = size_t(c.numel());
    const State start = start_state<T>(c, seed);
    std::vector<std::vector<float>> grads;
    double raw = 0.0;
    for (int i = 0; i < kMicroBatches; ++i) {
      grads.push_back(gradient<T>(c, seed + 10 + i));
      raw += sum_of_squares(grads.back());
    }
    BlockAdamHyper h = hyper_at_step(3);
    h.fold_scale = 2.0f;
    State ref = start;
    for (int i = 0; i < kMicroBatches; ++i)
      ASSERT_TRUE(block_adam_fold_cpu(c.part, grads[size_t(i)].data(), ref.m.data(), ref.v.data(), h, i == 0));
    const double clip = std::sqrt(block_update_mean_square_cpu(c.part, ref.m.data(), ref.v.data(), h)) / 2;

    const Outputs got = run_in_both_orders([&] {
      DeviceArray<T> g(n), params(to_storage<T>(start.w)), clipped_params(to_storage<T>(start.w));
      DeviceArray<float> m(start.m), v(start.v), master(start.w), clipped_master(start.w),
          scratch(block_adam_scratch_floats(c.part));
      DeviceArray<FoldStatus> status(std::vector<FoldStatus>(1));
      for (int i = 0; i < kMicroBatches; ++i) {
        g.upload(to_storage<T>(grads[size_t(i)]));
        block_adam_fold<T>(g.get(), m.get(), v.get(), c.part, h, i == 0, status.get(),
                           scratch.get(), nullptr);
      }
      const FoldStatus s = download_status(status);
      BlockAdamHyper clipped = h;
      clipped.update_clip = float(clip);
      block_adam_apply<T>(params.get(), master.get(), m.get(), v.get(), c.part, h, scratch.get(), nullptr);
      block_adam_apply<T>(clipped_params.get(), clipped_master.get(), m.get(), v.get(), c.part,
                          clipped, scratch.get(), nullptr);
      return Outputs{m.download(), v.download(), to_floats(params.download()), master.download(),
                     to_floats(clipped_params.download()), clipped_master.download(),
                     {float(s.nonfinite), float(s.committed), float(s.raw_sum_squares)}};
    });
    tally.check("fold m " + tag, c.label, got[0], ref.m, kMomentTol);
    tally.check("fold v " + tag, c.label, got[1], ref.v, kVTol);
    EXPECT_EQ(got[6][0], 0.0f) << c.label;
    EXPECT_EQ(got[6][1], float(kMicroBatches)) << c.label;
    tally.check("fold raw_sum_squares " + tag, c.label, {got[6][2]}, {float(raw)}, {0.0, 2e-6});

    State applied = ref, clipped_ref = ref;
    block_adam_apply_cpu(c.part, applied.w.data(), ref.m.data(), ref.v.data(), h);
    BlockAdamHyper clipped = h;
    clipped.update_clip = float(clip);
    block_adam_apply_cpu(c.part, clipped_ref.w.data(), ref.m.data(), ref.v.data(), clipped);
    tally.check("apply master " + tag, c.label, got[3], applied.w, kWeightTol);
    tally.check("apply clipped master " + tag, c.label, got[5], clipped_ref.w, kWeightTol);
    if constexpr (std::is_same_v<T, float>) {
      EXPECT_TRUE(bitwise_equal({got[2], got[4]}, {got[3], got[5]})) << c.label << ": params != master";
    } else {
      EXPECT_EQ(off_bf16_grid(got[2], got[3]), 0u) << c.label;
      EXPECT_EQ(off_bf16_grid(got[4], got[5]), 0u) << c.label;
    }
  }
}

TEST(BlockAdamKernels, FoldsAndApplyMatchCpuFp32) { check_folds_and_apply<float>(600); }
TEST(BlockAdamKernels, FoldsAndApplyMatchCpuBf16) { check_folds_and_apply<bf16>(700); }

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

int64_t max_ulp_distance(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t worst = a.size() == b.size() ? 0 : INT64_MAX;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) worst = std::max(worst, ulp_distance(a[i], b[i]));
  return worst;
}

// AdamA with one micro-batch, fold_scale 1 and update clipping off is grads mode on the device
// too: the same expressions on the same block sums. Within one ulp, not bit for bit: the fold,
// apply and step kernels are compiled separately, and a compiler that forms fused multiply-adds
// (nvcc by default, g++ with -march=native) may contract the same expression differently in each.
// A clip that is not reached takes the unclipped path itself: that is bit for bit.
TEST(BlockAdamKernels, OneFoldThenApplyIsGradsMode) {
  for (const Case& c : all_cases()) {
    const State start = start_state<bf16>(c, 800);
    const std::vector<float> g0 = gradient<bf16>(c, 801);
    const BlockAdamHyper h = hyper_at_step(2);
    auto run = [&](int mode) {  // 0 grads mode, 1 fold + apply, 2 fold + apply with a far clip
      DeviceArray<bf16> params(to_storage<bf16>(start.w)), g(to_storage<bf16>(g0));
      DeviceArray<float> master(start.w), m(start.m), v(start.v),
          scratch(block_adam_scratch_floats(c.part));
      DeviceArray<FoldStatus> status(std::vector<FoldStatus>(1));
      if (mode == 0) {
        block_adam_step<bf16>(params.get(), master.get(), g.get(), m.get(), v.get(), c.part, h,
                              scratch.get(), nullptr);
      } else {
        block_adam_fold<bf16>(g.get(), m.get(), v.get(), c.part, h, true, status.get(),
                              scratch.get(), nullptr);
        BlockAdamHyper apply = h;
        apply.update_clip = mode == 2 ? 1e30f : 0.0f;
        block_adam_apply<bf16>(params.get(), master.get(), m.get(), v.get(), c.part, apply,
                               scratch.get(), nullptr);
      }
      return Outputs{to_floats(params.download()), master.download(), m.download(), v.download()};
    };
    const Outputs grads_mode = run(0), folded = run(1);
    EXPECT_LE(max_ulp_distance(folded[1], grads_mode[1]), 1) << c.label << " master";
    EXPECT_LE(max_ulp_distance(folded[2], grads_mode[2]), 1) << c.label << " m";
    EXPECT_LE(max_ulp_distance(folded[3], grads_mode[3]), 1) << c.label << " v";
    EXPECT_EQ(off_bf16_grid(folded[0], grads_mode[1]), 0u) << c.label << " params";
    EXPECT_TRUE(bitwise_equal(run(2), folded)) << c.label << " (clip not reached)";
  }
}

// A non-finite value anywhere in the tensor (a real row; for Column and Whole also a padded row,
// which their means skip) writes nothing: m and v keep their bits, nonfinite is set, committed
// and raw_sum_squares stay; and once set, a later finite fold writes nothing either.
TEST(BlockAdamKernels, NonFiniteFoldWritesNothing) {
  std::vector<Case> cases = hand_built_cases();
  for (Case& c : model_cases("adam_mini"))
    if (c.part.segments.size() > 1 || c.part.segments[0].real_rows < c.part.rows)
      cases.push_back(std::move(c));  // the qkv (three segments) and wte (padded Row)
  const float bad_values[] = {std::numeric_limits<float>::quiet_NaN(),
                              std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(), 1e30f /* square overflows */};
  for (const Case& c : cases) {
    std::vector<int64_t> positions = {c.numel() / 2 - 1};
    for (const PartitionSegment& s : c.part.segments)
      if (s.real_rows < s.rows() && (s.kind == BlockKind::Column || s.kind == BlockKind::Whole))
        positions.push_back(s.row_end * c.part.cols - 1);  // the last padded element
    const State start = start_state<float>(c, 900);
    const std::vector<float> good = gradient<float>(c, 901);
    const BlockAdamHyper h = hyper_at_step(1);
    for (float bad : bad_values)
      for (int64_t position : positions) {
        std::vector<float> poisoned = gradient<float>(c, 902);
        poisoned[size_t(position)] = bad;
        const std::string label = cat(c.label, " value ", bad, " at ", position);
        const Outputs got = run_in_both_orders([&] {
          DeviceArray<float> g(good), m(start.m), v(start.v), scratch(block_adam_scratch_floats(c.part));
          DeviceArray<FoldStatus> status(std::vector<FoldStatus>(1));
          block_adam_fold<float>(g.get(), m.get(), v.get(), c.part, h, true, status.get(),
                                 scratch.get(), nullptr);
          const std::vector<float> m1 = m.download(), v1 = v.download();
          const FoldStatus s1 = download_status(status);
          g.upload(poisoned);
          block_adam_fold<float>(g.get(), m.get(), v.get(), c.part, h, false, status.get(),
                                 scratch.get(), nullptr);
          const FoldStatus s2 = download_status(status);
          const bool untouched = bitwise_equal({m.download(), v.download()}, {m1, v1});
          g.upload(good);  // a finite fold after the bad one: must not write either
          block_adam_fold<float>(g.get(), m.get(), v.get(), c.part, h, false, status.get(),
                                 scratch.get(), nullptr);
          const FoldStatus s3 = download_status(status);
          const bool still_untouched = bitwise_equal({m.download(), v.download()}, {m1, v1});
          return Outputs{{float(s1.nonfinite), float(s1.committed)},
                         {float(s2.nonfinite), float(s2.committed), float(s2.raw_sum_squares == s1.raw_sum_squares)},
                         {float(s3.nonfinite), float(s3.committed), float(s3.raw_sum_squares == s1.raw_sum_squares)},
                         {float(untouched), float(still_untouched)}};
        });
        EXPECT_EQ(got[0], (std::vector<float>{0, 1})) << label;
        EXPECT_EQ(got[1], (std::vector<float>{1, 1, 1})) << label << ": after the bad fold";
        EXPECT_EQ(got[2], (std::vector<float>{1, 1, 1})) << label << ": after a later good fold";
        EXPECT_EQ(got[3], (std::vector<float>{1, 1})) << label << ": m or v written";
      }
  }
}

// Skipping a step: unfold the folds (recomputed gradients) and undo the decay; the state is the
// pre-step state again, up to the fp32 rounding of the folded magnitudes. Unfold and undo_decay
// also match the CPU's.
TEST(BlockAdamKernels, UnfoldAndUndoDecayRestoreThePreStepState) {
  Tally tally;
  for (const Case& c : all_cases()) {
    const State start = start_state<float>(c, 1000);
    std::vector<std::vector<float>> grads;
    for (int i = 0; i < kMicroBatches; ++i) grads.push_back(gradient<float>(c, 1010 + i));
    BlockAdamHyper h = hyper_at_step(3);
    h.fold_scale = 1.5f;
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<float> g(size_t(c.numel())), m(start.m), v(start.v),
          scratch(block_adam_scratch_floats(c.part));
      DeviceArray<FoldStatus> status(std::vector<FoldStatus>(1));
      for (int i = 0; i < kMicroBatches; ++i) {
        g.upload(grads[size_t(i)]);
        block_adam_fold<float>(g.get(), m.get(), v.get(), c.part, h, i == 0, status.get(),
                               scratch.get(), nullptr);
      }
      const std::vector<float> m_folded = m.download(), v_folded = v.download();
      for (int i = kMicroBatches - 1; i >= 0; --i) {
        g.upload(grads[size_t(i)]);
        block_adam_unfold<float>(g.get(), m.get(), v.get(), c.part, h, scratch.get(), nullptr);
      }
      const std::vector<float> m_unfolded = m.download(), v_unfolded = v.download();
      block_adam_undo_decay(m.get(), v.get(), c.part, h, nullptr);
      return Outputs{m_folded, v_folded, m_unfolded, v_unfolded, m.download(), v.download()};
    });
    State ref = start;
    for (int i = 0; i < kMicroBatches; ++i)
      block_adam_fold_cpu(c.part, grads[size_t(i)].data(), ref.m.data(), ref.v.data(), h, i == 0);
    for (int i = kMicroBatches - 1; i >= 0; --i)
      block_adam_unfold_cpu(c.part, grads[size_t(i)].data(), ref.m.data(), ref.v.data(), h);
    // Unfolding cancels: v ends far below the folded values, so the CPU's and the device's
    // different block sums leave an error of a few ulps of the folded v, not of the result.
    float m_max = 0, v_max = 0;
    for (float x : got[0]) m_max = std::max(m_max, std::fabs(x));
    for (float x : got[1]) v_max = std::max(v_max, std::fabs(x));
    tally.check("unfold m", c.label, got[2], ref.m, kMomentTol);
    tally.check("unfold v", c.label, got[3], ref.v, {1e-6 * v_max, 0.0});
    block_adam_undo_decay_cpu(c.part, ref.m.data(), ref.v.data(), h);
    tally.check("undo_decay m", c.label, got[4], ref.m, kMomentTol);
    tally.check("undo_decay v", c.label, got[5], ref.v, {1e-6 * v_max, 0.0});
    tally.check("restored m vs pre-step", c.label, got[4], start.m, {1e-6 * m_max, 0.0});
    tally.check("restored v vs pre-step", c.label, got[5], start.v, {1e-6 * v_max, 0.0});
  }
}

// An unfold checks its gradient like a fold: a non-finite one was never committed, and taking it
// out would poison the state, so nothing is written (the CPU reference throws instead; the device
// cannot throw from inside a stream).
TEST(BlockAdamKernels, UnfoldOfANonFiniteGradientWritesNothing) {
  for (const Case& c : hand_built_cases()) {
    const State start = start_state<float>(c, 1050);
    std::vector<float> g0 = gradient<float>(c, 1051);
    g0[size_t(c.numel() / 3)] = std::numeric_limits<float>::quiet_NaN();
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<float> g(g0), m(start.m), v(start.v), scratch(block_adam_scratch_floats(c.part));
      block_adam_unfold<float>(g.get(), m.get(), v.get(), c.part, hyper_at_step(2), scratch.get(),
                               nullptr);
      return Outputs{m.download(), v.download()};
    });
    EXPECT_TRUE(bitwise_equal(got, {start.m, start.v})) << c.label;
  }
}

// Update clipping with weights and weight decay at 0: the applied direction is -w_new / lr, whose
// RMS over the real elements must be the clip (the padded rows carry a large m that must not
// count); a clip above the RMS leaves the update alone.
TEST(BlockAdamKernels, UpdateClippingGivesTheClipAsTheRms) {
  Tally tally;
  for (const Case& c : all_cases()) {
    State s = start_state<float>(c, 1100);
    for (const PartitionSegment& seg : c.part.segments)
      for (int64_t r = seg.row_begin + seg.real_rows; r < seg.row_end; ++r)
        for (int64_t j = 0; j < c.part.cols; ++j) s.m[size_t(r * c.part.cols + j)] = 5.0f;
    BlockAdamHyper h = hyper_at_step(2, /*weight_decay=*/0.0f);
    const double rms = std::sqrt(block_update_mean_square_cpu(c.part, s.m.data(), s.v.data(), h));
    h.update_clip = float(rms / 3);
    const size_t n = size_t(c.numel());
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<float> w(std::vector<float>(n, 0.0f)), m(s.m), v(s.v),
          scratch(block_adam_scratch_floats(c.part));
      block_adam_apply<float>(w.get(), nullptr, m.get(), v.get(), c.part, h, scratch.get(), nullptr);
      return Outputs{w.download()};
    });
    double sum = 0.0;
    int64_t count = 0;
    for (const PartitionSegment& seg : c.part.segments)
      for (int64_t r = seg.row_begin; r < seg.row_begin + seg.real_rows; ++r)
        for (int64_t j = 0; j < c.part.cols; ++j, ++count) {
          const double u = -double(got[0][size_t(r * c.part.cols + j)]) / h.lr;
          sum += u * u;
        }
    tally.check("clipped direction rms / clip", c.label, {float(std::sqrt(sum / double(count)) / h.update_clip)},
                {1.0f}, {0.0, 2e-6});
    std::vector<float> ref(n, 0.0f);
    block_adam_apply_cpu(c.part, ref.data(), s.m.data(), s.v.data(), h);
    tally.check("clipped apply vs cpu", c.label, got[0], ref, kWeightTol);
  }
}

// ---- bf16 m
// --------------------------------------------------------------------------------------

BlockAdamHyper with_bf16_m(BlockAdamHyper h, uint32_t m_seed) {
  h.m_bf16 = true;
  h.m_seed = m_seed;
  return h;
}

// A bf16 m of the CPU reference (uint16_t bits) from bf16 values, and back.
std::vector<uint16_t> bf16_bits_of(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = uint16_t(float_bits(values[i]) >> 16);
  return bits;
}
std::vector<float> values_of(const std::vector<uint16_t>& bits) {
  std::vector<float> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = bf16_bits_to_float(bits[i]);
  return values;
}

double max_abs_of(const std::vector<float>& x) {
  double largest = 0.0;
  for (float e : x) largest = std::max(largest, double(std::fabs(e)));
  return largest;
}

// A bf16 m against the CPU reference's. Identical fp32 values round to identical bits (the same
// seed and element index on both sides). The kernels and the reference may contract
// b1*m + (1-b1)*g (or m - (1-b1)*g) differently (the reference is built with -march=native, the
// emulated kernels are not), leaving fp32 values up to an fp32 ulp of the larger term apart. Two
// such values stochastically rounded with the same random bits land on the same bf16 value or on
// neighbours, one bf16 ulp of the result apart, which is at most one bf16 ulp of `largest` (the
// largest |m| the call saw); a chain of `rounds` roundings adds at most one such ulp each. A draw
// separates them with probability about 2^-15 (16 random bits against a gap of 2^-16..2^-15 of a
// bf16 ulp; where a subtraction cancels, as in an unfold, |term| / |result| times more, which the
// margin covers for these inputs: the pre-step m is not small next to the folded terms). So:
// every element within `rounds` bf16 ulps of `largest`, and at most rounds * n / 2^13 + 4
// elements off at all (4x the expected count plus room for a handful). Keeps the worst figures
// for the report.
class MomentTally {
 public:
  void check(const std::string& quantity, const std::string& label, const std::vector<float>& got,
             const std::vector<float>& ref, int rounds, double largest) {
    ASSERT_EQ(got.size(), ref.size()) << quantity << " of " << label;
    int exponent = 0;
    std::frexp(largest, &exponent);  // largest = f * 2^exponent, f in [0.5, 1)
    const double ulp = std::ldexp(1.0, exponent - 8);
    size_t differ = 0;
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] == ref[i]) continue;
      ++differ;
      worst = std::max(worst, std::fabs(double(got[i]) - ref[i]) / ulp);
    }
    EXPECT_LE(worst, double(rounds)) << quantity << " of " << label << ": off by " << worst
                                     << " bf16 ulps of the largest |m|";
    EXPECT_LE(differ, size_t(rounds) * ref.size() / 8192 + 4)
        << quantity << " of " << label << ": " << differ << " of " << ref.size() << " differ";
    Worst& w = worst_[quantity];
    w.count += ref.size();
    w.differ += differ;
    w.ulps = std::max(w.ulps, worst);
  }
  ~MomentTally() {
    for (const auto& [quantity, w] : worst_)
      std::printf("[  errors  ] %-40s n=%-8zu bits differ in %zu, worst %.3g bf16 ulp of max|m|\n",
                  quantity.c_str(), w.count, w.differ, w.ulps);
  }

 private:
  struct Worst {
    size_t count = 0, differ = 0;
    double ulps = 0;
  };
  std::map<std::string, Worst> worst_;
};

// One grads-mode step of every case with a bf16 m (from bf16 values), fp32 params alone and bf16
// params with master weights: m's bits, v and the weights against block_adam_step_cpu (which
// applies the unrounded m, as the kernel does).
template <typename T>
void check_step_bf16_moment(bool with_master, uint32_t seed) {
  Tally tally;
  MomentTally moments;
  const std::string tag =
      std::string(dtype_label<T>()) + (with_master ? " master" : "") + ", bf16 m";
  for (const Case& c : all_cases()) {
    State start = start_state<T>(c, seed);
    start.m = round_through<bf16>(start.m);
    const std::vector<float> g0 = gradient<T>(c, seed + 1);
    const BlockAdamHyper h = with_bf16_m(hyper_at_step(2), 91u);
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<T> params(to_storage<T>(start.w)), g(to_storage<T>(g0));
      DeviceArray<bf16> m(to_storage<bf16>(start.m));
      DeviceArray<float> master(start.w), v(start.v), scratch(block_adam_scratch_floats(c.part));
      block_adam_step<T>(params.get(), with_master ? master.get() : nullptr, g.get(), m.get(),
                         v.get(), c.part, h, scratch.get(), nullptr);
      return Outputs{to_floats(params.download()), master.download(), to_floats(m.download()),
                     v.download()};
    });
    State ref = start;
    std::vector<uint16_t> m_bits = bf16_bits_of(start.m);
    block_adam_step_cpu(c.part, ref.w.data(), g0.data(), m_bits.data(), ref.v.data(), h);
    moments.check("step m " + tag, c.label, got[2], values_of(m_bits), 1,
                  std::max(max_abs_of(start.m), max_abs_of(got[2])));
    tally.check("step v " + tag, c.label, got[3], ref.v, kVTol);
    tally.check("step weights " + tag, c.label, with_master ? got[1] : got[0], ref.w, kWeightTol);
  }
}

TEST(BlockAdamKernels, StepWithABf16MomentMatchesCpu) {
  check_step_bf16_moment<float>(false, 1500);
  check_step_bf16_moment<bf16>(true, 1510);
}

// AdamA with a bf16 m, bf16 gradients and params with master weights: kMicroBatches folds (each
// with its own m seed, as the optimizer gives them), an apply with update clipping, then the skip
// protocol (unfold every fold, undo the decay). m against the CPU's fold sequence (bits), v as
// with an fp32 m; the apply and the restore against the CPU run on the device's own m and v (so
// each kernel is compared on identical inputs); the restored m within block_adam_cpu.h's bound,
// (2F + 1) / beta1 bf16 ulps of the largest |m| held.
TEST(BlockAdamKernels, FoldApplyAndUndoWithABf16MomentMatchCpu) {
  Tally tally;
  MomentTally moments;
  double worst_restore_ulps = 0.0;
  for (const Case& c : all_cases()) {
    const size_t n = size_t(c.numel());
    State start = start_state<bf16>(c, 1600);
    start.m = round_through<bf16>(start.m);
    std::vector<std::vector<float>> grads;
    for (int i = 0; i < kMicroBatches; ++i) grads.push_back(gradient<bf16>(c, 1610 + i));
    BlockAdamHyper h = hyper_at_step(3);
    h.fold_scale = 2.0f;
    auto fold_hyper = [&](int i) { return with_bf16_m(h, 100u + uint32_t(i)); };
    auto unfold_hyper = [&](int i) { return with_bf16_m(h, 200u + uint32_t(i)); };
    const BlockAdamHyper undo_hyper = with_bf16_m(h, 300u);
    BlockAdamHyper clipped = with_bf16_m(h, 0u);
    {
      State folded = start;
      std::vector<uint16_t> bits = bf16_bits_of(start.m);
      for (int i = 0; i < kMicroBatches; ++i)
        block_adam_fold_cpu(c.part, grads[size_t(i)].data(), bits.data(), folded.v.data(),
                            fold_hyper(i), i == 0);
      clipped.update_clip = float(
          std::sqrt(block_update_mean_square_cpu(c.part, bits.data(), folded.v.data(), clipped)) /
          2);
    }
    const Outputs got = run_in_both_orders([&] {
      DeviceArray<bf16> g(n), params(to_storage<bf16>(start.w)), m(to_storage<bf16>(start.m));
      DeviceArray<float> v(start.v), master(start.w), scratch(block_adam_scratch_floats(c.part));
      DeviceArray<FoldStatus> status(std::vector<FoldStatus>(1));
      for (int i = 0; i < kMicroBatches; ++i) {
        g.upload(to_storage<bf16>(grads[size_t(i)]));
        block_adam_fold<bf16>(g.get(), m.get(), v.get(), c.part, fold_hyper(i), i == 0,
                              status.get(), scratch.get(), nullptr);
      }
      const std::vector<float> m_folded = to_floats(m.download()), v_folded = v.download();
      block_adam_apply<bf16>(params.get(), master.get(), m.get(), v.get(), c.part, clipped,
                             scratch.get(), nullptr);
      for (int i = kMicroBatches - 1; i >= 0; --i) {
        g.upload(to_storage<bf16>(grads[size_t(i)]));
        block_adam_unfold<bf16>(g.get(), m.get(), v.get(), c.part, unfold_hyper(i), scratch.get(),
                                nullptr);
      }
      const std::vector<float> m_unfolded = to_floats(m.download()), v_unfolded = v.download();
      block_adam_undo_decay(m.get(), v.get(), c.part, undo_hyper, nullptr);
      return Outputs{m_folded, v_folded, to_floats(params.download()), master.download(),
                     m_unfolded, v_unfolded, to_floats(m.download()), v.download()};
    });
    // Folds: the CPU's own sequence.
    State ref = start;
    std::vector<uint16_t> bits = bf16_bits_of(start.m);
    double largest = max_abs_of(start.m);
    for (int i = 0; i < kMicroBatches; ++i) {
      ASSERT_TRUE(block_adam_fold_cpu(c.part, grads[size_t(i)].data(), bits.data(), ref.v.data(),
                                      fold_hyper(i), i == 0));
      largest = std::max(largest, max_abs_of(values_of(bits)));
    }
    moments.check("fold m, bf16 m", c.label, got[0], values_of(bits), kMicroBatches, largest);
    tally.check("fold v, bf16 m", c.label, got[1], ref.v, kVTol);
    // Apply: the CPU on the device's folded m and v.
    std::vector<float> applied = start.w;
    block_adam_apply_cpu(c.part, applied.data(), bf16_bits_of(got[0]).data(), got[1].data(),
                         clipped);
    tally.check("apply clipped master, bf16 m", c.label, got[3], applied, kWeightTol);
    EXPECT_EQ(off_bf16_grid(got[2], got[3]), 0u) << c.label;
    // Unfold and undo: the CPU from the device's folded state, step by step.
    std::vector<uint16_t> undo_bits = bf16_bits_of(got[0]);
    std::vector<float> undo_v = got[1];
    for (int i = kMicroBatches - 1; i >= 0; --i) {
      block_adam_unfold_cpu(c.part, grads[size_t(i)].data(), undo_bits.data(), undo_v.data(),
                            unfold_hyper(i));
      largest = std::max(largest, max_abs_of(values_of(undo_bits)));
    }
    moments.check("unfold m, bf16 m", c.label, got[4], values_of(undo_bits), kMicroBatches,
                  largest);
    std::vector<uint16_t> from_device = bf16_bits_of(got[4]);
    std::vector<float> v_from_device = got[5];
    block_adam_undo_decay_cpu(c.part, from_device.data(), v_from_device.data(), undo_hyper);
    moments.check("undo_decay m, bf16 m", c.label, got[6], values_of(from_device), 1, largest);
    tally.check("undo_decay v, bf16 m", c.label, got[7], v_from_device, kVTol);
    // The restore: within the bound of the pre-step m.
    int exponent = 0;
    std::frexp(largest, &exponent);
    const double ulp = std::ldexp(1.0, exponent - 8);
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i)
      worst = std::max(worst, std::fabs(double(got[6][i]) - start.m[i]));
    worst_restore_ulps = std::max(worst_restore_ulps, worst / ulp);
    EXPECT_LE(worst, (2 * kMicroBatches + 1) / double(h.beta1) * ulp) << c.label;
  }
  std::printf(
      "[  errors  ] restored bf16 m vs pre-step: worst %.2f bf16 ulps of max|m| (bound %.2f)\n",
      worst_restore_ulps, (2 * kMicroBatches + 1) / 0.9);
}

// ---- launcher checks and the scratch plan -------------------------------------------------------

TEST(BlockAdamKernels, LaunchersRejectBadArguments) {
  const TensorPartition good = one_segment("t", 8, 4, BlockKind::Row);
  DeviceArray<float> p(32), g(32), m(32), v(8), scratch(block_adam_scratch_floats(good));
  DeviceArray<FoldStatus> status(std::vector<FoldStatus>(1));
  const BlockAdamHyper h = hyper_at_step(1);
  EXPECT_NO_THROW(block_adam_step<float>(p.get(), nullptr, g.get(), m.get(), v.get(), good, h,
                                         scratch.get(), nullptr));
  float* no_m = nullptr;  // typed: the launcher's m type is deduced from it
  EXPECT_THROW(block_adam_step<float>(p.get(), nullptr, g.get(), no_m, v.get(), good, h,
                                      scratch.get(), nullptr), Error);
  EXPECT_THROW(block_adam_step<float>(p.get(), nullptr, g.get(), m.get(), v.get(), good, h,
                                      nullptr, nullptr), Error);
  BlockAdamHyper step0 = h;
  step0.bias_correction1 = 0.0f;  // 1 - beta1^0
  EXPECT_THROW(block_adam_apply<float>(p.get(), nullptr, m.get(), v.get(), good, step0,
                                       scratch.get(), nullptr), Error);
  EXPECT_THROW(block_adam_fold<float>(g.get(), m.get(), v.get(), good, h, true, nullptr,
                                      scratch.get(), nullptr), Error);
  EXPECT_THROW(block_adam_unfold<float>(g.get(), m.get(), nullptr, good, h, scratch.get(), nullptr),
               Error);
  BlockAdamHyper no_beta = h;
  no_beta.beta2 = 0.0f;
  EXPECT_THROW(block_adam_undo_decay(m.get(), v.get(), good, no_beta, nullptr), Error);
  // m's storage and hyper.m_bf16 must agree, in every launcher.
  DeviceArray<bf16> m16(32);
  BlockAdamHyper says_bf16 = h;
  says_bf16.m_bf16 = true;
  EXPECT_NO_THROW(block_adam_step<float>(p.get(), nullptr, g.get(), m16.get(), v.get(), good,
                                         says_bf16, scratch.get(), nullptr));
  EXPECT_THROW(block_adam_step<float>(p.get(), nullptr, g.get(), m16.get(), v.get(), good, h,
                                      scratch.get(), nullptr), Error);
  EXPECT_THROW(block_adam_step<float>(p.get(), nullptr, g.get(), m.get(), v.get(), good, says_bf16,
                                      scratch.get(), nullptr), Error);
  EXPECT_THROW(block_adam_fold<float>(g.get(), m16.get(), v.get(), good, h, true, status.get(),
                                      scratch.get(), nullptr), Error);
  EXPECT_THROW(block_adam_apply<float>(p.get(), nullptr, m.get(), v.get(), good, says_bf16,
                                       scratch.get(), nullptr), Error);
  EXPECT_THROW(
      block_adam_unfold<float>(g.get(), m16.get(), v.get(), good, h, scratch.get(), nullptr),
      Error);
  EXPECT_THROW(block_adam_undo_decay(m16.get(), v.get(), good, h, nullptr), Error);

  // Geometries the kernels' index math cannot take: each names the tensor.
  std::vector<TensorPartition> bad(6, good);
  bad[0].segments[0].kind = BlockKind::Head;
  bad[0].segments[0].head_dim = 3;  // does not divide 8 rows
  bad[1].segments[0].v_entries = 7;
  bad[1].v_entries = 7;  // a Row segment of 8 rows has 8
  bad[2].segments[0].row_end = 6;  // rows 6..7 uncovered
  bad[3] = one_segment("t", 8, 4, BlockKind::Whole, 0, 0);  // a mean over no rows
  bad[4].segments[0].real_rows = 9;
  bad[5].v_entries = 9;
  for (const TensorPartition& t : bad) {
    try {
      block_adam_fold<float>(g.get(), m.get(), v.get(), t, h, true, status.get(), scratch.get(), nullptr);
      ADD_FAILURE() << "accepted a bad partition";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("tensor 't'"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(simt::report_count(), 0);
}

// Scratch is O(blocks + numel / kChunk): for GPT-2 124M the largest tensor's needs are small, and
// long spans and tall columns are capped so that a mean is never a long serial sum.
TEST(BlockAdamKernels, ScratchPlanStaysSmallForGpt2) {
  const ModelConfig model;  // GPT-2 124M, Vp = 50304
  const ParamTable params = build_param_table(model);
  for (const char* optimizer : {"adamw", "adam_mini", "slim_adam"}) {
    const PartitionTable table = build_partition(optimizer, params, model, {});
    size_t most = 0;
    std::string largest;
    for (const TensorPartition& t : table.tensors)
      if (block_adam_scratch_floats(t) > most) {
        most = block_adam_scratch_floats(t);
        largest = t.tensor;
      }
    std::printf("[  errors  ] scratch %-9s largest tensor %-22s %zu floats\n", optimizer,
                largest.c_str(), most);
    // 4 header floats + two partial arrays: AdamW's wte in 1024-element chunks (37,728);
    // Adam-mini's wte, one partial per token row (50,304); SlimAdam's column-compressed MLP
    // weights, 32-row chunks of every column (96 x 768 for fc, 24 x 3072 for proj: 73,728).
    const std::string name = optimizer;
    const size_t partials = name == "adamw" ? 37728 : name == "adam_mini" ? 50304 : 73728;
    EXPECT_EQ(most, 4 + 2 * partials) << optimizer;
  }
  using namespace block_adam_detail;
  const TensorPlan whole = plan_tensor("test", one_segment("wte", 50304, 768, BlockKind::Whole, 0, 50257));
  EXPECT_EQ(whole.segments[0].spans.chunks_per_span, kMaxChunksPerSpan);
  const TensorPlan column = plan_tensor("test", one_segment("wte", 50304, 768, BlockKind::Column, 0, 50257));
  EXPECT_EQ(column.segments[0].columns.rows_per_chunk, 197);
  EXPECT_EQ(column.segments[0].columns.row_chunks, 256);
  EXPECT_EQ(column.segments[0].padding.spans * column.segments[0].padding.span_length, 47 * 768);
}

}  // namespace
}  // namespace slim::kernel_test
