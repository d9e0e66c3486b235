// test_simt_nccl.cpp — the emulated NCCL with ranks as threads: all-reduce over 2 and 3 ranks
// gives every rank identical bits (reduced in rank order), the other collectives move the right
// data, groups defer calls, and misuse (mismatched calls, host buffers) fails on every rank.
#include "simt/cuda_compat.h"
#include "simt/device_buffer.h"

#include <gtest/gtest.h>
#include <nccl.h>

#include <cstring>
#include <functional>
#include <thread>
#include <vector>

using simt::DeviceBuffer;

namespace {

// Runs `body(rank, comm)` on `ranks` threads that share one communicator.
void with_ranks(int ranks, const std::function<void(int, ncclComm_t)>& body) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < ranks; ++rank) {
    threads.emplace_back([&, rank] {
      ncclComm_t comm = nullptr;
      ASSERT_EQ(ncclCommInitRank(&comm, ranks, id, rank), ncclSuccess);
      int count = 0, me = -1;
      EXPECT_EQ(ncclCommCount(comm, &count), ncclSuccess);
      EXPECT_EQ(ncclCommUserRank(comm, &me), ncclSuccess);
      EXPECT_EQ(count, ranks);
      EXPECT_EQ(me, rank);
      body(rank, comm);
      EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
    });
  }
  for (auto& t : threads) t.join();
}

// Values whose float sum depends on the order of the additions.
float tricky_value(int rank, size_t i) {
  const float magnitudes[] = {1e8f, 1.0f, -1e8f, 3.5f, 1e-3f};
  return magnitudes[(rank + i) % 5] * (1.0f + 0.1f * static_cast<float>(i % 7));
}

class SimtNccl : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { simt::reset_reports(); }
  void TearDown() override { EXPECT_EQ(simt::report_count(), 0); }
};

}  // namespace

TEST_P(SimtNccl, AllReduceGivesIdenticalBitsInRankOrder) {
  const int ranks = GetParam();
  const size_t n = 1000;
  std::vector<std::vector<float>> results(ranks), averages(ranks), maxima(ranks);
  std::vector<std::vector<__nv_bfloat16>> bf16_results(ranks);
  with_ranks(ranks, [&](int rank, ncclComm_t comm) {
    std::vector<float> mine(n);
    std::vector<__nv_bfloat16> mine_bf16(n);
    for (size_t i = 0; i < n; ++i) {
      mine[i] = tricky_value(rank, i);
      mine_bf16[i] = __float2bfloat16_rn(static_cast<float>(rank + 1) * 0.3f + static_cast<float>(i));
    }
    DeviceBuffer<float> send(mine), recv(n), in_place(mine);
    DeviceBuffer<__nv_bfloat16> send_bf16(mine_bf16), recv_bf16(n);
    ASSERT_EQ(ncclAllReduce(send.get(), recv.get(), n, ncclFloat32, ncclSum, comm, nullptr), ncclSuccess);
    results[rank] = recv.download();
    ASSERT_EQ(ncclAllReduce(in_place.get(), in_place.get(), n, ncclFloat32, ncclAvg, comm, nullptr),
              ncclSuccess);
    averages[rank] = in_place.download();
    ASSERT_EQ(ncclAllReduce(send.get(), recv.get(), n, ncclFloat32, ncclMax, comm, nullptr), ncclSuccess);
    maxima[rank] = recv.download();
    ASSERT_EQ(ncclAllReduce(send_bf16.get(), recv_bf16.get(), n, ncclBfloat16, ncclSum, comm, nullptr),
              ncclSuccess);
    bf16_results[rank] = recv_bf16.download();
  });
  for (size_t i = 0; i < n; ++i) {
    float sum = tricky_value(0, i), max = tricky_value(0, i), bf16_sum = 0.0f;
    for (int r = 1; r < ranks; ++r) {
      sum += tricky_value(r, i);  // rank order, fp32
      max = std::max(max, tricky_value(r, i));
    }
    for (int r = 0; r < ranks; ++r)
      bf16_sum += __bfloat162float(__float2bfloat16_rn(static_cast<float>(r + 1) * 0.3f + static_cast<float>(i)));
    ASSERT_EQ(results[0][i], sum) << i;
    ASSERT_EQ(averages[0][i], sum / static_cast<float>(ranks)) << i;
    ASSERT_EQ(maxima[0][i], max) << i;
    ASSERT_EQ(__bfloat162float(bf16_results[0][i]), __bfloat162float(__float2bfloat16_rn(bf16_sum)));
  }
  for (int r = 1; r < ranks; ++r) {
    EXPECT_EQ(std::memcmp(results[r].data(), results[0].data(), n * sizeof(float)), 0) << "rank " << r;
    EXPECT_EQ(std::memcmp(averages[r].data(), averages[0].data(), n * sizeof(float)), 0) << "rank " << r;
    EXPECT_EQ(std::memcmp(bf16_results[r].data(), bf16_results[0].data(), n * 2), 0) << "rank " << r;
  }
}

TEST_P(SimtNccl, ReduceScatterAllGatherBroadcastAndReduce) {
  const int ranks = GetParam();
  const size_t per_rank = 5;
  with_ranks(ranks, [&](int rank, ncclComm_t comm) {
    std::vector<float> full(per_rank * ranks);
    for (size_t i = 0; i < full.size(); ++i) full[i] = static_cast<float>(100 * rank + i);
    DeviceBuffer<float> send(full), shard(per_rank), gathered(per_rank * ranks);
    ASSERT_EQ(ncclReduceScatter(send.get(), shard.get(), per_rank, ncclFloat32, ncclSum, comm, nullptr),
              ncclSuccess);
    const auto s = shard.download();
    for (size_t i = 0; i < per_rank; ++i) {
      float expected = 0;
      for (int r = 0; r < ranks; ++r) expected += static_cast<float>(100 * r + rank * per_rank + i);
      EXPECT_EQ(s[i], expected) << "rank " << rank << " element " << i;
    }
    ASSERT_EQ(ncclAllGather(shard.get(), gathered.get(), per_rank, ncclFloat32, comm, nullptr), ncclSuccess);
    const auto g = gathered.download();
    for (size_t i = 0; i < g.size(); ++i) {
      float expected = 0;
      for (int r = 0; r < ranks; ++r) expected += static_cast<float>(100 * r + i);
      EXPECT_EQ(g[i], expected);
    }
    const int root = ranks - 1;
    DeviceBuffer<int> value(std::vector<int>{rank * 11});
    ASSERT_EQ(ncclBroadcast(value.get(), value.get(), 1, ncclInt32, root, comm, nullptr), ncclSuccess);
    EXPECT_EQ(value.download()[0], root * 11);
    DeviceBuffer<double> contribution(std::vector<double>{rank + 0.5}), total(std::vector<double>{-1.0});
    ASSERT_EQ(ncclReduce(contribution.get(), total.get(), 1, ncclFloat64, ncclSum, 0, comm, nullptr),
              ncclSuccess);
    double expected = 0;
    for (int r = 0; r < ranks; ++r) expected += r + 0.5;
    EXPECT_EQ(total.download()[0], rank == 0 ? expected : -1.0);  // only the root receives
  });
}

TEST_P(SimtNccl, GroupedCallsRunAtGroupEnd) {
  const int ranks = GetParam();
  with_ranks(ranks, [&](int rank, ncclComm_t comm) {
    DeviceBuffer<float> a(std::vector<float>{1.0f}), b(std::vector<float>{static_cast<float>(rank)});
    ASSERT_EQ(ncclGroupStart(), ncclSuccess);
    ASSERT_EQ(ncclAllReduce(a.get(), a.get(), 1, ncclFloat32, ncclSum, comm, nullptr), ncclSuccess);
    ASSERT_EQ(ncclAllReduce(b.get(), b.get(), 1, ncclFloat32, ncclMax, comm, nullptr), ncclSuccess);
    EXPECT_EQ(a.download()[0], 1.0f);  // deferred until ncclGroupEnd
    ASSERT_EQ(ncclGroupEnd(), ncclSuccess);
    EXPECT_EQ(a.download()[0], static_cast<float>(ranks));
    EXPECT_EQ(b.download()[0], static_cast<float>(ranks - 1));
  });
}

__global__ void fill_kernel(float* out, int n, float value) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = value * static_cast<float>(i % 3);
}

// Rank threads launch kernels at the same time (sharing the emulator's worker pool), then reduce.
TEST_P(SimtNccl, RanksLaunchKernelsConcurrently) {
  const int ranks = GetParam();
  const int n = 20000;
  with_ranks(ranks, [&](int rank, ncclComm_t comm) {
    DeviceBuffer<float> data(n);
    for (int repeat = 0; repeat < 3; ++repeat) {
      simt::launch(fill_kernel, dim3(16), dim3(128), 0, nullptr, data.get(), n,
                   static_cast<float>(rank + 1));
      ASSERT_EQ(cudaGetLastError(), cudaSuccess);
      ASSERT_EQ(ncclAllReduce(data.get(), data.get(), n, ncclFloat32, ncclSum, comm, nullptr), ncclSuccess);
    }
    const auto r = data.download();
    const float rank_sum = static_cast<float>(ranks * (ranks + 1) / 2);
    for (int i = 0; i < n; i += 101) ASSERT_EQ(r[i], rank_sum * static_cast<float>(i % 3)) << i;
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, SimtNccl, ::testing::Values(2, 3));

TEST(SimtNcclMisuse, MismatchedCallsFailOnEveryRank) {
  simt::reset_reports();
  std::vector<ncclResult_t> results(2);
  with_ranks(2, [&](int rank, ncclComm_t comm) {
    DeviceBuffer<float> buffer(10);
    results[rank] = ncclAllReduce(buffer.get(), buffer.get(), rank == 0 ? 10 : 8, ncclFloat32,
                                  ncclSum, comm, nullptr);
  });
  EXPECT_EQ(results[0], ncclInvalidUsage);
  EXPECT_EQ(results[1], ncclInvalidUsage);
  ASSERT_EQ(simt::report_count(), 1);
  EXPECT_NE(simt::reports()[0].find("ranks disagree"), std::string::npos) << simt::reports()[0];
}

TEST(SimtNcclMisuse, HostBuffersAreRejectedOnEveryRank) {
  simt::reset_reports();
  std::vector<ncclResult_t> results(2);
  with_ranks(2, [&](int rank, ncclComm_t comm) {
    std::vector<float> host(4, 1.0f);
    DeviceBuffer<float> device(4);
    float* send = rank == 1 ? host.data() : device.get();  // bug on rank 1
    results[rank] = ncclAllReduce(send, device.get(), 4, ncclFloat32, ncclSum, comm, nullptr);
  });
  EXPECT_EQ(results[1], ncclInvalidArgument);
  EXPECT_NE(results[0], ncclSuccess);
  ASSERT_GE(simt::report_count(), 1);
  EXPECT_NE(simt::reports()[0].find("send buffer"), std::string::npos) << simt::reports()[0];
}

TEST(SimtNcclMisuse, InvalidInitArguments) {
  simt::reset_reports();
  ncclUniqueId id;
  ncclGetUniqueId(&id);
  ncclComm_t comm = nullptr;
  EXPECT_EQ(ncclCommInitRank(&comm, 2, id, 2), ncclInvalidArgument);
  EXPECT_EQ(ncclCommInitRank(&comm, 0, id, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  EXPECT_STREQ(ncclGetErrorString(ncclInvalidUsage), "invalid usage");
}
