// The optimizer state and update of a run. Today: AdamW with a full gradient buffer (accumulation
// mode `grads`). The memory-lean optimizers (Adam-mini, SlimAdam, AdamA folding) extend this
// class: it owns m and v through the tagged allocator and walks the parameter table, so the
// partition of v per tensor has one place to live.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/gpt.h"

namespace slim {

struct OptimizerSettings {
  std::string kind = "adamw";
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
};

class Optimizer {
 public:
  Optimizer(const OptimizerSettings& settings, GptModel& model);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every tensor from the model's gradient buffer. grad_scale multiplies the
  // gradient first (global-norm clipping). Increments the step count t (1-based in the math).
  void step(float lr, float grad_scale);
  int64_t steps_taken() const { return t_; }

  // Checkpoint state: fp32 host copies of m and v, and the step count.
  std::vector<float> m_to_host() const;
  std::vector<float> v_to_host() const;
  void load_state(const std::vector<float>& m, const std::vector<float>& v, int64_t steps_taken);

 private:
  OptimizerSettings settings_;
  GptModel& model_;
  Backend& backend_;
  float* m_ = nullptr;
  float* v_ = nullptr;
  int64_t t_ = 0;
};

}  // namespace slim
