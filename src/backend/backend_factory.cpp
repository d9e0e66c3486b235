// make_backend: turns the config's "backend" and "precision" strings into a Backend, or into a
// UsageError that names the bad value and the fix.
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "util/error.h"

namespace slim {

std::unique_ptr<Backend> make_backend(const std::string& kind, const std::string& precision) {
  if (kind != "cpu" && kind != "cuda" && kind != "auto")
    throw UsageError(cat("unknown backend \"", kind, "\"; valid backends are cpu|cuda|auto"));
  if (precision != "fp32" && precision != "bf16" && precision != "auto")
    throw UsageError(
        cat("unknown precision \"", precision, "\"; valid precisions are fp32|bf16|auto"));
  if (kind == "cuda")
    throw UsageError(
        "backend \"cuda\" is not available: this build of slimtrain has no CUDA backend, so no "
        "GPU can be used. Set \"backend\": \"cpu\" in the config (or --set backend=cpu)");
  // kind is "cpu" or "auto". This build has no CUDA backend yet, so "auto" means the CPU; issue 3
  // adds the CUDA backend and, with it, the device check that lets "auto" pick a GPU.
  if (precision == "bf16")
    throw UsageError(
        "precision \"bf16\" is not supported by the cpu backend: the cpu backend computes in fp32; "
        "set precision to \"fp32\" or \"auto\"");
  return std::make_unique<CpuBackend>();
}

}  // namespace slim
