// kernel_test_support.h — shared helpers of the emulated kernel tests (tests/test_kernels_*.cpp).
//
// Each kernel family is compared with the CPU backend's op (src/backend/cpu/cpu_ops.h, float):
//   * fp32 kernels at a tight tolerance, bf16 kernels at bf16 tolerance; for bf16 the inputs are
//     rounded to bf16 first and the CPU sees the same rounded values, so only the kernel's own
//     rounding is measured;
//   * comparisons are NaN-aware (NaN must meet NaN, an infinity the same infinity) and print the
//     largest absolute and relative errors, which the closing report quotes;
//   * every case runs under two schedule orders of the emulator (SIMT_SCHEDULE's, default forward,
//     and the reverse thread / block order): the results must be bitwise identical — a missing
//     __syncthreads or a timing-dependent reduction shows up as a difference — and the emulator
//     must report nothing.
#pragma once

#include "simt/cuda_compat.h"  // must precede every CUDA header

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/cuda_check.h"

namespace slim::kernel_test {

template <typename T>
constexpr const char* dtype_label() {
  return std::is_same_v<T, float> ? "fp32" : "bf16";
}

// ---- device memory ----------------------------------------------------------------------------
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  void upload(const std::vector<T>& host) {
    EXPECT_EQ(host.size(), n_);
    CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  T* get() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  T* ptr_ = nullptr;
  size_t n_;
};

// ---- storage conversions ------------------------------------------------------------------------
template <typename T>
std::vector<T> to_storage(const std::vector<float>& values) {
  std::vector<T> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if constexpr (std::is_same_v<T, float>)
      out[i] = values[i];
    else
      out[i] = __float2bfloat16_rn(values[i]);
  }
  return out;
}

template <typename T>
std::vector<float> to_floats(const std::vector<T>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if constexpr (std::is_same_v<T, float>)
      out[i] = values[i];
    else
      out[i] = __bfloat162float(values[i]);
  }
  return out;
}

// The values a tensor of storage type T can hold: identity for fp32, round to bf16 otherwise.
template <typename T>
std::vector<float> round_through(const std::vector<float>& values) {
  return to_floats(to_storage<T>(values));
}

inline std::vector<float> random_floats(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(n);
  for (float& x : out) x = dist(rng);
  return out;
}

inline std::vector<int> random_ints(size_t n, int lo, int hi_exclusive, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(lo, hi_exclusive - 1);
  std::vector<int> out(n);
  for (int& x : out) x = dist(rng);
  return out;
}

// ---- NaN-aware comparison -----------------------------------------------------------------------
// |got - ref| <= atol + rtol * |ref| per element. `atol` is the error allowed where the reference
// is near zero (cancellation), so tests scale it by the magnitude of the terms that were summed.
struct Tolerance {
  double atol;
  double rtol;
};

// Default tolerances: fp32 kernels do the CPU's math in another order (about 1e-6 relative per
// reduction); bf16 outputs carry one rounding of 2^-9 relative plus the rounding of bf16
// intermediates the kernel stores (e.g. a residual), so 2^-7 covers them with margin.
template <typename T>
Tolerance default_tolerance(double magnitude = 1.0) {
  if constexpr (std::is_same_v<T, float>)
    return {1e-6 * magnitude, 1e-5};
  else
    return {4e-3 * magnitude, 1.0 / 128};
}

struct Comparison {
  size_t count = 0;
  size_t mismatches = 0;
  double max_abs_error = 0;
  double max_rel_error = 0;  // |got - ref| / max(|ref|, atol / rtol)
  std::string first_mismatch;
};

inline Comparison compare(const std::vector<float>& got, const std::vector<float>& ref,
                          Tolerance tol) {
  Comparison result;
  result.count = ref.size();
  if (got.size() != ref.size()) {
    result.mismatches = std::max(got.size(), ref.size());
    result.first_mismatch = "sizes differ: got " + std::to_string(got.size()) + ", expected " +
                            std::to_string(ref.size());
    return result;
  }
  const double floor = tol.rtol > 0 ? tol.atol / tol.rtol : 1.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got[i], r = ref[i];
    bool ok;
    double error = 0;
    if (std::isnan(r) || std::isnan(g)) {
      ok = std::isnan(r) && std::isnan(g);
    } else if (std::isinf(r) || std::isinf(g)) {
      ok = g == r;
    } else {
      error = std::fabs(g - r);
      ok = error <= tol.atol + tol.rtol * std::fabs(r);
      result.max_abs_error = std::max(result.max_abs_error, error);
      result.max_rel_error = std::max(result.max_rel_error, error / std::max(std::fabs(r), floor));
    }
    if (!ok) {
      if (result.mismatches == 0) {
        char text[160];
        std::snprintf(text, sizeof(text), "element %zu: got %.9g, expected %.9g (error %.3g)", i, g,
                      r, error);
        result.first_mismatch = text;
      }
      ++result.mismatches;
    }
  }
  return result;
}

// Compares, fails the test with the first mismatch, and prints the error figures.
inline void expect_close(const std::string& what, const std::vector<float>& got,
                         const std::vector<float>& ref, Tolerance tol) {
  const Comparison c = compare(got, ref, tol);
  std::printf("[  errors  ] %-48s n=%-8zu max_abs=%.3e max_rel=%.3e\n", what.c_str(), c.count,
              c.max_abs_error, c.max_rel_error);
  EXPECT_EQ(c.mismatches, 0u) << what << ": " << c.mismatches << " of " << c.count
                              << " elements outside atol=" << tol.atol << " rtol=" << tol.rtol
                              << "; first: " << c.first_mismatch;
}

// ---- schedule orders --------------------------------------------------------------------------
// Everything a test case's kernels wrote, as floats (bf16 -> float is exact, so comparing the float
// bits compares the stored bits).
using Outputs = std::vector<std::vector<float>>;

inline bool bitwise_equal(const Outputs& a, const Outputs& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k)
    if (a[k].size() != b[k].size() ||
        (!a[k].empty() && std::memcmp(a[k].data(), b[k].data(), a[k].size() * sizeof(float)) != 0))
      return false;
  return true;
}

// Runs `body` (which launches kernels on fresh inputs and returns what they wrote) under two
// schedule orders: the one SIMT_SCHEDULE selects (forward by default; ctest may register the tests
// with random:<seed> too), and the reverse order (forward when that one is reverse). Both runs must
// report nothing and produce identical bits. Returns the first run's outputs.
inline Outputs run_in_both_orders(const std::function<Outputs()>& body) {
  const simt::Schedule first = simt::schedule();
  const simt::Schedule second{first.order == simt::ScheduleOrder::Reverse
                                  ? simt::ScheduleOrder::Forward
                                  : simt::ScheduleOrder::Reverse,
                              0};
  Outputs results[2];
  const simt::Schedule schedules[2] = {first, second};
  for (int k = 0; k < 2; ++k) {
    simt::reset_reports();
    simt::set_schedule(schedules[k]);
    results[k] = body();
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(simt::report_count(), 0) << "the emulator reported problems (see stderr)";
  }
  simt::set_schedule(first);
  EXPECT_TRUE(bitwise_equal(results[0], results[1]))
      << "results differ between two schedule orders: a race or a timing-dependent reduction";
  return results[0];
}

// The bf16 values just below and just above |x| in magnitude (equal when x is a bf16 value).
inline std::pair<float, float> bf16_neighbours(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  const uint32_t down_bits = bits & 0xffff0000u;
  const uint32_t up_bits = (bits & 0xffffu) ? down_bits + 0x10000u : down_bits;
  float down, up;
  std::memcpy(&down, &down_bits, 4);
  std::memcpy(&up, &up_bits, 4);
  return {down, up};
}

}  // namespace slim::kernel_test
