#include "optim/optimizer.h"

#include <cmath>

#include "util/error.h"

namespace slim {

Optimizer::Optimizer(const OptimizerSettings& settings, GptModel& model)
    : settings_(settings),
      model_(model),
      backend_(model.backend()),
      partition_(build_partition(settings.kind, model.table(), model.config(), settings.partition)) {
  const size_t n = model_.num_params(), nv = v_entries();
  m_ = static_cast<float*>(backend_.alloc(n * 4, MemTag::OptM, settings_.kind + " m"));
  v_ = static_cast<float*>(backend_.alloc(nv * 4, MemTag::OptV, settings_.kind + " v"));
  backend_.zero(m_, n * 4);
  backend_.zero(v_, nv * 4);
}

Optimizer::~Optimizer() {
  backend_.release(m_);
  backend_.release(v_);
}

void Optimizer::step(float lr, float grad_scale) {
  ++t_;
  AdamWArgs args;
  args.lr = lr;
  args.beta1 = settings_.beta1;
  args.beta2 = settings_.beta2;
  args.eps = settings_.eps;
  args.grad_scale = grad_scale;
  args.bias_correction1 = float(1.0 - std::pow(double(settings_.beta1), double(t_)));
  args.bias_correction2 = float(1.0 - std::pow(double(settings_.beta2), double(t_)));
  if (settings_.kind == "adamw") {
    // Per-element v: the plain fused AdamW kernel (bitwise what an all-Element partition gives).
    for (const ParamInfo& p : model_.table().params) {
      args.weight_decay = p.weight_decay ? settings_.weight_decay : 0.0f;
      backend_.adamw_update(model_.param_ptr(p), nullptr, model_.grad_ptr(p), m_ + p.offset,
                            v_ + p.offset, p.numel, args);
    }
    return;
  }
  BlockAdamHyper hyper;
  hyper.lr = lr;
  hyper.beta1 = args.beta1;
  hyper.beta2 = args.beta2;
  hyper.eps = args.eps;
  hyper.grad_scale = grad_scale;
  hyper.bias_correction1 = args.bias_correction1;
  hyper.bias_correction2 = args.bias_correction2;
  const auto& params = model_.table().params;
  for (const TensorPartition& part : partition_.tensors) {
    const ParamInfo& p = params[part.param_index];
    hyper.weight_decay = p.weight_decay ? settings_.weight_decay : 0.0f;
    backend_.block_adam_step(model_.param_ptr(p), nullptr, model_.grad_ptr(p), m_ + p.offset,
                             v_ + part.v_offset, part, hyper);
  }
}

std::vector<float> Optimizer::m_to_host() const {
  std::vector<float> host(model_.num_params());
  backend_.download(host.data(), m_, host.size() * 4);
  return host;
}

std::vector<float> Optimizer::v_to_host() const {
  std::vector<float> host(v_entries());
  backend_.download(host.data(), v_, host.size() * 4);
  return host;
}

void Optimizer::load_state(const std::vector<float>& m, const std::vector<float>& v,
                           int64_t steps_taken) {
  SLIM_CHECK(m.size() == model_.num_params() && v.size() == v_entries(),
             "optimizer state size mismatch");
  backend_.upload(m_, m.data(), m.size() * 4);
  backend_.upload(v_, v.data(), v.size() * 4);
  t_ = steps_taken;
}

}  // namespace slim
