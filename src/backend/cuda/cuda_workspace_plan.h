// The CudaBackend's own device buffers (MemTag::Workspace), predicted to the byte without a GPU.
// Plain C++ (compiled into slimcore, no CUDA headers): `slimtrain memory` prints this plan, and
// the CUDA backend allocates exactly these sizes (tests/test_cuda_step.cpp checks the allocator's
// Workspace bytes against it). The sizes come from kernels/workspace_sizes.h and
// kernels/block_adam_sizes.h, the headers the launchers use themselves.
//
//   buffer                  allocated by                          size
//   cuBLASLt workspace      CudaBackend()                         kMatmulWorkspaceBytes (32 MiB)
//   reduction partials      CudaBackend()                         sum_squares' partials + result
//   backward scratch        reserve_workspace(model, B, T)        max over the backward ops of
//                                                                 B x T: encoder sort keys,
//                                                                 layernorm dw/db partials,
//                                                                 matmul dbias partials
//   optimizer scratch       reserve_optimizer_workspace(part)     max over the partition's
//                                                                 tensors of the block-Adam
//                                                                 kernels' scratch
// The ops run one after another on one stream, so one backward scratch serves them all.
#pragma once
#include <cstddef>

#include "backend/backend.h"
#include "model/model_config.h"
#include "optim/partition.h"

namespace slim {

struct CudaWorkspacePlan {
  size_t cublaslt_bytes = 0;
  size_t reduction_bytes = 0;
  size_t backward_scratch_bytes = 0;   // 0 when no B x T was given (B or T is 0)
  size_t optimizer_scratch_bytes = 0;  // 0 without a partition
  size_t total() const {
    return cublaslt_bytes + reduction_bytes + backward_scratch_bytes + optimizer_scratch_bytes;
  }
};

// Bytes of each buffer above. B x T is the largest micro-batch the model's activations are
// allocated for (GptModel::allocate_activations); partition is the optimizer's (null when no
// optimizer runs: eval, sample). The sizes do not depend on the compute dtype today (every
// scratch is fp32 or fp64); dtype is taken so that a future bf16-sized buffer changes no caller.
CudaWorkspacePlan cuda_workspace_plan(const ModelConfig& model, int B, int T, DType dtype,
                                      const PartitionTable* partition);
inline size_t cuda_workspace_bytes(const ModelConfig& model, int B, int T, DType dtype,
                                   const PartitionTable* partition) {
  return cuda_workspace_plan(model, B, T, dtype, partition).total();
}

// The two shape-dependent parts on their own (what reserve_workspace and
// reserve_optimizer_workspace allocate).
size_t cuda_backward_scratch_bytes(const ModelConfig& model, int B, int T);
size_t cuda_optimizer_scratch_bytes(const PartitionTable& partition);

}  // namespace slim
