// The optimizer state and update of a run: AdamW, Adam-mini or SlimAdam, in either accumulation
// mode (OPTIMIZERS.md sections 1-5):
//   grads: the model sums micro-batch gradients into a full buffer; step() updates every tensor.
//   adama: the model hands each micro-batch's gradient of each tensor to fold() the moment it is
//          final (GptModel::allocate_layer_grads); fold() folds it into m and v (the first fold
//          of a step decays them once); apply() then updates the weights. No full-model gradient
//          buffer exists.
// It owns m (one entry per parameter, fp32 or bf16: settings.m_dtype), v (fp32, one entry per
// block of the partition: per element for AdamW, per head/row/column/tensor for the memory-lean
// kinds), the fp32 master weights when the backend computes in bf16 (unless master_weights is
// off), and AdamA's FoldStatus, all through the tagged allocator. The leanest layout, bf16 weights
// without master weights and a bf16 m, holds about 4 bytes of training state per parameter with
// Adam-mini or SlimAdam (2 for the weights, 2 for m, v negligible) plus the gradients.
//
// Stochastic-rounding seeds: every call that rounds gets seeds derived from (settings.seed, step,
// tensor): rounding_seed for the weights, moment_seed for a bf16 m. moment_seed also takes what
// the call does to m and which of the step's folds of the tensor it is, so AdamA's folds of one
// step (and the undo of a skipped step) each draw their own bits; a grads-mode step and the first
// fold of a step share theirs, so AdamA with one micro-batch stores grads mode's m bit for bit
// (its weights differ by m's rounding: a grads-mode step applies the fp32 m it computed, AdamA's
// apply can only read the stored one). All are pure functions of the run's position, so a
// resumed run rounds exactly as the uninterrupted one.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/gpt.h"
#include "optim/partition.h"

namespace slim {

struct OptimizerSettings {
  std::string kind = "adamw";          // adamw | adam_mini | slim_adam
  std::string accumulation = "grads";  // grads | adama
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  float adama_scale = 1.0f;            // AdamA's s (section 5.2): v += (1-b2)*s*mean(g_i^2)
  bool master_weights = true;          // fp32 master copy when the backend computes in bf16
  std::string m_dtype = "fp32";        // fp32 | bf16: storage of the first moment m
  uint64_t seed = 0;                   // stochastic-rounding seeds derive from it
  PartitionOptions partition;
};

class Optimizer {
 public:
  // Allocates the state; with master weights, copies the model's current weights into them (so
  // construct after the weights are initialized or loaded).
  Optimizer(const OptimizerSettings& settings, GptModel& model);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Exactly the buffers the constructor allocates (m, v, master weights, fold status), in that
  // order, without building anything: the memory planner sums these.
  static std::vector<BufferPlan> state_plan(const OptimizerSettings& settings,
                                            const ModelConfig& model, DType compute_dtype);

  bool adama() const { return settings_.accumulation == "adama"; }
  bool has_master() const { return master_ != nullptr; }
  DType m_dtype() const { return m_bf16_ ? DType::BF16 : DType::F32; }

  // grads mode: one update of every tensor from the model's gradient buffer. grad_scale
  // multiplies the gradient first (global-norm clipping). Increments the step count t.
  void step(float lr, float grad_scale);

  // ---- adama ------------------------------------------------------------------------------
  // Starts a step: clears the fold status; every fold of the step multiplies its gradient by
  // grad_scale (clipping) before folding.
  void begin_folds(float grad_scale);
  // The model's gradient sink: folds one tensor's micro-batch gradient (the first fold of the
  // tensor in this step decays its state). During undo_folds it takes the fold back out instead.
  void fold(size_t param_index, const void* grad);
  // The status of the step's folds so far (one small download).
  FoldStatus fold_status() const;
  // Updates every tensor from the folded m and v; update_clip > 0 clips each tensor's update RMS.
  // Increments t. Returns nothing: a step with a non-finite fold must go to undo_folds instead.
  void apply(float lr, float update_clip);
  // Skips the step after a non-finite fold: restores m and v to their values before the step's
  // first fold. replay(i) must rerun forward+backward of micro-batch i of this step with the same
  // weights and data (the backward is deterministic, so the model hands over the same gradients,
  // which fold() now takes back out; only the folds that were committed are undone), then the
  // first fold's decay is divided out. Exact up to fp32 rounding; a bf16 m comes back within
  // (2F + 1) / beta1 bf16 ulps of its largest value during the step, F the tensor's committed
  // folds (see block_adam_cpu.h).
  void undo_folds(const std::function<void(int micro_batch)>& replay);
  // The lagged clipping proxy: sum over the last applied step's folds of ||g_i||^2 (unscaled);
  // 0 before the first step.
  double proxy_sum_squares() const { return proxy_sum_squares_; }

  int64_t steps_taken() const { return t_; }
  const PartitionTable& partition() const { return partition_; }
  size_t v_entries() const { return size_t(partition_.total_v); }

  // Checkpoint state: fp32 host copies of m, v and the master weights (empty without), the step
  // count and the lagged-clipping proxy. A bf16 m widens to fp32 exactly; load_state rounds an
  // fp32 m to the nearest bf16 (ties to even), so a bf16 m saved and loaded keeps its bits.
  std::vector<float> m_to_host() const;
  std::vector<float> v_to_host() const;
  std::vector<float> master_to_host() const;
  void load_state(const std::vector<float>& m, const std::vector<float>& v,
                  const std::vector<float>& master, int64_t steps_taken, double proxy_sum_squares);

 private:
  // What a call does to m, for moment_seed: a step or fold writes m, an unfold takes a fold back
  // out, an undo divides the decay out.
  enum class MomentWrite : uint64_t { Update = 0, Unfold = 1, UndoDecay = 2 };

  // The hyperparameters of step t for tensor p; a bf16 m's seed is moment_seed(t, p, write, count).
  BlockAdamHyper hyper_for(const ParamInfo& p, float lr, float grad_scale, int64_t t,
                           MomentWrite write = MomentWrite::Update, uint64_t count = 0) const;
  uint32_t rounding_seed(int64_t t, size_t param_index) const;
  // count: which of the step's folds of the tensor (Update), which fold log entry (Unfold).
  uint32_t moment_seed(int64_t t, size_t param_index, MomentWrite write, uint64_t count) const;
  float* master_ptr(const ParamInfo& p) { return master_ ? master_ + p.offset : nullptr; }
  // m of tensor p (its element size is 2 bytes for a bf16 m, else 4).
  void* m_ptr(const ParamInfo& p) const {
    return static_cast<char*>(m_) + p.offset * dtype_size(m_dtype());
  }

  OptimizerSettings settings_;
  GptModel& model_;
  Backend& backend_;
  PartitionTable partition_;
  void* m_ = nullptr;  // fp32 or bf16 (m_bf16_)
  bool m_bf16_ = false;
  float* v_ = nullptr;
  float* master_ = nullptr;
  int64_t t_ = 0;

  // adama
  FoldStatus* status_ = nullptr;      // backend memory
  float fold_grad_scale_ = 1.0f;
  std::vector<int> folds_this_step_;  // per tensor
  std::vector<std::pair<size_t, bool>> fold_log_;  // (tensor, first fold) of each fold call
  bool undoing_ = false;
  size_t undo_next_ = 0, undo_count_ = 0;
  double proxy_sum_squares_ = 0.0;
};

}  // namespace slim
