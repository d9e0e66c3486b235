// nvcc gate for kernels/adamw.cuh: the launcher instantiated for fp32 and bf16 params.
#include "kernels/adamw.cuh"

namespace slim {
template void adamw_update<float>(float*, float*, const float*, float*, float*, size_t,
                                  const AdamWArgs&, uint32_t, cudaStream_t);
template void adamw_update<__nv_bfloat16>(__nv_bfloat16*, float*, const __nv_bfloat16*, float*,
                                          float*, size_t, const AdamWArgs&, uint32_t, cudaStream_t);
}  // namespace slim
