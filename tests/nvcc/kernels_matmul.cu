// nvcc gate for kernels/matmul.cuh: instantiates both launchers for both storage types, so CI
// compiles the cuBLASLt calls and the two dbias kernels (and ptxas reports their registers).
#include "kernels/matmul.cuh"

namespace slim {
template void matmul_forward<float>(float*, float*, const float*, const float*, const float*, int,
                                    int, int, const MatmulContext&, cudaStream_t);
template void matmul_forward<__nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, const __nv_bfloat16*,
                                            const __nv_bfloat16*, const __nv_bfloat16*, int, int,
                                            int, const MatmulContext&, cudaStream_t);
template void matmul_backward<float>(float*, float*, float*, const float*, const float*,
                                     const float*, const float*, int, int, int, bool, void*,
                                     const MatmulContext&, cudaStream_t);
template void matmul_backward<__nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*,
                                             const __nv_bfloat16*, const __nv_bfloat16*,
                                             const __nv_bfloat16*, const __nv_bfloat16*, int, int,
                                             int, bool, void*, const MatmulContext&, cudaStream_t);
}  // namespace slim
