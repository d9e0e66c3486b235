// workspace_sizes.h — how much device scratch each launcher needs, as plain C++.
//
// The launchers in kernels/*.cuh take their scratch from the caller. The CUDA backend allocates it
// once, and `slimtrain memory` predicts those bytes without a GPU and without CUDA headers, so the
// sizes (and the grid constants they depend on) live here, in a header that includes nothing from
// CUDA. The .cuh files include it, so a launcher and the planner can never disagree.
//
//   kMatmulWorkspaceBytes                       cuBLASLt's workspace (every GEMM)
//   encoder_backward_scratch_bytes(B, T)        sort keys of the deterministic dwte
//   layernorm_backward_scratch_bytes(N, C)      per-block partial dw/db rows
//   matmul_backward_scratch_bytes(N, OC)        per-slice partial dbias rows (only with a bias)
//   global_norm_squared_scratch_bytes(n)        per-block partial sums + sum_squares' result slot
//
// Every size grows monotonically with its shape arguments, so scratch sized for the largest
// micro-batch also serves every smaller one.
#pragma once

#include <cstddef>
#include <cstdint>

namespace slim {

// ---- matmul (cuBLASLt) --------------------------------------------------------------------------
// cuBLASLt's faster algorithms use a workspace; 32 MiB is what NVIDIA recommends for Hopper.
constexpr size_t kMatmulWorkspaceBytes = size_t(32) << 20;

namespace matmul_detail {
constexpr int kBiasMaxSlices = 64;        // row slices of the dbias sum: enough blocks to fill a GPU
constexpr int kBiasMinRowsPerSlice = 64;  // ... but no slice so thin that its partials dominate

inline int bias_row_slices(int N) {
  const int wanted = (N + kBiasMinRowsPerSlice - 1) / kBiasMinRowsPerSlice;
  return wanted < kBiasMaxSlices ? wanted : kBiasMaxSlices;
}
}  // namespace matmul_detail

// Scratch matmul_backward needs when it computes dbias: one fp32 partial row per row slice.
inline size_t matmul_backward_scratch_bytes(int N, int OC) {
  return static_cast<size_t>(matmul_detail::bias_row_slices(N)) * static_cast<size_t>(OC) *
         sizeof(float);
}

// ---- encoder ------------------------------------------------------------------------------------
namespace encoder_detail {
// Keys in the sort buffer: the next power of two >= n (bitonic networks need one), at least 2.
inline size_t sort_length(size_t n) {
  size_t length = 2;
  while (length < n) length *= 2;
  return length;
}
}  // namespace encoder_detail

// Scratch bytes encoder_backward needs for B*T tokens: one 8-byte key per sort slot.
inline size_t encoder_backward_scratch_bytes(int B, int T) {
  return encoder_detail::sort_length(static_cast<size_t>(B) * static_cast<size_t>(T)) *
         sizeof(uint64_t);
}

// ---- layernorm ----------------------------------------------------------------------------------
namespace layernorm_detail {
constexpr int kMaxWarps = 8;
// Dynamic shared memory every launch stays within, so no opt-in attribute is needed.
constexpr size_t kSharedBudget = 48 * 1024;
constexpr int kMaxBackwardBlocks = 512;  // G's upper bound: partials cost G * 2 * C floats

// Warps per block such that `bytes_per_warp` of shared memory each stay within the budget.
inline int warps_within_budget(size_t bytes_per_warp) {
  const size_t fit = kSharedBudget / bytes_per_warp;
  return fit >= static_cast<size_t>(kMaxWarps) ? kMaxWarps : static_cast<int>(fit);
}
inline int backward_warps(int C) { return warps_within_budget(2 * static_cast<size_t>(C) * 4); }
inline int backward_blocks(int N, int C) {
  const int warps = backward_warps(C);
  const int needed = (N + warps - 1) / warps;
  return needed < kMaxBackwardBlocks ? needed : kMaxBackwardBlocks;
}
}  // namespace layernorm_detail

// Scratch bytes layernorm_backward needs (the stage-1 partial rows).
inline size_t layernorm_backward_scratch_bytes(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  return static_cast<size_t>(layernorm_detail::backward_blocks(N, C)) * 2 * C * sizeof(float);
}

// ---- global norm --------------------------------------------------------------------------------
namespace global_norm_detail {
constexpr int kThreads = 512;
constexpr int kMaxBlocks = 1024;  // = the stage-2 block size: one partial per stage-2 thread

inline int blocks_for(size_t n) {
  const size_t per_block = static_cast<size_t>(kThreads) * 8;  // at least one pack per thread
  const size_t blocks = (n + per_block - 1) / per_block;
  if (blocks < 1) return 1;
  return blocks > static_cast<size_t>(kMaxBlocks) ? kMaxBlocks : static_cast<int>(blocks);
}
}  // namespace global_norm_detail

// Scratch bytes global_norm_squared / sum_squares need for n elements: the stage-1 partials and
// one double for sum_squares' result.
inline size_t global_norm_squared_scratch_bytes(size_t n) {
  return (static_cast<size_t>(global_norm_detail::blocks_for(n)) + 1) * sizeof(double);
}
// The most any n needs (blocks_for is capped at kMaxBlocks).
constexpr size_t kGlobalNormMaxScratchBytes =
    (static_cast<size_t>(global_norm_detail::kMaxBlocks) + 1) * sizeof(double);

}  // namespace slim
