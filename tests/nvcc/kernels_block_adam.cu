// nvcc gate for kernels/block_adam.cuh: every launcher instantiated for fp32 and bf16 params and
// gradients (which instantiates every kernel, both fold directions included).
#include "kernels/block_adam.cuh"

namespace slim {
#define SLIM_BLOCK_ADAM_LAUNCHERS(X)                                                              \
  template void block_adam_step<X>(X*, float*, const X*, float*, float*, const TensorPartition&, \
                                   const BlockAdamHyper&, float*, cudaStream_t);                 \
  template void block_adam_fold<X>(const X*, float*, float*, const TensorPartition&,             \
                                   const BlockAdamHyper&, bool, FoldStatus*, float*,             \
                                   cudaStream_t);                                                \
  template void block_adam_apply<X>(X*, float*, const float*, const float*,                      \
                                    const TensorPartition&, const BlockAdamHyper&, float*,       \
                                    cudaStream_t);                                               \
  template void block_adam_unfold<X>(const X*, float*, float*, const TensorPartition&,           \
                                     const BlockAdamHyper&, float*, cudaStream_t);
SLIM_BLOCK_ADAM_LAUNCHERS(float)
SLIM_BLOCK_ADAM_LAUNCHERS(__nv_bfloat16)
#undef SLIM_BLOCK_ADAM_LAUNCHERS

// Not a template: a caller with external linkage makes nvcc compile its host side here too.
void block_adam_undo_decay_gate(float* m, float* v, const TensorPartition& part,
                                const BlockAdamHyper& h, cudaStream_t stream) {
  block_adam_undo_decay(m, v, part, h, stream);
}
}  // namespace slim
