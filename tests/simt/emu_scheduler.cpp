// emu_scheduler.cpp — runs kernel launches on the CPU.
//
// A pool of worker threads (the launching thread is one of them) takes blocks of the grid one at
// a time. A worker runs a block by giving each of its CUDA threads a fiber and running them one
// after another in the schedule order. Fibers switch only when they block: at __syncthreads, at a warp
// collective, and at exit. A blocked fiber jumps straight to the next runnable one; when none is
// left the worker's own context looks at why (barrier with exited threads, deadlock, mask
// mismatch), reports it, and releases or abandons the block.
//
// Warp collectives follow the PTX rules for shfl.sync / vote.sync / bar.warp.sync: a lane waits
// until every lane named in its mask has arrived at a collective with the same mask; then all of
// them complete together. Lanes that name themselves out of the mask, name lanes that have
// exited (or do not exist), read a lane outside the mask, or end up waiting forever are reported.
//
// Sanitizers: with ASan every switch is announced (__sanitizer_start/finish_switch_fiber), so fake
// stacks and stack bounds stay right. With TSan every fiber is a TSan fiber, switches do not imply
// synchronization, and barriers/__syncwarp add the happens-before edges the GPU guarantees — so
// TSan reports data races between the threads of a block (a missing __syncthreads) as well as
// between blocks. This file itself is compiled without TSan instrumentation in that variant: the
// scheduler's own bookkeeping is touched from every fiber on purpose.

#include "emu_internal.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#if !defined(SIMT_ASAN) && defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#endif
#if !defined(SIMT_TSAN) && defined(__SANITIZE_THREAD__)
#define SIMT_TSAN 1
#endif
#if SIMT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if SIMT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

// ------------------------------------------------------------------------------------------------
// The context switch.
//
// Two implementations of one primitive, "save the running context, resume another, hand it a
// pointer":
//   * Boost.Context's fcontext (make_fcontext/jump_fcontext), portable;
//   * on x86-64, a 16-instruction switch of our own (the default). fcontext resumes the target with
//     an indirect `jmp`, which leaves the CPU's return-stack predictor one entry off, so every
//     `ret` on the resumed fiber's way back into the kernel mispredicts. This switch ends in `ret`:
//     all CUDA threads of a kernel block in the same call chains, so the predicted returns are
//     right. Measured on the development machine (2-core KVM guest): about 2x cheaper per
//     switch in a barrier/shuffle micro-benchmark (25-45 ns against 60-80 ns), 10-25% faster on
//     a whole layernorm kernel, where the kernel's own work also counts.
//     It saves the callee-saved integer registers only; the MXCSR/x87 control words are shared by
//     all fibers of a worker (kernels do not change rounding modes).
// Build with -DSIMT_FIBER_BOOST=1 to use fcontext everywhere.
#if !defined(SIMT_FIBER_BOOST) && !defined(__x86_64__)
#define SIMT_FIBER_BOOST 1
#endif

#if SIMT_FIBER_BOOST
#include <boost/context/detail/fcontext.hpp>
#else
// simt_fiber_switch(save, target, arg): pushes the callee-saved registers, stores the stack pointer
// in *save, loads `target`, pops the target's registers and returns into it with `arg` as the
// return value. simt_fiber_start is where a new fiber "returns" to first: it calls the entry
// function (kept in r12 by make_context) with that value.
asm(R"(
    .text
    .p2align 4
    .globl simt_fiber_switch
    .hidden simt_fiber_switch
    .type simt_fiber_switch, @function
simt_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    movq %rdx, %rax
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size simt_fiber_switch, .-simt_fiber_switch

    .p2align 4
    .globl simt_fiber_start
    .hidden simt_fiber_start
    .type simt_fiber_start, @function
simt_fiber_start:
    movq %rax, %rdi
    callq *%r12
    ud2
    .size simt_fiber_start, .-simt_fiber_start
)");
extern "C" void* simt_fiber_switch(void** save, void* target, void* arg);
extern "C" void simt_fiber_start();
#endif

namespace simt {
namespace detail {
namespace {

#if SIMT_FIBER_BOOST
namespace fc = boost::context::detail;
using RawContext = fc::fcontext_t;
#else
using RawContext = void*;  // the saved stack pointer
#endif

// ------------------------------------------------------------------------------------------------
// Settings (environment first, then the setters).

[[noreturn]] void bad_environment(const char* name, const char* value, const char* expected) {
  std::fprintf(stderr, "simt: environment variable %s=\"%s\" is invalid: expected %s\n", name, value,
               expected);
  std::exit(2);
}

Schedule parse_schedule(const char* text) {
  std::string s = text;
  if (s == "forward") return {ScheduleOrder::Forward, 0};
  if (s == "reverse") return {ScheduleOrder::Reverse, 0};
  if (s.rfind("random:", 0) == 0 && s.size() > 7) {
    char* end = nullptr;
    unsigned long long seed = std::strtoull(s.c_str() + 7, &end, 10);
    if (*end == '\0') return {ScheduleOrder::Random, seed};
  }
  bad_environment("SIMT_SCHEDULE", text, "forward, reverse or random:<seed> (a decimal number)");
}

int parse_positive(const char* name, const char* text, int max) {
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || value < 1 || value > max)
    bad_environment(name, text, cat("an integer from 1 to ", max).c_str());
  return static_cast<int>(value);
}

#if SIMT_ASAN || SIMT_TSAN
constexpr size_t kDefaultStackBytes = 256 * 1024;  // sanitizer frames are several times larger
#else
constexpr size_t kDefaultStackBytes = 64 * 1024;
#endif

struct Settings {
  std::mutex mutex;
  Schedule schedule;
  int workers = 1;
  size_t stack_bytes = kDefaultStackBytes;

  Settings() {
    if (const char* s = std::getenv("SIMT_SCHEDULE")) schedule = parse_schedule(s);
    unsigned hardware = std::thread::hardware_concurrency();
    workers = hardware == 0 ? 1 : static_cast<int>(hardware);
    if (const char* s = std::getenv("SIMT_WORKERS")) workers = parse_positive("SIMT_WORKERS", s, 1024);
    if (const char* s = std::getenv("SIMT_STACK_KB"))
      stack_bytes = static_cast<size_t>(parse_positive("SIMT_STACK_KB", s, 1 << 20)) * 1024;
  }
};

Settings& settings() {
  static Settings* instance = new Settings;  // leaked: used by threads that outlive static dtors
  return *instance;
}

// ------------------------------------------------------------------------------------------------
// Reports.

constexpr int kPrintedReportsPerLaunch = 8;
constexpr size_t kKeptReports = 256;

struct ReportLog {
  std::mutex mutex;
  std::deque<std::string> recent;
  std::atomic<int> count{0};
};

ReportLog& report_log() {
  static ReportLog* instance = new ReportLog;
  return *instance;
}

struct LaunchJob;
thread_local LaunchJob* tl_job = nullptr;  // the launch whose blocks this thread is running

// ------------------------------------------------------------------------------------------------
// Fibers.

enum class FiberState : uint8_t { Runnable, AtBarrier, AtWarpOp, Exited };

// Something a worker can switch to: a CUDA thread's fiber, or the worker's own context.
struct Context {
  RawContext raw = nullptr;
#if SIMT_ASAN
  void* asan_fake_stack = nullptr;
  const void* stack_bottom = nullptr;  // lowest usable address
  size_t stack_size = 0;
#endif
#if SIMT_TSAN
  void* tsan_fiber = nullptr;
#endif
};

// A CUDA thread. Everything a switch or a collective touches sits in the first two cache lines:
// a block's fibers are visited round-robin, so their records compete for L1.
struct alignas(64) Fiber : Context {
  FiberState state = FiberState::Runnable;
  WarpOp op = WarpOp::SyncWarp;        // at a warp collective: what,
  BarrierOp barrier_op = BarrierOp::Sync;
  unsigned mask = 0;                   // with which lanes,
  int operand = 0;                     // source lane / delta / xor mask,
  int width = 32;                      // segment width,
  uint64_t value = 0;                  // this lane's contribution
  WarpResult result{0, false};
  int barrier_result = 0;
  int rank = 0;  // linear thread index in the block
  int warp = 0;
  int lane = 0;
  uint3 thread_idx{};
  std::source_location site;  // where it waits
};

struct FiberStack {
  void* mapping = nullptr;  // guard page + usable stack
  size_t mapping_bytes = 0;
  void* bottom = nullptr;
  size_t bytes = 0;
  bool needs_unpoison = false;  // an abandoned fiber left ASan stack poison behind

  FiberStack() = default;
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  FiberStack(FiberStack&& o) noexcept { *this = std::move(o); }
  FiberStack& operator=(FiberStack&& o) noexcept {
    std::swap(mapping, o.mapping);
    std::swap(mapping_bytes, o.mapping_bytes);
    std::swap(bottom, o.bottom);
    std::swap(bytes, o.bytes);
    std::swap(needs_unpoison, o.needs_unpoison);
    return *this;
  }
  ~FiberStack() { release(); }

  void allocate(size_t usable) {
    release();
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    usable = (usable + page - 1) / page * page;
    mapping_bytes = usable + page;
    mapping = mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) {
      std::fprintf(stderr, "simt: cannot map a %zu-byte fiber stack\n", mapping_bytes);
      std::abort();
    }
    // The lowest page is a guard: a stack overflow faults instead of corrupting a neighbour.
    mprotect(mapping, page, PROT_NONE);
    bottom = static_cast<char*>(mapping) + page;
    bytes = usable;
  }
  void release() {
    if (mapping != nullptr) munmap(mapping, mapping_bytes);
    mapping = nullptr;
  }
};

// Fibers ready to run, in the order they became ready (each fiber is in it at most once).
class RunQueue {
 public:
  void reset(size_t capacity) {
    ring_.resize(std::max<size_t>(capacity, 1));
    head_ = count_ = 0;
  }
  bool empty() const { return count_ == 0; }
  void clear() { head_ = count_ = 0; }
  void push(int fiber) {
    size_t slot = head_ + count_;
    if (slot >= ring_.size()) slot -= ring_.size();
    ring_[slot] = fiber;
    ++count_;
  }
  int pop() {
    int fiber = ring_[head_];
    if (++head_ == ring_.size()) head_ = 0;
    --count_;
    return fiber;
  }

 private:
  std::vector<int> ring_;
  size_t head_ = 0, count_ = 0;
};

struct WarpState {
  uint32_t waiting = 0;  // lanes blocked in a warp collective
  uint32_t exited = 0;   // lanes that exited or do not exist (partial last warp)
  int first_rank = 0;
  int lanes = 0;
  uint8_t lane_order[32];  // the warp's lanes in schedule order
};

// ------------------------------------------------------------------------------------------------
// A launch as the workers see it.

struct LaunchJob {
  const LaunchRequest* request = nullptr;
  uint64_t block_count = 0;
  unsigned thread_count = 0;
  Schedule schedule;
  uint64_t block_multiplier = 1, block_offset = 0;  // random block order: an affine permutation
  int max_helpers = 0;                              // pool threads allowed besides the caller

  std::atomic<uint64_t> next_block{0};
  std::atomic<int> report_count{0};

  std::mutex mutex;  // guards helpers_attached
  std::condition_variable detached;
  int helpers_attached = 0;

  std::once_flag name_once;
  std::string name;

  uint64_t block_for(uint64_t sequence) const {
    switch (schedule.order) {
      case ScheduleOrder::Forward: return sequence;
      case ScheduleOrder::Reverse: return block_count - 1 - sequence;
      case ScheduleOrder::Random:
        return static_cast<uint64_t>(
            (static_cast<unsigned __int128>(sequence) * block_multiplier + block_offset) % block_count);
    }
    return sequence;
  }

  const std::string& kernel_name() {
    std::call_once(name_once, [this] {
      Dl_info info{};
      if (dladdr(request->kernel, &info) != 0 && info.dli_sname != nullptr) {
        int status = 0;
        char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
        name = status == 0 && demangled != nullptr ? demangled : info.dli_sname;
        std::free(demangled);
      } else {
        name = cat("at ", hex(reinterpret_cast<uintptr_t>(request->kernel)));
      }
    });
    return name;
  }
};

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::SyncWarp: return "__syncwarp";
    case WarpOp::ShflIdx: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::MatchAny: return "__match_any_sync";
    case WarpOp::MatchAll: return "__match_all_sync";
    case WarpOp::ReduceAddU: return "__reduce_add_sync";
    case WarpOp::ReduceMinU:
    case WarpOp::ReduceMinI: return "__reduce_min_sync";
    case WarpOp::ReduceMaxU:
    case WarpOp::ReduceMaxI: return "__reduce_max_sync";
    case WarpOp::ReduceAnd: return "__reduce_and_sync";
    case WarpOp::ReduceOr: return "__reduce_or_sync";
    case WarpOp::ReduceXor: return "__reduce_xor_sync";
  }
  return "?";
}

const char* barrier_name(BarrierOp op) {
  switch (op) {
    case BarrierOp::Sync: return "__syncthreads";
    case BarrierOp::Count: return "__syncthreads_count";
    case BarrierOp::And: return "__syncthreads_and";
    case BarrierOp::Or: return "__syncthreads_or";
  }
  return "?";
}

bool is_shuffle(WarpOp op) {
  return op == WarpOp::ShflIdx || op == WarpOp::ShflUp || op == WarpOp::ShflDown ||
         op == WarpOp::ShflXor;
}

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

std::string describe_lanes(uint32_t lanes) {
  std::string out = "{";
  bool first = true;
  for (int lane = 0; lane < 32; ++lane) {
    if (!((lanes >> lane) & 1u)) continue;
    int end = lane;
    while (end + 1 < 32 && ((lanes >> (end + 1)) & 1u)) ++end;
    out += cat(first ? "" : ",", lane);
    if (end > lane) out += cat("-", end);
    first = false;
    lane = end;
  }
  return out + "}";
}

std::string describe_thread(const Fiber& f) {
  return cat("thread (", f.thread_idx.x, ",", f.thread_idx.y, ",", f.thread_idx.z, ") (warp ",
             f.warp, " lane ", f.lane, ")");
}

std::string describe_wait(const Fiber& f) {
  switch (f.state) {
    case FiberState::AtWarpOp:
      return cat("waits in ", op_name(f.op), "(mask ", hex(f.mask), ") at ", describe_site(f.site));
    case FiberState::AtBarrier:
      return cat("waits at ", barrier_name(f.barrier_op), " at ", describe_site(f.site));
    case FiberState::Exited: return "has exited";
    case FiberState::Runnable: return "is runnable";
  }
  return "?";
}

// Source lane of a shuffle for `lane`, by the PTX shfl.sync definition (c = segment mask and
// clamp); returns `lane` itself when the source is out of the lane's segment.
int shuffle_source(WarpOp op, int lane, int operand, int width) {
  const int segmask = (32 - width) & 0x1f;
  const int clamp = op == WarpOp::ShflUp ? 0 : 0x1f;
  const int b = operand & 0x1f;
  const int max_lane = (lane & segmask) | (clamp & ~segmask);
  const int min_lane = lane & segmask;
  int j = lane;
  bool in_range = false;
  switch (op) {
    case WarpOp::ShflUp:
      j = lane - b;
      in_range = j >= max_lane;
      break;
    case WarpOp::ShflDown:
      j = lane + b;
      in_range = j <= max_lane;
      break;
    case WarpOp::ShflXor:
      j = lane ^ b;
      in_range = j <= max_lane;
      break;
    default:  // ShflIdx
      j = min_lane | (b & ~segmask);
      in_range = j <= max_lane;
      break;
  }
  return in_range ? j : lane;
}

// ------------------------------------------------------------------------------------------------
// Running one block.

// First code a fiber runs; `from` is the context that switched to it.
void fiber_main(void* from);

class BlockRunner;
thread_local BlockRunner* tl_runner = nullptr;
thread_local Fiber* tl_fiber = nullptr;

class BlockRunner {
 public:
  ~BlockRunner() {
#if SIMT_TSAN
    for (Fiber& f : fibers_)
      if (f.tsan_fiber != nullptr) __tsan_destroy_fiber(f.tsan_fiber);
#endif
  }

  void run_block(LaunchJob& job, uint64_t sequence);

  int arrive_barrier(Fiber& f, BarrierOp op, int predicate, const std::source_location& where);
  WarpResult arrive_warp(Fiber& f, WarpOp op, unsigned mask, uint64_t value, int operand, int width,
                         const std::source_location& where);
  // Cold paths, kept out of the hot frames (every fiber's stack is touched on every switch).
  [[noreturn, gnu::noinline, gnu::cold]] void reject_warp_op(Fiber& f, WarpOp op, unsigned mask,
                                                             int width,
                                                             const std::source_location& where);
  [[noreturn, gnu::noinline, gnu::cold]] void reject_divergent(Fiber& f, const WarpState& w);
  [[gnu::noinline, gnu::cold]] void report_bad_source(const Fiber& g, int source, unsigned mask);
  [[gnu::noinline, gnu::cold]] void report_divergent_barriers();
  std::string blame(const Fiber& a, const Fiber& b);
  unsigned active_mask(const Fiber& f) const { return ~warps_[f.warp].exited; }
  [[noreturn]] void abort_block(Fiber& f);
  void report_here(const std::string& what, const Fiber* f);

  // Fiber entry continues here on the fiber's own stack.
  [[noreturn]] void run_thread(Fiber& f, Context* from);
  // Runs the kernel for the current fiber; false (after a report) if it threw.
  bool run_body();

 private:
  void prepare_block(LaunchJob& job, uint64_t linear);
  void switch_to(Context* from, Context* to, bool from_is_dying);
  void on_resume(Context* previous, Context* self);
  void block_and_switch(Fiber& f);
  [[gnu::noinline]] void release_barrier(Fiber* continuing);
  [[gnu::noinline]] void resolve_group(WarpState& w, unsigned mask, Fiber* continuing);
  void resolve_stall();
  std::string block_name();
  Fiber& lane_fiber(const WarpState& w, int lane) { return fibers_[w.first_rank + lane]; }

  LaunchJob* job_ = nullptr;
  int thread_count_ = 0;
  std::vector<Fiber> fibers_;
  std::vector<FiberStack> stacks_;
  std::vector<int> order_;     // schedule order of fibers
  std::vector<int> position_;  // fiber -> index in order_
  std::vector<WarpState> warps_;
  RunQueue queue_;
  Context scheduler_;
  int live_ = 0;      // fibers not exited
  int at_warp_ = 0;   // fibers blocked in warp collectives
  bool aborted_ = false;

  // The barrier being gathered.
  int at_barrier_ = 0;
  int barrier_true_ = 0;
  uint64_t barrier_generation_ = 0;
  std::source_location barrier_site_;
  BarrierOp barrier_op_ = BarrierOp::Sync;
  bool barrier_sites_differ_ = false;
  std::source_location barrier_other_site_;
  BarrierOp barrier_other_op_ = BarrierOp::Sync;

  // Dynamic shared memory, 128-byte aligned.
  struct FreeDeleter {
    void operator()(unsigned char* p) const { std::free(p); }
  };
  std::unique_ptr<unsigned char[], FreeDeleter> shared_storage_;
  size_t shared_capacity_ = 0;

#if SIMT_TSAN
  // Synchronization objects for the happens-before edges the GPU guarantees.
  char tsan_block_start_ = 0, tsan_block_end_ = 0, tsan_barrier_[2] = {0, 0};
  std::vector<char> tsan_lane_;
#endif
};

BlockRunner& this_thread_runner() {
  thread_local std::unique_ptr<BlockRunner> runner = std::make_unique<BlockRunner>();
  return *runner;
}

#if SIMT_FIBER_BOOST
// fcontext hands the resumed side the suspended context; store it where its owner expects it.
Context* land(fc::transfer_t transfer) {
  Context* from = static_cast<Context*>(transfer.data);
  from->raw = transfer.fctx;
  return from;
}
void fiber_entry_boost(fc::transfer_t transfer) { fiber_main(land(transfer)); }

RawContext make_context(void* top, size_t size) {
  return fc::make_fcontext(top, size, &fiber_entry_boost);
}
Context* jump(Context* from, Context* to) { return land(fc::jump_fcontext(to->raw, from)); }
#else
RawContext make_context(void* top, size_t) {
  // The frame simt_fiber_switch pops: r15, r14, r13, r12 (= entry), rbx, rbp, return address
  // (= simt_fiber_start), then padding so the entry call sees a 16-byte aligned stack.
  void** sp = reinterpret_cast<void**>((reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15}) - 72);
  for (int i = 0; i < 9; ++i) sp[i] = nullptr;
  sp[3] = reinterpret_cast<void*>(&fiber_main);
  sp[6] = reinterpret_cast<void*>(&simt_fiber_start);
  return sp;
}
Context* jump(Context* from, Context* to) {
  return static_cast<Context*>(simt_fiber_switch(&from->raw, to->raw, from));
}
#endif

void fiber_main(void* from) { tl_runner->run_thread(*tl_fiber, static_cast<Context*>(from)); }

void BlockRunner::switch_to(Context* from, Context* to, bool from_is_dying) {
  // Identity of the context we are about to run: the scheduler is "not a CUDA thread".
  if (to == &scheduler_) {
    tl_fiber = nullptr;
  } else {
    Fiber* f = static_cast<Fiber*>(to);
    tl_fiber = f;
    threadIdx = f->thread_idx;
  }
#if SIMT_ASAN
  __sanitizer_start_switch_fiber(from_is_dying ? nullptr : &from->asan_fake_stack, to->stack_bottom,
                                 to->stack_size);
#endif
#if SIMT_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
  (void)from_is_dying;
  Context* previous = jump(from, to);
  on_resume(previous, from);
}

void BlockRunner::on_resume(Context* previous, Context* self) {
#if SIMT_ASAN
  // Learns the scheduler's (OS thread's) stack bounds on the first switch into a fiber.
  __sanitizer_finish_switch_fiber(self->asan_fake_stack, &previous->stack_bottom,
                                  &previous->stack_size);
#endif
  (void)previous;
  (void)self;
}

void BlockRunner::block_and_switch(Fiber& f) {
  Context* next = queue_.empty() ? static_cast<Context*>(&scheduler_) : &fibers_[queue_.pop()];
  switch_to(&f, next, false);
}

void BlockRunner::run_thread(Fiber& f, Context* from) {
  on_resume(from, &f);
#if SIMT_TSAN
  __tsan_acquire(&tsan_block_start_);
#endif
  // The failure text is built inside the handler but reported after it: a fiber must not switch
  // away while a C++ exception is being handled (the caught-exception stack is per OS thread).
  if (!run_body()) abort_block(f);
  f.state = FiberState::Exited;
  --live_;
  warps_[f.warp].exited |= 1u << f.lane;
#if SIMT_TSAN
  __tsan_release(&tsan_block_end_);
#endif
  Context* next = queue_.empty() ? static_cast<Context*>(&scheduler_) : &fibers_[queue_.pop()];
  switch_to(&f, next, true);
  __builtin_unreachable();  // an exited fiber is never resumed
}

bool BlockRunner::run_body() {
  // The failure text is built inside the handler but reported after it: a fiber must not switch
  // away while a C++ exception is being handled (the caught-exception stack is per OS thread).
  std::string failure;
  try {
    job_->request->body(job_->request->closure);
    return true;
  } catch (const std::exception& e) {
    failure = cat("the kernel threw an exception: ", e.what());
  } catch (...) {
    failure = "the kernel threw an exception of unknown type";
  }
  report_here(failure, tl_fiber);
  return false;
}

void BlockRunner::abort_block(Fiber& f) {
  aborted_ = true;
  queue_.clear();
  switch_to(&f, &scheduler_, true);
  __builtin_unreachable();
}

std::string BlockRunner::block_name() {
  return cat("kernel ", job_->kernel_name(), ", block (", blockIdx.x, ",", blockIdx.y, ",",
             blockIdx.z, ")");
}

void BlockRunner::report_here(const std::string& what, const Fiber* f) {
  report(cat(block_name(), f != nullptr ? cat(", ", describe_thread(*f)) : std::string(), ": ",
             what));
}

void BlockRunner::prepare_block(LaunchJob& job, uint64_t linear) {
  const dim3 grid = job.request->grid, block = job.request->block;
  job_ = &job;
  blockIdx = uint3{static_cast<unsigned>(linear % grid.x),
                   static_cast<unsigned>(linear / grid.x % grid.y),
                   static_cast<unsigned>(linear / (static_cast<uint64_t>(grid.x) * grid.y))};
  blockDim = block;
  gridDim = grid;

  // Dynamic shared memory: fresh NaN poison (0xFF bytes) for every block.
  const size_t shared_bytes = job.request->shared_bytes;
  if (shared_capacity_ < shared_bytes || shared_storage_ == nullptr) {
    shared_capacity_ = (std::max<size_t>(shared_bytes, 1024) + 127) / 128 * 128;
    shared_storage_.reset(static_cast<unsigned char*>(std::aligned_alloc(128, shared_capacity_)));
  }
#if SIMT_ASAN
  // Bytes past the launch's size are off limits, so ASan catches shared-memory overflows.
  ASAN_UNPOISON_MEMORY_REGION(shared_storage_.get(), shared_bytes);
  ASAN_POISON_MEMORY_REGION(shared_storage_.get() + shared_bytes, shared_capacity_ - shared_bytes);
#endif
  std::memset(shared_storage_.get(), 0xFF, shared_bytes);
  tl_dynamic_shared = shared_storage_.get();

  const int n = static_cast<int>(job.thread_count);
  thread_count_ = n;
  if (static_cast<int>(fibers_.size()) < n) {
    fibers_.resize(n);
    stacks_.resize(n);
  }
  size_t stack_bytes;
  {
    std::lock_guard<std::mutex> lock(settings().mutex);
    stack_bytes = settings().stack_bytes;
  }

  // Schedule order: fibers run (and are released from barriers) in this order.
  order_.resize(n);
  position_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  if (job.schedule.order == ScheduleOrder::Reverse) {
    std::reverse(order_.begin(), order_.end());
  } else if (job.schedule.order == ScheduleOrder::Random) {
    std::mt19937_64 rng(job.schedule.seed * 0x9E3779B97F4A7C15ull + linear);
    std::shuffle(order_.begin(), order_.end(), rng);
  }
  for (int i = 0; i < n; ++i) position_[order_[i]] = i;

  const int warp_count = (n + 31) / 32;
  warps_.assign(warp_count, WarpState{});
  for (int w = 0; w < warp_count; ++w) {
    WarpState& warp = warps_[w];
    warp.first_rank = w * 32;
    warp.lanes = std::min(32, n - w * 32);
    warp.exited = warp.lanes == 32 ? 0u : ~((1u << warp.lanes) - 1u);
    for (int l = 0; l < warp.lanes; ++l) warp.lane_order[l] = static_cast<uint8_t>(l);
    std::sort(warp.lane_order, warp.lane_order + warp.lanes, [&](uint8_t a, uint8_t b) {
      return position_[warp.first_rank + a] < position_[warp.first_rank + b];
    });
  }

  for (int i = 0; i < n; ++i) {
    Fiber& f = fibers_[i];
    FiberStack& stack = stacks_[i];
    if (stack.mapping == nullptr || stack.bytes < stack_bytes) stack.allocate(stack_bytes);
#if SIMT_ASAN
    // A fiber never returns from its entry frames, so their scope poison stays behind for the
    // next fiber on this stack; abandoned fibers may leave poison anywhere.
    if (stack.needs_unpoison) {
      ASAN_UNPOISON_MEMORY_REGION(stack.bottom, stack.bytes);
    } else {
      const size_t top = std::min<size_t>(stack.bytes, 16 * 1024);
      ASAN_UNPOISON_MEMORY_REGION(static_cast<char*>(stack.bottom) + stack.bytes - top, top);
    }
#endif
    stack.needs_unpoison = false;
    f.thread_idx = uint3{static_cast<unsigned>(i % block.x),
                         static_cast<unsigned>(i / block.x % block.y),
                         static_cast<unsigned>(i / (block.x * block.y))};
    f.rank = i;
    f.warp = i / 32;
    f.lane = i % 32;
    f.state = FiberState::Runnable;
#if SIMT_ASAN
    f.asan_fake_stack = nullptr;
    f.stack_bottom = stack.bottom;
    f.stack_size = stack.bytes;
#endif
    // Stack tops are staggered by a few cache lines: mappings are page-aligned, and tops at the
    // same page offset would all compete for one L1 cache set on every switch.
    const size_t color = static_cast<size_t>(i % 64) * 64;
    f.raw = make_context(static_cast<char*>(stack.bottom) + stack.bytes - color, stack.bytes - color);
#if SIMT_TSAN
    if (f.tsan_fiber == nullptr) f.tsan_fiber = __tsan_create_fiber(0);
#endif
  }
#if SIMT_TSAN
  tsan_lane_.assign(n, 0);
  scheduler_.tsan_fiber = __tsan_get_current_fiber();
  __tsan_release(&tsan_block_start_);
#endif

  queue_.reset(n);
  for (int idx : order_) queue_.push(idx);
  live_ = n;
  at_warp_ = 0;
  at_barrier_ = 0;
  barrier_true_ = 0;
  barrier_sites_differ_ = false;
  aborted_ = false;
}

void BlockRunner::run_block(LaunchJob& job, uint64_t sequence) {
  prepare_block(job, job.block_for(sequence));
  tl_runner = this;
  tl_fiber = nullptr;
  while (!aborted_) {
    if (!queue_.empty()) {
      switch_to(&scheduler_, &fibers_[queue_.pop()], false);
      continue;
    }
    if (live_ == 0) break;
    resolve_stall();
  }
  if (aborted_) {
    // Abandoned fibers never unwound: their stacks may carry ASan poison into the next block.
    for (int i = 0; i < thread_count_; ++i) {
      if (fibers_[i].state == FiberState::Exited) continue;
      stacks_[i].needs_unpoison = true;
#if SIMT_TSAN
      // What they wrote before they stopped must happen-before the host's next look at memory,
      // as for fibers that exit: release on their behalf (a TSan identity change, no real switch).
      __tsan_switch_to_fiber(fibers_[i].tsan_fiber, __tsan_switch_to_fiber_no_sync);
      __tsan_release(&tsan_block_end_);
      __tsan_switch_to_fiber(scheduler_.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
    }
  }
#if SIMT_TSAN
  __tsan_acquire(&tsan_block_end_);
#endif
  tl_runner = nullptr;
  tl_fiber = nullptr;
}

int BlockRunner::arrive_barrier(Fiber& f, BarrierOp op, int predicate,
                                const std::source_location& where) {
  f.state = FiberState::AtBarrier;
  f.site = where;
  f.barrier_op = op;
  if (at_barrier_ == 0) {
    barrier_site_ = where;
    barrier_op_ = op;
  } else if (!barrier_sites_differ_ && (!same_site(where, barrier_site_) || op != barrier_op_)) {
    barrier_sites_differ_ = true;
    barrier_other_site_ = where;
    barrier_other_op_ = op;
  }
  ++at_barrier_;
  if (predicate != 0) ++barrier_true_;
#if SIMT_TSAN
  char* token = &tsan_barrier_[barrier_generation_ & 1];
  __tsan_release(token);
#endif
  if (at_barrier_ == thread_count_)
    release_barrier(&f);
  else
    block_and_switch(f);
#if SIMT_TSAN
  __tsan_acquire(token);
#endif
  return f.barrier_result;
}

void BlockRunner::report_divergent_barriers() {
  report_here(cat("threads wait at different barriers: ", barrier_name(barrier_op_), " at ",
                  describe_site(barrier_site_), " and ", barrier_name(barrier_other_op_), " at ",
                  describe_site(barrier_other_site_),
                  " (a __syncthreads in divergent code; the GPU would treat them as one barrier)"),
              nullptr);
}

void BlockRunner::release_barrier(Fiber* continuing) {
  if (barrier_sites_differ_) [[unlikely]]
    report_divergent_barriers();
  int result = 0;
  switch (barrier_op_) {
    case BarrierOp::Sync: result = 0; break;
    case BarrierOp::Count: result = barrier_true_; break;
    case BarrierOp::And: result = barrier_true_ == at_barrier_ ? 1 : 0; break;
    case BarrierOp::Or: result = barrier_true_ > 0 ? 1 : 0; break;
  }
  for (int idx : order_) {
    Fiber& g = fibers_[idx];
    if (g.state != FiberState::AtBarrier) continue;
    g.state = FiberState::Runnable;
    g.barrier_result = result;
    if (&g != continuing) queue_.push(idx);
  }
  at_barrier_ = 0;
  barrier_true_ = 0;
  barrier_sites_differ_ = false;
  ++barrier_generation_;
}

void BlockRunner::reject_warp_op(Fiber& f, WarpOp op, unsigned mask, int width,
                                 const std::source_location& where) {
  const WarpState& w = warps_[f.warp];
  if ((mask & (1u << f.lane)) == 0)
    report_here(cat(op_name(op), " at ", describe_site(where), " with mask ", hex(mask),
                    " that does not name the calling lane ", f.lane,
                    " (undefined behaviour on the GPU)"),
                &f);
  else if ((mask & w.exited) != 0) {
    // A named lane that waits with another mask is the root cause; its exit-bound partners are
    // only the consequence (e.g. the other half of the warp completed its own group and left).
    f.state = FiberState::AtWarpOp;
    f.op = op;
    f.mask = mask;
    f.site = where;
    for (uint32_t named = mask & ~w.exited & ~(1u << f.lane); named != 0; named &= named - 1) {
      const Fiber& g = lane_fiber(w, __builtin_ctz(named));
      if (g.state == FiberState::AtWarpOp && g.mask != mask) {
        report_here(blame(f, g), nullptr);
        abort_block(f);
      }
    }
    report_here(cat(op_name(op), "(mask ", hex(mask), ") at ", describe_site(where),
                    " names lanes ", describe_lanes(mask & w.exited),
                    " that have exited or do not exist (block of ", thread_count_,
                    " threads); a full mask in a partial warp or after an early return is a bug"),
                &f);
  } else {
    report_here(cat(op_name(op), " at ", describe_site(where), " with width ", width,
                    ": the width must be a power of two from 1 to 32"),
                &f);
  }
  abort_block(f);
}

void BlockRunner::reject_divergent(Fiber& f, const WarpState& w) {
  std::string detail;
  for (uint32_t rest = f.mask; rest != 0; rest &= rest - 1) {
    const Fiber& g = lane_fiber(w, __builtin_ctz(rest));
    if (g.op != f.op || g.width != f.width) {
      detail = cat("lane ", g.lane, " ", describe_wait(g));
      break;
    }
  }
  report_here(cat("divergent warp collectives with the same mask ", hex(f.mask), ": this lane ",
                  describe_wait(f), ", but ", detail),
              &f);
  abort_block(f);
}

WarpResult BlockRunner::arrive_warp(Fiber& f, WarpOp op, unsigned mask, uint64_t value, int operand,
                                    int width, const std::source_location& where) {
  WarpState& w = warps_[f.warp];
  const uint32_t self = 1u << f.lane;
  if ((mask & self) == 0 || (mask & w.exited) != 0 ||
      (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1)) != 0))) [[unlikely]]
    reject_warp_op(f, op, mask, width, where);
  f.state = FiberState::AtWarpOp;
  f.site = where;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.operand = operand;
  f.width = width;
  w.waiting |= self;
  ++at_warp_;
#if SIMT_TSAN
  if (op == WarpOp::SyncWarp) __tsan_release(&tsan_lane_[f.rank]);
#endif

  // Complete when every named lane waits with this very mask; otherwise some lane is still on its
  // way (or in another group), and the stall analysis reports it if it never comes.
  bool complete = (w.waiting & mask) == mask;
  bool ops_agree = true;
  for (uint32_t rest = mask; complete && rest != 0; rest &= rest - 1) {
    const Fiber& g = lane_fiber(w, __builtin_ctz(rest));
    if (g.mask != mask) complete = false;
    if (g.op != op || (is_shuffle(op) && g.width != width)) ops_agree = false;
  }
  if (complete) {
    if (!ops_agree) [[unlikely]]
      reject_divergent(f, w);
    resolve_group(w, mask, &f);
  } else {
    block_and_switch(f);
  }
#if SIMT_TSAN
  if (op == WarpOp::SyncWarp)
    for (uint32_t rest = mask; rest != 0; rest &= rest - 1)
      __tsan_acquire(&tsan_lane_[w.first_rank + __builtin_ctz(rest)]);
#endif
  return f.result;
}

void BlockRunner::resolve_group(WarpState& w, unsigned mask, Fiber* continuing) {
  const Fiber& first = lane_fiber(w, __builtin_ctz(mask));
  const WarpOp op = first.op;
  uint32_t ballot = 0;
  uint32_t reduce_add = 0, reduce_and = 0xffffffffu, reduce_or = 0, reduce_xor = 0;
  uint32_t reduce_min_u = 0xffffffffu, reduce_max_u = 0;
  int32_t reduce_min_i = INT32_MAX, reduce_max_i = INT32_MIN;
  bool all_equal = true;
  for (uint32_t rest = mask; rest != 0; rest &= rest - 1) {
    const Fiber& g = lane_fiber(w, __builtin_ctz(rest));
    const uint32_t v32 = static_cast<uint32_t>(g.value);
    if (g.value != 0) ballot |= 1u << g.lane;
    reduce_add += v32;
    reduce_and &= v32;
    reduce_or |= v32;
    reduce_xor ^= v32;
    reduce_min_u = std::min(reduce_min_u, v32);
    reduce_max_u = std::max(reduce_max_u, v32);
    reduce_min_i = std::min(reduce_min_i, static_cast<int32_t>(v32));
    reduce_max_i = std::max(reduce_max_i, static_cast<int32_t>(v32));
    if (g.value != first.value) all_equal = false;
  }

  bool reported_bad_source = false;
  for (uint32_t rest = mask; rest != 0; rest &= rest - 1) {
    Fiber& g = lane_fiber(w, __builtin_ctz(rest));
    WarpResult r{0, false};
    switch (op) {
      case WarpOp::SyncWarp: break;
      case WarpOp::ShflIdx:
      case WarpOp::ShflUp:
      case WarpOp::ShflDown:
      case WarpOp::ShflXor: {
        const int source = shuffle_source(op, g.lane, g.operand, g.width);
        if (((mask >> source) & 1u) == 0) {
          if (!reported_bad_source) report_bad_source(g, source, mask);
          reported_bad_source = true;
          r.bits = g.value;
        } else {
          r.bits = lane_fiber(w, source).value;
        }
        break;
      }
      case WarpOp::Ballot: r.bits = ballot; break;
      case WarpOp::Any: r.bits = ballot != 0 ? 1 : 0; break;
      case WarpOp::All: r.bits = ballot == mask ? 1 : 0; break;
      case WarpOp::MatchAny: {
        uint32_t same = 0;
        for (uint32_t other = mask; other != 0; other &= other - 1) {
          const int lane = __builtin_ctz(other);
          if (lane_fiber(w, lane).value == g.value) same |= 1u << lane;
        }
        r.bits = same;
        break;
      }
      case WarpOp::MatchAll:
        r.bits = all_equal ? mask : 0;
        r.pred = all_equal;
        break;
      case WarpOp::ReduceAddU: r.bits = reduce_add; break;
      case WarpOp::ReduceMinU: r.bits = reduce_min_u; break;
      case WarpOp::ReduceMaxU: r.bits = reduce_max_u; break;
      case WarpOp::ReduceMinI: r.bits = static_cast<uint32_t>(reduce_min_i); break;
      case WarpOp::ReduceMaxI: r.bits = static_cast<uint32_t>(reduce_max_i); break;
      case WarpOp::ReduceAnd: r.bits = reduce_and; break;
      case WarpOp::ReduceOr: r.bits = reduce_or; break;
      case WarpOp::ReduceXor: r.bits = reduce_xor; break;
    }
    g.result = r;
  }

  for (int i = 0; i < w.lanes; ++i) {
    const int lane = w.lane_order[i];
    if (((mask >> lane) & 1u) == 0) continue;
    Fiber& g = lane_fiber(w, lane);
    g.state = FiberState::Runnable;
    if (&g != continuing) queue_.push(g.rank);
  }
  w.waiting &= ~mask;
  at_warp_ -= __builtin_popcount(mask);
}

void BlockRunner::report_bad_source(const Fiber& g, int source, unsigned mask) {
  report_here(cat(op_name(g.op), "(mask ", hex(mask), ") at ", describe_site(g.site), ": lane ",
                  g.lane, " reads lane ", source,
                  ", which is not in the mask (the value is undefined on the GPU)"),
              &g);
}

// Why lane a's collective cannot complete: lane b, named in a's mask, is elsewhere.
std::string BlockRunner::blame(const Fiber& a, const Fiber& b) {
  const bool mismatch = b.state == FiberState::AtWarpOp;
  return cat(mismatch ? "warp collective mask mismatch" : "deadlock", ": ", describe_thread(a), " ",
             describe_wait(a), ", but lane ", b.lane, " (", describe_thread(b),
             ") named in that mask ", describe_wait(b),
             mismatch ? " — every lane named in a mask must use the same mask" : "", " [",
             at_warp_, " threads blocked in warp collectives, ", at_barrier_, " at a barrier, ",
             thread_count_ - live_, " exited]");
}

// Every live fiber is blocked. Either a barrier lacks threads that exited (reported, then released
// as the GPU would), or warp collectives can never complete (reported, block abandoned).
void BlockRunner::resolve_stall() {
  if (at_warp_ == 0) {
    const Fiber* gone = nullptr;
    for (int i = 0; i < thread_count_ && gone == nullptr; ++i)
      if (fibers_[i].state == FiberState::Exited) gone = &fibers_[i];
    report_here(cat("deadlock: ", at_barrier_, " threads wait at ", barrier_name(barrier_op_),
                    " at ", describe_site(barrier_site_), " but ", thread_count_ - live_,
                    " threads of the block exited without reaching it (first: ",
                    gone != nullptr ? describe_thread(*gone) : std::string("?"),
                    "); a barrier after an early return is undefined behaviour"),
                nullptr);
    release_barrier(nullptr);
    return;
  }

  // Find one waiting lane and the named lane that keeps it waiting.
  for (const WarpState& w : warps_) {
    for (uint32_t waiting = w.waiting; waiting != 0; waiting &= waiting - 1) {
      const Fiber& a = fibers_[w.first_rank + __builtin_ctz(waiting)];
      for (uint32_t named = a.mask & ~(1u << a.lane); named != 0; named &= named - 1) {
        const Fiber& b = fibers_[w.first_rank + __builtin_ctz(named)];
        if (b.state == FiberState::AtWarpOp && b.mask == a.mask) continue;
        report_here(blame(a, b), nullptr);
        aborted_ = true;
        return;
      }
    }
  }
  report_here("deadlock in warp collectives (no lane could be blamed)", nullptr);
  aborted_ = true;
}

// ------------------------------------------------------------------------------------------------
// The worker pool.

class WorkerPool {
 public:
  static WorkerPool& instance() {
    static WorkerPool* pool = new WorkerPool;  // leaked: workers block in it until process exit
    return *pool;
  }

  void run(LaunchJob& job, int workers) {
    const bool shared = workers > 1 && job.block_count > 1;
    if (shared) {
      job.max_helpers = workers - 1;
      std::lock_guard<std::mutex> lock(mutex_);
      while (threads_ < job.max_helpers) {
        std::thread(&WorkerPool::worker_loop, this).detach();
        ++threads_;
      }
      jobs_.push_back(&job);
      work_available_.notify_all();
    }
    work_on(job);
    if (shared) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        jobs_.erase(std::find(jobs_.begin(), jobs_.end(), &job));
      }
      std::unique_lock<std::mutex> lock(job.mutex);
      job.detached.wait(lock, [&] { return job.helpers_attached == 0; });
    }
  }

 private:
  static void work_on(LaunchJob& job) {
    LaunchJob* outer = tl_job;
    tl_job = &job;
    BlockRunner& runner = this_thread_runner();
    for (;;) {
      const uint64_t sequence = job.next_block.fetch_add(1);
      if (sequence >= job.block_count) break;
      runner.run_block(job, sequence);
    }
    tl_job = outer;
  }

  // Called with mutex_ held; attaches this worker to a job that still has blocks to hand out.
  LaunchJob* attach_job() {
    for (LaunchJob* job : jobs_) {
      if (job->next_block.load() >= job->block_count) continue;
      std::lock_guard<std::mutex> lock(job->mutex);
      if (job->helpers_attached >= job->max_helpers) continue;
      ++job->helpers_attached;
      return job;
    }
    return nullptr;
  }

  void worker_loop() {
    for (;;) {
      LaunchJob* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_available_.wait(lock, [&] { return (job = attach_job()) != nullptr; });
      }
      work_on(*job);
      std::lock_guard<std::mutex> lock(job->mutex);
      if (--job->helpers_attached == 0) job->detached.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_available_;
  std::vector<LaunchJob*> jobs_;
  int threads_ = 0;
};

// The singletons are built before main(), not on first use: in the TSan variant this file is not
// instrumented, so TSan cannot see the guard of a function-local static and would take two rank
// threads racing to their first launch for a data race on the singleton.
[[maybe_unused]] const bool kSingletonsBuilt =
    (settings(), report_log(), WorkerPool::instance(), true);

std::string validate_configuration(dim3 grid, dim3 block) {
  const uint64_t threads = static_cast<uint64_t>(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0)
    return cat("block (", block.x, ",", block.y, ",", block.z, ") has a zero dimension");
  if (block.x > 1024 || block.y > 1024 || block.z > static_cast<unsigned>(kMaxBlockDimZ))
    return cat("block (", block.x, ",", block.y, ",", block.z,
               ") exceeds the per-dimension limits (1024, 1024, 64)");
  if (threads > static_cast<uint64_t>(kMaxThreadsPerBlock))
    return cat("block (", block.x, ",", block.y, ",", block.z, ") has ", threads,
               " threads; the limit is 1024");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0)
    return cat("grid (", grid.x, ",", grid.y, ",", grid.z, ") has a zero dimension");
  if (grid.x > kMaxGridDimX || grid.y > kMaxGridDimYZ || grid.z > kMaxGridDimYZ)
    return cat("grid (", grid.x, ",", grid.y, ",", grid.z,
               ") exceeds the limits (2147483647, 65535, 65535)");
  return {};
}

// The benchmark kernel for measure_switch_ns.
void switch_benchmark_kernel(int barriers) {
  for (int i = 0; i < barriers; ++i) __syncthreads();
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Entry points used by the headers and the other .cpp files.

std::string hex(uint64_t value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "0x%08llx", static_cast<unsigned long long>(value));
  return buffer;
}

std::string describe_site(const std::source_location& where) {
  return cat(where.file_name(), ":", where.line(), " (", where.function_name(), ")");
}

void report(const std::string& message) {
  ReportLog& log = report_log();
  log.count.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(log.mutex);
    log.recent.push_back(message);
    if (log.recent.size() > kKeptReports) log.recent.pop_front();
  }
  bool print = true;
  if (tl_job != nullptr) print = tl_job->report_count.fetch_add(1) < kPrintedReportsPerLaunch;
  if (print) std::fprintf(stderr, "simt: %s\n", message.c_str());
}

WarpResult warp_collective(WarpOp op, unsigned mask, uint64_t value, int operand, int width,
                           const std::source_location& where) {
  if (tl_fiber == nullptr) {
    report(cat(op_name(op), " called outside a kernel at ", describe_site(where)));
    return {value, false};
  }
  return tl_runner->arrive_warp(*tl_fiber, op, mask, value, operand, width, where);
}

int block_barrier(BarrierOp op, int predicate, const std::source_location& where) {
  if (tl_fiber == nullptr) {
    report(cat(barrier_name(op), " called outside a kernel at ", describe_site(where)));
    return 0;
  }
  return tl_runner->arrive_barrier(*tl_fiber, op, predicate, where);
}

unsigned active_mask() {
  if (tl_fiber == nullptr) return 1u;
  return tl_runner->active_mask(*tl_fiber);
}

void report_misaligned(const void* address, size_t bytes, size_t alignment, const char* what,
                       const std::source_location& where) {
  std::string message = cat("misaligned address: ", what, " of a ", bytes, "-byte value at ",
                            hex(reinterpret_cast<uintptr_t>(address)), " (needs ", alignment,
                            "-byte alignment) at ", describe_site(where));
  if (tl_fiber != nullptr)
    tl_runner->report_here(message, tl_fiber);
  else
    report(message);
}

void trap(const std::source_location& where) {
  if (tl_fiber == nullptr) {
    report(cat("__trap() outside a kernel at ", describe_site(where)));
    std::abort();
  }
  tl_runner->report_here(cat("__trap() at ", describe_site(where)), tl_fiber);
  tl_runner->abort_block(*tl_fiber);
}

bool is_device_accessible(const void* pointer) {
  if (pointer == nullptr) return true;
  Allocation found;
  return find_allocation(pointer, &found);
}

std::string describe_pointer_argument(int index, const char* type_name, const void* pointer) {
  // type_name is __PRETTY_FUNCTION__ of type_name<T>(): "... [with T = float*]".
  std::string type = type_name;
  size_t start = type.find("T = ");
  if (start != std::string::npos) {
    start += 4;
    size_t end = type.find_first_of(";]", start);
    type = type.substr(start, end - start);
  }
  return cat("argument #", index, " (", type, ") = ", describe_address(pointer),
             " does not point into device memory (not inside a live cudaMalloc/cudaMallocHost "
             "allocation); the GPU would fault on it");
}

void launch_kernel(LaunchRequest& request) {
  if (tl_fiber != nullptr) {
    report("a kernel launched another kernel (dynamic parallelism is not supported)");
    record_error(cudaErrorNotSupported);
    return;
  }
  if (!is_valid_stream(request.stream)) {
    report(cat("kernel launch on an invalid or destroyed stream ",
               hex(reinterpret_cast<uintptr_t>(request.stream))));
    record_error(cudaErrorInvalidResourceHandle);
    return;
  }
  const std::string bad_configuration = validate_configuration(request.grid, request.block);
  if (!bad_configuration.empty()) {
    report(cat("invalid launch configuration: ", bad_configuration));
    record_error(cudaErrorInvalidConfiguration);
    return;
  }
  const int attribute = max_dynamic_shared_attribute(request.kernel);
  const size_t shared_limit = attribute > 0 ? static_cast<size_t>(attribute) : kDefaultSharedPerBlock;
  if (request.shared_bytes > shared_limit) {
    report(cat("launch asks for ", request.shared_bytes, " bytes of dynamic shared memory; the limit is ",
               shared_limit,
               attribute > 0 ? " (set by cudaFuncSetAttribute)"
                             : " (more than 48 KiB needs cudaFuncSetAttribute("
                               "cudaFuncAttributeMaxDynamicSharedMemorySize), up to 227 KiB)"));
    record_error(cudaErrorInvalidValue);  // what the driver returns for this
    return;
  }
  if (!request.bad_arguments.empty()) {
    for (const std::string& problem : request.bad_arguments) report(cat("kernel launch: ", problem));
    record_error(cudaErrorLaunchFailure);
    set_pending_launch_failure();
    return;
  }

  LaunchJob job;
  job.request = &request;
  job.block_count = static_cast<uint64_t>(request.grid.x) * request.grid.y * request.grid.z;
  job.thread_count = request.block.x * request.block.y * request.block.z;
  int workers;
  {
    std::lock_guard<std::mutex> lock(settings().mutex);
    job.schedule = settings().schedule;
    workers = settings().workers;
  }
  if (job.schedule.order == ScheduleOrder::Random && job.block_count > 1) {
    std::mt19937_64 rng(job.schedule.seed);
    do {
      job.block_multiplier = rng() % job.block_count;
    } while (job.block_multiplier == 0 || std::gcd(job.block_multiplier, job.block_count) != 1);
    job.block_offset = rng() % job.block_count;
  }
  WorkerPool::instance().run(job, workers);

  const int reports = job.report_count.load();
  if (reports > 0) {
    if (reports > kPrintedReportsPerLaunch)
      std::fprintf(stderr, "simt: ... %d more reports from kernel %s not printed\n",
                   reports - kPrintedReportsPerLaunch, job.kernel_name().c_str());
    record_error(cudaErrorLaunchFailure);
    set_pending_launch_failure();
  }
}

}  // namespace detail

// ------------------------------------------------------------------------------------------------
// Public host API.

void set_schedule(Schedule schedule) {
  std::lock_guard<std::mutex> lock(detail::settings().mutex);
  detail::settings().schedule = schedule;
}

Schedule schedule() {
  std::lock_guard<std::mutex> lock(detail::settings().mutex);
  return detail::settings().schedule;
}

int report_count() { return detail::report_log().count.load(); }

std::vector<std::string> reports() {
  detail::ReportLog& log = detail::report_log();
  std::lock_guard<std::mutex> lock(log.mutex);
  return {log.recent.begin(), log.recent.end()};
}

void reset_reports() {
  detail::ReportLog& log = detail::report_log();
  std::lock_guard<std::mutex> lock(log.mutex);
  log.recent.clear();
  log.count.store(0);
}

void set_workers(int workers) {
  std::lock_guard<std::mutex> lock(detail::settings().mutex);
  detail::settings().workers = std::max(1, workers);
}

int workers() {
  std::lock_guard<std::mutex> lock(detail::settings().mutex);
  return detail::settings().workers;
}

void set_stack_bytes(size_t bytes) {
  std::lock_guard<std::mutex> lock(detail::settings().mutex);
  detail::settings().stack_bytes = std::max<size_t>(bytes, 16 * 1024);
}

double measure_switch_ns(int threads, int barriers) {
  // Warm up (stacks get mapped and touched), then take the best of a few runs: the machine may
  // be shared, and the minimum is the cost of the switch itself.
  launch(detail::switch_benchmark_kernel, dim3(1), dim3(threads), 0, nullptr, 1);
  double best = 1e300;
  for (int run = 0; run < 5; ++run) {
    const auto start = std::chrono::steady_clock::now();
    launch(detail::switch_benchmark_kernel, dim3(1), dim3(threads), 0, nullptr, barriers);
    const auto stop = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(stop - start).count());
  }
  // Every barrier switches away from each thread once, and so does every thread's exit.
  return best / (static_cast<double>(threads) * (barriers + 1));
}

}  // namespace simt
