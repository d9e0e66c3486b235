// XXH64, following the xxHash specification: four accumulators consume 32-byte stripes, then the
// remaining 0..31 bytes are folded in 8, 4 and 1 bytes at a time, then a final avalanche.
#include "util/hash.h"

#include <bit>
#include <cstdio>
#include <cstring>

namespace slim {

namespace {

static_assert(std::endian::native == std::endian::little,
              "XXH64 here reads words as little-endian; a big-endian host needs byte swaps");

constexpr uint64_t kPrime1 = 0x9E3779B185EBCA87ULL;
constexpr uint64_t kPrime2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t kPrime3 = 0x165667B19E3779F9ULL;
constexpr uint64_t kPrime4 = 0x85EBCA77C2B2AE63ULL;
constexpr uint64_t kPrime5 = 0x27D4EB2F165667C5ULL;

inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // unaligned-safe; compiles to one load
  return v;
}

inline uint32_t load32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline uint64_t lane_round(uint64_t acc, uint64_t input) {
  acc += input * kPrime2;
  acc = std::rotl(acc, 31);
  return acc * kPrime1;
}

inline uint64_t merge_lane(uint64_t hash, uint64_t lane) {
  hash ^= lane_round(0, lane);
  return hash * kPrime1 + kPrime4;
}

// Consumes whole 32-byte stripes from p; returns how many bytes it used.
inline size_t consume_stripes(uint64_t lanes[4], const unsigned char* p, size_t bytes) {
  uint64_t a = lanes[0], b = lanes[1], c = lanes[2], d = lanes[3];
  size_t used = 0;
  for (; used + 32 <= bytes; used += 32) {
    a = lane_round(a, load64(p + used));
    b = lane_round(b, load64(p + used + 8));
    c = lane_round(c, load64(p + used + 16));
    d = lane_round(d, load64(p + used + 24));
  }
  lanes[0] = a, lanes[1] = b, lanes[2] = c, lanes[3] = d;
  return used;
}

}  // namespace

Hash64::Hash64(uint64_t seed) : seed_(seed) {
  lanes_[0] = seed + kPrime1 + kPrime2;
  lanes_[1] = seed + kPrime2;
  lanes_[2] = seed;
  lanes_[3] = seed - kPrime1;
}

void Hash64::update(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  total_bytes_ += bytes;
  if (pending_bytes_ > 0) {  // top up the partial stripe left by the previous call first
    const size_t take = std::min(bytes, sizeof(pending_) - pending_bytes_);
    std::memcpy(pending_ + pending_bytes_, p, take);
    pending_bytes_ += take;
    p += take;
    bytes -= take;
    if (pending_bytes_ < sizeof(pending_)) return;
    consume_stripes(lanes_, pending_, sizeof(pending_));
    pending_bytes_ = 0;
  }
  const size_t used = consume_stripes(lanes_, p, bytes);
  pending_bytes_ = bytes - used;
  if (pending_bytes_ > 0) std::memcpy(pending_, p + used, pending_bytes_);
}

uint64_t Hash64::digest() const {
  uint64_t h;
  if (total_bytes_ >= 32) {
    h = std::rotl(lanes_[0], 1) + std::rotl(lanes_[1], 7) + std::rotl(lanes_[2], 12) +
        std::rotl(lanes_[3], 18);
    for (uint64_t lane : lanes_) h = merge_lane(h, lane);
  } else {
    h = seed_ + kPrime5;  // short inputs never touched the lanes
  }
  h += total_bytes_;

  const unsigned char* p = pending_;
  size_t left = pending_bytes_;
  for (; left >= 8; p += 8, left -= 8) {
    h ^= lane_round(0, load64(p));
    h = std::rotl(h, 27) * kPrime1 + kPrime4;
  }
  if (left >= 4) {
    h ^= uint64_t(load32(p)) * kPrime1;
    h = std::rotl(h, 23) * kPrime2 + kPrime3;
    p += 4;
    left -= 4;
  }
  for (; left > 0; ++p, --left) {
    h ^= uint64_t(*p) * kPrime5;
    h = std::rotl(h, 11) * kPrime1;
  }

  // Avalanche: every input bit affects every output bit.
  h ^= h >> 33;
  h *= kPrime2;
  h ^= h >> 29;
  h *= kPrime3;
  h ^= h >> 32;
  return h;
}

uint64_t hash64(const void* data, size_t bytes, uint64_t seed) {
  Hash64 hasher(seed);
  hasher.update(data, bytes);
  return hasher.digest();
}

std::string checksum_string(uint64_t hash) {
  char text[32];
  std::snprintf(text, sizeof(text), "xxh64:%016llx", static_cast<unsigned long long>(hash));
  return text;
}

}  // namespace slim
