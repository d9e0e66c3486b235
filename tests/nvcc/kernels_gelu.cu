// nvcc gate for kernels/gelu.cuh: every launcher instantiated for fp32 and bf16.
#include "kernels/gelu.cuh"

namespace slim {
template void gelu_forward<float>(float*, const float*, size_t, cudaStream_t);
template void gelu_forward<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, size_t,
                                          cudaStream_t);
template void gelu_backward<float>(float*, const float*, const float*, size_t, cudaStream_t);
template void gelu_backward<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*,
                                           const __nv_bfloat16*, size_t, cudaStream_t);
}  // namespace slim
