// device_buffer.h — a small RAII device array for tests of kernels (emulated or real CUDA):
// allocation, upload, download. Failures throw std::runtime_error naming the CUDA error.
#pragma once

#include "simt/cuda_compat.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace simt {

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    check(cudaMalloc(reinterpret_cast<void**>(&data_), count * sizeof(T)), "cudaMalloc");
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(data_); }

  T* get() const { return data_; }
  size_t size() const { return count_; }

  void upload(const std::vector<T>& host) {
    if (host.size() != count_)
      throw std::runtime_error("DeviceBuffer::upload: " + std::to_string(host.size()) +
                               " elements into a buffer of " + std::to_string(count_));
    check(cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    check(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return host;
  }

 private:
  static void check(cudaError_t error, const char* what) {
    if (error != cudaSuccess)
      throw std::runtime_error(std::string("DeviceBuffer: ") + what + " failed: " +
                               cudaGetErrorString(error));
  }
  T* data_ = nullptr;
  size_t count_ = 0;
};

}  // namespace simt
