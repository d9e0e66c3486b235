// emu_device.h — the device side of the SIMT emulator: built-in variables, barriers, warp
// collectives, cooperative groups, cache-hinted loads/stores, atomics and math intrinsics.
// Included by cuda_compat.h after the real CUDA headers; do not include it directly.
//
// Everything that can block (barriers, warp collectives) calls into the scheduler
// (emu_scheduler.cpp), which switches fibers; everything else is plain inline C++. Each blocking
// call takes a defaulted std::source_location so that reports name the kernel line.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

// ------------------------------------------------------------------------------------------------
// Built-in variables. The scheduler sets them before it resumes a fiber; they are thread_local
// because every worker OS thread runs its own block.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
inline thread_local int warpSize = 32;

namespace simt::detail {

// The warp-synchronous operations the scheduler knows. Lanes meet only when they run the same op
// with the same mask (PTX shfl.sync / vote.sync / bar.warp.sync rules).
enum class WarpOp : uint8_t {
  SyncWarp,
  ShflIdx,
  ShflUp,
  ShflDown,
  ShflXor,
  Ballot,
  Any,
  All,
  MatchAny,
  MatchAll,
  ReduceAddU,
  ReduceMinU,
  ReduceMaxU,
  ReduceMinI,
  ReduceMaxI,
  ReduceAnd,
  ReduceOr,
  ReduceXor,
};

struct WarpResult {
  uint64_t bits;  // the lane's result (shuffled value bits, ballot mask, reduction, ...)
  bool pred;      // __match_all_sync's predicate
};

// Blocks the calling fiber until every lane named in `mask` has arrived with the same op and mask,
// then returns this lane's result. `operand` is the source lane / delta / xor mask; `width` the
// shuffle segment width.
WarpResult warp_collective(WarpOp op, unsigned mask, uint64_t value, int operand, int width,
                           const std::source_location& where);

enum class BarrierOp : uint8_t { Sync, Count, And, Or };

// __syncthreads and its reducing variants; returns the reduction (0 for Sync).
int block_barrier(BarrierOp op, int predicate, const std::source_location& where);

// Lanes of the calling thread's warp that exist and have not exited.
unsigned active_mask();

// Reports a load/store/atomic at an address that is not aligned to `alignment` (like the GPU's
// "misaligned address" fault); execution continues.
void report_misaligned(const void* address, size_t bytes, size_t alignment, const char* what,
                       const std::source_location& where);

// __trap(): reports and stops the calling thread's block.
[[noreturn]] void trap(const std::source_location& where);

// The calling block's dynamic shared memory (poisoned with 0xFF bytes before every block).
inline thread_local unsigned char* tl_dynamic_shared = nullptr;

// Alignment a GPU access of `bytes` bytes needs: natural alignment for 1/2/4/8/16-byte accesses,
// element alignment (`fallback`) for anything else (it is split into smaller accesses).
constexpr size_t access_alignment(size_t bytes, size_t fallback) {
  return (bytes == 1 || bytes == 2 || bytes == 4 || bytes == 8 || bytes == 16) ? bytes : fallback;
}

template <typename T>
inline void check_access(const void* address, const char* what, const std::source_location& where) {
  constexpr size_t alignment = access_alignment(sizeof(T), alignof(T));
  if (reinterpret_cast<uintptr_t>(address) % alignment != 0) [[unlikely]]
    report_misaligned(address, sizeof(T), alignment, what, where);
}

// Cache-hinted accesses go through memcpy: after a misaligned access has been reported, the
// access itself must not be undefined behaviour (UBSan would stop the test that planted it).
template <typename T>
inline T load_bytes(const T* address) {
  T value;
  std::memcpy(static_cast<void*>(&value), static_cast<const void*>(address), sizeof(T));
  return value;
}
template <typename T>
inline void store_bytes(T* address, const T& value) {
  std::memcpy(static_cast<void*>(address), static_cast<const void*>(&value), sizeof(T));
}

// Values warp collectives can carry: what fits in one or two 32-bit registers. (__nv_bfloat162
// has a user-written copy assignment, so "trivially copyable" would exclude it; its bits are
// still all there is to it.)
template <typename T>
concept WarpValue = std::is_trivially_destructible_v<T> && std::is_default_constructible_v<T> &&
                    (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8);

template <WarpValue T>
inline uint64_t to_bits(T value) {
  uint64_t bits = 0;
  std::memcpy(&bits, static_cast<const void*>(&value), sizeof(T));
  return bits;
}

template <WarpValue T>
inline T from_bits(uint64_t bits) {
  T value;
  std::memcpy(static_cast<void*>(&value), &bits, sizeof(T));
  return value;
}

template <WarpValue T>
inline T shuffle(WarpOp op, unsigned mask, T value, int operand, int width,
                 const std::source_location& where) {
  return from_bits<T>(warp_collective(op, mask, to_bits(value), operand, width, where).bits);
}

}  // namespace simt::detail

// ------------------------------------------------------------------------------------------------
// Barriers and fences.
inline void __syncthreads(const std::source_location& where = std::source_location::current()) {
  simt::detail::block_barrier(simt::detail::BarrierOp::Sync, 0, where);
}
inline int __syncthreads_count(int predicate,
                               const std::source_location& where = std::source_location::current()) {
  return simt::detail::block_barrier(simt::detail::BarrierOp::Count, predicate, where);
}
inline int __syncthreads_and(int predicate,
                             const std::source_location& where = std::source_location::current()) {
  return simt::detail::block_barrier(simt::detail::BarrierOp::And, predicate, where);
}
inline int __syncthreads_or(int predicate,
                            const std::source_location& where = std::source_location::current()) {
  return simt::detail::block_barrier(simt::detail::BarrierOp::Or, predicate, where);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       const std::source_location& where = std::source_location::current()) {
  simt::detail::warp_collective(simt::detail::WarpOp::SyncWarp, mask, 0, 0, 32, where);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap(const std::source_location& where = std::source_location::current()) {
  simt::detail::trap(where);
}

// ------------------------------------------------------------------------------------------------
// Warp collectives.
template <simt::detail::WarpValue T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
                     const std::source_location& where = std::source_location::current()) {
  return simt::detail::shuffle(simt::detail::WarpOp::ShflIdx, mask, var, src_lane, width, where);
}
template <simt::detail::WarpValue T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                        const std::source_location& where = std::source_location::current()) {
  return simt::detail::shuffle(simt::detail::WarpOp::ShflUp, mask, var, static_cast<int>(delta),
                               width, where);
}
template <simt::detail::WarpValue T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                          const std::source_location& where = std::source_location::current()) {
  return simt::detail::shuffle(simt::detail::WarpOp::ShflDown, mask, var, static_cast<int>(delta),
                               width, where);
}
template <simt::detail::WarpValue T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                         const std::source_location& where = std::source_location::current()) {
  return simt::detail::shuffle(simt::detail::WarpOp::ShflXor, mask, var, lane_mask, width, where);
}

inline unsigned __ballot_sync(unsigned mask, int predicate,
                              const std::source_location& where = std::source_location::current()) {
  return static_cast<unsigned>(simt::detail::warp_collective(simt::detail::WarpOp::Ballot, mask,
                                                             predicate != 0, 0, 32, where)
                                   .bits);
}
inline int __any_sync(unsigned mask, int predicate,
                      const std::source_location& where = std::source_location::current()) {
  return static_cast<int>(
      simt::detail::warp_collective(simt::detail::WarpOp::Any, mask, predicate != 0, 0, 32, where)
          .bits);
}
inline int __all_sync(unsigned mask, int predicate,
                      const std::source_location& where = std::source_location::current()) {
  return static_cast<int>(
      simt::detail::warp_collective(simt::detail::WarpOp::All, mask, predicate != 0, 0, 32, where)
          .bits);
}
inline unsigned __activemask() { return simt::detail::active_mask(); }

template <simt::detail::WarpValue T>
inline unsigned __match_any_sync(unsigned mask, T value,
                                 const std::source_location& where = std::source_location::current()) {
  return static_cast<unsigned>(simt::detail::warp_collective(simt::detail::WarpOp::MatchAny, mask,
                                                             simt::detail::to_bits(value), 0, 32,
                                                             where)
                                   .bits);
}
template <simt::detail::WarpValue T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred,
                                 const std::source_location& where = std::source_location::current()) {
  simt::detail::WarpResult r = simt::detail::warp_collective(
      simt::detail::WarpOp::MatchAll, mask, simt::detail::to_bits(value), 0, 32, where);
  *pred = r.pred ? 1 : 0;
  return static_cast<unsigned>(r.bits);
}

#define SIMT_WARP_REDUCE_(name, op_unsigned, op_signed)                                          \
  inline unsigned name(unsigned mask, unsigned value,                                           \
                       const std::source_location& where = std::source_location::current()) {   \
    return static_cast<unsigned>(                                                               \
        simt::detail::warp_collective(simt::detail::WarpOp::op_unsigned, mask, value, 0, 32, where) \
            .bits);                                                                             \
  }                                                                                             \
  inline int name(unsigned mask, int value,                                                     \
                  const std::source_location& where = std::source_location::current()) {        \
    return static_cast<int>(static_cast<uint32_t>(                                              \
        simt::detail::warp_collective(simt::detail::WarpOp::op_signed, mask,                    \
                                      static_cast<uint32_t>(value), 0, 32, where)               \
            .bits));                                                                            \
  }
SIMT_WARP_REDUCE_(__reduce_add_sync, ReduceAddU, ReduceAddU)
SIMT_WARP_REDUCE_(__reduce_min_sync, ReduceMinU, ReduceMinI)
SIMT_WARP_REDUCE_(__reduce_max_sync, ReduceMaxU, ReduceMaxI)
#undef SIMT_WARP_REDUCE_

#define SIMT_WARP_REDUCE_BITS_(name, op)                                                      \
  inline unsigned name(unsigned mask, unsigned value,                                        \
                       const std::source_location& where = std::source_location::current()) { \
    return static_cast<unsigned>(                                                            \
        simt::detail::warp_collective(simt::detail::WarpOp::op, mask, value, 0, 32, where).bits); \
  }
SIMT_WARP_REDUCE_BITS_(__reduce_and_sync, ReduceAnd)
SIMT_WARP_REDUCE_BITS_(__reduce_or_sync, ReduceOr)
SIMT_WARP_REDUCE_BITS_(__reduce_xor_sync, ReduceXor)
#undef SIMT_WARP_REDUCE_BITS_

// ------------------------------------------------------------------------------------------------
// Cache-hinted loads and stores: plain accesses here, with the GPU's alignment fault checked.
#define SIMT_LOAD_(name)                                                                          \
  template <typename T>                                                                           \
  inline T name(const T* address, const std::source_location& where = std::source_location::current()) { \
    simt::detail::check_access<T>(address, #name, where);                                         \
    return simt::detail::load_bytes(address);                                                     \
  }
SIMT_LOAD_(__ldg)
SIMT_LOAD_(__ldca)
SIMT_LOAD_(__ldcg)
SIMT_LOAD_(__ldcs)
SIMT_LOAD_(__ldlu)
SIMT_LOAD_(__ldcv)
#undef SIMT_LOAD_

#define SIMT_STORE_(name)                                                                      \
  template <typename T>                                                                        \
  inline void name(T* address, std::type_identity_t<T> value,                                  \
                   const std::source_location& where = std::source_location::current()) {      \
    simt::detail::check_access<T>(address, #name, where);                                      \
    simt::detail::store_bytes(address, value);                                                 \
  }
SIMT_STORE_(__stwb)
SIMT_STORE_(__stcg)
SIMT_STORE_(__stcs)
SIMT_STORE_(__stwt)
#undef SIMT_STORE_

// ------------------------------------------------------------------------------------------------
// Atomics. Blocks run concurrently on several workers, so these are real atomics; relaxed order,
// like the GPU's atomicAdd & co (which imply no fence).
namespace simt::detail {

constexpr auto kRelaxed = std::memory_order_relaxed;

// Read-modify-write of a 2/4/8-byte word through a CAS loop; `update` maps old bits to new bits.
template <typename Word, typename Update>
inline Word atomic_update(Word* address, Update update) {
  Word old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(address, &old, update(old), /*weak=*/true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return old;
}

}  // namespace simt::detail

#define SIMT_ATOMIC_CHECK_(T) \
  simt::detail::check_access<T>(address, __func__, std::source_location::current())

inline int atomicAdd(int* address, int value) {
  SIMT_ATOMIC_CHECK_(int);
  return std::atomic_ref<int>(*address).fetch_add(value, simt::detail::kRelaxed);
}
inline unsigned atomicAdd(unsigned* address, unsigned value) {
  SIMT_ATOMIC_CHECK_(unsigned);
  return std::atomic_ref<unsigned>(*address).fetch_add(value, simt::detail::kRelaxed);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  SIMT_ATOMIC_CHECK_(unsigned long long);
  return std::atomic_ref<unsigned long long>(*address).fetch_add(value, simt::detail::kRelaxed);
}
inline float atomicAdd(float* address, float value) {
  SIMT_ATOMIC_CHECK_(float);
  return std::atomic_ref<float>(*address).fetch_add(value, simt::detail::kRelaxed);
}
inline double atomicAdd(double* address, double value) {
  SIMT_ATOMIC_CHECK_(double);
  return std::atomic_ref<double>(*address).fetch_add(value, simt::detail::kRelaxed);
}
// bf16 adds round the fp32 sum to nearest even, as the GPU's bf16 atomics do.
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* address, __nv_bfloat16 value) {
  SIMT_ATOMIC_CHECK_(__nv_bfloat16);
  uint16_t old_bits = simt::detail::atomic_update(
      reinterpret_cast<uint16_t*>(address), [value](uint16_t old) {
        __nv_bfloat16 sum = __float2bfloat16_rn(
            __bfloat162float(simt::detail::from_bits<__nv_bfloat16>(old)) + __bfloat162float(value));
        return static_cast<uint16_t>(simt::detail::to_bits(sum));
      });
  return simt::detail::from_bits<__nv_bfloat16>(old_bits);
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* address, __nv_bfloat162 value) {
  SIMT_ATOMIC_CHECK_(__nv_bfloat162);
  uint32_t old_bits = simt::detail::atomic_update(
      reinterpret_cast<uint32_t*>(address), [value](uint32_t old) {
        __nv_bfloat162 o = simt::detail::from_bits<__nv_bfloat162>(old);
        __nv_bfloat162 sum = __floats2bfloat162_rn(__low2float(o) + __low2float(value),
                                                   __high2float(o) + __high2float(value));
        return static_cast<uint32_t>(simt::detail::to_bits(sum));
      });
  return simt::detail::from_bits<__nv_bfloat162>(old_bits);
}
inline int atomicSub(int* address, int value) {
  SIMT_ATOMIC_CHECK_(int);
  return std::atomic_ref<int>(*address).fetch_sub(value, simt::detail::kRelaxed);
}
inline unsigned atomicSub(unsigned* address, unsigned value) {
  SIMT_ATOMIC_CHECK_(unsigned);
  return std::atomic_ref<unsigned>(*address).fetch_sub(value, simt::detail::kRelaxed);
}

#define SIMT_ATOMIC_MINMAX_(T)                                                          \
  inline T atomicMax(T* address, T value) {                                             \
    SIMT_ATOMIC_CHECK_(T);                                                              \
    return simt::detail::atomic_update(address, [value](T old) { return old < value ? value : old; }); \
  }                                                                                     \
  inline T atomicMin(T* address, T value) {                                             \
    SIMT_ATOMIC_CHECK_(T);                                                              \
    return simt::detail::atomic_update(address, [value](T old) { return value < old ? value : old; }); \
  }
SIMT_ATOMIC_MINMAX_(int)
SIMT_ATOMIC_MINMAX_(unsigned)
SIMT_ATOMIC_MINMAX_(long long)
SIMT_ATOMIC_MINMAX_(unsigned long long)
#undef SIMT_ATOMIC_MINMAX_

#define SIMT_ATOMIC_EXCH_CAS_BITS_(T)                                                  \
  inline T atomicExch(T* address, T value) {                                           \
    SIMT_ATOMIC_CHECK_(T);                                                             \
    return std::atomic_ref<T>(*address).exchange(value, simt::detail::kRelaxed);      \
  }                                                                                    \
  inline T atomicCAS(T* address, T compare, T value) {                                 \
    SIMT_ATOMIC_CHECK_(T);                                                             \
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, value, simt::detail::kRelaxed); \
    return compare; /* the old value, whether or not the swap happened */             \
  }                                                                                    \
  inline T atomicAnd(T* address, T value) {                                            \
    SIMT_ATOMIC_CHECK_(T);                                                             \
    return std::atomic_ref<T>(*address).fetch_and(value, simt::detail::kRelaxed);     \
  }                                                                                    \
  inline T atomicOr(T* address, T value) {                                             \
    SIMT_ATOMIC_CHECK_(T);                                                             \
    return std::atomic_ref<T>(*address).fetch_or(value, simt::detail::kRelaxed);      \
  }                                                                                    \
  inline T atomicXor(T* address, T value) {                                            \
    SIMT_ATOMIC_CHECK_(T);                                                             \
    return std::atomic_ref<T>(*address).fetch_xor(value, simt::detail::kRelaxed);     \
  }
SIMT_ATOMIC_EXCH_CAS_BITS_(int)
SIMT_ATOMIC_EXCH_CAS_BITS_(unsigned)
SIMT_ATOMIC_EXCH_CAS_BITS_(unsigned long long)
#undef SIMT_ATOMIC_EXCH_CAS_BITS_
inline float atomicExch(float* address, float value) {
  SIMT_ATOMIC_CHECK_(float);
  return std::atomic_ref<float>(*address).exchange(value, simt::detail::kRelaxed);
}
inline unsigned short atomicCAS(unsigned short* address, unsigned short compare,
                                unsigned short value) {
  SIMT_ATOMIC_CHECK_(unsigned short);
  std::atomic_ref<unsigned short>(*address).compare_exchange_strong(compare, value,
                                                                    simt::detail::kRelaxed);
  return compare;
}
#undef SIMT_ATOMIC_CHECK_

// ------------------------------------------------------------------------------------------------
// Math intrinsics. The fast-math variants are the precise functions here (a GPU is not bit-exact
// with them anyway). __expf, __logf, __powf, __sinf, __cosf, __tanf, __exp10f, __log2f, __log10f,
// __tanhf and __sincosf are declared by glibc's <math.h> (as internal names libm does not export);
// emu_math.cpp defines them.
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// Clamps to [0, 1]; NaN becomes 0 as on the GPU.
inline float __saturatef(float a) { return a >= 1.0f ? 1.0f : (a > 0.0f ? a : 0.0f); }
inline int __float2int_rn(float a) { return static_cast<int>(std::nearbyint(a)); }
inline int __float_as_int(float a) { return simt::detail::from_bits<int>(simt::detail::to_bits(a)); }
inline unsigned __float_as_uint(float a) {
  return simt::detail::from_bits<unsigned>(simt::detail::to_bits(a));
}
inline float __int_as_float(int a) { return simt::detail::from_bits<float>(simt::detail::to_bits(a)); }
inline float __uint_as_float(unsigned a) {
  return simt::detail::from_bits<float>(simt::detail::to_bits(a));
}
inline long long __double_as_longlong(double a) {
  return simt::detail::from_bits<long long>(simt::detail::to_bits(a));
}
inline double __longlong_as_double(long long a) {
  return simt::detail::from_bits<double>(simt::detail::to_bits(a));
}
inline int __popc(unsigned a) { return __builtin_popcount(a); }
inline int __popcll(unsigned long long a) { return __builtin_popcountll(a); }
inline int __clz(int a) { return a == 0 ? 32 : __builtin_clz(static_cast<unsigned>(a)); }
inline int __clzll(long long a) {
  return a == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(a));
}
inline int __ffs(int a) { return __builtin_ffs(a); }
inline int __ffsll(long long a) { return __builtin_ffsll(a); }
inline unsigned __brev(unsigned a) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((a >> i) & 1u) << (31 - i);
  return r;
}

// CUDA's global min/max accept any pair of arithmetic types (a family of overloads there).
template <typename A, typename B>
  requires(std::is_arithmetic_v<A> && std::is_arithmetic_v<B>)
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>)
    return std::fmin(static_cast<C>(a), static_cast<C>(b));
  else
    return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B>
  requires(std::is_arithmetic_v<A> && std::is_arithmetic_v<B>)
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>)
    return std::fmax(static_cast<C>(a), static_cast<C>(b));
  else
    return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}

// ------------------------------------------------------------------------------------------------
// Cooperative groups: the subset slimtrain kernels use, with the real library's names.
namespace cooperative_groups {

class thread_block {
 public:
  void sync(const std::source_location& where = std::source_location::current()) const {
    __syncthreads(where);
  }
  unsigned thread_rank() const {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  }
  unsigned size() const { return blockDim.x * blockDim.y * blockDim.z; }
  unsigned num_threads() const { return size(); }
  dim3 group_index() const { return blockIdx; }
  dim3 thread_index() const { return threadIdx; }
  dim3 dim_threads() const { return blockDim; }
  dim3 group_dim() const { return blockDim; }
};

inline thread_block this_thread_block() { return thread_block{}; }

template <unsigned Size, typename Parent = void>
class thread_block_tile;

// A tile of Size consecutive threads of the block (within one warp): its collectives use the
// tile's lanes as the mask and Size as the shuffle width.
template <unsigned Size>
class thread_block_tile<Size, void> {
  static_assert(Size >= 1 && Size <= 32 && (Size & (Size - 1)) == 0,
                "tiled_partition<N>: N must be a power of two no larger than 32");

 public:
  thread_block_tile() : block_rank_(this_thread_block().thread_rank()) {}

  static constexpr unsigned size() { return Size; }
  static constexpr unsigned num_threads() { return Size; }
  unsigned thread_rank() const { return block_rank_ % Size; }
  unsigned meta_group_rank() const { return block_rank_ / Size; }
  unsigned meta_group_size() const { return (this_thread_block().size() + Size - 1) / Size; }

  // The tile's lanes within its warp.
  unsigned build_mask() const {
    unsigned lanes = Size == 32 ? 0xffffffffu : ((1u << Size) - 1u);
    return lanes << ((block_rank_ % 32) / Size * Size);
  }

  void sync(const std::source_location& where = std::source_location::current()) const {
    __syncwarp(build_mask(), where);
  }
  template <simt::detail::WarpValue T>
  T shfl(T var, int src_rank, const std::source_location& where = std::source_location::current()) const {
    return __shfl_sync(build_mask(), var, src_rank, Size, where);
  }
  template <simt::detail::WarpValue T>
  T shfl_up(T var, unsigned delta,
            const std::source_location& where = std::source_location::current()) const {
    return __shfl_up_sync(build_mask(), var, delta, Size, where);
  }
  template <simt::detail::WarpValue T>
  T shfl_down(T var, unsigned delta,
              const std::source_location& where = std::source_location::current()) const {
    return __shfl_down_sync(build_mask(), var, delta, Size, where);
  }
  template <simt::detail::WarpValue T>
  T shfl_xor(T var, unsigned lane_mask,
             const std::source_location& where = std::source_location::current()) const {
    return __shfl_xor_sync(build_mask(), var, static_cast<int>(lane_mask), Size, where);
  }
  bool any(int predicate, const std::source_location& where = std::source_location::current()) const {
    return __any_sync(build_mask(), predicate, where) != 0;
  }
  bool all(int predicate, const std::source_location& where = std::source_location::current()) const {
    return __all_sync(build_mask(), predicate, where) != 0;
  }
  // Bit i is set when tile rank i's predicate is true (tile-relative, like the real library).
  unsigned ballot(int predicate,
                  const std::source_location& where = std::source_location::current()) const {
    unsigned warp_bits = __ballot_sync(build_mask(), predicate, where);
    return warp_bits >> ((block_rank_ % 32) / Size * Size);
  }

 private:
  unsigned block_rank_;
};

template <unsigned Size, typename Parent>
class thread_block_tile : public thread_block_tile<Size, void> {};

template <unsigned Size, typename Parent>
thread_block_tile<Size, Parent> tiled_partition(const Parent&) {
  return thread_block_tile<Size, Parent>{};
}

template <typename T>
struct plus {
  T operator()(const T& a, const T& b) const { return a + b; }
};
template <typename T>
struct less {  // the real library's "less" reduction yields the minimum
  T operator()(const T& a, const T& b) const { return b < a ? b : a; }
};
template <typename T>
struct greater {  // ... and "greater" the maximum
  T operator()(const T& a, const T& b) const { return a < b ? b : a; }
};
template <typename T>
struct bit_and {
  T operator()(const T& a, const T& b) const { return a & b; }
};
template <typename T>
struct bit_or {
  T operator()(const T& a, const T& b) const { return a | b; }
};
template <typename T>
struct bit_xor {
  T operator()(const T& a, const T& b) const { return a ^ b; }
};

// Butterfly reduction: every rank of the tile gets the same result.
template <unsigned Size, typename Parent, typename T, typename Op>
T reduce(const thread_block_tile<Size, Parent>& tile, T value, Op op,
         const std::source_location& where = std::source_location::current()) {
  for (unsigned offset = Size / 2; offset > 0; offset /= 2)
    value = op(value, tile.shfl_xor(value, offset, where));
  return value;
}

}  // namespace cooperative_groups
