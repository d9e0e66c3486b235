// cuda_compat.h — the ONE header every slimtrain kernel (.cu/.cuh) and launcher includes.
//
// The same kernel source compiles two ways:
//   * nvcc (__CUDACC__ defined): the real CUDA headers; simt::launch is <<<>>>.
//   * g++: the SIMT emulator in tests/simt/ runs every CUDA thread as a fiber on the CPU, so kernel
//     tests run on machines without a GPU. The real <cuda_runtime.h>/<cuda_bf16.h> are still used
//     for their host paths (dim3, float4/int4, __nv_bfloat16 with the GPU's rounding, the exact
//     cudart declarations); the emulator implements the cudart, cuBLASLt and NCCL subsets behind
//     those declarations (link the `simt_emu` library instead of cudart/cublasLt/nccl).
//
// ---------------------------------------------------------------------------------------------
// What kernels may use (the stable API; everything here compiles under both nvcc and g++)
// ---------------------------------------------------------------------------------------------
// Launch and shared memory
//   simt::launch(kernel, grid, block, smem_bytes, stream, args...)   never write <<<>>> yourself
//   SIMT_DYNAMIC_SHARED(type, name);   declares `type* name` = the block's dynamic shared memory
//                                       (16-byte aligned; replaces `extern __shared__ type name[]`)
//   __shared__ T x[N];                  static shared memory (per block; NOT poisoned, see limits)
//   SIMT_EMULATOR                       1 under the emulator, 0 under nvcc (for tests, not kernels)
// Built-ins: threadIdx, blockIdx, blockDim, gridDim, warpSize.
// Synchronization: __syncthreads(), __syncthreads_count/_and/_or(pred), __syncwarp(mask = full),
//   __threadfence(), __threadfence_block().
// Warp collectives (PTX shfl.sync/vote.sync rules; T = any 1/2/4/8-byte arithmetic type,
//   __nv_bfloat16, __nv_bfloat162):
//   __shfl_sync(mask, v, src_lane, width = 32), __shfl_up_sync(mask, v, delta, width),
//   __shfl_down_sync(mask, v, delta, width), __shfl_xor_sync(mask, v, lane_mask, width),
//   __ballot_sync(mask, pred), __any_sync, __all_sync, __activemask(),
//   __match_any_sync(mask, v), __match_all_sync(mask, v, &pred),
//   __reduce_add_sync / __reduce_min_sync / __reduce_max_sync (int, unsigned),
//   __reduce_and_sync / __reduce_or_sync / __reduce_xor_sync (unsigned).
// Cooperative groups (namespace cooperative_groups; `namespace cg = cooperative_groups;`):
//   cg::this_thread_block() -> thread_block: sync(), thread_rank(), size(), num_threads(),
//     group_index(), thread_index(), dim_threads()
//   cg::tiled_partition<N>(block), N in {1,2,4,8,16,32} -> thread_block_tile<N>:
//     thread_rank(), size(), num_threads(), meta_group_rank(), meta_group_size(), sync(),
//     shfl(v, src), shfl_up(v, d), shfl_down(v, d), shfl_xor(v, m), any(p), all(p), ballot(p)
//   cg::reduce(tile, v, op) with op = cg::plus<T>{}, cg::less<T>{} (min), cg::greater<T>{} (max),
//     cg::bit_and<T>{}, cg::bit_or<T>{}, cg::bit_xor<T>{}
// Memory: __ldg, __ldca, __ldcg, __ldcs, __ldlu, __ldcv (loads), __stwb, __stcg, __stcs, __stwt
//   (stores); a 2/4/8/16-byte access that is not naturally aligned is reported, like the GPU's
//   misaligned-address fault.
// Atomics (return the old value): atomicAdd (int, unsigned, unsigned long long, float, double,
//   __nv_bfloat16, __nv_bfloat162), atomicSub (int, unsigned), atomicMax/atomicMin (int, unsigned,
//   long long, unsigned long long), atomicExch (int, unsigned, unsigned long long, float),
//   atomicCAS (int, unsigned, unsigned long long, unsigned short), atomicAnd/Or/Xor (int, unsigned,
//   unsigned long long).
// Math: everything in <cmath> (expf, tanhf, fmaxf, sqrtf, ...) plus __expf, __logf, __powf,
//   __sinf, __cosf, __tanf, __exp10f, __log2f, __log10f, __tanhf, __fdividef, __frcp_rn, rsqrtf,
//   __frsqrt_rn, __fsqrt_rn, __saturatef, __fmaf_rn, __fadd_rn, __fsub_rn, __fmul_rn, __fdiv_rn,
//   min/max (integer and floating overloads), __float_as_int, __int_as_float, __float_as_uint,
//   __uint_as_float, __popc, __popcll, __clz, __clzll, __ffs, __ffsll, __brev, __float2int_rn.
//   bf16: the host-capable functions of <cuda_bf16.h> (__float2bfloat16_rn, __bfloat162float,
//   __floats2bfloat162_rn, __low2float, __high2float, __hadd, __hmul, __hfma, operators, ...).
// Other: __trap() (reported, the block stops), printf.
// Host side, both builds: the cudart API; cudaFuncSetAttribute(kernel, attribute, value) with a
//   kernel pointer; simt/device_buffer.h (simt::DeviceBuffer<T>, a RAII device array for tests).
//
// Emulator-only host API for tests (in namespace simt, only when SIMT_EMULATOR is 1; see
// emu_launch.h): report_count(), reports(), reset_reports(), set_schedule()/schedule(),
// set_workers()/workers(), set_device_memory_bytes(), device_bytes_in_use(), set_stack_bytes(),
// measure_switch_ns().
// Environment: SIMT_SCHEDULE=forward|reverse|random:<seed> (thread and block order),
//   SIMT_WORKERS=<n> (worker threads, default: hardware threads), SIMT_STACK_KB=<n> (fiber stack,
//   default 64, 256 under sanitizers), SIMT_DEVICE_MEMORY=<bytes, K/M/G suffix> (default 80G),
//   SIMT_NCCL_TIMEOUT_S=<seconds> (how long an NCCL rank waits for the others, default 120).
// Errors: a bug found in a kernel (a "report") prints to stderr, counts, and makes the next
//   cudaGetLastError return cudaErrorLaunchFailure and the next cudaDeviceSynchronize /
//   cudaStreamSynchronize / cudaEventSynchronize return it once (not sticky, unlike a GPU, so a
//   test can go on). Bad launch dimensions give cudaErrorInvalidConfiguration, too much dynamic
//   shared memory cudaErrorInvalidValue (as the driver does).
// Bug finding: cudaMalloc memory and dynamic shared memory start as 0xFF bytes (NaN in float and
//   bf16); pointer arguments must point into device (or cudaMallocHost) memory; deadlocks, mask
//   mismatches, lanes missing from a mask and shuffles reading lanes outside their mask are
//   reported with kernel, block, thread and source line; ASan builds catch out-of-bounds device
//   and dynamic shared memory accesses; TSan builds report data races between the threads of a
//   block (a missing __syncthreads) and between blocks.
//
// Rules for portable kernels: do not use __CUDA_ARCH__ to select features (it is undefined in the
// emulator, whose host path is the "device"); do not write `extern __shared__`; give collectives
// exact masks (a full mask in a partial last warp is reported: those lanes do not exist);
// __activemask() returns the lanes that have not exited, which is not a convergence guarantee on
// a GPU either: derive masks from __ballot_sync instead.
//
// Known limits of the emulator: not bit-exact with a GPU (no FMA contraction rules, fast-math
// intrinsics are the precise functions); no weak memory model; launches are synchronous (streams
// and events only order and time); static __shared__ memory is not poisoned and keeps its
// contents from the previous block on the same worker; pointers inside structs passed to a kernel
// are not checked. Hence every .cu must also pass the nvcc gate.
#pragma once

#if defined(__CUDACC__)
// ----------------------------------------------------------------------- real CUDA (nvcc) ----
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <utility>

#define SIMT_EMULATOR 0

// Dynamic shared memory has one name per kernel on the GPU, so every use aliases the same bytes.
#define SIMT_DYNAMIC_SHARED(type, name)                                \
  extern __shared__ __align__(16) unsigned char simt_dynamic_smem_[]; \
  type* name = reinterpret_cast<type*>(simt_dynamic_smem_)

namespace simt {

// The one launch form kernels and launchers use, so the emulator can substitute its own.
template <typename Kernel, typename... Args>
inline void launch(Kernel kernel, dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                   Args&&... args) {
  kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
}

}  // namespace simt

#else
// ----------------------------------------------------------------------- SIMT emulator (g++) ----
#if defined(__HOST_DEFINES_H__) || defined(__CUDA_RUNTIME_H__) || defined(__CUDA_BF16_H__)
#error "simt/cuda_compat.h must be included before any CUDA header (cuda_runtime.h, cuda_bf16.h, cublasLt.h, nccl.h): the emulator defines __shared__ and friends first"
#endif

#define SIMT_EMULATOR 1

// Prologue: the CUDA headers keep these definitions (they only define what is undefined outside
// nvcc), so kernels compile as plain C++ and __shared__ variables become per-worker-thread storage.
// One worker runs one block at a time, so a thread_local is shared by exactly that block's threads.
#define __global__
#define __device__
#define __host__
#define __shared__ thread_local
#define __constant__
#define __launch_bounds__(...)
#define __grid_constant__
// The emulator provides threadIdx & co itself (as thread_locals the scheduler sets).
#define __DEVICE_LAUNCH_PARAMETERS_H__

#include <cuda_runtime.h>
#include <cuda_bf16.h>

// `#pragma unroll` is a hint only nvcc understands: targets linking simt_emu get
// -Wno-unknown-pragmas from tests/simt/CMakeLists.txt (g++ 12 ignores a diagnostic pragma here).

#include "emu_device.h"
#include "emu_launch.h"

#endif
