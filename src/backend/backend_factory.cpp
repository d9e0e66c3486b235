// make_backend: turns the config's "backend" and "precision" strings into a Backend, or into a
// UsageError that names the bad value and the fix.
//
// This file is plain C++ in every build. With SLIMTRAIN_WITH_CUDA (defined by CMake when nvcc is
// found) it calls cuda_availability() and make_cuda_backend(), which the slimcuda library defines
// (or, in the emulated tests, the g++ compile of cuda_backend.cu against the SIMT emulator).
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "util/error.h"

namespace slim {

std::unique_ptr<Backend> make_backend(const std::string& kind, const std::string& precision) {
  if (kind != "cpu" && kind != "cuda" && kind != "auto")
    throw UsageError(cat("unknown backend \"", kind, "\"; valid backends are cpu|cuda|auto"));
  if (precision != "fp32" && precision != "bf16" && precision != "auto")
    throw UsageError(
        cat("unknown precision \"", precision, "\"; valid precisions are fp32|bf16|auto"));

  // Why "auto" fell back to the CPU, for the precision error below.
  std::string no_gpu_reason;
#ifdef SLIMTRAIN_WITH_CUDA
  if (kind != "cpu") {
    const CudaAvailability cuda = cuda_availability();
    if (cuda.devices > 0)
      // "auto" precision on a GPU is bf16 (fp32 master weights keep the updates exact).
      return make_cuda_backend(precision == "fp32" ? DType::F32 : DType::BF16);
    if (kind == "cuda")
      throw UsageError(cat("backend \"cuda\" is not available: ", cuda.reason,
                           ", so no GPU can be used. Set \"backend\": \"cpu\" in the config (or "
                           "--set backend=cpu), or \"auto\" to use a GPU only when there is one"));
    no_gpu_reason = cuda.reason;
  }
#else
  if (kind == "cuda")
    throw UsageError(
        "backend \"cuda\" is not available: this build of slimtrain has no CUDA backend (nvcc was "
        "not found when it was built), so no GPU can be used. Set \"backend\": \"cpu\" in the "
        "config (or --set backend=cpu), or rebuild on a machine with the CUDA toolkit");
  if (kind == "auto") no_gpu_reason = "this build of slimtrain has no CUDA backend";
#endif
  if (precision == "bf16")
    throw UsageError(cat(
        "precision \"bf16\" is not supported by the cpu backend: the cpu backend computes in fp32",
        no_gpu_reason.empty() ? std::string()
                              : cat(" (backend \"auto\" chose the cpu: ", no_gpu_reason, ")"),
        "; set precision to \"fp32\" or \"auto\""));
  return std::make_unique<CpuBackend>();
}

std::string resolve_backend_kind(const std::string& kind) {
  if (kind != "auto") return kind;
#ifdef SLIMTRAIN_WITH_CUDA
  if (cuda_availability().devices > 0) return "cuda";
#endif
  return "cpu";
}

}  // namespace slim
