#include "backend/cuda/cuda_workspace_plan.h"

#include <algorithm>

#include "kernels/block_adam_sizes.h"
#include "kernels/workspace_sizes.h"
#include "util/error.h"

namespace slim {

size_t cuda_backward_scratch_bytes(const ModelConfig& model, int B, int T) {
  if (B <= 0 || T <= 0) return 0;
  const int N = B * T, C = model.n_embd;
  // The biased linear layers of a block (gpt.cpp): qkv (3C), attn.proj (C), mlp.fc (ffn_hidden),
  // mlp.proj (C). The lm_head has no bias, so its backward needs no dbias partials.
  const int widest_bias = model.bias ? std::max({3 * C, C, model.ffn_hidden}) : 0;
  size_t bytes = encoder_backward_scratch_bytes(B, T);
  bytes = std::max(bytes, layernorm_backward_scratch_bytes(N, C));
  if (widest_bias > 0) bytes = std::max(bytes, matmul_backward_scratch_bytes(N, widest_bias));
  return bytes;
}

size_t cuda_optimizer_scratch_bytes(const PartitionTable& partition) {
  // One scratch serves every tensor (the updates run one after another on the stream).
  size_t floats = 0;
  for (const TensorPartition& part : partition.tensors)
    floats = std::max(floats, block_adam_scratch_floats(part));
  return floats * sizeof(float);
}

CudaWorkspacePlan cuda_workspace_plan(const ModelConfig& model, int B, int T, DType dtype,
                                      const PartitionTable* partition) {
  (void)dtype;  // see the header: no buffer depends on it yet
  CudaWorkspacePlan plan;
  plan.cublaslt_bytes = kMatmulWorkspaceBytes;
  plan.reduction_bytes = kGlobalNormMaxScratchBytes;
  plan.backward_scratch_bytes = cuda_backward_scratch_bytes(model, B, T);
  if (partition) plan.optimizer_scratch_bytes = cuda_optimizer_scratch_bytes(*partition);
  return plan;
}

}  // namespace slim
