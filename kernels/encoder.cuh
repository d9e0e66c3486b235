// encoder.cuh — token + position embedding: forward, and a deterministic backward.
//
// Forward:  out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]      (one thread per 16-byte pack)
// Backward: dwte[tokens[b,t],:] += dout[b,t,:];  dwpe[t,:] += dout[b,t,:]
//
// The backward must not depend on thread timing (backend.h: "the summation order does not depend
// on threads"), and a token can occur many times in a batch, so float atomics on wte rows are out.
// Instead the (token, position) pairs are sorted on the device: keys token << 32 | position are
// unique, so a bitonic sort gives one well-defined order, in which each token's positions are a
// contiguous ascending run. One warp per run then adds that token's gradient rows in position
// order, in fp32 registers, and writes the wte row once. This is the same order the CPU reference
// (cpu_ops.h) uses — dwte[token] += dout rows in increasing b*T+t — so fp32 results match it
// exactly. dwpe is a plain column walk: one thread per (t, pack) adds b = 0..B-1 in order.
//
// Scratch: encoder_backward_scratch_bytes(B, T) bytes for the sort keys (next power of two >= B*T
// keys of 8 bytes). The sort is a handful of launches: one shared-memory sort of 2048-key chunks,
// then for each doubling of the merged length some global compare-exchange passes finished by a
// shared-memory pass.
#pragma once

#include "cuda_check.h"
#include "packed.h"
#include "workspace_sizes.h"  // encoder_backward_scratch_bytes, sort_length

#include <cstddef>
#include <cstdint>

namespace slim {

namespace encoder_detail {
constexpr int kForwardThreads = 256;
// Keys sorted by one block in shared memory (one compare-exchange per thread per pass).
constexpr int kSortChunk = 2048;
// Warps per block of the dwte kernel (each warp owns one sorted position).
constexpr int kRunWarps = 4;
constexpr int kPositionThreads = 256;
constexpr uint64_t kPaddingKey = ~uint64_t(0);  // sorts after every real key
}  // namespace encoder_detail

// ---- CUDA kernels ------------------------------------------------------------------------------

// out[N,C] = wte[tokens] + wpe[t]; one thread per 16-byte pack of one row.
template <typename floatX>
__global__ void encoder_forward_kernel(floatX* out, const int* tokens, const floatX* wte,
                                       const floatX* wpe, int N, int T, int C) {
  using Pack = Packed128<floatX>;
  const int packs_per_row = C / Pack::size;
  const size_t pack = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pack >= static_cast<size_t>(N) * packs_per_row) return;
  const int row = static_cast<int>(pack / packs_per_row);
  const int c = static_cast<int>(pack % packs_per_row) * Pack::size;
  const int t = row % T;
  const Pack token_part = load128(wte + static_cast<size_t>(tokens[row]) * C + c);
  const Pack position_part = load128(wpe + static_cast<size_t>(t) * C + c);
  Pack result;
#pragma unroll
  for (int k = 0; k < Pack::size; ++k)
    result[k] = from_float<floatX>(to_float(token_part[k]) + to_float(position_part[k]));
  store128cs(out + static_cast<size_t>(row) * C + c, result);
}

// The bitonic network's one operation: orders the pair (low index, low index + stride). While
// runs of length `run` are being merged, a pair whose global low index has the bit `run` clear
// sorts ascending and the others descending, so neighbouring runs form the next bitonic sequence;
// the final merge (run = the whole buffer) is ascending everywhere.
__device__ inline void bitonic_compare_exchange(uint64_t& low_key, uint64_t& high_key,
                                                bool ascending) {
  if ((low_key > high_key) == ascending) {
    const uint64_t swap = low_key;
    low_key = high_key;
    high_key = swap;
  }
}

// Fills chunk blockIdx.x of the key buffer with token << 32 | position (padding past N) and
// sorts it completely with runs up to `chunk` keys; runs alternate direction by global index, so
// the chunks form the bitonic sequences the merge passes expect.
__global__ void encoder_backward_sort_chunks_kernel(uint64_t* keys, const int* tokens, int N,
                                                    int chunk) {
  SIMT_DYNAMIC_SHARED(uint64_t, chunk_keys);
  const size_t base = static_cast<size_t>(blockIdx.x) * chunk;
  for (int i = threadIdx.x; i < chunk; i += blockDim.x) {
    const size_t position = base + i;
    chunk_keys[i] =
        position < static_cast<size_t>(N)
            ? (static_cast<uint64_t>(static_cast<uint32_t>(tokens[position])) << 32) | position
            : encoder_detail::kPaddingKey;
  }
  __syncthreads();
  for (int run = 2; run <= chunk; run *= 2) {
    for (int stride = run / 2; stride > 0; stride /= 2) {
      for (int pair = threadIdx.x; pair < chunk / 2; pair += blockDim.x) {
        // The pair's lower index: insert a 0 bit at position log2(stride).
        const int low = (pair / stride) * 2 * stride + pair % stride;
        const bool ascending = ((base + low) & run) == 0;
        bitonic_compare_exchange(chunk_keys[low], chunk_keys[low + stride], ascending);
      }
      __syncthreads();
    }
  }
  for (int i = threadIdx.x; i < chunk; i += blockDim.x) keys[base + i] = chunk_keys[i];
}

// A merge pass whose stride spans chunks: one thread per compare-exchange pair, through global
// memory.
__global__ void encoder_backward_merge_global_kernel(uint64_t* keys, size_t length, size_t run,
                                                     size_t stride) {
  const size_t pair = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pair >= length / 2) return;
  const size_t low = (pair / stride) * 2 * stride + pair % stride;
  uint64_t low_key = keys[low], high_key = keys[low + stride];
  const uint64_t low_before = low_key;
  bitonic_compare_exchange(low_key, high_key, (low & run) == 0);
  if (low_key != low_before) {
    keys[low] = low_key;
    keys[low + stride] = high_key;
  }
}

// The rest of a merge pass once the stride fits in a chunk: all strides chunk/2 .. 1 in shared
// memory.
__global__ void encoder_backward_merge_chunk_kernel(uint64_t* keys, size_t run, int chunk) {
  SIMT_DYNAMIC_SHARED(uint64_t, chunk_keys);
  const size_t base = static_cast<size_t>(blockIdx.x) * chunk;
  for (int i = threadIdx.x; i < chunk; i += blockDim.x) chunk_keys[i] = keys[base + i];
  __syncthreads();
  for (int stride = chunk / 2; stride > 0; stride /= 2) {
    for (int pair = threadIdx.x; pair < chunk / 2; pair += blockDim.x) {
      const int low = (pair / stride) * 2 * stride + pair % stride;
      bitonic_compare_exchange(chunk_keys[low], chunk_keys[low + stride],
                               ((base + low) & run) == 0);
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < chunk; i += blockDim.x) keys[base + i] = chunk_keys[i];
}

// dwte: one warp per sorted position; the warp whose position starts a run of equal tokens adds
// the run's dout rows (positions ascending) to the token's wte gradient row; the others exit.
template <typename floatX>
__global__ void encoder_backward_kernel(floatX* dwte, const floatX* dout, const uint64_t* keys,
                                        int N, int C) {
  using Pack = Packed128<floatX>;
  const int warps_per_block = blockDim.x / 32;
  const int sorted = blockIdx.x * warps_per_block + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (sorted >= N) return;
  const uint32_t token = static_cast<uint32_t>(keys[sorted] >> 32);
  if (sorted > 0 && static_cast<uint32_t>(keys[sorted - 1] >> 32) == token) return;
  int run_end = sorted + 1;
  while (run_end < N && static_cast<uint32_t>(keys[run_end] >> 32) == token) ++run_end;

  floatX* grad_row = dwte + static_cast<size_t>(token) * C;
  for (int c = lane * Pack::size; c < C; c += 32 * Pack::size) {
    const Pack old_grad = load128(grad_row + c);
    float acc[Pack::size];
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) acc[k] = to_float(old_grad[k]);
    for (int s = sorted; s < run_end; ++s) {
      const uint32_t position = static_cast<uint32_t>(keys[s]);
      const Pack g = load128cs(dout + static_cast<size_t>(position) * C + c);
#pragma unroll
      for (int k = 0; k < Pack::size; ++k) acc[k] += to_float(g[k]);
    }
    Pack result;
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) result[k] = from_float<floatX>(acc[k]);
    store128(grad_row + c, result);
  }
}

// dwpe[t] += sum over b (in order) of dout[b,t]; one thread per (t, pack).
template <typename floatX>
__global__ void encoder_backward_position_kernel(floatX* dwpe, const floatX* dout, int B, int T,
                                                 int C) {
  using Pack = Packed128<floatX>;
  const int packs_per_row = C / Pack::size;
  const size_t pack = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pack >= static_cast<size_t>(T) * packs_per_row) return;
  const int t = static_cast<int>(pack / packs_per_row);
  const int c = static_cast<int>(pack % packs_per_row) * Pack::size;
  floatX* grad_row = dwpe + static_cast<size_t>(t) * C + c;
  const Pack old_grad = load128(grad_row);
  float acc[Pack::size];
#pragma unroll
  for (int k = 0; k < Pack::size; ++k) acc[k] = to_float(old_grad[k]);
  for (int b = 0; b < B; ++b) {
    const Pack g = load128(dout + (static_cast<size_t>(b) * T + t) * C + c);
#pragma unroll
    for (int k = 0; k < Pack::size; ++k) acc[k] += to_float(g[k]);
  }
  Pack result;
#pragma unroll
  for (int k = 0; k < Pack::size; ++k) result[k] = from_float<floatX>(acc[k]);
  store128(grad_row, result);
}

// ---- launchers ---------------------------------------------------------------------------------

namespace encoder_detail {
inline void check_shape(const char* op, int B, int T, int C) {
  if (B <= 0 || T <= 0 || C <= 0)
    throw Error(cat(op, ": B, T, C must be positive, got B=", B, " T=", T, " C=", C));
  if (static_cast<long long>(B) * T > 0x7fffffffLL)
    throw Error(cat(op, ": B*T = ", static_cast<long long>(B) * T,
                    " tokens exceed int32 indexing; use a smaller batch"));
}
}  // namespace encoder_detail

// out[B,T,C] = wte[tokens[b,t]] + wpe[t]   (tokens [B,T] int32 in device memory, each < V)
template <typename floatX>
void encoder_forward(floatX* out, const int* tokens, const floatX* wte, const floatX* wpe, int B,
                     int T, int C, cudaStream_t stream) {
  constexpr const char* op = "encoder_forward";
  encoder_detail::check_shape(op, B, T, C);
  require_packed(op, "out", out, C);
  require_packed(op, "wte", wte, C);
  require_packed(op, "wpe", wpe, C);
  const int N = B * T;
  const unsigned long long packs =
      static_cast<unsigned long long>(N) * (C / Packed128<floatX>::size);
  const unsigned int blocks = grid_blocks(op, packs, encoder_detail::kForwardThreads);
  simt::launch(encoder_forward_kernel<floatX>, dim3(blocks), dim3(encoder_detail::kForwardThreads),
               0, stream, out, tokens, wte, wpe, N, T, C);
  CUDA_CHECK_LAUNCH();
}

// dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += dout[b,t]  (both accumulate; deterministic).
// scratch: encoder_backward_scratch_bytes(B, T) bytes of device memory, 8-byte aligned.
template <typename floatX>
void encoder_backward(floatX* dwte, floatX* dwpe, const floatX* dout, const int* tokens, int B,
                      int T, int C, void* scratch, cudaStream_t stream) {
  using namespace encoder_detail;
  constexpr const char* op = "encoder_backward";
  check_shape(op, B, T, C);
  require_packed(op, "dwte", dwte, C);
  require_packed(op, "dwpe", dwpe, C);
  require_packed(op, "dout", dout, C);
  if (scratch == nullptr || reinterpret_cast<uintptr_t>(scratch) % alignof(uint64_t) != 0)
    throw Error(cat(op, ": needs ", encoder_backward_scratch_bytes(B, T),
                    " bytes of 8-byte aligned scratch, got ", scratch));
  const int N = B * T;
  uint64_t* keys = static_cast<uint64_t*>(scratch);

  // Sort the (token, position) keys: chunks first, then merges of doubling run length.
  const size_t length = sort_length(static_cast<size_t>(N));
  const int chunk =
      static_cast<int>(length < static_cast<size_t>(kSortChunk) ? length : kSortChunk);
  const int sort_threads = chunk / 2;
  const size_t chunk_bytes = static_cast<size_t>(chunk) * sizeof(uint64_t);
  const unsigned int chunks = grid_blocks(op, length, static_cast<unsigned long long>(chunk));
  simt::launch(encoder_backward_sort_chunks_kernel, dim3(chunks), dim3(sort_threads), chunk_bytes,
               stream, keys, tokens, N, chunk);
  CUDA_CHECK_LAUNCH();
  for (size_t run = 2 * static_cast<size_t>(chunk); run <= length; run *= 2) {
    for (size_t stride = run / 2; stride >= static_cast<size_t>(chunk); stride /= 2) {
      simt::launch(encoder_backward_merge_global_kernel, dim3(grid_blocks(op, length / 2, 256)),
                   dim3(256), 0, stream, keys, length, run, stride);
      CUDA_CHECK_LAUNCH();
    }
    simt::launch(encoder_backward_merge_chunk_kernel, dim3(chunks), dim3(sort_threads), chunk_bytes,
                 stream, keys, run, chunk);
    CUDA_CHECK_LAUNCH();
  }

  simt::launch(encoder_backward_kernel<floatX>,
               dim3(grid_blocks(op, static_cast<unsigned long long>(N), kRunWarps)),
               dim3(kRunWarps * 32), 0, stream, dwte, dout, static_cast<const uint64_t*>(keys), N,
               C);
  CUDA_CHECK_LAUNCH();
  const unsigned long long position_packs =
      static_cast<unsigned long long>(T) * (C / Packed128<floatX>::size);
  simt::launch(encoder_backward_position_kernel<floatX>,
               dim3(grid_blocks(op, position_packs, kPositionThreads)), dim3(kPositionThreads), 0,
               stream, dwpe, dout, B, T, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
