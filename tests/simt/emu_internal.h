// emu_internal.h — what the emulator's .cpp files share: reports, per-host-thread CUDA errors,
// the device-memory registry and environment settings. Never included by kernels.
#pragma once

#include "cuda_compat.h"

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

namespace simt::detail {

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

std::string hex(uint64_t value);
std::string describe_site(const std::source_location& where);  // "file:line (function)"

// A bug the emulator found. Inside a kernel launch it is attributed to the launch (which then
// fails with cudaErrorLaunchFailure); printing is limited per launch, counting is not.
void report(const std::string& message);

// cudart's per-host-thread error state. `record_error` sets the last error (cudaGetLastError) for
// any failure and returns its argument, so API functions can `return record_error(...)`.
cudaError_t record_error(cudaError_t error);
// A kernel failure also surfaces at the next synchronizing call (cudaDeviceSynchronize, ...).
void set_pending_launch_failure();
cudaError_t take_pending_launch_failure();

// The device-memory registry (cudaMalloc, cudaMallocAsync and cudaMallocHost allocations).
struct Allocation {
  uintptr_t begin = 0;
  size_t bytes = 0;
  bool device = false;  // false: page-locked host memory (device-accessible, not device memory)
};
// Finds the allocation containing `pointer` (one-past-the-end counts as inside).
bool find_allocation(const void* pointer, Allocation* found);
// True when [pointer, pointer + bytes) lies inside one device (or, if allowed, pinned) allocation.
bool is_inside_allocation(const void* pointer, size_t bytes, bool allow_pinned_host);
std::string describe_address(const void* pointer);

// Maximum dynamic shared memory set by cudaFuncSetAttribute for a kernel (0 if never set).
int max_dynamic_shared_attribute(const void* kernel);

// Limits of the emulated device (H100-like, sm_90).
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxBlockDimZ = 64;
constexpr unsigned kMaxGridDimX = 2147483647u;
constexpr unsigned kMaxGridDimYZ = 65535u;
constexpr size_t kDefaultSharedPerBlock = 48 * 1024;
constexpr size_t kMaxSharedPerBlockOptin = 227 * 1024;
constexpr size_t kSharedPerMultiprocessor = 228 * 1024;
constexpr int kMultiprocessors = 132;

// Parses an environment variable holding a byte count with an optional K/M/G suffix (binary
// units); exits with a message naming the variable if it is malformed.
size_t env_bytes(const char* name, size_t fallback);

// Whether `stream` is a handle this emulator handed out (or one of the special null streams).
bool is_valid_stream(cudaStream_t stream);

}  // namespace simt::detail
