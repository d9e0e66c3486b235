// AdamA accumulation (optimizer.accumulation = adama) through the model's gradient sink, on the
// CPU backend: the equivalences (one micro-batch == grads mode, m after N folds ==
// grads mode's m), the skip protocol of a non-finite fold (state restored, no weight moved),
// lagged and update clipping, and activation recompute; with a bf16 m (optimizer.m_dtype) too:
// one micro-batch folds grads mode's m and v bit for bit, the skip restores m within its rounding
// bound, and a bf16 m survives m_to_host / load_state bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "model/gpt.h"
#include "optim/optimizer.h"
#include "train/trainer.h"
#include "util/rng.h"

namespace slim {
namespace {

constexpr int kB = 2, kT = 16;

ModelConfig tiny_config() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.n_embd = 32;
  c.vocab_size = 61;
  c.padded_vocab_size = 64;
  c.max_seq_len = 16;
  c.ffn_hidden = 128;
  return c;
}

// A CPU backend that poisons one fold's gradient with a NaN: the fold with index `poison_fold`
// (0-based over the run, counting every block_adam_fold call) sees its gradient's element
// `poison_element` replaced by NaN. Everything else is the CPU backend.
class PoisoningBackend : public CpuBackend {
 public:
  long poison_fold = -1;
  size_t poison_element = 0;
  long folds = 0;
  double largest_m = 0.0;  // the largest |m| any fold left (a bf16 m's rounding scales with it)
  void block_adam_fold(const void* grads, void* m, float* v, const TensorPartition& part,
                       const BlockAdamHyper& hyper, bool first_fold, FoldStatus* status) override {
    if (folds++ != poison_fold) {
      CpuBackend::block_adam_fold(grads, m, v, part, hyper, first_fold, status);
    } else {
      std::vector<float> copy(static_cast<const float*>(grads),
                              static_cast<const float*>(grads) + part.rows * part.cols);
      copy[poison_element % copy.size()] = NAN;
      CpuBackend::block_adam_fold(copy.data(), m, v, part, hyper, first_fold, status);
    }
    for (int64_t i = 0; i < part.rows * part.cols; ++i)
      largest_m = std::max(largest_m, std::fabs(double(
          hyper.m_bf16 ? bf16_bits_to_float(static_cast<const uint16_t*>(m)[i])
                       : static_cast<const float*>(m)[i])));
  }
};

// Deterministic micro-batches: batch k of the stream.
struct Stream {
  uint64_t next = 0;
  void operator()(int* inputs, int* targets) {
    Rng rng(1000 + next++);
    for (int i = 0; i < kB * kT; ++i) {
      inputs[i] = int(rng.next_u64() % 61);
      targets[i] = int((inputs[i] * 7 + 3) % 61);
    }
  }
};

// One model + optimizer in a given mode.
struct TrainRun {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<GptModel> model;
  std::unique_ptr<Optimizer> optimizer;
  Stream stream;

  TrainRun(const std::string& kind, const std::string& accumulation, int recompute = 0,
      std::unique_ptr<Backend> custom = nullptr, const std::string& m_dtype = "fp32") {
    backend = custom ? std::move(custom) : std::make_unique<CpuBackend>();
    model = std::make_unique<GptModel>(tiny_config(), *backend);
    if (accumulation == "adama")
      model->allocate_layer_grads(nullptr);
    else
      model->allocate_grads();
    model->allocate_activations(kB, kT, recompute);
    model->init_weights(42);
    OptimizerSettings settings;
    settings.kind = kind;
    settings.accumulation = accumulation;
    settings.weight_decay = 0.1f;
    settings.m_dtype = m_dtype;
    optimizer = std::make_unique<Optimizer>(settings, *model);
    if (accumulation == "adama")
      model->set_grad_sink([this](size_t i, const void* g) { optimizer->fold(i, g); });
  }
  StepResult step(int accum, float lr, const ClipPolicy& clip = {}) {
    return train_step(*model, *optimizer, std::ref(stream), kB, kT, accum, lr, clip);
  }
};

// ||a - b|| / ||b||.
double norm_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

TEST(AdamA, OneMicroBatchIsGradsModeBitForBit) {
  for (const char* kind : {"adamw", "adam_mini", "slim_adam"}) {
    TrainRun grads(kind, "grads"), adama(kind, "adama");
    for (int step = 0; step < 3; ++step) {
      const StepResult a = grads.step(1, 1e-2f), b = adama.step(1, 1e-2f);
      ASSERT_TRUE(a.updated && b.updated) << kind;
      EXPECT_EQ(a.loss, b.loss) << kind << " step " << step;
    }
    EXPECT_EQ(grads.model->params_to_host(), adama.model->params_to_host()) << kind;
    EXPECT_EQ(grads.optimizer->m_to_host(), adama.optimizer->m_to_host()) << kind;
    EXPECT_EQ(grads.optimizer->v_to_host(), adama.optimizer->v_to_host()) << kind;
  }
}

TEST(AdamA, MomentAfterNFoldsIsGradsModesMoment) {
  // m is linear in the gradient: folding 4 micro-batches gives grads mode's m up to the fp32
  // rounding of a sum taken in a different order. v is not (sum of squares vs square of sum).
  for (const char* kind : {"adamw", "adam_mini"}) {
    TrainRun grads(kind, "grads"), adama(kind, "adama");
    grads.step(4, 1e-2f);
    adama.step(4, 1e-2f);
    const std::vector<float> m_grads = grads.optimizer->m_to_host(),
                             m_adama = adama.optimizer->m_to_host();
    double worst_abs = 0, largest = 0;
    for (size_t i = 0; i < m_grads.size(); ++i) {
      worst_abs = std::max(worst_abs, std::fabs(double(m_grads[i]) - m_adama[i]));
      largest = std::max(largest, std::fabs(double(m_grads[i])));
    }
    EXPECT_LT(worst_abs, 1e-6 * largest) << kind << ": largest |m| " << largest;
    EXPECT_NE(grads.optimizer->v_to_host(), adama.optimizer->v_to_host())
        << kind << ": v of AdamA is a sum of squares, grads mode's the square of the sum";
  }
}

void expect_restored(const std::vector<float>& before, const std::vector<float>& after,
                     const char* what) {
  double largest = 0, worst = 0;
  for (float x : before) largest = std::max(largest, double(std::fabs(x)));
  for (size_t i = 0; i < before.size(); ++i)
    worst = std::max(worst, std::fabs(double(before[i]) - after[i]));
  EXPECT_LE(worst, 1e-6 * largest) << what << ": worst |diff| " << worst << " of largest "
                                   << largest;
}

TEST(AdamA, NonFiniteFoldSkipsTheStepAndRestoresTheState) {
  const int accum = 3;
  const size_t tensors = build_param_table(tiny_config()).params.size();
  // Poison (a) the first fold of the step (nothing committed), (b) a fold in the middle of
  // micro-batch 0 (some tensors decayed, some not), (c) micro-batch 2 (two whole micro-batches
  // committed before it).
  for (long fold_in_step : {0L, long(tensors / 2), long(2 * tensors + 5)}) {
    auto backend = std::make_unique<PoisoningBackend>();
    PoisoningBackend* poison = backend.get();
    TrainRun run("adam_mini", "adama", 0, std::move(backend));
    TrainRun reference("adam_mini", "adama");
    // Two clean steps first, so m and v hold something to restore.
    for (int i = 0; i < 2; ++i) {
      run.step(accum, 1e-2f);
      reference.step(accum, 1e-2f);
    }
    const std::vector<float> params = run.model->params_to_host(), m = run.optimizer->m_to_host(),
                             v = run.optimizer->v_to_host();
    poison->poison_fold = poison->folds + fold_in_step;
    poison->poison_element = 17;
    const StepResult skipped = run.step(accum, 1e-2f);
    EXPECT_TRUE(skipped.skipped) << fold_in_step;
    EXPECT_FALSE(skipped.updated);
    EXPECT_EQ(skipped.bad_micro_batch, int(fold_in_step / long(tensors)));
    EXPECT_EQ(run.optimizer->steps_taken(), 2);
    EXPECT_EQ(run.model->params_to_host(), params) << "no weight may move in a skipped step";
    expect_restored(m, run.optimizer->m_to_host(), "m");
    expect_restored(v, run.optimizer->v_to_host(), "v");
    // The run goes on: the next step (fresh data) is a normal step; it matches a run that
    // skipped the same data in the same place, up to the restore's rounding.
    reference.stream.next += accum;
    const StepResult next = run.step(accum, 1e-2f), ref = reference.step(accum, 1e-2f);
    EXPECT_TRUE(next.updated);
    EXPECT_NEAR(next.loss, ref.loss, 1e-6);
    EXPECT_LT(norm_rel_diff(run.model->params_to_host(), reference.model->params_to_host()), 1e-6);
  }
}

// A bf16 m: the first fold of a step rounds with the grads-mode step's m seed, so with one
// micro-batch AdamA's m (and v) is grads mode's bit for bit. The weights are not: a grads-mode
// step applies the fp32 m it computed, AdamA's apply the stored (rounded) m, so their changes
// differ by the rounding, under one bf16 ulp (2^-7) of m per element, 2^-8 norm-wise at most
// (stochastic rounding's RMS is below half an ulp).
TEST(AdamA, OneMicroBatchFoldsGradsModesMomentWithABf16Moment) {
  for (const char* kind : {"adamw", "slim_adam"}) {
    TrainRun grads(kind, "grads", 0, nullptr, "bf16"), adama(kind, "adama", 0, nullptr, "bf16");
    EXPECT_EQ(grads.optimizer->m_dtype(), DType::BF16);
    const std::vector<float> before = grads.model->params_to_host();
    const StepResult a = grads.step(1, 1e-2f), b = adama.step(1, 1e-2f);
    ASSERT_TRUE(a.updated && b.updated) << kind;
    EXPECT_EQ(a.loss, b.loss) << kind;
    const std::vector<float> m = adama.optimizer->m_to_host();
    EXPECT_EQ(grads.optimizer->m_to_host(), m) << kind;
    EXPECT_EQ(grads.optimizer->v_to_host(), adama.optimizer->v_to_host()) << kind;
    std::vector<float> change_grads = grads.model->params_to_host(),
                       change_adama = adama.model->params_to_host();
    for (size_t i = 0; i < before.size(); ++i) {
      change_grads[i] -= before[i];
      change_adama[i] -= before[i];
    }
    const double relative = norm_rel_diff(change_adama, change_grads);
    std::printf("[  errors  ] %s: one micro-batch, bf16 m: weight change of adama vs grads "
                "rel=%.3e (bound 2^-8)\n", kind, relative);
    EXPECT_LT(relative, 1.0 / 256) << kind;
    // Stored in bf16: every m is a bf16 value, and most are nonzero.
    size_t off_grid = 0, nonzero = 0;
    for (float x : m) {
      off_grid += (float_bits(x) & 0xffffu) != 0;
      nonzero += x != 0.0f;
    }
    EXPECT_EQ(off_grid, 0u) << kind;
    EXPECT_GT(nonzero, m.size() / 2) << kind;
    // A checkpoint round trip (fp32 host copy, rounded to nearest on load) keeps every bit.
    adama.optimizer->load_state(m, adama.optimizer->v_to_host(), {}, adama.optimizer->steps_taken(),
                                adama.optimizer->proxy_sum_squares());
    EXPECT_EQ(adama.optimizer->m_to_host(), m) << kind;
  }
}

// The skip protocol with a bf16 m: no weight moves, v comes back as with an fp32 m, and m within
// the bound of block_adam_cpu.h: (2F + 1) / beta1 bf16 ulps of the largest |m| held, F the folds
// committed (here up to 2 micro-batches of folds of each tensor, so F <= 3 per tensor).
TEST(AdamA, NonFiniteFoldSkipWithABf16MomentRestoresMWithinItsRoundingBound) {
  const int accum = 3;
  const size_t tensors = build_param_table(tiny_config()).params.size();
  auto backend = std::make_unique<PoisoningBackend>();
  PoisoningBackend* poison = backend.get();
  TrainRun run("adam_mini", "adama", 0, std::move(backend), "bf16");
  for (int i = 0; i < 2; ++i) run.step(accum, 1e-2f);
  const std::vector<float> params = run.model->params_to_host(), m = run.optimizer->m_to_host(),
                           v = run.optimizer->v_to_host();
  poison->poison_fold = poison->folds + long(2 * tensors + 5);  // in micro-batch 2
  poison->poison_element = 17;
  poison->largest_m = 0.0;  // of this step's folds only
  const StepResult skipped = run.step(accum, 1e-2f);
  ASSERT_TRUE(skipped.skipped);
  EXPECT_EQ(run.model->params_to_host(), params) << "no weight may move in a skipped step";
  expect_restored(v, run.optimizer->v_to_host(), "v");
  const std::vector<float> restored = run.optimizer->m_to_host();
  double largest = poison->largest_m, worst = 0;
  for (size_t i = 0; i < m.size(); ++i) {
    largest = std::max(largest, double(std::fabs(m[i])));
    worst = std::max(worst, std::fabs(double(m[i]) - restored[i]));
  }
  int exponent = 0;
  std::frexp(largest, &exponent);  // largest = f * 2^exponent, f in [0.5, 1)
  const double ulp = std::ldexp(1.0, exponent - 8), bound = (2 * 3 + 1) / 0.9 * ulp;
  std::printf("[  errors  ] bf16 m after a skipped step: worst |diff| %.3g = %.2f bf16 ulps of the "
              "largest |m| held (bound %.2f)\n", worst, worst / ulp, bound / ulp);
  EXPECT_LE(worst, bound);
}

TEST(AdamA, LaggedClippingScalesFoldsByThePreviousProxyNorm) {
  TrainRun run("adamw", "adama");
  const ClipPolicy clip{"lagged", 0.05f};
  const StepResult first = run.step(2, 1e-3f, clip);
  EXPECT_EQ(first.grad_scale, 1.0f) << "no proxy before the first step";
  EXPECT_GT(first.grad_norm, 0.05) << "the test needs a norm above the threshold";
  EXPECT_NEAR(run.optimizer->proxy_sum_squares(), first.grad_norm * first.grad_norm,
              1e-9 * first.grad_norm * first.grad_norm);
  const StepResult second = run.step(2, 1e-3f, clip);
  EXPECT_FLOAT_EQ(second.grad_scale, float(0.05 / first.grad_norm));
  // With one micro-batch the proxy is the exact gradient norm: lagged clipping is global-norm
  // clipping with the previous step's norm.
  TrainRun single("adamw", "adama"), exact("adamw", "grads");
  const StepResult s1 = single.step(1, 1e-3f, clip), e1 = exact.step(1, 1e-3f, {});
  EXPECT_NEAR(s1.grad_norm, e1.grad_norm, 1e-6 * e1.grad_norm);
}

TEST(AdamA, UpdateClippingLimitsEachTensorsUpdateRms) {
  // lnf.bias has no weight decay, so its change is exactly -lr * scale * u; with a tiny clip
  // every tensor is clipped and the RMS of the change is lr * clip.
  const float lr = 1e-2f, clip = 1e-3f;
  TrainRun run("adam_mini", "adama");
  const ParamInfo& bias = run.model->table().find("lnf.bias");
  const std::vector<float> before = run.model->params_to_host();
  run.step(2, lr, ClipPolicy{"update", clip});
  const std::vector<float> after = run.model->params_to_host();
  double sum = 0;
  for (size_t i = 0; i < bias.numel; ++i) {
    const double d = double(after[bias.offset + i]) - before[bias.offset + i];
    sum += d * d;
  }
  EXPECT_NEAR(std::sqrt(sum / bias.numel), double(lr) * clip, 1e-3 * lr * clip);
}

TEST(Recompute, GeluAndLayerNormRecomputeGiveTheSameStepsWithLessMemory) {
  TrainRun keep("adamw", "grads", 0), gelu("adamw", "grads", 1), both("adamw", "grads", 2);
  for (int i = 0; i < 3; ++i) {
    const double a = keep.step(2, 1e-2f).loss, b = gelu.step(2, 1e-2f).loss,
                 c = both.step(2, 1e-2f).loss;
    EXPECT_EQ(a, b) << "GELU recompute repeats the same elementwise op";
    EXPECT_NEAR(a, c, 1e-6 * std::fabs(a));
  }
  EXPECT_EQ(keep.model->params_to_host(), gelu.model->params_to_host());
  EXPECT_LT(norm_rel_diff(keep.model->params_to_host(), both.model->params_to_host()), 1e-4);
  const ModelConfig c = tiny_config();
  const size_t L = c.n_layer, BT = kB * kT, X = 4;
  const size_t a0 = keep.backend->allocator().bytes(MemTag::Activations),
               a1 = gelu.backend->allocator().bytes(MemTag::Activations),
               a2 = both.backend->allocator().bytes(MemTag::Activations);
  EXPECT_EQ(a0 - a1, (L - 1) * BT * c.ffn_hidden * X);
  EXPECT_EQ(a1 - a2, 2 * (L - 1) * BT * c.n_embd * X);
}

TEST(AdamA, NoFullGradientBuffer) {
  TrainRun grads("adam_mini", "grads"), adama("adam_mini", "adama");
  const ModelConfig c = tiny_config();
  const size_t n = grads.model->num_params();
  EXPECT_EQ(grads.backend->allocator().bytes(MemTag::Grads), n * 4);
  // One block's tensors plus wte, wpe and lnf.
  const size_t C = c.n_embd, F = c.ffn_hidden;
  const size_t block = 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + F * C + F + C * F + C;
  const size_t outer = size_t(c.padded_vocab_size) * C + size_t(c.max_seq_len) * C + 2 * C;
  EXPECT_EQ(adama.backend->allocator().bytes(MemTag::Grads), (block + outer) * 4);
}

}  // namespace
}  // namespace slim
