// Token shards in llm.c's format, so data prepared by llm.c's scripts (fineweb, tinyshakespeare,
// ...) can be used unchanged and ours can be read by llm.c:
//
//   bytes [0, 1024)        header: 256 little-endian int32
//                            [0] = 20240520 (magic), [1] = 1 (version), [2] = token count N,
//                            the rest zero
//   bytes [1024, 1024+2N)  N little-endian uint16 token ids
//
// Readers validate everything a damaged or foreign file could get wrong and say which file and
// which byte offset is bad, because a corrupt shard otherwise shows up much later as a NaN loss
// or an out-of-bounds embedding lookup.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace slim {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;
inline constexpr int kShardHeaderInts = 256;
inline constexpr uint64_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);  // 1024

// Writes a shard atomically: to a temporary file in the same directory, fsync'd, then renamed
// over `path`, so a crash never leaves a half-written shard under the real name.
// More than INT32_MAX tokens (the header's count is an int32) is an error.
void write_shard(const std::string& path, const std::vector<uint16_t>& tokens);

struct ShardInfo {
  std::string path;
  uint64_t num_tokens;
};

// Reads and validates the header: magic, version, and that the file is exactly
// 1024 + 2 * num_tokens bytes long. Throws slim::Error naming the file otherwise.
ShardInfo read_shard_header(const std::string& path);

// Reads a whole shard and checks every token is < vocab_size (an error gives the file, the byte
// offset and the value of the first bad token).
std::vector<uint16_t> read_shard(const std::string& path, int vocab_size);

// Files matching a shell glob pattern ("data/kjv/kjv_train_*.bin"), in byte-wise sorted order so
// every rank and every machine sees the same order. Directories are skipped. No match is an error
// that names the pattern.
std::vector<std::string> expand_glob(const std::string& pattern);

}  // namespace slim
