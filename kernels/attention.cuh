// attention.cuh — causal multi-head self-attention, flash-attention style, on CUDA cores.
//
// Shapes (backend.h): qkv[B,T,3C] holds per token q | k | v, each [NH][HS] with HS = C/NH;
// out[B,T,C] is [NH][HS] per token; lse[B,NH,T] fp32 is each query's log-sum-exp of its scaled
// scores. No [T,T] matrix exists anywhere: scores are computed tile by tile in shared memory and
// registers, and the backward recomputes them from q, k and lse.
//
// Tiling. A tile is kTile = 32 rows (queries or keys) of one head, held in shared memory as fp32
// whatever the storage type; a block of kWarps = 4 warps works on one (b, h, tile). Rows are 32
// so that a warp's lanes map onto a tile's rows one to one. Head dims are padded to a multiple
// of four in shared memory (with zeros) so rows can be read as float4 broadcasts. Two layouts:
//   row-major   [kTile][HSP]       a row is read whole by all lanes of a warp (broadcast);
//   transposed  [HSP][kTStride]    lane j reads element (d, j): consecutive words, no conflicts.
// kTStride = kTile + 1 keeps the column writes of the transposing loads conflict-free too.
//
// Forward (one block per (b, h, query tile)): lane j of every warp owns key j of the current key
// tile; warp w owns query rows [8w, 8w + 8). Scores s[r] = q_r . k_j need one transposed-K read
// per dim; the online softmax keeps a running max m and a per-lane partial sum l for each row
// (the lane partials are added once at the end); the probabilities go through a per-warp
// shared buffer so that the P @ V product can give each lane head dims instead of keys.
//
// Backward (deterministic, no atomics): two kernels, each of which owns its outputs.
//   dkdv: one block per (b, h, key tile); loops over the query tiles that can see the keys,
//         recomputing P = exp(scale q.k - lse) and dS = P (dP - D), dP = dout . v,
//         D = dout . out, and accumulating dv += P^T dout, dk += dS^T q in registers.
//   dq:   one block per (b, h, query tile); loops over the visible key tiles, recomputing P and
//         dS the same way and accumulating dq += dS k.
// Recomputing the scores twice costs one extra pair of tile products; in exchange every output
// element is summed by one thread in a fixed order, so the gradients are bit-reproducible.
// D is recomputed where it is needed (a dot product of two rows per query and tile) rather than
// kept in a scratch buffer, so the launchers need no memory besides their arguments.
//
// The blocks with the most work (late query tiles; early key tiles) are launched first, so the
// causal triangle does not leave one long block running alone at the end.
#pragma once

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "cuda_check.h"
#include "packed.h"
#include "reduce.cuh"

namespace slim {

namespace attention_detail {

constexpr int kTile = 32;  // rows (queries or keys) per tile: one per lane
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;  // query (forward) or key (dq) rows a warp owns
constexpr int kTStride = kTile + 1;           // row stride of transposed tiles
constexpr int kMaxHeadSize = 128;

static_assert(kTile == 32, "one tile row per lane");
static_assert(kRowsPerWarp == 8, "the probability buffer is read as two float4 per key");

// Head dims padded to a multiple of 4, the row stride of row-major tiles.
__host__ __device__ inline int padded_head_size(int HS) { return (HS + 3) / 4 * 4; }

__device__ inline float4 load_float4(const float* address) {
  return *reinterpret_cast<const float4*>(address);
}
__device__ inline void store_float4(float* address, float4 value) {
  *reinterpret_cast<float4*>(address) = value;
}
__device__ inline float dot4(float4 a, float b0, float b1, float b2, float b3, float acc) {
  return fmaf(a.w, b3, fmaf(a.z, b2, fmaf(a.y, b1, fmaf(a.x, b0, acc))));
}
__device__ inline float dot4(float4 a, float4 b, float acc) {
  return dot4(a, b.x, b.y, b.z, b.w, acc);
}
__device__ inline void axpy4(float4& acc, float a, float4 x) {
  acc.x = fmaf(a, x.x, acc.x);
  acc.y = fmaf(a, x.y, acc.y);
  acc.z = fmaf(a, x.z, acc.z);
  acc.w = fmaf(a, x.w, acc.w);
}

// Copies rows [row0, row0 + kTile) of one head's slice into a shared tile as fp32. `src` is
// row 0 of the head (rows `row_stride` elements apart, HS elements used per row); rows at or past
// T and the padding dims [HS, HSP) are zero, so masked products read zeros, never poison.
// `packed`: HS is a multiple of Packed128<floatX>::size and the rows are 16-byte aligned.
// Transposed tiles are filled row-fastest across threads (column writes to distinct banks);
// row-major tiles dim-fastest (coalesced global reads, float4 shared writes).
template <bool kTransposed, typename floatX>
__device__ void load_tile(float* tile, const floatX* src, size_t row_stride, int row0, int T,
                          int HS, int HSP, bool packed) {
  auto put = [&](int r, int d, float value) {
    if (kTransposed)
      tile[d * kTStride + r] = value;
    else
      tile[r * HSP + d] = value;
  };
  if (packed) {
    constexpr int kPack = Packed128<floatX>::size;
    const int chunks = HS / kPack;
    for (int idx = threadIdx.x; idx < kTile * chunks; idx += kThreads) {
      const int r = kTransposed ? idx % kTile : idx / chunks;
      const int d = (kTransposed ? idx / kTile : idx % chunks) * kPack;
      Packed128<floatX> v = Packed128<floatX>::zeros();
      if (row0 + r < T) v = load128(src + static_cast<size_t>(row0 + r) * row_stride + d);
      if (kTransposed) {
#pragma unroll
        for (int k = 0; k < kPack; ++k) put(r, d + k, static_cast<float>(v[k]));
      } else {
#pragma unroll
        for (int k = 0; k < kPack; k += 4)
          store_float4(tile + r * HSP + d + k,
                       make_float4(static_cast<float>(v[k]), static_cast<float>(v[k + 1]),
                                   static_cast<float>(v[k + 2]), static_cast<float>(v[k + 3])));
      }
    }
  } else {
    for (int idx = threadIdx.x; idx < kTile * HS; idx += kThreads) {
      const int r = kTransposed ? idx % kTile : idx / HS;
      const int d = kTransposed ? idx / kTile : idx % HS;
      const float value =
          row0 + r < T ? static_cast<float>(src[static_cast<size_t>(row0 + r) * row_stride + d])
                       : 0.0f;
      put(r, d, value);
    }
  }
  const int pad = HSP - HS;
  for (int idx = threadIdx.x; idx < kTile * pad; idx += kThreads) put(idx / pad, HS + idx % pad, 0.0f);
}

// Writes rows [row0, min(row0 + kTile, T)) of a row-major fp32 tile to one head's slice of dst,
// converting to floatX (the inverse of load_tile, without the padding).
template <typename floatX>
__device__ void store_tile(floatX* dst, size_t row_stride, const float* tile, int row0, int T,
                           int HS, int HSP, bool packed) {
  if (packed) {
    constexpr int kPack = Packed128<floatX>::size;
    const int chunks = HS / kPack;
    for (int idx = threadIdx.x; idx < kTile * chunks; idx += kThreads) {
      const int r = idx / chunks, d = idx % chunks * kPack;
      if (row0 + r >= T) continue;
      Packed128<floatX> v;
#pragma unroll
      for (int k = 0; k < kPack; ++k) v[k] = static_cast<floatX>(tile[r * HSP + d + k]);
      store128(dst + static_cast<size_t>(row0 + r) * row_stride + d, v);
    }
  } else {
    for (int idx = threadIdx.x; idx < kTile * HS; idx += kThreads) {
      const int r = idx / HS, d = idx % HS;
      if (row0 + r < T)
        dst[static_cast<size_t>(row0 + r) * row_stride + d] = static_cast<floatX>(tile[r * HSP + d]);
    }
  }
}

// Shared-memory floats of each kernel, for a padded head size HSP.
__host__ __device__ inline size_t forward_smem_floats(int HSP) {
  return 2 * size_t(kTile) * HSP              // q tile, v tile (row-major)
         + size_t(HSP) * kTStride             // k tile (transposed)
         + size_t(kWarps) * kTile * kRowsPerWarp;  // per-warp probabilities [key][row]
}
__host__ __device__ inline size_t backward_dkdv_smem_floats(int HSP) {
  return 2 * size_t(HSP) * kTStride    // k, v tiles (transposed)
         + 2 * size_t(kTile) * HSP     // q, dout tiles (row-major)
         + 2 * size_t(kTile) * kTStride;  // P, dS [query][key]
}
__host__ __device__ inline size_t backward_dq_smem_floats(int HSP) {
  return 2 * size_t(HSP) * kTStride   // q, dout tiles (transposed)
         + 2 * size_t(kTile) * HSP    // k, v tiles (row-major)
         + size_t(kTile) * kTStride   // dS [query][key]
         + kTile;                     // D per query
}

}  // namespace attention_detail

// ---- CUDA kernels ---------------------------------------------------------------------------

// Grid (n_tiles, NH, B), block kThreads, dynamic shared memory forward_smem_floats(HSP) floats.
// kMaxHS >= HS bounds the per-thread register arrays (32, 64 or 128). Three resident blocks per
// SM: without that bound ptxas aims at 128 registers on sm_80 and spills a few bytes; with it, it
// uses about 150-165 and spills nothing on sm_80 and sm_90.
template <typename floatX, int kMaxHS>
__global__ void __launch_bounds__(attention_detail::kThreads, 3)
    attention_forward_kernel(floatX* out, float* lse, const floatX* qkv, int T, int C, int NH,
                             bool packed) {
  using namespace attention_detail;
  constexpr int kDims = kMaxHS / 32;  // head dims per lane in the P @ V product: lane + 32 i
  SIMT_DYNAMIC_SHARED(float, smem);
  const int HS = C / NH, HSP = padded_head_size(HS);
  float* q_tile = smem;                        // [kTile][HSP]; reused to stage the output
  float* v_tile = q_tile + kTile * HSP;        // [kTile][HSP]
  float* k_tile_t = v_tile + kTile * HSP;      // [HSP][kTStride]
  float* probs = k_tile_t + HSP * kTStride;    // [kWarps][kTile keys][kRowsPerWarp]

  const int n_tiles = (T + kTile - 1) / kTile;
  const int q_tile_index = n_tiles - 1 - static_cast<int>(blockIdx.x);  // longest first
  const int h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const floatX* q_rows = qkv + static_cast<size_t>(b) * T * row_stride + h * HS;
  const floatX* k_rows = q_rows + C;
  const floatX* v_rows = q_rows + 2 * C;
  const int q0 = q_tile_index * kTile;
  const int row0 = warp * kRowsPerWarp;  // this warp's first row in the query tile
  const float scale = 1.0f / sqrtf(static_cast<float>(HS));
  float* warp_probs = probs + warp * kTile * kRowsPerWarp;

  load_tile<false>(q_tile, q_rows, row_stride, q0, T, HS, HSP, packed);

  float acc[kRowsPerWarp][kDims];       // unnormalised output rows, dims lane + 32 i
  float running_max[kRowsPerWarp];      // per row, identical in every lane
  float lane_sum[kRowsPerWarp];         // this lane's share of each row's softmax denominator
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    running_max[r] = -INFINITY;
    lane_sum[r] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDims; ++i) acc[r][i] = 0.0f;
  }

  for (int k_tile_index = 0; k_tile_index <= q_tile_index; ++k_tile_index) {
    const int k0 = k_tile_index * kTile;
    __syncthreads();  // the previous key tile is no longer read
    load_tile<true>(k_tile_t, k_rows, row_stride, k0, T, HS, HSP, packed);
    load_tile<false>(v_tile, v_rows, row_stride, k0, T, HS, HSP, packed);
    __syncthreads();

    // Raw scores of this lane's key against the warp's rows.
    float score[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) score[r] = 0.0f;
    for (int d = 0; d < HSP; d += 4) {
      const float k_0 = k_tile_t[(d + 0) * kTStride + lane];
      const float k_1 = k_tile_t[(d + 1) * kTStride + lane];
      const float k_2 = k_tile_t[(d + 2) * kTStride + lane];
      const float k_3 = k_tile_t[(d + 3) * kTStride + lane];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r)
        score[r] = dot4(load_float4(q_tile + (row0 + r) * HSP + d), k_0, k_1, k_2, k_3, score[r]);
    }

    // Online softmax. Every row sees key k0 <= its own index (the diagonal tile starts at the
    // query tile's first row), so the tile max is finite and the rescale factor is well defined.
    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int query = q0 + row0 + r;
      const float s = key <= query && key < T ? score[r] * scale : -INFINITY;
      const float new_max = fmaxf(running_max[r], warp_max(s));
      const float rescale = expf(running_max[r] - new_max);  // 0 on the first tile
      const float p = expf(s - new_max);
      running_max[r] = new_max;
      lane_sum[r] = lane_sum[r] * rescale + p;
#pragma unroll
      for (int i = 0; i < kDims; ++i) acc[r][i] *= rescale;
      warp_probs[lane * kRowsPerWarp + r] = p;
    }
    __syncwarp();

    // acc[r][dims] += sum_j p[r][j] * v[j][dims]
    for (int j = 0; j < kTile; ++j) {
      const float4 p_lo = load_float4(warp_probs + j * kRowsPerWarp);
      const float4 p_hi = load_float4(warp_probs + j * kRowsPerWarp + 4);
      const float p_row[kRowsPerWarp] = {p_lo.x, p_lo.y, p_lo.z, p_lo.w,
                                         p_hi.x, p_hi.y, p_hi.z, p_hi.w};
#pragma unroll
      for (int i = 0; i < kDims; ++i) {
        const int d = lane + 32 * i;
        const float v = d < HS ? v_tile[j * HSP + d] : 0.0f;
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) acc[r][i] = fmaf(p_row[r], v, acc[r][i]);
      }
    }
    __syncwarp();  // the probabilities are read before the next tile overwrites them
  }

  // Normalise, stage the warp's rows in its own rows of q_tile (only this warp read them), then
  // write the whole tile with packed stores.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const float sum = warp_sum(lane_sum[r]);
    const float inv_sum = 1.0f / sum;
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      const int d = lane + 32 * i;
      if (d < HS) q_tile[(row0 + r) * HSP + d] = acc[r][i] * inv_sum;
    }
    const int query = q0 + row0 + r;
    if (lane == 0 && query < T)
      lse[(static_cast<size_t>(b) * NH + h) * T + query] = running_max[r] + logf(sum);
  }
  __syncthreads();
  store_tile(out + static_cast<size_t>(b) * T * C + h * HS, C, q_tile, q0, T, HS, HSP, packed);
}

// dk, dv of one key tile. Grid (n_tiles, NH, B), block kThreads, dynamic shared memory
// backward_dkdv_smem_floats(HSP) floats. Lane j owns key j; in the score phase warp w takes query
// rows [8w, 8w + 8), in the accumulation phase dim groups 4 (w + 4 m) .. + 3.
template <typename floatX, int kMaxHS>
__global__ void __launch_bounds__(attention_detail::kThreads)
    attention_backward_dkdv_kernel(floatX* dqkv, const floatX* dout, const floatX* qkv,
                                   const floatX* out, const float* lse, int T, int C, int NH,
                                   bool packed) {
  using namespace attention_detail;
  constexpr int kGroups = kMaxHS / (4 * kWarps);  // float4 dim groups per thread
  constexpr int kOutDims = kMaxHS / 32;           // dims per lane in the D = dout . out sums
  SIMT_DYNAMIC_SHARED(float, smem);
  const int HS = C / NH, HSP = padded_head_size(HS);
  float* k_tile_t = smem;                          // [HSP][kTStride]
  float* v_tile_t = k_tile_t + HSP * kTStride;     // [HSP][kTStride]
  float* q_tile = v_tile_t + HSP * kTStride;       // [kTile][HSP]; stages dk at the end
  float* dout_tile = q_tile + kTile * HSP;         // [kTile][HSP]; stages dv at the end
  float* probs = dout_tile + kTile * HSP;          // [kTile query][kTStride]
  float* dscores = probs + kTile * kTStride;       // [kTile query][kTStride]

  const int n_tiles = (T + kTile - 1) / kTile;
  const int k_tile_index = blockIdx.x;  // early key tiles see the most queries: launched first
  const int h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const size_t head_offset = static_cast<size_t>(b) * T * row_stride + h * HS;
  const floatX* q_rows = qkv + head_offset;
  const size_t out_offset = static_cast<size_t>(b) * T * C + h * HS;
  const floatX* dout_rows = dout + out_offset;
  const floatX* out_rows = out + out_offset;
  const float* lse_rows = lse + (static_cast<size_t>(b) * NH + h) * T;
  const int k0 = k_tile_index * kTile;
  const int key = k0 + lane;
  const int row0 = warp * kRowsPerWarp;
  const float scale = 1.0f / sqrtf(static_cast<float>(HS));

  load_tile<true>(k_tile_t, q_rows + C, row_stride, k0, T, HS, HSP, packed);
  load_tile<true>(v_tile_t, q_rows + 2 * C, row_stride, k0, T, HS, HSP, packed);

  float4 dk[kGroups], dv[kGroups];
#pragma unroll
  for (int m = 0; m < kGroups; ++m) {
    dk[m] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    dv[m] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }

  for (int q_tile_index = k_tile_index; q_tile_index < n_tiles; ++q_tile_index) {
    const int q0 = q_tile_index * kTile;
    __syncthreads();  // the previous query tile is no longer read
    load_tile<false>(q_tile, q_rows, row_stride, q0, T, HS, HSP, packed);
    load_tile<false>(dout_tile, dout_rows, C, q0, T, HS, HSP, packed);
    __syncthreads();

    // Scores and dout . v for this lane's key against the warp's query rows.
    float score[kRowsPerWarp], dprob[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) score[r] = dprob[r] = 0.0f;
    for (int d = 0; d < HSP; d += 4) {
      const float k_0 = k_tile_t[(d + 0) * kTStride + lane], v_0 = v_tile_t[(d + 0) * kTStride + lane];
      const float k_1 = k_tile_t[(d + 1) * kTStride + lane], v_1 = v_tile_t[(d + 1) * kTStride + lane];
      const float k_2 = k_tile_t[(d + 2) * kTStride + lane], v_2 = v_tile_t[(d + 2) * kTStride + lane];
      const float k_3 = k_tile_t[(d + 3) * kTStride + lane], v_3 = v_tile_t[(d + 3) * kTStride + lane];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        score[r] = dot4(load_float4(q_tile + (row0 + r) * HSP + d), k_0, k_1, k_2, k_3, score[r]);
        dprob[r] = dot4(load_float4(dout_tile + (row0 + r) * HSP + d), v_0, v_1, v_2, v_3, dprob[r]);
      }
    }

#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int query = q0 + row0 + r;
      // D = dout . out for this row: lanes split the dims, the warp adds them up.
      float partial = 0.0f;
#pragma unroll
      for (int i = 0; i < kOutDims; ++i) {
        const int d = lane + 32 * i;
        if (d < HS && query < T)
          partial += dout_tile[(row0 + r) * HSP + d] *
                     static_cast<float>(out_rows[static_cast<size_t>(query) * C + d]);
      }
      const float D = warp_sum(partial);
      const bool visible = query < T && key <= query;
      const float p = visible ? expf(score[r] * scale - lse_rows[query]) : 0.0f;
      probs[(row0 + r) * kTStride + lane] = p;
      dscores[(row0 + r) * kTStride + lane] = p * (dprob[r] - D);
    }
    __syncthreads();

    // dv[key] += sum_i p[i][key] dout[i];  dk[key] += sum_i dS[i][key] q[i]   (dk scaled at the end)
    for (int i = 0; i < kTile; ++i) {
      const float p = probs[i * kTStride + lane];
      const float ds = dscores[i * kTStride + lane];
#pragma unroll
      for (int m = 0; m < kGroups; ++m) {
        const int d = 4 * (warp + kWarps * m);
        if (d < HSP) {
          axpy4(dv[m], p, load_float4(dout_tile + i * HSP + d));
          axpy4(dk[m], ds, load_float4(q_tile + i * HSP + d));
        }
      }
    }
  }

  __syncthreads();  // the last query tile is no longer read: reuse it to stage dk and dv
#pragma unroll
  for (int m = 0; m < kGroups; ++m) {
    const int d = 4 * (warp + kWarps * m);
    if (d < HSP) {
      store_float4(q_tile + lane * HSP + d,
                   make_float4(dk[m].x * scale, dk[m].y * scale, dk[m].z * scale, dk[m].w * scale));
      store_float4(dout_tile + lane * HSP + d, dv[m]);
    }
  }
  __syncthreads();
  floatX* dqkv_rows = dqkv + head_offset;
  store_tile(dqkv_rows + C, row_stride, q_tile, k0, T, HS, HSP, packed);
  store_tile(dqkv_rows + 2 * C, row_stride, dout_tile, k0, T, HS, HSP, packed);
}

// dq of one query tile. Grid (n_tiles, NH, B), block kThreads, dynamic shared memory
// backward_dq_smem_floats(HSP) floats. Lane i owns query i; in the score phase warp w takes key
// rows [8w, 8w + 8), in the accumulation phase dim groups 4 (w + 4 m) .. + 3.
template <typename floatX, int kMaxHS>
__global__ void __launch_bounds__(attention_detail::kThreads)
    attention_backward_dq_kernel(floatX* dqkv, const floatX* dout, const floatX* qkv,
                                 const floatX* out, const float* lse, int T, int C, int NH,
                                 bool packed) {
  using namespace attention_detail;
  constexpr int kGroups = kMaxHS / (4 * kWarps);
  constexpr int kOutDims = kMaxHS / 32;
  SIMT_DYNAMIC_SHARED(float, smem);
  const int HS = C / NH, HSP = padded_head_size(HS);
  float* q_tile_t = smem;                          // [HSP][kTStride]
  float* dout_tile_t = q_tile_t + HSP * kTStride;  // [HSP][kTStride]
  float* k_tile = dout_tile_t + HSP * kTStride;    // [kTile][HSP]; stages dq at the end
  float* v_tile = k_tile + kTile * HSP;            // [kTile][HSP]
  float* dscores = v_tile + kTile * HSP;           // [kTile query][kTStride]
  float* dout_dot_out = dscores + kTile * kTStride;  // [kTile]: D per query

  const int n_tiles = (T + kTile - 1) / kTile;
  const int q_tile_index = n_tiles - 1 - static_cast<int>(blockIdx.x);  // longest first
  const int h = blockIdx.y, b = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t row_stride = 3 * static_cast<size_t>(C);
  const size_t head_offset = static_cast<size_t>(b) * T * row_stride + h * HS;
  const floatX* q_rows = qkv + head_offset;
  const size_t out_offset = static_cast<size_t>(b) * T * C + h * HS;
  const floatX* out_rows = out + out_offset;
  const int q0 = q_tile_index * kTile;
  const int query = q0 + lane;
  const int row0 = warp * kRowsPerWarp;  // this warp's first key row in the score phase
  const float scale = 1.0f / sqrtf(static_cast<float>(HS));

  load_tile<true>(q_tile_t, q_rows, row_stride, q0, T, HS, HSP, packed);
  load_tile<true>(dout_tile_t, dout + out_offset, C, q0, T, HS, HSP, packed);
  __syncthreads();
  // D = dout . out per query: warp w sums rows [8w, 8w + 8), lanes splitting the dims.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int row = row0 + r;
    float partial = 0.0f;
#pragma unroll
    for (int i = 0; i < kOutDims; ++i) {
      const int d = lane + 32 * i;
      if (d < HS && q0 + row < T)
        partial += dout_tile_t[d * kTStride + row] *
                   static_cast<float>(out_rows[static_cast<size_t>(q0 + row) * C + d]);
    }
    const float D = warp_sum(partial);
    if (lane == 0) dout_dot_out[row] = D;
  }
  __syncthreads();
  const float D = dout_dot_out[lane];
  const float query_lse = query < T ? lse[(static_cast<size_t>(b) * NH + h) * T + query] : 0.0f;

  float4 dq[kGroups];
#pragma unroll
  for (int m = 0; m < kGroups; ++m) dq[m] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);

  for (int k_tile_index = 0; k_tile_index <= q_tile_index; ++k_tile_index) {
    const int k0 = k_tile_index * kTile;
    __syncthreads();  // the previous key tile is no longer read
    load_tile<false>(k_tile, q_rows + C, row_stride, k0, T, HS, HSP, packed);
    load_tile<false>(v_tile, q_rows + 2 * C, row_stride, k0, T, HS, HSP, packed);
    __syncthreads();

    // Scores and dout . v for this lane's query against the warp's key rows.
    float score[kRowsPerWarp], dprob[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) score[r] = dprob[r] = 0.0f;
    for (int d = 0; d < HSP; d += 4) {
      const float q_0 = q_tile_t[(d + 0) * kTStride + lane], o_0 = dout_tile_t[(d + 0) * kTStride + lane];
      const float q_1 = q_tile_t[(d + 1) * kTStride + lane], o_1 = dout_tile_t[(d + 1) * kTStride + lane];
      const float q_2 = q_tile_t[(d + 2) * kTStride + lane], o_2 = dout_tile_t[(d + 2) * kTStride + lane];
      const float q_3 = q_tile_t[(d + 3) * kTStride + lane], o_3 = dout_tile_t[(d + 3) * kTStride + lane];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        score[r] = dot4(load_float4(k_tile + (row0 + r) * HSP + d), q_0, q_1, q_2, q_3, score[r]);
        dprob[r] = dot4(load_float4(v_tile + (row0 + r) * HSP + d), o_0, o_1, o_2, o_3, dprob[r]);
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int key = k0 + row0 + r;
      const bool visible = query < T && key <= query;
      const float p = visible ? expf(score[r] * scale - query_lse) : 0.0f;
      dscores[lane * kTStride + row0 + r] = p * (dprob[r] - D);
    }
    __syncthreads();

    // dq[query] += sum_j dS[query][j] k[j]   (scaled at the end)
    for (int j = 0; j < kTile; ++j) {
      const float ds = dscores[lane * kTStride + j];
#pragma unroll
      for (int m = 0; m < kGroups; ++m) {
        const int d = 4 * (warp + kWarps * m);
        if (d < HSP) axpy4(dq[m], ds, load_float4(k_tile + j * HSP + d));
      }
    }
  }

  __syncthreads();  // the last key tile is no longer read: reuse it to stage dq
#pragma unroll
  for (int m = 0; m < kGroups; ++m) {
    const int d = 4 * (warp + kWarps * m);
    if (d < HSP)
      store_float4(k_tile + lane * HSP + d,
                   make_float4(dq[m].x * scale, dq[m].y * scale, dq[m].z * scale, dq[m].w * scale));
  }
  __syncthreads();
  store_tile(dqkv + head_offset, row_stride, k_tile, q0, T, HS, HSP, packed);
}

// ---- launchers ------------------------------------------------------------------------------

namespace attention_detail {

// Checks the shape against what the kernels support and returns the head size.
inline int check_attention_shape(const char* op, int B, int T, int C, int NH) {
  if (B < 1 || T < 1 || C < 1 || NH < 1 || C % NH != 0)
    throw Error(cat(op, ": bad shape B=", B, " T=", T, " C=", C, " NH=", NH,
                    " (all must be >= 1 and C a multiple of NH)"));
  const int HS = C / NH;
  if (HS > kMaxHeadSize)
    throw Error(cat(op, ": head size C/NH = ", HS, " exceeds the kernels' maximum of ",
                    kMaxHeadSize, "; use more heads"));
  // Grid limits (y and z are 16-bit on the GPU) and the int tile arithmetic inside the kernels
  // (row indices and T + kTile stay below INT_MAX; element offsets are computed in size_t).
  if (NH > 65535 || B > 65535 || T > INT_MAX - kTile || C > INT_MAX / 3)
    throw Error(cat(op, ": shape B=", B, " T=", T, " C=", C, " NH=", NH,
                    " exceeds the launch limits (B, NH <= 65535; T < 2^31 - 32)"));
  return HS;
}

// Whether tile rows move 16 bytes at a time: when HS is a multiple of the packed width. Then
// every tensor must be 16-byte aligned (the tagged allocator and cudaMalloc guarantee it), and a
// misaligned one is reported as the caller's bug rather than silently taking the slow path.
// Other head sizes use element-wise loads and stores.
template <typename floatX>
bool use_packed(const char* op, int HS,
                std::initializer_list<std::pair<const char*, const floatX*>> tensors) {
  if (!row_length_packs<floatX>(HS)) return false;
  for (const auto& [name, pointer] : tensors) require_packed(op, name, pointer, HS);
  return true;
}

inline void check_not_null(const char* op, std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (p == nullptr) throw Error(cat(op, ": a tensor pointer is null"));
}

// Calls launch(std::integral_constant<int, kMaxHS>) with the smallest register budget (kMaxHS)
// that holds HS.
template <typename Launch>
void dispatch_head_size(int HS, Launch launch) {
  if (HS <= 32)
    launch(std::integral_constant<int, 32>{});
  else if (HS <= 64)
    launch(std::integral_constant<int, 64>{});
  else
    launch(std::integral_constant<int, 128>{});
}

// Opts a kernel into more than the default 48 KiB of dynamic shared memory when it needs it.
template <typename Kernel>
void reserve_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)));
}

}  // namespace attention_detail

// out[B,T,C], lse[B,NH,T] from qkv[B,T,3C] (backend.h attention_forward).
template <typename floatX>
void attention_forward(floatX* out, float* lse, const floatX* qkv, int B, int T, int C, int NH,
                       cudaStream_t stream) {
  using namespace attention_detail;
  const char* op = "attention_forward";
  const int HS = check_attention_shape(op, B, T, C, NH);
  check_not_null(op, {out, lse, qkv});
  const bool packed = use_packed<floatX>(op, HS, {{"out", out}, {"qkv", qkv}});
  const int n_tiles = (T + kTile - 1) / kTile;
  const size_t smem_bytes = forward_smem_floats(padded_head_size(HS)) * sizeof(float);
  dispatch_head_size(HS, [&](auto max_hs) {
    auto kernel = attention_forward_kernel<floatX, decltype(max_hs)::value>;
    reserve_dynamic_smem(kernel, smem_bytes);
    simt::launch(kernel, dim3(n_tiles, NH, B), dim3(kThreads), smem_bytes, stream, out, lse, qkv,
                 T, C, NH, packed);
    CUDA_CHECK_LAUNCH();
  });
}

// dqkv[B,T,3C] (overwritten) from dout[B,T,C], qkv, out and lse (backend.h attention_backward).
template <typename floatX>
void attention_backward(floatX* dqkv, const floatX* dout, const floatX* qkv, const floatX* out,
                        const float* lse, int B, int T, int C, int NH, cudaStream_t stream) {
  using namespace attention_detail;
  const char* op = "attention_backward";
  const int HS = check_attention_shape(op, B, T, C, NH);
  check_not_null(op, {dqkv, dout, qkv, out, lse});
  const bool packed =
      use_packed<floatX>(op, HS, {{"dqkv", dqkv}, {"dout", dout}, {"qkv", qkv}, {"out", out}});
  const int n_tiles = (T + kTile - 1) / kTile;
  const int HSP = padded_head_size(HS);
  const size_t dkdv_smem = backward_dkdv_smem_floats(HSP) * sizeof(float);
  const size_t dq_smem = backward_dq_smem_floats(HSP) * sizeof(float);
  dispatch_head_size(HS, [&](auto max_hs) {
    constexpr int kMaxHS = decltype(max_hs)::value;
    auto dkdv_kernel = attention_backward_dkdv_kernel<floatX, kMaxHS>;
    auto dq_kernel = attention_backward_dq_kernel<floatX, kMaxHS>;
    reserve_dynamic_smem(dkdv_kernel, dkdv_smem);
    reserve_dynamic_smem(dq_kernel, dq_smem);
    // The two kernels write disjoint parts of dqkv (k|v rows and q rows of every token).
    simt::launch(dkdv_kernel, dim3(n_tiles, NH, B), dim3(kThreads), dkdv_smem, stream, dqkv, dout,
                 qkv, out, lse, T, C, NH, packed);
    CUDA_CHECK_LAUNCH();
    simt::launch(dq_kernel, dim3(n_tiles, NH, B), dim3(kThreads), dq_smem, stream, dqkv, dout, qkv,
                 out, lse, T, C, NH, packed);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace slim
