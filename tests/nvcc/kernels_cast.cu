// nvcc gate for kernels/cast.cuh: every storage-type pair.
#include "kernels/cast.cuh"

namespace slim {
template void cast_copy<__nv_bfloat16, float>(__nv_bfloat16*, const float*, size_t, cudaStream_t);
template void cast_copy<float, __nv_bfloat16>(float*, const __nv_bfloat16*, size_t, cudaStream_t);
template void cast_copy<float, float>(float*, const float*, size_t, cudaStream_t);
template void cast_copy<__nv_bfloat16, __nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, size_t,
                                                      cudaStream_t);
}  // namespace slim
