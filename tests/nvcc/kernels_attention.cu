// nvcc gate for kernels/attention.cuh: instantiates both launchers for both storage types, so CI
// compiles (and ptxas reports registers/spills for) every attention kernel the CUDA backend can
// launch: forward, backward dk/dv and backward dq, each for HS <= 32, <= 64 and <= 128.
#include "kernels/attention.cuh"

namespace slim {
template void attention_forward<float>(float*, float*, const float*, int, int, int, int,
                                       cudaStream_t);
template void attention_forward<__nv_bfloat16>(__nv_bfloat16*, float*, const __nv_bfloat16*, int,
                                               int, int, int, cudaStream_t);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, int, int, int, int, cudaStream_t);
template void attention_backward<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*,
                                                const __nv_bfloat16*, const __nv_bfloat16*,
                                                const float*, int, int, int, int, cudaStream_t);
}  // namespace slim
