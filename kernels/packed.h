// packed.h — 128-bit packed access for kernels: one load/store instruction moves 16 bytes
// (4 floats or 8 bf16), which is what saturates DRAM bandwidth on memory-bound kernels.
//
//   Packed128<T> p = load128(ptr);      // ptr must be 16-byte aligned
//   p[i] ... (i < Packed128<T>::size)   // element access, fp32 math via (float)p[i]
//   store128(ptr, p);
//   load128cs / store128cs              // streaming ("evict first") variants for data read or
//                                       // written once (__ldcs / __stcs)
//   Packed128<T>::constant(x), zeros()
//   to_float(x) / from_float<T>(f)      // storage <-> fp32 math (bf16: round to nearest even)
//
// Launchers that use these call require_packed() on every packed tensor: 16-byte alignment of the
// base pointer and a row length that is a multiple of Packed128<T>::size, so every access is
// aligned; the emulator reports a misaligned 16-byte access like the GPU's fault.
#pragma once

#include "simt/cuda_compat.h"

#include <cstddef>
#include <cstdint>

#include "util/error.h"

namespace slim {

// Storage types are float or __nv_bfloat16; all math is fp32. These two conversions are the only
// place a kernel turns one into the other (bf16 rounds to nearest even, like PyTorch's .to()).
__device__ __host__ inline float to_float(float x) { return x; }
__device__ __host__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __host__ inline T from_float(float x) {
  static_assert(sizeof(T) == 0, "kernel storage types are float and __nv_bfloat16");
  return T(x);
}
template <>
__device__ __host__ inline float from_float<float>(float x) {
  return x;
}
template <>
__device__ __host__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

template <typename T>
struct alignas(16) Packed128 {
  static constexpr int size = static_cast<int>(16 / sizeof(T));
  static_assert(16 % sizeof(T) == 0, "Packed128 element size must divide 16 bytes");
  T payload[size];

  Packed128() = default;
  __device__ __host__ static Packed128 constant(T value) {
    Packed128 result;
    for (int k = 0; k < size; ++k) result.payload[k] = value;
    return result;
  }
  __device__ __host__ static Packed128 zeros() { return constant(T(0.0f)); }
  __device__ __host__ T& operator[](int index) { return payload[index]; }
  __device__ __host__ const T& operator[](int index) const { return payload[index]; }

  // Bit-for-bit reinterpretation as the 16-byte vector type the load/store instructions take.
  __device__ __host__ static Packed128 from_int4(int4 bits) {
    Packed128 result;
    static_assert(sizeof(result) == sizeof(int4), "Packed128 must be exactly 16 bytes");
    __builtin_memcpy(&result, &bits, sizeof(bits));
    return result;
  }
  __device__ __host__ int4 to_int4() const {
    int4 bits;
    __builtin_memcpy(&bits, this, sizeof(bits));
    return bits;
  }
};

// Plain load/store, cached at all levels (__ldca / __stwb are the GPU's default ld/st; spelled out
// so the emulator checks their alignment too).
template <typename T>
__device__ inline Packed128<T> load128(const T* address) {
  return Packed128<T>::from_int4(__ldca(reinterpret_cast<const int4*>(address)));
}
template <typename T>
__device__ inline void store128(T* address, const Packed128<T>& value) {
  __stwb(reinterpret_cast<int4*>(address), value.to_int4());
}

// Streaming load/store: the data is touched once, so it should not evict reused lines from L2.
template <typename T>
__device__ inline Packed128<T> load128cs(const T* address) {
  return Packed128<T>::from_int4(__ldcs(reinterpret_cast<const int4*>(address)));
}
template <typename T>
__device__ inline void store128cs(T* address, const Packed128<T>& value) {
  __stcs(reinterpret_cast<int4*>(address), value.to_int4());
}

// ---- host-side checks for launchers ----------------------------------------------------------
// True when `pointer` may be accessed with 128-bit loads/stores at every multiple of
// Packed128<T>::size elements.
template <typename T>
inline bool is_aligned16(const T* pointer) {
  return reinterpret_cast<uintptr_t>(pointer) % 16 == 0;
}
// True when rows of `row_length` elements keep 16-byte alignment from row to row.
template <typename T>
inline bool row_length_packs(long long row_length) {
  return row_length % Packed128<T>::size == 0;
}

// Throws (naming the op, the tensor and the fix) unless `pointer` is 16-byte aligned and rows of
// `row_length` elements keep that alignment. A violation is a bug in the caller's layout (the
// tagged allocator aligns every buffer), so it is an internal error, not a user input error.
template <typename T>
inline void require_packed(const char* op, const char* tensor, const T* pointer,
                           long long row_length) {
  if (!is_aligned16(pointer))
    throw Error(cat(op, ": ", tensor, " at ", static_cast<const void*>(pointer),
                    " is not 16-byte aligned, which 128-bit packed access needs; allocate it "
                    "through the tagged allocator or at a 16-byte multiple offset"));
  if (!row_length_packs<T>(row_length))
    throw Error(cat(op, ": ", tensor, " has rows of ", row_length, " elements, not a multiple of ",
                    Packed128<T>::size, " (16 bytes of ", sizeof(T) == 2 ? "bf16" : "fp32",
                    "), which 128-bit packed access needs; pad the dimension"));
}

}  // namespace slim
