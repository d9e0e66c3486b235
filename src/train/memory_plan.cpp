#include "train/memory_plan.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/cuda_workspace_plan.h"
#include "optim/optimizer.h"
#include "train/run_state.h"
#include "util/error.h"

namespace slim {

std::array<size_t, kMemTagCount> MemoryPlan::by_tag() const {
  std::array<size_t, kMemTagCount> bytes{};
  for (const BufferPlan& b : buffers) bytes[int(b.tag)] += b.bytes;
  return bytes;
}

size_t MemoryPlan::total() const {
  size_t sum = 0;
  for (const BufferPlan& b : buffers) sum += b.bytes;
  return sum;
}

std::string MemoryPlan::table() const { return format_memory_table(by_tag(), n_params); }

MemoryPlan plan_memory(const RunConfig& config, const std::string& backend) {
  if (backend != "cpu" && backend != "cuda")
    throw UsageError(cat("cannot plan memory for backend \"", backend, "\"; use cpu or cuda"));
  MemoryPlan plan;
  plan.backend = backend;
  if (config.precision == "bf16" && backend == "cpu")
    throw UsageError("precision \"bf16\" is not supported by the cpu backend; plan for "
                     "backend=cuda or precision=fp32");
  plan.dtype = config.precision == "fp32"  ? DType::F32
               : config.precision == "bf16" ? DType::BF16
               : backend == "cuda"          ? DType::BF16
                                            : DType::F32;
  const size_t xs = dtype_size(plan.dtype);
  const ModelConfig& model = config.model;
  const TrainingConfig& t = config.training;
  plan.n_params = build_param_table(model).total_numel;
  auto add = [&](const std::vector<BufferPlan>& more) {
    plan.buffers.insert(plan.buffers.end(), more.begin(), more.end());
  };
  add({{"parameters", MemTag::Params, plan.n_params * xs}});
  add(GptModel::gradient_plan(model, config.optimizer.accumulation == "adama", xs));
  add(GptModel::activation_plan(model, t.micro_batch, t.seq_len, t.recompute, xs));
  add(Optimizer::state_plan(optimizer_settings(config), model, plan.dtype));
  if (backend == "cuda") {
    const OptimizerSettings settings = optimizer_settings(config);
    const PartitionTable partition =
        build_partition(settings.kind, build_param_table(model), model, settings.partition);
    const CudaWorkspacePlan w =
        cuda_workspace_plan(model, t.micro_batch, t.seq_len, plan.dtype, &partition);
    add({{"cuBLASLt workspace", MemTag::Workspace, w.cublaslt_bytes},
         {"reduction partials", MemTag::Workspace, w.reduction_bytes},
         {"backward scratch", MemTag::Workspace, w.backward_scratch_bytes},
         {"optimizer scratch", MemTag::Workspace, w.optimizer_scratch_bytes}});
  }
  return plan;
}

size_t parse_memory_size(const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  std::string unit(end ? end : "");
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KiB") scale = 1024.0;
  else if (unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "GiB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "TiB") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else if (unit == "TB") scale = 1e12;
  if (end == text.c_str() || scale == 0 || !(value > 0) || !std::isfinite(value))
    throw UsageError(cat("memory size \"", text,
                         "\" is not understood; write a positive number with an optional unit, "
                         "e.g. 24GiB, 80GB, 512MiB or 24e9 (bytes)"));
  return size_t(value * scale);
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

}  // namespace slim
