// test_simt_bugs.cpp — the SIMT emulator finds bugs: each test plants one (uninitialized device
// memory, a host pointer argument, a bad launch configuration, a deadlock, a warp mask mismatch, a
// misaligned 128-bit load, a missing __syncthreads, ...) and checks that it is reported — the
// message names the block and thread, and the next cudaGetLastError / cudaDeviceSynchronize fail.
#include "simt/cuda_compat.h"
#include "simt/device_buffer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

using simt::DeviceBuffer;

namespace {

class SimtBugs : public ::testing::Test {
 protected:
  void SetUp() override { clear(); }
  void TearDown() override { clear(); }
  static void clear() {
    simt::reset_reports();
    (void)cudaDeviceSynchronize();
    (void)cudaGetLastError();
  }

  // The one report this test expects, with every fragment in `parts`.
  static std::string single_report() {
    const std::vector<std::string> all = simt::reports();
    EXPECT_EQ(all.size(), 1u);
    return all.empty() ? std::string() : all.back();
  }
  static void expect_contains(const std::string& text, std::initializer_list<const char*> parts) {
    for (const char* part : parts) EXPECT_NE(text.find(part), std::string::npos) << "missing \"" << part << "\" in: " << text;
  }
  // A kernel failure: last error and the next synchronization say so, once.
  static void expect_launch_failure() {
    EXPECT_EQ(cudaPeekAtLastError(), cudaErrorLaunchFailure);
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorLaunchFailure);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    (void)cudaGetLastError();
  }
};

// Restores the schedule order after a test changes it.
struct ScheduleGuard {
  simt::Schedule saved = simt::schedule();
  ~ScheduleGuard() { simt::set_schedule(saved); }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Poison: reading memory nobody wrote gives NaN.

__global__ void double_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 2.0f * in[i];
}

TEST_F(SimtBugs, UninitializedCudaMallocMemoryReadsAsNaN) {
  DeviceBuffer<float> never_written(100), out(100);
  DeviceBuffer<__nv_bfloat16> bf16(4);
  simt::launch(double_kernel, dim3(1), dim3(128), 0, nullptr, never_written.get(), out.get(), 100);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  for (float v : out.download()) EXPECT_TRUE(std::isnan(v));
  for (__nv_bfloat16 v : bf16.download()) EXPECT_TRUE(std::isnan(__bfloat162float(v)));
}

__global__ void read_before_write_shared_kernel(float* out) {
  SIMT_DYNAMIC_SHARED(float, scratch);
  out[blockIdx.x * blockDim.x + threadIdx.x] = scratch[threadIdx.x];  // bug: never written
  __syncthreads();
  scratch[threadIdx.x] = 1.0f;  // the next block must not see this
}

TEST_F(SimtBugs, UninitializedDynamicSharedMemoryReadsAsNaNInEveryBlock) {
  DeviceBuffer<float> out(3 * 64);
  simt::launch(read_before_write_shared_kernel, dim3(3), dim3(64), 64 * sizeof(float), nullptr,
               out.get());
  for (float v : out.download()) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(simt::report_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Pointer arguments must be device memory.

TEST_F(SimtBugs, HostPointerArgumentIsReportedAndTheKernelDoesNotRun) {
  std::vector<float> host_in(100, 1.0f);
  DeviceBuffer<float> out(100);
  simt::launch(double_kernel, dim3(1), dim3(128), 0, nullptr, host_in.data(), out.get(), 100);
  expect_contains(single_report(), {"argument #0", "float", "host memory", "does not point into device memory"});
  expect_launch_failure();
  for (float v : out.download()) EXPECT_TRUE(std::isnan(v)) << "the kernel ran";
}

TEST_F(SimtBugs, FreedPointerArgumentIsReportedAsFreed) {
  DeviceBuffer<float> in(100);  // allocated first, so it cannot reuse the freed block
  float* dangling = nullptr;
  ASSERT_EQ(cudaMalloc(&dangling, 4096), cudaSuccess);
  ASSERT_EQ(cudaFree(dangling), cudaSuccess);
  simt::launch(double_kernel, dim3(1), dim3(128), 0, nullptr, in.get(), dangling + 10, 100);
  expect_contains(single_report(), {"argument #1", "that was freed"});
  expect_launch_failure();
}

TEST_F(SimtBugs, PinnedHostMemoryAndNullAreAcceptedArguments) {
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, 100 * sizeof(float)), cudaSuccess);
  for (int i = 0; i < 100; ++i) pinned[i] = static_cast<float>(i);
  DeviceBuffer<float> out(100);
  simt::launch(double_kernel, dim3(1), dim3(128), 0, nullptr, pinned, out.get(), 100);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(out.download()[7], 14.0f);
  simt::launch(double_kernel, dim3(1), dim3(128), 0, nullptr, static_cast<const float*>(nullptr),
               out.get(), 0);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(simt::report_count(), 0);
  cudaFreeHost(pinned);
}

// ---------------------------------------------------------------------------------------------
// Launch configurations are validated like the GPU.

__global__ void noop_kernel(int* out) {
  if (out != nullptr) out[0] = 1;
}

TEST_F(SimtBugs, BadLaunchConfigurationsFailWithInvalidConfiguration) {
  const std::pair<dim3, dim3> bad[] = {
      {dim3(1), dim3(1025)},        {dim3(1), dim3(32, 32, 2)}, {dim3(1), dim3(1, 1, 65)},
      {dim3(1), dim3(1, 1025, 1)},  {dim3(1, 65536), dim3(32)}, {dim3(1, 1, 65536), dim3(32)},
      {dim3(0), dim3(32)},          {dim3(1), dim3(0)},
  };
  for (const auto& [grid, block] : bad) {
    simt::reset_reports();
    simt::launch(noop_kernel, grid, block, 0, nullptr, static_cast<int*>(nullptr));
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration)
        << "grid (" << grid.x << "," << grid.y << "," << grid.z << ") block (" << block.x << ","
        << block.y << "," << block.z << ")";
    expect_contains(single_report(), {"invalid launch configuration"});
  }
  // The limits themselves are fine.
  simt::reset_reports();
  simt::launch(noop_kernel, dim3(1, 65535, 1), dim3(1), 0, nullptr, static_cast<int*>(nullptr));
  simt::launch(noop_kernel, dim3(1), dim3(1024), 0, nullptr, static_cast<int*>(nullptr));
  simt::launch(noop_kernel, dim3(2), dim3(16, 1, 64), 0, nullptr, static_cast<int*>(nullptr));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(simt::report_count(), 0);
}

__global__ void shared_hungry_kernel(int* out) {
  SIMT_DYNAMIC_SHARED(int, tile);
  tile[threadIdx.x] = 1;
  if (out != nullptr) out[0] = tile[0];
}

TEST_F(SimtBugs, SharedMemoryOver48KiBNeedsTheAttributeAndStaysUnder227KiB) {
  // Like the driver, too much dynamic shared memory is cudaErrorInvalidValue.
  simt::launch(shared_hungry_kernel, dim3(1), dim3(32), 48 * 1024 + 4, nullptr, static_cast<int*>(nullptr));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  expect_contains(single_report(), {"dynamic shared memory", "cudaFuncSetAttribute"});
  simt::reset_reports();
  EXPECT_EQ(cudaFuncSetAttribute(shared_hungry_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 228 * 1024),
            cudaErrorInvalidValue);
  (void)cudaGetLastError();
  simt::reset_reports();
  ASSERT_EQ(cudaFuncSetAttribute(shared_hungry_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 64 * 1024),
            cudaSuccess);
  simt::launch(shared_hungry_kernel, dim3(1), dim3(32), 48 * 1024 + 4, nullptr, static_cast<int*>(nullptr));
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  simt::launch(shared_hungry_kernel, dim3(1), dim3(32), 64 * 1024 + 4, nullptr, static_cast<int*>(nullptr));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
}

// ---------------------------------------------------------------------------------------------
// Deadlocks and barrier misuse.

__global__ void barrier_after_early_return_kernel(int* out) {
  if (threadIdx.x >= 16) return;  // bug: the others wait at the barrier below
  __syncthreads();
  out[threadIdx.x] = 1;
}

TEST_F(SimtBugs, BarrierAfterEarlyReturnIsReported) {
  DeviceBuffer<int> out(64);
  simt::launch(barrier_after_early_return_kernel, dim3(1), dim3(64), 0, nullptr, out.get());
  expect_contains(single_report(), {"deadlock", "__syncthreads", "exited without reaching it",
                                    "block (0,0,0)", "thread (16,0,0)",
                                    "barrier_after_early_return_kernel"});
  expect_launch_failure();
}

__global__ void divergent_barriers_kernel(int* out) {
  if (threadIdx.x % 2 == 0)
    __syncthreads();
  else
    __syncthreads();  // bug: a different barrier
  out[threadIdx.x] = 1;
}

TEST_F(SimtBugs, DivergentBarriersAreReported) {
  DeviceBuffer<int> out(32);
  simt::launch(divergent_barriers_kernel, dim3(1), dim3(32), 0, nullptr, out.get());
  expect_contains(single_report(), {"different barriers", "test_simt_bugs.cpp"});
  expect_launch_failure();
}

__global__ void shuffle_against_barrier_kernel(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x < 16)
    v = __shfl_xor_sync(0xffffffffu, v, 1);  // bug: lanes 16-31 never get here
  else
    __syncthreads();
  out[threadIdx.x] = v;
}

TEST_F(SimtBugs, WarpCollectiveDeadlockIsReportedWithThreadIds) {
  DeviceBuffer<float> out(32);
  simt::launch(shuffle_against_barrier_kernel, dim3(2), dim3(32), 0, nullptr, out.get());
  const std::vector<std::string> all = simt::reports();
  ASSERT_EQ(all.size(), 2u);  // one per block
  for (const std::string& report : all)
    expect_contains(report, {"deadlock", "thread (0,0,0)", "__shfl_xor_sync(mask 0xffffffff)",
                             "lane 16", "waits at __syncthreads", "shuffle_against_barrier_kernel"});
  // Blocks may run in any order (workers, schedule); each reports once.
  const bool block0_first = all[0].find("block (0,0,0)") != std::string::npos;
  EXPECT_NE(all[block0_first ? 0 : 1].find("block (0,0,0)"), std::string::npos);
  EXPECT_NE(all[block0_first ? 1 : 0].find("block (1,0,0)"), std::string::npos);
  expect_launch_failure();
}

// ---------------------------------------------------------------------------------------------
// Warp masks.

__global__ void mask_mismatch_kernel(float* out) {
  const int lane = threadIdx.x % 32;
  unsigned mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  if (lane == 0) mask = 0xffffffffu;  // bug: lane 0 disagrees with lanes 1-15
  out[threadIdx.x] = __shfl_down_sync(mask, static_cast<float>(lane), 1, 16);
}

TEST_F(SimtBugs, ShuffleMaskMismatchIsReportedWithThreadIds) {
  DeviceBuffer<float> out(32);
  simt::launch(mask_mismatch_kernel, dim3(1), dim3(32), 0, nullptr, out.get());
  expect_contains(single_report(), {"warp collective mask mismatch", "block (0,0,0)",
                                    "thread (0,0,0)", "mask 0xffffffff", "lane 1",
                                    "mask 0x0000ffff"});
  expect_launch_failure();
}

__global__ void read_outside_mask_kernel(float* out) {
  const int lane = threadIdx.x % 32;
  float v = lane;
  if (lane < 16) v = __shfl_xor_sync(0x0000ffffu, v, 16);  // bug: reads lanes 16-31
  out[threadIdx.x] = v;
}

TEST_F(SimtBugs, ShuffleReadingALaneOutsideTheMaskIsReported) {
  DeviceBuffer<float> out(32);
  simt::launch(read_outside_mask_kernel, dim3(1), dim3(32), 0, nullptr, out.get());
  expect_contains(single_report(), {"reads lane 16", "not in the mask", "thread (0,0,0)"});
  expect_launch_failure();
}

__global__ void own_lane_missing_kernel(unsigned* out) {
  out[threadIdx.x] = __ballot_sync(threadIdx.x == 3 ? 0x1u : 0xfffffff7u, 1);  // bug for lane 3
}

TEST_F(SimtBugs, MaskWithoutTheCallingLaneIsReported) {
  DeviceBuffer<unsigned> out(32);
  simt::launch(own_lane_missing_kernel, dim3(1), dim3(32), 0, nullptr, out.get());
  expect_contains(single_report(), {"does not name the calling lane 3", "thread (3,0,0)"});
  expect_launch_failure();
}

__global__ void full_mask_in_partial_warp_kernel(float* out) {
  float v = threadIdx.x;
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);  // bug: 48 threads
  out[threadIdx.x] = v;
}

TEST_F(SimtBugs, FullMaskInAPartialWarpIsReported) {
  DeviceBuffer<float> out(48);
  simt::launch(full_mask_in_partial_warp_kernel, dim3(1), dim3(48), 0, nullptr, out.get());
  expect_contains(single_report(), {"names lanes {16-31}", "exited or do not exist", "block of 48"});
  expect_launch_failure();
}

__global__ void shuffle_after_early_exit_kernel(float* out, int n) {
  const int i = threadIdx.x;
  if (i >= n) return;  // bug: the full-mask reduction below names exited lanes
  float v = 1.0f;
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[i] = v;
}

TEST_F(SimtBugs, FullMaskAfterEarlyReturnIsReported) {
  DeviceBuffer<float> out(32);
  simt::launch(shuffle_after_early_exit_kernel, dim3(1), dim3(32), 0, nullptr, out.get(), 20);
  ASSERT_EQ(simt::report_count(), 1);
  expect_contains(simt::reports()[0], {"exited"});
  expect_launch_failure();
}

// ---------------------------------------------------------------------------------------------
// Misaligned 128-bit access.

__global__ void misaligned_load_kernel(const float* in, float* out) {
  const float4* vector = reinterpret_cast<const float4*>(in + 1);  // bug: 4-byte aligned only
  const float4 v = __ldcs(vector + threadIdx.x);
  out[threadIdx.x] = v.x;
}

TEST_F(SimtBugs, Misaligned128BitLoadIsReported) {
  DeviceBuffer<float> in(4 * 33), out(1);
  simt::launch(misaligned_load_kernel, dim3(1), dim3(1), 0, nullptr, in.get(), out.get());
  expect_contains(single_report(), {"misaligned address", "__ldcs", "16-byte value",
                                    "needs 16-byte alignment", "test_simt_bugs.cpp",
                                    "thread (0,0,0)"});
  expect_launch_failure();
}

__global__ void misaligned_store_kernel(float* out) {
  __stcs(reinterpret_cast<int4*>(out + 2), make_int4(1, 2, 3, 4));  // bug: 8-byte aligned only
}

TEST_F(SimtBugs, Misaligned128BitStoreIsReported) {
  DeviceBuffer<float> out(16);
  simt::launch(misaligned_store_kernel, dim3(1), dim3(1), 0, nullptr, out.get());
  expect_contains(single_report(), {"misaligned address", "__stcs"});
  expect_launch_failure();
}

// ---------------------------------------------------------------------------------------------
// A missing __syncthreads shows as results that depend on the schedule order.

__global__ void rotate_kernel(const int* in, int* out, bool synchronize) {
  __shared__ int tile[64];
  const int t = threadIdx.x;
  tile[t] = in[t];
  if (synchronize) __syncthreads();  // without it, a thread may read a neighbour's old value
  out[t] = tile[(t + 1) % blockDim.x];
}

TEST_F(SimtBugs, MissingSyncthreadsGivesScheduleDependentResults) {
  ScheduleGuard guard;
  std::vector<int> host(64);
  for (int i = 0; i < 64; ++i) host[i] = 100 + i;
  DeviceBuffer<int> in(host), out(64);
  auto run = [&](simt::ScheduleOrder order, bool synchronize) {
    simt::set_schedule({order, 7});
    // Scribble over the static shared tile first, so stale values are not the right ones.
    std::vector<int> junk(64, -1);
    DeviceBuffer<int> junk_in(junk);
    simt::launch(rotate_kernel, dim3(1), dim3(64), 0, nullptr, junk_in.get(), out.get(), true);
    simt::launch(rotate_kernel, dim3(1), dim3(64), 0, nullptr, in.get(), out.get(), synchronize);
    return out.download();
  };
  std::vector<int> expected(64);
  for (int t = 0; t < 64; ++t) expected[t] = host[(t + 1) % 64];

  EXPECT_EQ(run(simt::ScheduleOrder::Forward, true), expected);
  EXPECT_EQ(run(simt::ScheduleOrder::Reverse, true), expected);
  EXPECT_EQ(run(simt::ScheduleOrder::Random, true), expected);
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer reports the missing __syncthreads itself (a data race on the "
                  "shared tile), which is the point of the TSan build; the schedule check runs "
                  "in the other builds";
#endif
  const std::vector<int> forward = run(simt::ScheduleOrder::Forward, false);
  const std::vector<int> reverse = run(simt::ScheduleOrder::Reverse, false);
  EXPECT_NE(forward, reverse) << "the missing __syncthreads went unnoticed";
  EXPECT_TRUE(forward != expected || reverse != expected);
}

// ---------------------------------------------------------------------------------------------
// Other failures inside kernels.

__global__ void trap_kernel(int* out) {
  if (threadIdx.x == 5) __trap();
  out[threadIdx.x] = 1;
}

TEST_F(SimtBugs, TrapIsReported) {
  DeviceBuffer<int> out(32);
  simt::launch(trap_kernel, dim3(1), dim3(32), 0, nullptr, out.get());
  expect_contains(single_report(), {"__trap()", "thread (5,0,0)"});
  expect_launch_failure();
}

__global__ void throwing_kernel(int* out) {
  if (threadIdx.x == 2) throw std::runtime_error("out of range index 99");
  out[threadIdx.x] = 1;
}

TEST_F(SimtBugs, ExceptionInAKernelIsReported) {
  DeviceBuffer<int> out(32);
  simt::launch(throwing_kernel, dim3(1), dim3(32), 0, nullptr, out.get());
  expect_contains(single_report(), {"threw an exception", "out of range index 99"});
  expect_launch_failure();
}

TEST_F(SimtBugs, EveryFailingBlockIsCountedButPrintingIsCapped) {
  DeviceBuffer<float> out(32);
  simt::launch(shuffle_against_barrier_kernel, dim3(20), dim3(32), 0, nullptr, out.get());
  EXPECT_EQ(simt::report_count(), 20);
  expect_launch_failure();
}

// ---------------------------------------------------------------------------------------------
// Host-side API misuse.

TEST_F(SimtBugs, CopiesOutsideAllocationsAndWrongKindsAreRejected) {
  DeviceBuffer<char> device(100);
  std::vector<char> host(200);
  EXPECT_EQ(cudaMemcpy(device.get(), host.data(), 101, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  expect_contains(single_report(), {"cudaMemcpy", "not inside one device allocation"});
  simt::reset_reports();
  EXPECT_EQ(cudaMemcpy(host.data(), device.get() + 50, 51, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), host.data() + 100, 10, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(device.get(), host.data(), 10, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(host.data(), 0, 10), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(device.get() + 90, 0, 11), cudaErrorInvalidValue);
  EXPECT_EQ(simt::report_count(), 5);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  // Exactly in bounds is fine.
  EXPECT_EQ(cudaMemcpy(device.get() + 50, host.data(), 50, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(host.data(), device.get(), 100, cudaMemcpyDefault), cudaSuccess);
}

TEST_F(SimtBugs, BadFreesAndDestroyedHandlesAreRejected) {
  char* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 64), cudaSuccess);
  EXPECT_EQ(cudaFree(p + 8), cudaErrorInvalidValue);  // not the start of the allocation
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaErrorInvalidValue);  // double free
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorInvalidResourceHandle);
  simt::launch(noop_kernel, dim3(1), dim3(1), 0, stream, static_cast<int*>(nullptr));
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  cudaEvent_t never_recorded, recorded;
  ASSERT_EQ(cudaEventCreate(&never_recorded), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&recorded), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(recorded), cudaSuccess);
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, never_recorded, recorded), cudaErrorInvalidResourceHandle);
  cudaEventDestroy(never_recorded);
  cudaEventDestroy(recorded);
  EXPECT_EQ(simt::report_count(), 5);
}
