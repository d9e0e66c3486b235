// emu_launch.h — simt::launch for the emulator, and the emulator's host-side API for tests.
// Included by cuda_compat.h; do not include it directly.
//
// A launch converts the arguments to the kernel's parameter types (as <<<>>> does), checks every
// pointer argument points into device memory, validates the configuration like the GPU, and then
// runs the grid to completion (launches are synchronous). Problems become reports: printed to
// stderr, counted (simt::report_count()), and returned by the next cudaGetLastError /
// cudaDeviceSynchronize as cudaErrorLaunchFailure (cudaErrorInvalidConfiguration for a bad
// configuration).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// The block's dynamic shared memory as `type* name` (see cuda_compat.h).
#define SIMT_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::simt::detail::tl_dynamic_shared)

namespace simt {

// ---------------------------------------------------------------------------------------------
// Host-side API for tests (emulator only).

// Order in which a block's threads (and the grid's blocks) run between synchronization points.
// A kernel whose result depends on it has a race (typically a missing __syncthreads).
enum class ScheduleOrder { Forward, Reverse, Random };
struct Schedule {
  ScheduleOrder order = ScheduleOrder::Forward;
  uint64_t seed = 0;  // for Random
};
// The initial schedule comes from SIMT_SCHEDULE=forward|reverse|random:<seed> (default forward).
void set_schedule(Schedule schedule);
Schedule schedule();

// Bugs the emulator found since the start or the last reset_reports(): each is also printed to
// stderr (the first few per launch) and fails the next cudaGetLastError/cudaDeviceSynchronize.
int report_count();
std::vector<std::string> reports();  // the most recent messages (at most 256), oldest first
void reset_reports();                // zero the count, forget the messages

// Worker threads that run blocks (the launching thread is one of them). Default: SIMT_WORKERS or
// the number of hardware threads. Takes effect at the next launch.
void set_workers(int workers);
int workers();

// Device memory the emulator pretends to have (cudaMemGetInfo total; cudaMalloc beyond it fails).
// Default: SIMT_DEVICE_MEMORY (bytes, K/M/G suffixes allowed) or 80 GiB.
void set_device_memory_bytes(size_t bytes);
size_t device_bytes_in_use();

// Fiber stack size for CUDA threads (default SIMT_STACK_KB, else 64 KiB; 256 KiB under
// sanitizers). Takes effect for stacks created after the call.
void set_stack_bytes(size_t bytes);

// Measures one fiber switch: runs a block of `threads` threads through `barriers` __syncthreads
// and returns nanoseconds per switch (each barrier costs one switch per thread).
double measure_switch_ns(int threads, int barriers);

namespace detail {

// Runs the calling block's thread body: calls the kernel with the launch's arguments.
using ThreadBody = void (*)(const void* closure);

struct LaunchRequest {
  const void* kernel;  // identity of the kernel (for cudaFuncSetAttribute and report names)
  dim3 grid;
  dim3 block;
  size_t shared_bytes;
  cudaStream_t stream;
  ThreadBody body;
  const void* closure;
  // Pointer arguments that do not point into device memory, already described.
  std::vector<std::string> bad_arguments;
};

void launch_kernel(LaunchRequest& request);

// True when `pointer` is null or points into (or one past the end of) a cudaMalloc/cudaMallocHost
// allocation that is still live.
bool is_device_accessible(const void* pointer);

std::string describe_pointer_argument(int index, const char* type_name, const void* pointer);

template <typename T>
const char* type_name() {
  // Readable enough for reports: the compiler's spelling of T.
  return __PRETTY_FUNCTION__;
}

template <typename Param>
void check_argument(LaunchRequest& request, int index, const Param& value) {
  if constexpr (std::is_pointer_v<Param>) {
    const void* pointer = reinterpret_cast<const void*>(value);
    if (!is_device_accessible(pointer))
      request.bad_arguments.push_back(describe_pointer_argument(index, type_name<Param>(), pointer));
  }
}

}  // namespace detail

// Runs kernel<<<grid, block, smem_bytes, stream>>>(args...) on the emulator.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
            cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args),
                "simt::launch: the number of arguments does not match the kernel's parameters");
  // Like the GPU's parameter buffer: the arguments converted to the parameter types, once.
  using Arguments = std::tuple<std::decay_t<Params>...>;
  struct Closure {
    void (*kernel)(Params...);
    Arguments arguments;
  };
  Closure closure{kernel, Arguments(std::forward<Args>(args)...)};

  detail::LaunchRequest request{reinterpret_cast<const void*>(kernel), grid, block, smem_bytes,
                                stream, nullptr, &closure, {}};
  request.body = [](const void* c) {
    const Closure& cl = *static_cast<const Closure*>(c);
    std::apply(cl.kernel, cl.arguments);  // each CUDA thread gets its own copies of the parameters
  };
  [&]<size_t... I>(std::index_sequence<I...>) {
    (detail::check_argument(request, static_cast<int>(I), std::get<I>(closure.arguments)), ...);
  }(std::index_sequence_for<Params...>{});
  detail::launch_kernel(request);
}

}  // namespace simt

// nvcc's <cuda_runtime.h> overloads cudaFuncSetAttribute for kernel pointers only when compiling
// with nvcc; launchers write cudaFuncSetAttribute(my_kernel, ...), so the emulator provides it.
template <typename... Params>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attribute,
                                        int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attribute, value);
}
