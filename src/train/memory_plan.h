// The memory planner behind `slimtrain memory`: every buffer a training run takes from the tagged
// allocator, predicted to the byte from the config alone, without allocating anything. It sums
// the very plans the allocating code uses (GptModel::activation_plan / gradient_plan,
// Optimizer::state_plan, the backend's workspace plan), and a test checks that a real run's
// allocator table equals the prediction on the cpu and emulated cuda backends.
#pragma once
#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "config/config.h"
#include "model/gpt.h"

namespace slim {

struct MemoryPlan {
  std::string backend;  // "cpu" | "cuda"
  DType dtype = DType::F32;
  size_t n_params = 0;
  std::vector<BufferPlan> buffers;

  std::array<size_t, kMemTagCount> by_tag() const;
  size_t total() const;
  std::string table() const;  // TaggedAllocator::table's format
};

// backend "cpu" or "cuda" (resolve "auto" first); precision "auto" means bf16 on cuda, fp32 on cpu.
MemoryPlan plan_memory(const RunConfig& config, const std::string& backend);

// "24GiB", "80GB", "512MiB", "1.5TiB", "24e9" (bytes) -> bytes. UsageError naming the value.
size_t parse_memory_size(const std::string& text);

// Formats bytes as "1.23 GiB" (or MiB / KiB / B).
std::string human_bytes(double bytes);

}  // namespace slim
