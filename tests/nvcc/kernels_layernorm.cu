// nvcc gate for kernels/layernorm.cuh: every launcher instantiated for fp32 and bf16.
#include "kernels/layernorm.cuh"

namespace slim {
#define SLIM_INSTANTIATE_LAYERNORM(T)                                                            \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int, int, \
                                     cudaStream_t);                                              \
  template void fused_residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*,  \
                                                    const T*, const T*, int, int, cudaStream_t); \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const float*,    \
                                      const float*, int, int, bool, void*, cudaStream_t);
SLIM_INSTANTIATE_LAYERNORM(float)
SLIM_INSTANTIATE_LAYERNORM(__nv_bfloat16)
}  // namespace slim
