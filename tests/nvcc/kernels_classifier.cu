// nvcc gate for kernels/classifier.cuh: the launcher instantiated for fp32 and bf16.
#include "kernels/classifier.cuh"

namespace slim {
template void fused_classifier<float>(float*, float*, const int*, float, int, int, int, bool,
                                      cudaStream_t);
template void fused_classifier<__nv_bfloat16>(__nv_bfloat16*, float*, const int*, float, int, int,
                                              int, bool, cudaStream_t);
}  // namespace slim
