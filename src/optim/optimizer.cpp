#include "optim/optimizer.h"

#include <cmath>

#include "util/error.h"
#include "util/hash.h"

namespace slim {

namespace {

// Whether settings.m_dtype asks for a bf16 m; anything but fp32 and bf16 is a UsageError.
bool moment_is_bf16(const OptimizerSettings& settings) {
  if (settings.m_dtype != "fp32" && settings.m_dtype != "bf16")
    throw UsageError(cat("optimizer.m_dtype \"", settings.m_dtype,
                         "\" is not valid; use fp32 or bf16"));
  return settings.m_dtype == "bf16";
}

}  // namespace

Optimizer::Optimizer(const OptimizerSettings& settings, GptModel& model)
    : settings_(settings),
      model_(model),
      backend_(model.backend()),
      partition_(build_partition(settings.kind, model.table(), model.config(), settings.partition)),
      m_bf16_(moment_is_bf16(settings)) {
  if (settings_.accumulation != "grads" && settings_.accumulation != "adama")
    throw UsageError(cat("optimizer.accumulation \"", settings_.accumulation,
                         "\" is not valid; use grads or adama"));
  const std::vector<BufferPlan> plan =
      state_plan(settings_, model_.config(), backend_.compute_dtype());
  auto take = [&](size_t i) {
    void* ptr = backend_.alloc(plan[i].bytes, plan[i].tag, plan[i].what);
    backend_.zero(ptr, plan[i].bytes);
    return ptr;
  };
  m_ = take(0);
  v_ = static_cast<float*>(take(1));
  for (size_t i = 2; i < plan.size(); ++i) {
    if (plan[i].tag == MemTag::Master) {
      master_ = static_cast<float*>(take(i));
      const std::vector<float> weights = model_.params_to_host();
      backend_.upload(master_, weights.data(), weights.size() * 4);
    } else {
      status_ = static_cast<FoldStatus*>(take(i));
    }
  }
  if (adama()) folds_this_step_.assign(model_.table().params.size(), 0);
  backend_.reserve_optimizer_workspace(partition_);
}

std::vector<BufferPlan> Optimizer::state_plan(const OptimizerSettings& settings,
                                              const ModelConfig& model, DType compute_dtype) {
  const ParamTable table = build_param_table(model);
  const PartitionTable partition =
      build_partition(settings.kind, table, model, settings.partition);
  const size_t n = table.total_numel;
  const bool m_bf16 = moment_is_bf16(settings);
  std::vector<BufferPlan> plan = {
      {settings.kind + (m_bf16 ? " m (bf16)" : " m"), MemTag::OptM, n * (m_bf16 ? 2 : 4)},
      {settings.kind + " v", MemTag::OptV, size_t(partition.total_v) * 4}};
  if (compute_dtype != DType::F32 && settings.master_weights)
    plan.push_back({"master weights", MemTag::Master, n * 4});
  if (settings.accumulation == "adama")
    plan.push_back({"AdamA fold status", MemTag::Workspace, sizeof(FoldStatus)});
  return plan;
}

Optimizer::~Optimizer() {
  for (void* ptr : {m_, (void*)v_, (void*)master_, (void*)status_}) backend_.release(ptr);
}

uint32_t Optimizer::rounding_seed(int64_t t, size_t param_index) const {
  // Distinct per run seed, step and tensor, so no two roundings share random bits; reproducible,
  // so a resumed run rounds exactly as the uninterrupted one.
  const uint64_t key[3] = {settings_.seed, uint64_t(t), uint64_t(param_index)};
  return uint32_t(hash64(key, sizeof key, 0x5eed));
}

uint32_t Optimizer::moment_seed(int64_t t, size_t param_index, MomentWrite write,
                                uint64_t count) const {
  // Another hash salt than rounding_seed's, so a weight and its m never share a draw.
  const uint64_t key[5] = {settings_.seed, uint64_t(t), uint64_t(param_index), uint64_t(write),
                           count};
  return uint32_t(hash64(key, sizeof key, 0x3e3d));
}

BlockAdamHyper Optimizer::hyper_for(const ParamInfo& p, float lr, float grad_scale, int64_t t,
                                    MomentWrite write, uint64_t count) const {
  BlockAdamHyper h;
  h.lr = lr;
  h.beta1 = settings_.beta1;
  h.beta2 = settings_.beta2;
  h.eps = settings_.eps;
  h.weight_decay = p.weight_decay ? settings_.weight_decay : 0.0f;
  h.grad_scale = grad_scale;
  h.bias_correction1 = float(1.0 - std::pow(double(settings_.beta1), double(t)));
  h.bias_correction2 = float(1.0 - std::pow(double(settings_.beta2), double(t)));
  h.fold_scale = settings_.adama_scale;
  const size_t index = size_t(&p - model_.table().params.data());
  h.seed = rounding_seed(t, index);
  h.m_bf16 = m_bf16_;
  h.m_seed = m_bf16_ ? moment_seed(t, index, write, count) : 0;
  return h;
}

void Optimizer::step(float lr, float grad_scale) {
  SLIM_CHECK(!adama(), "Optimizer::step is the grads-mode update; adama uses fold/apply");
  ++t_;
  const auto& params = model_.table().params;
  if (settings_.kind == "adamw") {
    // Per-element v: the plain fused AdamW kernel (bitwise what an all-Element partition gives).
    for (const ParamInfo& p : params) {
      const BlockAdamHyper h = hyper_for(p, lr, grad_scale, t_);
      AdamWArgs args;
      args.lr = h.lr;
      args.beta1 = h.beta1;
      args.beta2 = h.beta2;
      args.eps = h.eps;
      args.weight_decay = h.weight_decay;
      args.grad_scale = h.grad_scale;
      args.bias_correction1 = h.bias_correction1;
      args.bias_correction2 = h.bias_correction2;
      args.seed = h.seed;
      args.m_bf16 = h.m_bf16;
      args.m_seed = h.m_seed;
      backend_.adamw_update(model_.param_ptr(p), master_ptr(p), model_.grad_ptr(p), m_ptr(p),
                            v_ + p.offset, p.numel, args);
    }
    return;
  }
  for (const TensorPartition& part : partition_.tensors) {
    const ParamInfo& p = params[part.param_index];
    backend_.block_adam_step(model_.param_ptr(p), master_ptr(p), model_.grad_ptr(p), m_ptr(p),
                             v_ + part.v_offset, part, hyper_for(p, lr, grad_scale, t_));
  }
}

void Optimizer::begin_folds(float grad_scale) {
  SLIM_CHECK(adama(), "begin_folds needs optimizer.accumulation = adama");
  fold_grad_scale_ = grad_scale;
  std::fill(folds_this_step_.begin(), folds_this_step_.end(), 0);
  fold_log_.clear();
  undoing_ = false;
  backend_.zero(status_, sizeof(FoldStatus));
}

void Optimizer::fold(size_t param_index, const void* grad) {
  const ParamInfo& p = model_.table().params[param_index];
  const TensorPartition& part = partition_.tensors[param_index];
  // The step being folded is t_+1; only grad_scale and fold_scale matter to a fold (and, for a
  // bf16 m, which fold or unfold this is: each rounds with its own bits).
  if (undoing_) {
    if (undo_next_ >= undo_count_) return;  // past the committed folds: nothing to take back
    SLIM_CHECK(fold_log_[undo_next_].first == param_index,
               "AdamA undo: the replayed backward handed over tensor ", p.name, " where the step "
               "had folded ", model_.table().params[fold_log_[undo_next_].first].name);
    backend_.block_adam_unfold(
        grad, m_ptr(p), v_ + part.v_offset, part,
        hyper_for(p, 0.0f, fold_grad_scale_, t_ + 1, MomentWrite::Unfold, undo_next_));
    ++undo_next_;
    return;
  }
  const int fold_of_tensor = folds_this_step_[param_index]++;
  const bool first = fold_of_tensor == 0;
  fold_log_.emplace_back(param_index, first);
  backend_.block_adam_fold(
      grad, m_ptr(p), v_ + part.v_offset, part,
      hyper_for(p, 0.0f, fold_grad_scale_, t_ + 1, MomentWrite::Update, uint64_t(fold_of_tensor)),
      first, status_);
}

FoldStatus Optimizer::fold_status() const {
  FoldStatus status;
  backend_.download(&status, status_, sizeof status);
  return status;
}

void Optimizer::apply(float lr, float update_clip) {
  SLIM_CHECK(adama(), "apply needs optimizer.accumulation = adama");
  const FoldStatus status = fold_status();
  SLIM_CHECK(!status.nonfinite, "AdamA apply after a non-finite fold; undo_folds instead");
  const auto& params = model_.table().params;
  for (size_t i = 0; i < params.size(); ++i)
    SLIM_CHECK(folds_this_step_[i] > 0, "AdamA apply: tensor ", params[i].name,
               " received no gradient this step");
  ++t_;
  for (const TensorPartition& part : partition_.tensors) {
    const ParamInfo& p = params[part.param_index];
    BlockAdamHyper h = hyper_for(p, lr, 1.0f, t_);
    h.update_clip = update_clip;
    backend_.block_adam_apply(model_.param_ptr(p), master_ptr(p), m_ptr(p), v_ + part.v_offset,
                              part, h);
  }
  proxy_sum_squares_ = status.raw_sum_squares;
}

void Optimizer::undo_folds(const std::function<void(int micro_batch)>& replay) {
  const FoldStatus status = fold_status();
  const size_t committed = size_t(status.committed);
  SLIM_CHECK(committed <= fold_log_.size(), "AdamA undo: more committed folds than fold calls");
  const size_t per_micro_batch = model_.table().params.size();
  undoing_ = true;
  undo_next_ = 0;
  undo_count_ = committed;
  // Micro-batch i's folds are entries [i*n, (i+1)*n) of the log: replay those holding commits.
  for (int micro = 0; size_t(micro) * per_micro_batch < committed; ++micro) replay(micro);
  undoing_ = false;
  SLIM_CHECK(undo_next_ == committed, "AdamA undo: the replay handed over ", undo_next_,
             " of the ", committed, " committed folds");
  // The decay happened at each tensor's first committed fold.
  const auto& params = model_.table().params;
  for (size_t i = 0; i < committed; ++i) {
    if (!fold_log_[i].second) continue;
    const size_t index = fold_log_[i].first;
    const ParamInfo& p = params[index];
    const TensorPartition& part = partition_.tensors[index];
    backend_.block_adam_undo_decay(
        m_ptr(p), v_ + part.v_offset, part,
        hyper_for(p, 0.0f, fold_grad_scale_, t_ + 1, MomentWrite::UndoDecay, 0));
  }
  backend_.zero(status_, sizeof(FoldStatus));
  std::fill(folds_this_step_.begin(), folds_this_step_.end(), 0);
  fold_log_.clear();
}

std::vector<float> Optimizer::m_to_host() const {
  std::vector<float> host(model_.num_params());
  if (!m_bf16_) {
    backend_.download(host.data(), m_, host.size() * 4);
    return host;
  }
  std::vector<uint16_t> bits(host.size());
  backend_.download(bits.data(), m_, bits.size() * 2);
  for (size_t i = 0; i < bits.size(); ++i) host[i] = bf16_bits_to_float(bits[i]);
  return host;
}

std::vector<float> Optimizer::v_to_host() const {
  std::vector<float> host(v_entries());
  backend_.download(host.data(), v_, host.size() * 4);
  return host;
}

std::vector<float> Optimizer::master_to_host() const {
  if (!master_) return {};
  std::vector<float> host(model_.num_params());
  backend_.download(host.data(), master_, host.size() * 4);
  return host;
}

void Optimizer::load_state(const std::vector<float>& m, const std::vector<float>& v,
                           const std::vector<float>& master, int64_t steps_taken,
                           double proxy_sum_squares) {
  SLIM_CHECK(m.size() == model_.num_params() && v.size() == v_entries(),
             "optimizer state size mismatch");
  if (m_bf16_) {
    // Round to nearest, not stochastically: a bf16 m saved by m_to_host comes back bit for bit,
    // and an fp32 m (a checkpoint of an fp32-m run) loses the least.
    std::vector<uint16_t> bits(m.size());
    for (size_t i = 0; i < m.size(); ++i) bits[i] = round_to_nearest_bf16_bits(m[i]);
    backend_.upload(m_, bits.data(), bits.size() * 2);
  } else {
    backend_.upload(m_, m.data(), m.size() * 4);
  }
  backend_.upload(v_, v.data(), v.size() * 4);
  if (master_) {
    if (master.size() == model_.num_params()) {
      backend_.upload(master_, master.data(), master.size() * 4);
    } else {
      // A checkpoint from a run without master weights: start them from the weights.
      const std::vector<float> weights = model_.params_to_host();
      backend_.upload(master_, weights.data(), weights.size() * 4);
    }
  }
  t_ = steps_taken;
  proxy_sum_squares_ = proxy_sum_squares;
}

}  // namespace slim
