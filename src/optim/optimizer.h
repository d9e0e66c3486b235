// The optimizer state and update of a run: AdamW, Adam-mini or SlimAdam with a full gradient
// buffer (accumulation mode `grads`). It owns m (one entry per parameter) and v (one entry per
// block of the partition table: per element for AdamW, per head/row/column/tensor for the
// memory-lean kinds) through the tagged allocator.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/gpt.h"
#include "optim/partition.h"

namespace slim {

struct OptimizerSettings {
  std::string kind = "adamw";
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  PartitionOptions partition;
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
  const PartitionTable& partition() const { return partition_; }
  size_t v_entries() const { return size_t(partition_.total_v); }

  // Checkpoint state: fp32 host copies of m and v, and the step count.
  std::vector<float> m_to_host() const;
  std::vector<float> v_to_host() const;
  void load_state(const std::vector<float>& m, const std::vector<float>& v, int64_t steps_taken);

 private:
  OptimizerSettings settings_;
  GptModel& model_;
  Backend& backend_;
  PartitionTable partition_;
  float* m_ = nullptr;
  float* v_ = nullptr;
  int64_t t_ = 0;
};

}  // namespace slim
