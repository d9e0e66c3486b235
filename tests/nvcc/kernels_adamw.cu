// nvcc gate for kernels/adamw.cuh: the launcher instantiated for fp32 and bf16 params, each with an
// fp32 and a bf16 first moment.
#include "kernels/adamw.cuh"

namespace slim {
#define SLIM_ADAMW_LAUNCHER(X, M)                                                                  \
  template void adamw_update<X, M>(X*, float*, const X*, M*, float*, size_t, const AdamWArgs&,    \
                                   uint32_t, cudaStream_t);
SLIM_ADAMW_LAUNCHER(float, float)
SLIM_ADAMW_LAUNCHER(float, __nv_bfloat16)
SLIM_ADAMW_LAUNCHER(__nv_bfloat16, float)
SLIM_ADAMW_LAUNCHER(__nv_bfloat16, __nv_bfloat16)
#undef SLIM_ADAMW_LAUNCHER
}  // namespace slim
