// layernorm.cuh — LayerNorm forward, fused residual-add + LayerNorm forward, and the backward.
//
// Forward: one warp per row. The row is read once from DRAM into shared memory (as stored, i.e.
// already rounded to floatX), then mean, variance (two-pass, like the CPU reference: no
// cancellation for rows with a large mean) and the output are computed from the cached copy.
// mean/rstd are fp32 [N] and kept for the backward.
//
// Backward: per row (one warp) dinp += rstd * (w*dout - mean(w*dout) - n * mean(w*dout*n)) with
// n = (x - mean) * rstd, which always accumulates (dinp is the residual stream's gradient).
// dw/db are column sums over all rows; float atomics would make them depend on timing, so they
// use a fixed two-stage reduction:
//   stage 1: block k owns rows k*W + w, k*W + w + G*W, ... (W warps, G blocks, G fixed by N);
//            each warp sums its rows into a per-warp fp32 row in shared memory (each lane owns
//            fixed columns, so there are no races), then the block adds its warps in warp order
//            and writes one partial row per block into scratch [G][2][C];
//   stage 2: each column adds the G partials in block order and writes dw/db (+)= the sum.
// G depends only on N (not on the GPU), so the bits are the same on every device.
//
// Shapes: inp/out/residual [N,C], w/b [C], mean/rstd [N] fp32. C must be a multiple of the
// 16-byte pack (4 fp32 or 8 bf16) and the tensors 16-byte aligned.
#pragma once

#include "cuda_check.h"
#include "packed.h"
#include "reduce.cuh"
#include "workspace_sizes.h"  // layernorm_backward_scratch_bytes and the grid it depends on

#include <cstddef>
#include <cstdint>

namespace slim {

namespace layernorm_detail {
constexpr float kEps = 1e-5f;  // GPT-2's LayerNorm epsilon (cpu_ops.h kLayerNormEps)
constexpr int kReduceColumns = 32;  // stage 2: columns per block
constexpr int kReduceGroups = 8;    // stage 2: partial rows summed in parallel, then in order
// kMaxWarps, kSharedBudget, warps_within_budget, backward_warps and backward_blocks (the grid the
// scratch size depends on) are in workspace_sizes.h.
}  // namespace layernorm_detail

// ---- CUDA kernels ------------------------------------------------------------------------------

// Normalizes the row cached in `row` (C/pack packs, each lane its own packs) into out_row and
// stores the statistics; `sum` is the warp's total of the row.
template <typename floatX>
__device__ inline void layernorm_cached_row(floatX* out_row, float* mean, float* rstd,
                                            int row_index, const Packed128<floatX>* row, float sum,
                                            const floatX* w, const floatX* b, int C, int lane) {
  using Pack = Packed128<floatX>;
  const int packs = C / Pack::size;
  const float row_mean = sum / C;
  float squares = 0.0f;
  for (int p = lane; p < packs; p += 32) {
    const Pack x = row[p];
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) {
      const float centered = to_float(x[k]) - row_mean;
      squares += centered * centered;
    }
  }
  squares = warp_sum(squares);
  const float row_rstd = rsqrtf(squares / C + layernorm_detail::kEps);
  for (int p = lane; p < packs; p += 32) {
    const Pack x = row[p];
    const Pack weight = load128(w + p * Pack::size);
    const Pack bias = load128(b + p * Pack::size);
    Pack result;
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) {
      const float normalized = (to_float(x[k]) - row_mean) * row_rstd;
      result[k] = from_float<floatX>(normalized * to_float(weight[k]) + to_float(bias[k]));
    }
    store128(out_row + p * Pack::size, result);
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row_index] = row_mean;
    if (rstd != nullptr) rstd[row_index] = row_rstd;
  }
}

// out = LN(inp) * w + b, one warp per row.
template <typename floatX>
__global__ void layernorm_forward_kernel(floatX* out, float* mean, float* rstd, const floatX* inp,
                                         const floatX* w, const floatX* b, int N, int C) {
  using Pack = Packed128<floatX>;
  SIMT_DYNAMIC_SHARED(Pack, shared_rows);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_index = blockIdx.x * (blockDim.x / 32) + warp;
  if (row_index >= N) return;
  const int packs = C / Pack::size;
  Pack* row = shared_rows + static_cast<size_t>(warp) * packs;
  const floatX* in_row = inp + static_cast<size_t>(row_index) * C;
  float sum = 0.0f;
  for (int p = lane; p < packs; p += 32) {
    const Pack x = load128cs(in_row + p * Pack::size);
    row[p] = x;
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) sum += to_float(x[k]);
  }
  sum = warp_sum(sum);
  layernorm_cached_row(out + static_cast<size_t>(row_index) * C, mean, rstd, row_index, row, sum, w,
                       b, C, lane);
}

// residual = a + b (stored, rounded to floatX), out = LN(residual) * w + bias, one warp per row.
template <typename floatX>
__global__ void fused_residual_layernorm_forward_kernel(floatX* residual, floatX* out, float* mean,
                                                        float* rstd, const floatX* a,
                                                        const floatX* b, const floatX* w,
                                                        const floatX* bias, int N, int C) {
  using Pack = Packed128<floatX>;
  SIMT_DYNAMIC_SHARED(Pack, shared_rows);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_index = blockIdx.x * (blockDim.x / 32) + warp;
  if (row_index >= N) return;
  const int packs = C / Pack::size;
  Pack* row = shared_rows + static_cast<size_t>(warp) * packs;
  const size_t offset = static_cast<size_t>(row_index) * C;
  float sum = 0.0f;
  for (int p = lane; p < packs; p += 32) {
    const Pack x = load128cs(a + offset + p * Pack::size);
    const Pack y = load128cs(b + offset + p * Pack::size);
    Pack added;
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) {
      added[k] = from_float<floatX>(to_float(x[k]) + to_float(y[k]));
      sum += to_float(added[k]);  // statistics of the residual as stored
    }
    row[p] = added;
    store128(residual + offset + p * Pack::size, added);
  }
  sum = warp_sum(sum);
  layernorm_cached_row(out + offset, mean, rstd, row_index, row, sum, w, bias, C, lane);
}

// Stage 1 of the backward: dinp for every row, and per-block partial column sums of
// dout * n (for dw) and dout (for db) into partials[blockIdx.x][2][C].
template <typename floatX>
__global__ void layernorm_backward_kernel(floatX* dinp, float* partials, const floatX* dout,
                                          const floatX* inp, const floatX* w, const float* mean,
                                          const float* rstd, int N, int C) {
  using Pack = Packed128<floatX>;
  SIMT_DYNAMIC_SHARED(float, shared_sums);  // [warps][2][C]: dw sums, then db sums
  const int warps = blockDim.x / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int packs = C / Pack::size;
  // Column c = p * Pack::size + k lives at k * packs + p, so the 32 lanes (consecutive p) hit
  // 32 different banks. A lane touches only its own packs (lane, lane+32, ...) of its warp's sums.
  float* dw_sums = shared_sums + static_cast<size_t>(warp) * 2 * C;
  float* db_sums = dw_sums + C;
  for (int p = lane; p < packs; p += 32) {
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) {
      dw_sums[k * packs + p] = 0.0f;
      db_sums[k * packs + p] = 0.0f;
    }
  }

  for (int row_index = blockIdx.x * warps + warp; row_index < N; row_index += gridDim.x * warps) {
    const size_t offset = static_cast<size_t>(row_index) * C;
    const float row_mean = mean[row_index], row_rstd = rstd[row_index];
    // Pass 1: the two row means, and this row's contribution to dw/db.
    float sum_g = 0.0f, sum_gn = 0.0f;
    for (int p = lane; p < packs; p += 32) {
      const Pack g = load128(dout + offset + p * Pack::size);
      const Pack x = load128(inp + offset + p * Pack::size);
      const Pack weight = load128(w + p * Pack::size);
#pragma unroll
      for (int k = 0; k < Pack::size; ++k) {
        const float n = (to_float(x[k]) - row_mean) * row_rstd;
        const float wg = to_float(weight[k]) * to_float(g[k]);
        sum_g += wg;
        sum_gn += wg * n;
        dw_sums[k * packs + p] += to_float(g[k]) * n;
        db_sums[k * packs + p] += to_float(g[k]);
      }
    }
    const float mean_g = warp_sum(sum_g) / C, mean_gn = warp_sum(sum_gn) / C;
    // Pass 2: dinp += ... (the row is still in L1 from pass 1).
    for (int p = lane; p < packs; p += 32) {
      const Pack g = load128cs(dout + offset + p * Pack::size);
      const Pack x = load128cs(inp + offset + p * Pack::size);
      const Pack weight = load128(w + p * Pack::size);
      const Pack old_dinp = load128(dinp + offset + p * Pack::size);
      Pack result;
#pragma unroll
      for (int k = 0; k < Pack::size; ++k) {
        const float n = (to_float(x[k]) - row_mean) * row_rstd;
        const float delta =
            (to_float(weight[k]) * to_float(g[k]) - mean_g - n * mean_gn) * row_rstd;
        result[k] = from_float<floatX>(to_float(old_dinp[k]) + delta);
      }
      store128(dinp + offset + p * Pack::size, result);
    }
  }

  __syncthreads();
  // The block's partial row: its warps added in warp order.
  float* block_partial = partials + static_cast<size_t>(blockIdx.x) * 2 * C;
  for (int column = threadIdx.x; column < 2 * C; column += blockDim.x) {
    const int half = column < C ? 0 : C;  // dw or db
    const int c = column - half;
    const int slot = half + (c % Pack::size) * packs + c / Pack::size;
    float total = 0.0f;
    for (int k = 0; k < warps; ++k) total += shared_sums[static_cast<size_t>(k) * 2 * C + slot];
    block_partial[column] = total;
  }
}

// Stage 2: dw[c] (+)= sum of the blocks' dw partials, db likewise. A block covers 32 columns of the
// [2C] partial row with 8 groups: group j adds partials j, j+8, ... in order, then the groups are
// added in group order.
template <typename floatX>
__global__ void layernorm_backward_reduce_kernel(floatX* dw, floatX* db, const float* partials,
                                                 int blocks, int C, bool accumulate) {
  __shared__ float group_sums[layernorm_detail::kReduceGroups][layernorm_detail::kReduceColumns];
  const int column_in_block = threadIdx.x % layernorm_detail::kReduceColumns;
  const int group = threadIdx.x / layernorm_detail::kReduceColumns;
  const int column = blockIdx.x * layernorm_detail::kReduceColumns + column_in_block;
  float sum = 0.0f;
  if (column < 2 * C)
    for (int k = group; k < blocks; k += layernorm_detail::kReduceGroups)
      sum += partials[static_cast<size_t>(k) * 2 * C + column];
  group_sums[group][column_in_block] = sum;
  __syncthreads();
  if (group != 0 || column >= 2 * C) return;
  float total = 0.0f;
  for (int j = 0; j < layernorm_detail::kReduceGroups; ++j) total += group_sums[j][column_in_block];
  floatX* target = column < C ? dw + column : db + (column - C);
  *target = from_float<floatX>((accumulate ? to_float(*target) : 0.0f) + total);
}

// ---- launchers ---------------------------------------------------------------------------------

namespace layernorm_detail {
template <typename floatX>
inline void check_rows(const char* op, int N, int C) {
  if (N <= 0 || C <= 0) throw Error(cat(op, ": N and C must be positive, got N=", N, " C=", C));
  if (static_cast<size_t>(C) * sizeof(floatX) > kSharedBudget)
    throw Error(cat(op, ": C=", C, " is too wide: one row must fit ", kSharedBudget,
                    " bytes of shared memory"));
  if (static_cast<size_t>(C) * 2 * sizeof(float) > kSharedBudget)
    throw Error(cat(op, ": C=", C, " is too wide for the backward's per-warp column sums (",
                    kSharedBudget, " bytes of shared memory)"));
}
template <typename T>
inline void require_pointer(const char* op, const char* name, const T* pointer) {
  if (pointer == nullptr) throw Error(cat(op, ": ", name, " must not be null"));
}
}  // namespace layernorm_detail

// out[N,C] = LN(inp) * w + b; mean/rstd [N] fp32 (either may be null to skip storing it).
template <typename floatX>
void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp, const floatX* w,
                       const floatX* b, int N, int C, cudaStream_t stream) {
  using namespace layernorm_detail;
  constexpr const char* op = "layernorm_forward";
  check_rows<floatX>(op, N, C);
  require_packed(op, "out", out, C);
  require_packed(op, "inp", inp, C);
  require_packed(op, "w", w, C);
  require_packed(op, "b", b, C);
  const int warps = warps_within_budget(static_cast<size_t>(C) * sizeof(floatX));
  simt::launch(layernorm_forward_kernel<floatX>, dim3(grid_blocks(op, N, warps)), dim3(warps * 32),
               static_cast<size_t>(warps) * C * sizeof(floatX), stream, out, mean, rstd, inp, w, b,
               N, C);
  CUDA_CHECK_LAUNCH();
}

// residual_out[N,C] = a + b; out = LN(residual_out) * w + bias; mean/rstd [N] fp32.
template <typename floatX>
void fused_residual_layernorm_forward(floatX* residual_out, floatX* out, float* mean, float* rstd,
                                      const floatX* a, const floatX* b, const floatX* w,
                                      const floatX* bias, int N, int C, cudaStream_t stream) {
  using namespace layernorm_detail;
  constexpr const char* op = "fused_residual_layernorm_forward";
  check_rows<floatX>(op, N, C);
  require_packed(op, "residual_out", residual_out, C);
  require_packed(op, "out", out, C);
  require_packed(op, "a", a, C);
  require_packed(op, "b", b, C);
  require_packed(op, "w", w, C);
  require_packed(op, "bias", bias, C);
  const int warps = warps_within_budget(static_cast<size_t>(C) * sizeof(floatX));
  simt::launch(fused_residual_layernorm_forward_kernel<floatX>, dim3(grid_blocks(op, N, warps)),
               dim3(warps * 32), static_cast<size_t>(warps) * C * sizeof(floatX), stream,
               residual_out, out, mean, rstd, a, b, w, bias, N, C);
  CUDA_CHECK_LAUNCH();
}

// dinp[N,C] += dLN/dinp; dw[C], db[C] (+)= (accumulate when accumulate_dweight, else overwrite).
// scratch: layernorm_backward_scratch_bytes(N, C) bytes of device memory, 4-byte aligned.
template <typename floatX>
void layernorm_backward(floatX* dinp, floatX* dw, floatX* db, const floatX* dout, const floatX* inp,
                        const floatX* w, const float* mean, const float* rstd, int N, int C,
                        bool accumulate_dweight, void* scratch, cudaStream_t stream) {
  using namespace layernorm_detail;
  constexpr const char* op = "layernorm_backward";
  check_rows<floatX>(op, N, C);
  require_packed(op, "dinp", dinp, C);
  require_packed(op, "dout", dout, C);
  require_packed(op, "inp", inp, C);
  require_packed(op, "w", w, C);
  require_pointer(op, "dw", dw);
  require_pointer(op, "db", db);
  require_pointer(op, "mean", mean);
  require_pointer(op, "rstd", rstd);
  if (scratch == nullptr || reinterpret_cast<uintptr_t>(scratch) % alignof(float) != 0)
    throw Error(cat(op, ": needs ", layernorm_backward_scratch_bytes(N, C),
                    " bytes of 4-byte aligned scratch, got ", scratch));
  float* partials = static_cast<float*>(scratch);
  const int warps = backward_warps(C);
  const int blocks = backward_blocks(N, C);
  simt::launch(layernorm_backward_kernel<floatX>, dim3(blocks), dim3(warps * 32),
               static_cast<size_t>(warps) * 2 * C * sizeof(float), stream, dinp, partials, dout,
               inp, w, mean, rstd, N, C);
  CUDA_CHECK_LAUNCH();
  simt::launch(layernorm_backward_reduce_kernel<floatX>,
               dim3(grid_blocks(op, 2ull * C, kReduceColumns)),
               dim3(kReduceColumns * kReduceGroups), 0, stream, dw, db,
               static_cast<const float*>(partials), blocks, C, accumulate_dweight);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
