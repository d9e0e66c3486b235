#include "backend/allocator.h"

#include <algorithm>
#include <array>

#include <cstdio>

#include "util/error.h"

namespace slim {

const char* mem_tag_name(MemTag tag) {
  switch (tag) {
    case MemTag::Params: return "params";
    case MemTag::Master: return "master";
    case MemTag::Grads: return "grads";
    case MemTag::OptM: return "m";
    case MemTag::OptV: return "v";
    case MemTag::Activations: return "activations";
    case MemTag::Scratch: return "scratch";
    case MemTag::Workspace: return "workspace";
    case MemTag::Count: break;
  }
  return "?";
}

TaggedAllocator::TaggedAllocator(RawAlloc raw_alloc, RawFree raw_free)
    : raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)) {}

TaggedAllocator::~TaggedAllocator() {
  for (auto& [ptr, block] : live_) raw_free_(ptr);
}

void* TaggedAllocator::allocate(size_t bytes, MemTag tag, const std::string& what) {
  void* ptr = raw_alloc_(bytes == 0 ? 1 : bytes);
  if (!ptr)
    throw Error(cat("out of memory allocating ", format_bytes(bytes), " bytes for ", what, " (",
                    mem_tag_name(tag), "); already held: ", format_bytes(total()),
                    " bytes. Reduce training.micro_batch or the model size."));
  live_[ptr] = Block{bytes, tag, what};
  int t = static_cast<int>(tag);
  current_[t] += bytes;
  if (current_[t] > peak_[t]) peak_[t] = current_[t];
  if (total() > peak_total_) peak_total_ = total();
  return ptr;
}

void TaggedAllocator::release(void* ptr) {
  if (!ptr) return;
  auto it = live_.find(ptr);
  SLIM_CHECK(it != live_.end(), "release of a pointer the allocator does not own");
  current_[static_cast<int>(it->second.tag)] -= it->second.bytes;
  raw_free_(ptr);
  live_.erase(it);
}

size_t TaggedAllocator::total() const {
  size_t sum = 0;
  for (size_t b : current_) sum += b;
  return sum;
}

std::string format_thousands(long long value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  int count = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (count && count % 3 == 0) out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++count;
  }
  return value < 0 ? "-" + out : out;
}

std::string format_bytes(size_t bytes) { return format_thousands(static_cast<long long>(bytes)); }

std::string format_memory_table(const std::array<size_t, kMemTagCount>& bytes, size_t n_params) {
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-12s %16s %12s %12s\n", "tag", "bytes", "MiB", "bytes/param");
  out += line;
  size_t total = 0;
  auto row = [&](const char* name, size_t b) {
    const double per_param = n_params ? double(b) / double(n_params) : 0.0;
    std::snprintf(line, sizeof line, "%-12s %16s %12.2f %12.3f\n", name, format_bytes(b).c_str(),
                  b / 1048576.0, per_param);
    out += line;
  };
  for (int t = 0; t < kMemTagCount; ++t) {
    row(mem_tag_name(MemTag(t)), bytes[t]);
    total += bytes[t];
  }
  row("total", total);
  return out;
}

std::string TaggedAllocator::table(size_t n_params) const {
  std::array<size_t, kMemTagCount> bytes;
  std::copy(std::begin(current_), std::end(current_), bytes.begin());
  return format_memory_table(bytes, n_params);
}

}  // namespace slim
