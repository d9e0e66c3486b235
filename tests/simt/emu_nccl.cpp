// emu_nccl.cpp — an NCCL subset behind the real <nccl.h>, with ranks as threads of one process.
//
// ncclCommInitRank meets the other ranks at a rendezvous keyed by the ncclUniqueId. Each
// collective is two barriers: every rank posts its call (so mismatched calls are caught), computes
// its own output by reading the other ranks' send buffers in rank order (so every rank gets the
// same bits for a reduction), waits until all ranks are done reading, and only then writes its
// receive buffer (so in-place calls are safe). Launch-style stream semantics: a call has finished
// when it returns.
//
// Supported: ncclGetUniqueId, ncclCommInitRank, ncclCommDestroy/Finalize/Abort, ncclCommCount,
// ncclCommUserRank, ncclCommCuDevice, ncclAllReduce, ncclReduce, ncclReduceScatter,
// ncclAllGather, ncclBroadcast (sum/prod/max/min/avg over int32, uint32, int64, uint64, float32,
// float64, bfloat16), ncclGroupStart/End (calls are deferred to the outermost ncclGroupEnd; one
// rank per thread), ncclGetErrorString, ncclGetLastError, ncclGetVersion, ncclCommGetAsyncError.
// A rank that waits longer than SIMT_NCCL_TIMEOUT_S seconds (default 120) for the others reports a
// hang and fails with ncclSystemError instead of blocking forever.

#include "emu_internal.h"

#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace simt::detail {
namespace {

constexpr uint64_t kCommMagic = 0x73696d744e43434cull;  // "simtNCCL"

enum class CollectiveKind { AllReduce, Reduce, ReduceScatter, AllGather, Broadcast };

const char* kind_name(CollectiveKind kind) {
  switch (kind) {
    case CollectiveKind::AllReduce: return "ncclAllReduce";
    case CollectiveKind::Reduce: return "ncclReduce";
    case CollectiveKind::ReduceScatter: return "ncclReduceScatter";
    case CollectiveKind::AllGather: return "ncclAllGather";
    case CollectiveKind::Broadcast: return "ncclBroadcast";
  }
  return "?";
}

struct Call {
  CollectiveKind kind;
  const void* send;
  void* recv;
  size_t count;  // as passed: per-rank for ReduceScatter (recvcount) and AllGather (sendcount)
  ncclDataType_t type;
  ncclRedOp_t op;
  int root;
  bool buffers_ok;
};

bool same_shape(const Call& a, const Call& b) {
  return a.kind == b.kind && a.count == b.count && a.type == b.type && a.op == b.op &&
         a.root == b.root;
}

std::chrono::seconds timeout() {
  static const std::chrono::seconds value = [] {
    const char* text = std::getenv("SIMT_NCCL_TIMEOUT_S");
    long seconds = text != nullptr ? std::strtol(text, nullptr, 10) : 120;
    return std::chrono::seconds(seconds > 0 ? seconds : 120);
  }();
  return value;
}

// The state the ranks of one communicator share.
struct Group {
  explicit Group(int n) : nranks(n), calls(n) {}
  const int nranks;
  std::mutex mutex;
  std::condition_variable cv;
  int barrier_count = 0;
  uint64_t barrier_generation = 0;
  std::vector<Call> calls;

  // Returns false (after reporting) if the other ranks do not arrive in time.
  bool barrier(int rank, const char* where) {
    std::unique_lock<std::mutex> lock(mutex);
    const uint64_t generation = barrier_generation;
    if (++barrier_count == nranks) {
      barrier_count = 0;
      ++barrier_generation;
      cv.notify_all();
      return true;
    }
    if (cv.wait_for(lock, timeout(), [&] { return barrier_generation != generation; })) return true;
    --barrier_count;
    lock.unlock();
    report(cat("NCCL: rank ", rank, " of ", nranks, " waited ", timeout().count(), " s in ", where,
               " for the other ranks (a rank skipped or reordered a collective? see "
               "SIMT_NCCL_TIMEOUT_S)"));
    return false;
  }
};

}  // namespace
}  // namespace simt::detail

struct ncclComm {
  uint64_t magic;
  std::shared_ptr<simt::detail::Group> group;
  int rank;
  int nranks;
  std::string last_error;
};

namespace simt::detail {
namespace {

// Ranks meeting in ncclCommInitRank, by unique id.
struct Rendezvous {
  int nranks = 0;
  std::shared_ptr<Group> group;
  std::vector<bool> taken;
  int arrived = 0;
  int departed = 0;
};

struct Registry {
  std::mutex mutex;
  std::condition_variable cv;
  std::map<std::string, Rendezvous> pending;
};

Registry& registry() {
  static Registry* instance = new Registry;
  return *instance;
}

thread_local int tl_group_depth = 0;
thread_local std::vector<std::function<ncclResult_t()>> tl_deferred;

ncclResult_t fail(ncclComm* comm, ncclResult_t result, const std::string& message) {
  if (comm != nullptr) comm->last_error = message;
  report(cat("NCCL: ", message));
  return result;
}

bool valid(ncclComm_t comm) { return comm != nullptr && comm->magic == kCommMagic; }

size_t type_size(ncclDataType_t type) {
  switch (type) {
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    case ncclBfloat16: return 2;
    default: return 0;  // not emulated
  }
}

// Reduces element i of every rank's buffer in rank order; arithmetic in T's accumulation type.
template <typename T, typename Acc>
void reduce_range(const std::vector<const void*>& sources, size_t offset, size_t count,
                  ncclRedOp_t op, int nranks, T* out) {
  for (size_t i = 0; i < count; ++i) {
    auto value = [&](int r) { return static_cast<Acc>(static_cast<const T*>(sources[r])[offset + i]); };
    Acc acc = value(0);
    for (int r = 1; r < nranks; ++r) {
      const Acc v = value(r);
      switch (op) {
        case ncclSum:
        case ncclAvg: acc = acc + v; break;
        case ncclProd: acc = acc * v; break;
        case ncclMax: acc = acc < v ? v : acc; break;
        case ncclMin: acc = v < acc ? v : acc; break;
        default: break;
      }
    }
    if (op == ncclAvg) acc = acc / static_cast<Acc>(nranks);
    out[i] = static_cast<T>(acc);
  }
}

void reduce_bf16(const std::vector<const void*>& sources, size_t offset, size_t count,
                 ncclRedOp_t op, int nranks, __nv_bfloat16* out) {
  // Accumulate in fp32 in rank order, round once.
  std::vector<float> acc(count);
  for (int r = 0; r < nranks; ++r) {
    const auto* src = static_cast<const __nv_bfloat16*>(sources[r]) + offset;
    for (size_t i = 0; i < count; ++i) {
      const float v = __bfloat162float(src[i]);
      if (r == 0) { acc[i] = v; continue; }
      switch (op) {
        case ncclSum:
        case ncclAvg: acc[i] += v; break;
        case ncclProd: acc[i] *= v; break;
        case ncclMax: acc[i] = acc[i] < v ? v : acc[i]; break;
        case ncclMin: acc[i] = v < acc[i] ? v : acc[i]; break;
        default: break;
      }
    }
  }
  for (size_t i = 0; i < count; ++i)
    out[i] = __float2bfloat16_rn(op == ncclAvg ? acc[i] / static_cast<float>(nranks) : acc[i]);
}

void reduce_into(ncclDataType_t type, const std::vector<const void*>& sources, size_t offset,
                 size_t count, ncclRedOp_t op, int nranks, void* out) {
  switch (type) {
    case ncclInt32: reduce_range<int32_t, int64_t>(sources, offset, count, op, nranks, static_cast<int32_t*>(out)); break;
    case ncclUint32: reduce_range<uint32_t, uint64_t>(sources, offset, count, op, nranks, static_cast<uint32_t*>(out)); break;
    case ncclInt64: reduce_range<int64_t, int64_t>(sources, offset, count, op, nranks, static_cast<int64_t*>(out)); break;
    case ncclUint64: reduce_range<uint64_t, uint64_t>(sources, offset, count, op, nranks, static_cast<uint64_t*>(out)); break;
    case ncclFloat32: reduce_range<float, float>(sources, offset, count, op, nranks, static_cast<float*>(out)); break;
    case ncclFloat64: reduce_range<double, double>(sources, offset, count, op, nranks, static_cast<double*>(out)); break;
    case ncclBfloat16: reduce_bf16(sources, offset, count, op, nranks, static_cast<__nv_bfloat16*>(out)); break;
    default: break;
  }
}

ncclResult_t run_collective(ncclComm* comm, Call call) {
  const char* name = kind_name(call.kind);
  const int n = comm->nranks, rank = comm->rank;
  const size_t element = type_size(call.type);
  const size_t send_elements = call.kind == CollectiveKind::ReduceScatter ? call.count * n : call.count;
  const size_t recv_elements = call.kind == CollectiveKind::AllGather ? call.count * n : call.count;
  const bool sends = call.kind != CollectiveKind::Broadcast || rank == call.root;
  const bool receives = call.kind != CollectiveKind::Reduce || rank == call.root;
  std::string problem;
  if (element == 0)
    problem = cat("data type ", static_cast<int>(call.type), " is not emulated");
  else if (call.op < ncclSum || call.op > ncclAvg)
    problem = cat("reduction op ", static_cast<int>(call.op), " is not emulated");
  else if ((call.kind == CollectiveKind::Broadcast || call.kind == CollectiveKind::Reduce) &&
           (call.root < 0 || call.root >= n))
    problem = cat("root ", call.root, " is not a rank of this ", n, "-rank communicator");
  else if (sends && call.count > 0 &&
           !is_inside_allocation(call.send, send_elements * element, /*allow_pinned_host=*/false))
    problem = cat("send buffer ", describe_address(call.send), " + ", send_elements * element,
                  " bytes is not inside one device allocation");
  else if (receives && call.count > 0 &&
           !is_inside_allocation(call.recv, recv_elements * element, /*allow_pinned_host=*/false))
    problem = cat("receive buffer ", describe_address(call.recv), " + ", recv_elements * element,
                  " bytes is not inside one device allocation");
  call.buffers_ok = problem.empty();
  if (!problem.empty()) fail(comm, ncclInvalidArgument, cat(name, " on rank ", rank, ": ", problem));

  Group& g = *comm->group;
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    g.calls[rank] = call;
  }
  if (!g.barrier(rank, name)) return ncclSystemError;

  // Every rank sees the same posted calls, so all of them agree on whether to go on.
  std::vector<Call> calls;
  {
    std::lock_guard<std::mutex> lock(g.mutex);
    calls = g.calls;
  }
  bool all_ok = true;
  for (int r = 0; r < n; ++r) {
    if (!calls[r].buffers_ok) all_ok = false;
    if (!same_shape(calls[r], calls[0])) {
      if (rank == 0)
        fail(comm, ncclInvalidUsage,
             cat("ranks disagree on a collective: rank 0 calls ", kind_name(calls[0].kind),
                 "(count ", calls[0].count, ", type ", static_cast<int>(calls[0].type), ", op ",
                 static_cast<int>(calls[0].op), ", root ", calls[0].root, ") but rank ", r,
                 " calls ", kind_name(calls[r].kind), "(count ", calls[r].count, ", type ",
                 static_cast<int>(calls[r].type), ", op ", static_cast<int>(calls[r].op),
                 ", root ", calls[r].root, ")"));
      all_ok = false;
    }
  }
  std::vector<unsigned char> result;
  if (all_ok && receives) {
    std::vector<const void*> sources(n);
    for (int r = 0; r < n; ++r) sources[r] = calls[r].send;
    result.resize(recv_elements * element);
    switch (call.kind) {
      case CollectiveKind::AllReduce:
      case CollectiveKind::Reduce:
        reduce_into(call.type, sources, 0, call.count, call.op, n, result.data());
        break;
      case CollectiveKind::ReduceScatter:
        reduce_into(call.type, sources, static_cast<size_t>(rank) * call.count, call.count, call.op,
                    n, result.data());
        break;
      case CollectiveKind::AllGather:
        for (int r = 0; r < n; ++r)
          std::memcpy(result.data() + r * call.count * element, sources[r], call.count * element);
        break;
      case CollectiveKind::Broadcast:
        std::memcpy(result.data(), sources[call.root], call.count * element);
        break;
    }
  }
  // Nobody writes a receive buffer until every rank has finished reading the send buffers.
  if (!g.barrier(rank, name)) return ncclSystemError;
  if (!all_ok) return call.buffers_ok ? ncclInvalidUsage : ncclInvalidArgument;
  if (!result.empty()) std::memcpy(call.recv, result.data(), result.size());
  return ncclSuccess;
}

ncclResult_t submit(ncclComm_t comm, const Call& call) {
  if (!valid(comm))
    return fail(nullptr, ncclInvalidArgument, cat(kind_name(call.kind), ": invalid communicator"));
  if (tl_group_depth > 0) {
    tl_deferred.push_back([comm, call] { return run_collective(comm, call); });
    return ncclSuccess;
  }
  return run_collective(comm, call);
}

}  // namespace
}  // namespace simt::detail

using namespace simt::detail;

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (version == nullptr) return ncclInvalidArgument;
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (id == nullptr) return ncclInvalidArgument;
  static std::mutex mutex;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mutex);
  for (size_t i = 0; i < sizeof id->internal; i += 8) {
    const uint64_t bits = rng();
    std::memcpy(id->internal + i, &bits, std::min<size_t>(8, sizeof id->internal - i));
  }
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (comm == nullptr || nranks < 1 || rank < 0 || rank >= nranks)
    return fail(nullptr, ncclInvalidArgument,
                cat("ncclCommInitRank(nranks ", nranks, ", rank ", rank, "): invalid arguments"));
  Registry& r = registry();
  const std::string key(id.internal, sizeof id.internal);
  std::unique_lock<std::mutex> lock(r.mutex);
  Rendezvous& meeting = r.pending[key];
  if (meeting.nranks == 0) {
    meeting.nranks = nranks;
    meeting.group = std::make_shared<Group>(nranks);
    meeting.taken.assign(nranks, false);
  }
  if (meeting.nranks != nranks || meeting.taken[rank]) {
    const int expected = meeting.nranks;
    lock.unlock();
    return fail(nullptr, ncclInvalidUsage,
                cat("ncclCommInitRank: rank ", rank, " of ", nranks, " joins a communicator of ",
                    expected, " ranks", expected == nranks ? " where that rank already joined" : ""));
  }
  meeting.taken[rank] = true;
  ++meeting.arrived;
  r.cv.notify_all();
  const bool complete = r.cv.wait_for(lock, timeout(), [&] { return meeting.arrived == nranks; });
  if (!complete) {
    meeting.taken[rank] = false;
    --meeting.arrived;
    lock.unlock();
    return fail(nullptr, ncclSystemError,
                cat("ncclCommInitRank: rank ", rank, " waited ", timeout().count(), " s for all ",
                    nranks, " ranks to join"));
  }
  *comm = new ncclComm{kCommMagic, meeting.group, rank, nranks, {}};
  if (++meeting.departed == nranks) r.pending.erase(key);
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return valid(comm) ? ncclSuccess : ncclInvalidArgument; }

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm == nullptr) return ncclSuccess;
  if (!valid(comm)) return fail(nullptr, ncclInvalidArgument, "ncclCommDestroy: invalid communicator");
  comm->magic = 0;
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!valid(comm) || count == nullptr) return ncclInvalidArgument;
  *count = comm->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!valid(comm) || rank == nullptr) return ncclInvalidArgument;
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (!valid(comm) || device == nullptr) return ncclInvalidArgument;
  *device = 0;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!valid(comm) || async_error == nullptr) return ncclInvalidArgument;
  *async_error = ncclSuccess;  // collectives finish before they return
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error (the emulator timed out waiting for ranks)";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  return valid(comm) ? comm->last_error.c_str() : "";
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t) {
  return submit(comm, Call{CollectiveKind::AllReduce, sendbuff, recvbuff, count, datatype, op, 0, true});
}

ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t) {
  return submit(comm, Call{CollectiveKind::Reduce, sendbuff, recvbuff, count, datatype, op, root, true});
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t) {
  return submit(comm, Call{CollectiveKind::ReduceScatter, sendbuff, recvbuff, recvcount, datatype,
                           op, 0, true});
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t) {
  return submit(comm, Call{CollectiveKind::AllGather, sendbuff, recvbuff, sendcount, datatype,
                           ncclSum, 0, true});
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t) {
  return submit(comm, Call{CollectiveKind::Broadcast, sendbuff, recvbuff, count, datatype, ncclSum,
                           root, true});
}

ncclResult_t ncclGroupStart() {
  ++tl_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (tl_group_depth == 0)
    return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without a matching ncclGroupStart");
  if (--tl_group_depth > 0) return ncclSuccess;
  std::vector<std::function<ncclResult_t()>> calls;
  calls.swap(tl_deferred);
  ncclResult_t first_failure = ncclSuccess;
  for (auto& call : calls) {
    const ncclResult_t result = call();
    if (result != ncclSuccess && first_failure == ncclSuccess) first_failure = result;
  }
  return first_failure;
}

}  // extern "C"
