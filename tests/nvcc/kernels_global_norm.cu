// nvcc gate for kernels/global_norm.cuh: every launcher instantiated for fp32 and bf16.
#include "kernels/global_norm.cuh"

namespace slim {
template void global_norm_squared<float>(double*, const float*, size_t, bool, void*, cudaStream_t);
template void global_norm_squared<__nv_bfloat16>(double*, const __nv_bfloat16*, size_t, bool, void*,
                                                 cudaStream_t);
template double sum_squares<float>(const float*, size_t, void*, cudaStream_t);
template double sum_squares<__nv_bfloat16>(const __nv_bfloat16*, size_t, void*, cudaStream_t);
}  // namespace slim
