// The one tagged allocator. Every buffer a run holds (weights, optimizer state, activations,
// scratch) comes from here with a tag, so the memory table a run prints is complete and can be
// predicted to the byte by the planner (`slimtrain memory`). Bytes are accounted exactly as
// requested; alignment padding of the underlying allocation is not counted.
#pragma once
#include <array>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace slim {

enum class MemTag : int {
  Params,       // weights in the compute dtype (what the forward pass reads)
  Master,       // fp32 master weights (only when the compute dtype is not fp32)
  Grads,        // full-model gradient buffer (accumulation mode `grads`)
  OptM,         // optimizer first moment
  OptV,         // optimizer second moment
  Activations,  // everything the forward keeps for the backward
  Scratch,      // reusable per-layer buffers of the backward pass
  Workspace,    // library workspaces, reduction partials, host-visible staging
  Count
};
constexpr int kMemTagCount = static_cast<int>(MemTag::Count);
const char* mem_tag_name(MemTag tag);

class TaggedAllocator {
 public:
  using RawAlloc = std::function<void*(size_t bytes)>;
  using RawFree = std::function<void(void*)>;
  TaggedAllocator(RawAlloc raw_alloc, RawFree raw_free);
  ~TaggedAllocator();
  TaggedAllocator(const TaggedAllocator&) = delete;
  TaggedAllocator& operator=(const TaggedAllocator&) = delete;

  // `what` names the buffer in error messages and in the detailed listing.
  void* allocate(size_t bytes, MemTag tag, const std::string& what);
  void release(void* ptr);

  size_t bytes(MemTag tag) const { return current_[static_cast<int>(tag)]; }
  size_t peak(MemTag tag) const { return peak_[static_cast<int>(tag)]; }
  size_t total() const;
  size_t peak_total() const { return peak_total_; }

  // A fixed-width table: tag, bytes, MiB, bytes/param (when n_params > 0).
  std::string table(size_t n_params) const;

 private:
  struct Block {
    size_t bytes;
    MemTag tag;
    std::string what;
  };
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  std::map<void*, Block> live_;
  size_t current_[kMemTagCount] = {};
  size_t peak_[kMemTagCount] = {};
  size_t peak_total_ = 0;
};

// The table TaggedAllocator::table prints, for any per-tag byte counts (the memory planner's).
std::string format_memory_table(const std::array<size_t, kMemTagCount>& bytes, size_t n_params);

// Formats a byte count as "123,456,789".
std::string format_bytes(size_t bytes);
std::string format_thousands(long long value);

}  // namespace slim
