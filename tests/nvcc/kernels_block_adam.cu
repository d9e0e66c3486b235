// nvcc gate for kernels/block_adam.cuh: every launcher instantiated for fp32 and bf16 params and
// gradients, each with an fp32 and a bf16 first moment (which instantiates every kernel, both fold
// directions included).
#include "kernels/block_adam.cuh"

namespace slim {
#define SLIM_BLOCK_ADAM_LAUNCHERS(X, M)                                                           \
  template void block_adam_step<X, M>(X*, float*, const X*, M*, float*, const TensorPartition&,  \
                                      const BlockAdamHyper&, float*, cudaStream_t);              \
  template void block_adam_fold<X, M>(const X*, M*, float*, const TensorPartition&,              \
                                      const BlockAdamHyper&, bool, FoldStatus*, float*,          \
                                      cudaStream_t);                                             \
  template void block_adam_apply<X, M>(X*, float*, const M*, const float*,                       \
                                       const TensorPartition&, const BlockAdamHyper&, float*,    \
                                       cudaStream_t);                                            \
  template void block_adam_unfold<X, M>(const X*, M*, float*, const TensorPartition&,            \
                                        const BlockAdamHyper&, float*, cudaStream_t);
SLIM_BLOCK_ADAM_LAUNCHERS(float, float)
SLIM_BLOCK_ADAM_LAUNCHERS(float, __nv_bfloat16)
SLIM_BLOCK_ADAM_LAUNCHERS(__nv_bfloat16, float)
SLIM_BLOCK_ADAM_LAUNCHERS(__nv_bfloat16, __nv_bfloat16)
#undef SLIM_BLOCK_ADAM_LAUNCHERS

template void block_adam_undo_decay<float>(float*, float*, const TensorPartition&,
                                           const BlockAdamHyper&, cudaStream_t);
template void block_adam_undo_decay<__nv_bfloat16>(__nv_bfloat16*, float*, const TensorPartition&,
                                                   const BlockAdamHyper&, cudaStream_t);
}  // namespace slim
