// emu_cudart.cpp — the cudart subset of the SIMT emulator, behind the real <cuda_runtime_api.h>
// declarations: device memory (poisoned with 0xFF bytes, i.e. NaN for float and bf16), copies and
// sets with range checks, streams and events (launches are synchronous, so they only order and
// time), errors per host thread, and an H100-like (sm_90) device description.
//
// Device memory is ordinary host memory from posix_memalign, so ASan builds catch kernels that
// read or write past the end of a cudaMalloc buffer.

#include "emu_internal.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

// The opaque handle types of the CUDA API, defined by the emulator.
struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point time;
  bool recorded = false;
  unsigned flags = 0;
};

namespace simt {
namespace detail {
namespace {

constexpr size_t kDeviceAlignment = 256;  // cudaMalloc guarantees at least 256 bytes
constexpr size_t kRememberedFrees = 256;

struct Registry {
  std::mutex mutex;
  std::map<uintptr_t, Allocation> allocations;  // by begin address
  std::deque<Allocation> recently_freed;        // to explain dangling pointers in reports
  size_t device_bytes = 0;
  size_t device_limit = env_bytes("SIMT_DEVICE_MEMORY", size_t{80} << 30);
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  std::unordered_map<const void*, int> max_dynamic_shared;  // per kernel
};

Registry& registry() {
  static Registry* instance = new Registry;  // leaked: used from threads that outlive statics
  return *instance;
}

thread_local cudaError_t tl_last_error = cudaSuccess;
thread_local cudaError_t tl_pending_failure = cudaSuccess;

// Called with the registry lock held.
const Allocation* find_locked(Registry& r, uintptr_t address) {
  auto it = r.allocations.upper_bound(address);
  if (it == r.allocations.begin()) return nullptr;
  --it;
  const Allocation& a = it->second;
  return address <= a.begin + a.bytes ? &a : nullptr;
}

const char* memcpy_kind_name(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
  }
  return "an unknown cudaMemcpyKind";
}

// Checks one side of a copy: `device` says which memory the kind promises.
std::string check_copy_side(const char* side, const void* pointer, size_t count, bool device) {
  if (device) {
    if (!is_inside_allocation(pointer, count, /*allow_pinned_host=*/false))
      return cat(side, " ", describe_address(pointer), " + ", count,
                 " bytes is not inside one device allocation");
  } else {
    Allocation found;
    if (find_allocation(pointer, &found) && found.device &&
        reinterpret_cast<uintptr_t>(pointer) < found.begin + found.bytes)
      return cat(side, " ", describe_address(pointer), " is device memory, but the kind says host");
  }
  return {};
}

cudaError_t checked_copy(void* dst, const void* src, size_t count, cudaMemcpyKind kind,
                         const char* api) {
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) {
    report(cat(api, ": null pointer (dst ", dst, ", src ", src, ") for ", count, " bytes"));
    return record_error(cudaErrorInvalidValue);
  }
  bool dst_device = false, src_device = false;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice: dst_device = true; break;
    case cudaMemcpyDeviceToHost: src_device = true; break;
    case cudaMemcpyDeviceToDevice: dst_device = src_device = true; break;
    case cudaMemcpyDefault: {
      // Unified addressing: each side is whatever it points into.
      Allocation found;
      dst_device = find_allocation(dst, &found) && found.device;
      src_device = find_allocation(src, &found) && found.device;
      break;
    }
    default:
      report(cat(api, ": invalid cudaMemcpyKind ", static_cast<int>(kind)));
      return record_error(cudaErrorInvalidMemcpyDirection);
  }
  std::string problem = check_copy_side("destination", dst, count, dst_device);
  if (problem.empty()) problem = check_copy_side("source", src, count, src_device);
  if (!problem.empty()) {
    report(cat(api, "(", memcpy_kind_name(kind), ", ", count, " bytes): ", problem));
    return record_error(cudaErrorInvalidValue);
  }
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t checked_set(void* dst, int value, size_t count, const char* api) {
  if (count == 0) return cudaSuccess;
  if (!is_inside_allocation(dst, count, /*allow_pinned_host=*/false)) {
    report(cat(api, ": ", describe_address(dst), " + ", count,
               " bytes is not inside one device allocation"));
    return record_error(cudaErrorInvalidValue);
  }
  std::memset(dst, value, count);
  return cudaSuccess;
}

cudaError_t allocate(void** pointer, size_t bytes, bool device, const char* api) {
  if (pointer == nullptr) return record_error(cudaErrorInvalidValue);
  *pointer = nullptr;
  if (bytes == 0) return cudaSuccess;
  Registry& r = registry();
  {
    // Reserve the bytes first, so concurrent allocations cannot overshoot the limit together.
    std::lock_guard<std::mutex> lock(r.mutex);
    if (device && bytes > r.device_limit - std::min(r.device_limit, r.device_bytes)) {
      std::fprintf(stderr,
                   "simt: %s(%zu bytes): out of emulated device memory (%zu of %zu bytes in use; "
                   "see SIMT_DEVICE_MEMORY)\n",
                   api, bytes, r.device_bytes, r.device_limit);
      return record_error(cudaErrorMemoryAllocation);
    }
    if (device) r.device_bytes += bytes;
  }
  void* memory = nullptr;
  if (posix_memalign(&memory, kDeviceAlignment, bytes) != 0) {
    std::lock_guard<std::mutex> lock(r.mutex);
    if (device) r.device_bytes -= bytes;
    return record_error(cudaErrorMemoryAllocation);
  }
  if (device) std::memset(memory, 0xFF, bytes);  // NaN poison: reading unwritten memory shows
  std::lock_guard<std::mutex> lock(r.mutex);
  const uintptr_t begin = reinterpret_cast<uintptr_t>(memory);
  r.allocations[begin] = Allocation{begin, bytes, device};
  *pointer = memory;
  return cudaSuccess;
}

cudaError_t release(void* pointer, bool device, const char* api) {
  if (pointer == nullptr) return cudaSuccess;
  Registry& r = registry();
  std::unique_lock<std::mutex> lock(r.mutex);
  auto it = r.allocations.find(reinterpret_cast<uintptr_t>(pointer));
  if (it == r.allocations.end() || it->second.device != device) {
    lock.unlock();
    report(cat(api, "(", describe_address(pointer), "): not the start of a live ",
               device ? "cudaMalloc" : "cudaMallocHost", " allocation"));
    return record_error(cudaErrorInvalidValue);
  }
  Allocation freed = it->second;
  r.allocations.erase(it);
  if (device) r.device_bytes -= freed.bytes;
  r.recently_freed.push_back(freed);
  if (r.recently_freed.size() > kRememberedFrees) r.recently_freed.pop_front();
  lock.unlock();
  std::free(pointer);
  return cudaSuccess;
}

bool known_stream(cudaStream_t stream) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.streams.count(stream) != 0;
}

bool known_event(cudaEvent_t event) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.events.count(event) != 0;
}

cudaError_t bad_handle(const char* api, const void* handle) {
  report(cat(api, ": invalid or destroyed handle ", hex(reinterpret_cast<uintptr_t>(handle))));
  return record_error(cudaErrorInvalidResourceHandle);
}

cudaDeviceProp make_properties() {
  cudaDeviceProp p;
  std::memset(&p, 0, sizeof p);
  std::snprintf(p.name, sizeof p.name, "SIMT emulator (H100-like, sm_90)");
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    p.totalGlobalMem = r.device_limit;
  }
  p.sharedMemPerBlock = kDefaultSharedPerBlock;
  p.regsPerBlock = 65536;
  p.warpSize = 32;
  p.memPitch = 2147483647;
  p.maxThreadsPerBlock = kMaxThreadsPerBlock;
  p.maxThreadsDim[0] = 1024;
  p.maxThreadsDim[1] = 1024;
  p.maxThreadsDim[2] = kMaxBlockDimZ;
  p.maxGridSize[0] = static_cast<int>(kMaxGridDimX);
  p.maxGridSize[1] = static_cast<int>(kMaxGridDimYZ);
  p.maxGridSize[2] = static_cast<int>(kMaxGridDimYZ);
  p.totalConstMem = 65536;
  p.major = 9;
  p.minor = 0;
  p.textureAlignment = 512;
  p.multiProcessorCount = kMultiprocessors;
  p.canMapHostMemory = 1;
  p.concurrentKernels = 1;
  p.asyncEngineCount = 2;
  p.unifiedAddressing = 1;
  p.memoryBusWidth = 5120;
  p.l2CacheSize = 50 * 1024 * 1024;
  p.persistingL2CacheMaxSize = 30 * 1024 * 1024;
  p.maxThreadsPerMultiProcessor = 2048;
  p.globalL1CacheSupported = 1;
  p.localL1CacheSupported = 1;
  p.sharedMemPerMultiprocessor = kSharedPerMultiprocessor;
  p.regsPerMultiprocessor = 65536;
  p.managedMemory = 1;
  p.cooperativeLaunch = 1;
  p.sharedMemPerBlockOptin = kMaxSharedPerBlockOptin;
  p.maxBlocksPerMultiProcessor = 32;
  p.reservedSharedMemPerBlock = 1024;
  p.memoryPoolsSupported = 1;
  return p;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Shared with the other emulator files.

cudaError_t record_error(cudaError_t error) {
  if (error != cudaSuccess) tl_last_error = error;
  return error;
}

void set_pending_launch_failure() { tl_pending_failure = cudaErrorLaunchFailure; }

cudaError_t take_pending_launch_failure() {
  cudaError_t pending = tl_pending_failure;
  tl_pending_failure = cudaSuccess;
  return pending;
}

bool find_allocation(const void* pointer, Allocation* found) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const Allocation* a = find_locked(r, reinterpret_cast<uintptr_t>(pointer));
  if (a == nullptr) return false;
  *found = *a;
  return true;
}

bool is_inside_allocation(const void* pointer, size_t bytes, bool allow_pinned_host) {
  if (pointer == nullptr) return false;
  Allocation a;
  if (!find_allocation(pointer, &a)) return false;
  if (!a.device && !allow_pinned_host) return false;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(pointer);
  return begin + bytes >= begin && begin + bytes <= a.begin + a.bytes;
}

std::string describe_address(const void* pointer) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (const Allocation* a = find_locked(r, address))
    return cat(hex(address), " (offset ", address - a->begin, " of a ", a->bytes, "-byte ",
               a->device ? "cudaMalloc" : "cudaMallocHost", " allocation)");
  for (auto it = r.recently_freed.rbegin(); it != r.recently_freed.rend(); ++it)
    if (address >= it->begin && address < it->begin + it->bytes)
      return cat(hex(address), " (host memory: offset ", address - it->begin, " of a ",
                 it->bytes, "-byte allocation that was freed — a dangling pointer?)");
  return cat(hex(address), " (host memory)");
}

int max_dynamic_shared_attribute(const void* kernel) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.max_dynamic_shared.find(kernel);
  return it == r.max_dynamic_shared.end() ? 0 : it->second;
}

size_t env_bytes(const char* name, size_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr) return fallback;
  char* end = nullptr;
  unsigned long long value = std::strtoull(text, &end, 10);
  size_t scale = 1;
  if (*end == 'K' || *end == 'k') scale = size_t{1} << 10, ++end;
  else if (*end == 'M' || *end == 'm') scale = size_t{1} << 20, ++end;
  else if (*end == 'G' || *end == 'g') scale = size_t{1} << 30, ++end;
  if (end == text || *end != '\0' || value == 0) {
    std::fprintf(stderr,
                 "simt: environment variable %s=\"%s\" is invalid: expected a positive byte count "
                 "with an optional K, M or G suffix (e.g. 16G)\n",
                 name, text);
    std::exit(2);
  }
  return static_cast<size_t>(value) * scale;
}

bool is_valid_stream(cudaStream_t stream) {
  return stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread ||
         known_stream(stream);
}

}  // namespace detail

void set_device_memory_bytes(size_t bytes) {
  detail::Registry& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.device_limit = bytes;
}

size_t device_bytes_in_use() {
  detail::Registry& r = detail::registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.device_bytes;
}

}  // namespace simt

// ------------------------------------------------------------------------------------------------
// The cudart C API.

using simt::detail::cat;
using simt::detail::record_error;
using simt::detail::registry;
using simt::detail::report;

extern "C" {

cudaError_t cudaMalloc(void** devPtr, size_t size) {
  return simt::detail::allocate(devPtr, size, true, "cudaMalloc");
}

cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t stream) {
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaMallocAsync", stream);
  return simt::detail::allocate(devPtr, size, true, "cudaMallocAsync");
}

cudaError_t cudaFree(void* devPtr) { return simt::detail::release(devPtr, true, "cudaFree"); }

cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t stream) {
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaFreeAsync", stream);
  return simt::detail::release(devPtr, true, "cudaFreeAsync");
}

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return simt::detail::allocate(ptr, size, false, "cudaMallocHost");
}

cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int) {
  return simt::detail::allocate(pHost, size, false, "cudaHostAlloc");
}

cudaError_t cudaFreeHost(void* ptr) { return simt::detail::release(ptr, false, "cudaFreeHost"); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  return simt::detail::checked_copy(dst, src, count, kind, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaMemcpyAsync", stream);
  return simt::detail::checked_copy(dst, src, count, kind, "cudaMemcpyAsync");
}

cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  return simt::detail::checked_set(devPtr, value, count, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaMemsetAsync", stream);
  return simt::detail::checked_set(devPtr, value, count, "cudaMemsetAsync");
}

// __constant__ is ordinary memory in the emulator, so symbols are plain addresses.
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               enum cudaMemcpyKind) {
  if (symbol == nullptr || (src == nullptr && count > 0)) return record_error(cudaErrorInvalidValue);
  std::memcpy(static_cast<char*>(const_cast<void*>(symbol)) + offset, src, count);
  return cudaSuccess;
}

cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset,
                                 enum cudaMemcpyKind) {
  if (symbol == nullptr || (dst == nullptr && count > 0)) return record_error(cudaErrorInvalidValue);
  std::memcpy(dst, static_cast<const char*>(symbol) + offset, count);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attributes, const void* ptr) {
  if (attributes == nullptr) return record_error(cudaErrorInvalidValue);
  std::memset(attributes, 0, sizeof *attributes);
  simt::detail::Allocation found;
  if (ptr != nullptr && simt::detail::find_allocation(ptr, &found)) {
    attributes->type = found.device ? cudaMemoryTypeDevice : cudaMemoryTypeHost;
    attributes->device = 0;
    attributes->devicePointer = const_cast<void*>(ptr);
    attributes->hostPointer = found.device ? nullptr : const_cast<void*>(ptr);
  } else {
    attributes->type = cudaMemoryTypeUnregistered;
    attributes->device = -2;
    attributes->hostPointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (free == nullptr || total == nullptr) return record_error(cudaErrorInvalidValue);
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  *total = r.device_limit;
  *free = r.device_limit - std::min(r.device_limit, r.device_bytes);
  return cudaSuccess;
}

// Streams: launches and copies complete before they return, so a stream is only a valid handle.
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* pStream, unsigned int flags, int) {
  if (pStream == nullptr) return record_error(cudaErrorInvalidValue);
  cudaStream_t stream = new CUstream_st{flags};
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.streams.insert(stream);
  *pStream = stream;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  return cudaStreamCreateWithPriority(pStream, flags, 0);
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) {
  return cudaStreamCreateWithPriority(pStream, cudaStreamDefault, 0);
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  auto& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.streams.erase(stream) == 1) {
      delete stream;
      return cudaSuccess;
    }
  }
  return simt::detail::bad_handle("cudaStreamDestroy", stream);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaStreamSynchronize", stream);
  return record_error(simt::detail::take_pending_launch_failure());
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaStreamQuery", stream);
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaStreamWaitEvent", stream);
  if (!simt::detail::known_event(event)) return simt::detail::bad_handle("cudaStreamWaitEvent", event);
  return cudaSuccess;
}

// Events: wall-clock time stamps taken when recorded (work before them has already finished).
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (event == nullptr) return record_error(cudaErrorInvalidValue);
  cudaEvent_t e = new CUevent_st{};
  e->flags = flags;
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.events.insert(e);
  *event = e;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!simt::detail::known_event(event)) return simt::detail::bad_handle("cudaEventRecord", event);
  if (!simt::detail::is_valid_stream(stream)) return simt::detail::bad_handle("cudaEventRecord", stream);
  event->time = std::chrono::steady_clock::now();
  event->recorded = true;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!simt::detail::known_event(event)) return simt::detail::bad_handle("cudaEventSynchronize", event);
  return record_error(simt::detail::take_pending_launch_failure());
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!simt::detail::known_event(event)) return simt::detail::bad_handle("cudaEventQuery", event);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return record_error(cudaErrorInvalidValue);
  if (!simt::detail::known_event(start)) return simt::detail::bad_handle("cudaEventElapsedTime", start);
  if (!simt::detail::known_event(end)) return simt::detail::bad_handle("cudaEventElapsedTime", end);
  if ((start->flags & cudaEventDisableTiming) || (end->flags & cudaEventDisableTiming) ||
      !start->recorded || !end->recorded) {
    report("cudaEventElapsedTime: an event was never recorded or was created with "
           "cudaEventDisableTiming");
    return record_error(cudaErrorInvalidResourceHandle);
  }
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  auto& r = registry();
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    if (r.events.erase(event) == 1) {
      delete event;
      return cudaSuccess;
    }
  }
  return simt::detail::bad_handle("cudaEventDestroy", event);
}

// Device management: one emulated device, number 0.
cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return record_error(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return record_error(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : record_error(cudaErrorInvalidDevice);
}

cudaError_t cudaDeviceSynchronize(void) {
  return record_error(simt::detail::take_pending_launch_failure());
}

cudaError_t cudaDeviceReset(void) { return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return record_error(cudaErrorInvalidValue);
  if (device != 0) return record_error(cudaErrorInvalidDevice);
  *prop = simt::detail::make_properties();
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (value == nullptr) return record_error(cudaErrorInvalidValue);
  if (device != 0) return record_error(cudaErrorInvalidDevice);
  const cudaDeviceProp p = simt::detail::make_properties();
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *value = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrTotalConstantMemory: *value = static_cast<int>(p.totalConstMem); break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = p.regsPerBlock; break;
    case cudaDevAttrClockRate: *value = 1980000; break;        // kHz
    case cudaDevAttrMemoryClockRate: *value = 2619000; break;  // kHz
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrIntegrated: *value = 0; break;
    case cudaDevAttrConcurrentKernels: *value = 1; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrUnifiedAddressing: *value = 1; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = static_cast<int>(p.sharedMemPerMultiprocessor);
      break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *value = p.regsPerMultiprocessor; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(p.sharedMemPerBlockOptin);
      break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = p.maxBlocksPerMultiProcessor; break;
    case cudaDevAttrMaxPersistingL2CacheSize: *value = p.persistingL2CacheMaxSize; break;
    case cudaDevAttrMemoryPoolsSupported: *value = 1; break;
    default:
      report(cat("cudaDeviceGetAttribute: attribute ", static_cast<int>(attr),
                 " is not emulated (add it to tests/simt/emu_cudart.cpp)"));
      return record_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (func == nullptr) return record_error(cudaErrorInvalidDeviceFunction);
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize: {
      if (value < 0 || static_cast<size_t>(value) > simt::detail::kMaxSharedPerBlockOptin) {
        report(cat("cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize, ", value,
                   "): the device allows 0 to ", simt::detail::kMaxSharedPerBlockOptin, " bytes"));
        return record_error(cudaErrorInvalidValue);
      }
      auto& r = registry();
      std::lock_guard<std::mutex> lock(r.mutex);
      r.max_dynamic_shared[func] = value;
      return cudaSuccess;
    }
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      if (value < -1 || value > 100) return record_error(cudaErrorInvalidValue);
      return cudaSuccess;
    default:
      report(cat("cudaFuncSetAttribute: attribute ", static_cast<int>(attr), " is not emulated"));
      return record_error(cudaErrorInvalidValue);
  }
}

// Resident blocks per SM for the H100-like device: limited by threads (2048), blocks (32) and
// shared memory (228 KiB, 1 KiB reserved per block). Registers are not modelled.
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* numBlocks, const void* func,
                                                          int blockSize, size_t dynamicSMemSize) {
  if (numBlocks == nullptr || func == nullptr || blockSize < 1 ||
      blockSize > simt::detail::kMaxThreadsPerBlock)
    return record_error(cudaErrorInvalidValue);
  int blocks = std::min(32, 2048 / blockSize);
  const size_t per_block = dynamicSMemSize + 1024;
  blocks = std::min<int>(blocks, static_cast<int>(simt::detail::kSharedPerMultiprocessor / per_block));
  *numBlocks = blocks;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t error = simt::detail::tl_last_error;
  simt::detail::tl_last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError(void) { return simt::detail::tl_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
#define SIMT_ERROR_NAME_(e) \
  case e: return #e;
    SIMT_ERROR_NAME_(cudaSuccess)
    SIMT_ERROR_NAME_(cudaErrorInvalidValue)
    SIMT_ERROR_NAME_(cudaErrorMemoryAllocation)
    SIMT_ERROR_NAME_(cudaErrorInitializationError)
    SIMT_ERROR_NAME_(cudaErrorInvalidConfiguration)
    SIMT_ERROR_NAME_(cudaErrorInvalidDevice)
    SIMT_ERROR_NAME_(cudaErrorInvalidDeviceFunction)
    SIMT_ERROR_NAME_(cudaErrorInvalidMemcpyDirection)
    SIMT_ERROR_NAME_(cudaErrorInvalidResourceHandle)
    SIMT_ERROR_NAME_(cudaErrorNotReady)
    SIMT_ERROR_NAME_(cudaErrorNotSupported)
    SIMT_ERROR_NAME_(cudaErrorLaunchFailure)
    SIMT_ERROR_NAME_(cudaErrorLaunchOutOfResources)
    SIMT_ERROR_NAME_(cudaErrorIllegalAddress)
    SIMT_ERROR_NAME_(cudaErrorMisalignedAddress)
    SIMT_ERROR_NAME_(cudaErrorNoDevice)
    SIMT_ERROR_NAME_(cudaErrorUnknown)
#undef SIMT_ERROR_NAME_
    default: return "cudaErrorUnrecognized";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "unrecognized error code";
  }
}

cudaError_t cudaDriverGetVersion(int* driverVersion) {
  if (driverVersion == nullptr) return record_error(cudaErrorInvalidValue);
  *driverVersion = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* runtimeVersion) {
  if (runtimeVersion == nullptr) return record_error(cudaErrorInvalidValue);
  *runtimeVersion = CUDART_VERSION;
  return cudaSuccess;
}

}  // extern "C"
