// llm.c-format token shards: atomic writer, validating readers, and glob expansion.
// POSIX file descriptors rather than iostreams: we need fsync for the atomic write, pread for
// reading the header without a seek dance, and errno for messages that say what went wrong.
#include "data/shard.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>

#include "util/error.h"

namespace slim {
namespace {

// The file format is little-endian. On the (little-endian) machines we run on these are no-ops;
// they keep the format right should the code ever be built for a big-endian host.
uint32_t little_endian_u32(uint32_t x) {
  if constexpr (std::endian::native == std::endian::big)
    return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
  return x;
}
void little_endian_u16_inplace(uint16_t* values, size_t count) {
  if constexpr (std::endian::native == std::endian::big)
    for (size_t i = 0; i < count; ++i) values[i] = uint16_t((values[i] >> 8) | (values[i] << 8));
}

std::string errno_text() { return std::strerror(errno); }

// Closes the descriptor on every exit path, including exceptions.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

FileDescriptor open_for_reading(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(cat("cannot open shard '", path, "': ", errno_text()));
  return FileDescriptor(fd);
}

uint64_t file_size_of(const FileDescriptor& file, const std::string& path) {
  struct stat st {};
  if (::fstat(file.get(), &st) != 0) throw Error(cat("cannot stat shard '", path, "': ", errno_text()));
  if (!S_ISREG(st.st_mode)) throw Error(cat("shard '", path, "' is not a regular file"));
  return uint64_t(st.st_size);
}

// Reads exactly `bytes` bytes at `offset` (pread may return short counts on large reads).
void read_exactly(const FileDescriptor& file, const std::string& path, void* buffer, uint64_t bytes,
                  uint64_t offset) {
  auto* out = static_cast<unsigned char*>(buffer);
  while (bytes > 0) {
    ssize_t got = ::pread(file.get(), out, bytes, off_t(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(cat("error reading shard '", path, "' at byte offset ", offset, ": ", errno_text()));
    }
    if (got == 0)
      throw Error(cat("shard '", path, "' ended early at byte offset ", offset,
                      " (was it truncated while being read?)"));
    out += got;
    offset += uint64_t(got);
    bytes -= uint64_t(got);
  }
}

void write_all(int fd, const std::string& path, const void* buffer, uint64_t bytes) {
  auto* in = static_cast<const unsigned char*>(buffer);
  while (bytes > 0) {
    ssize_t put = ::write(fd, in, bytes);
    if (put < 0) {
      if (errno == EINTR) continue;
      throw Error(cat("error writing '", path, "': ", errno_text()));
    }
    in += put;
    bytes -= uint64_t(put);
  }
}

// Header validation shared by read_shard_header and read_shard; `file` is already open.
ShardInfo validate_header(const FileDescriptor& file, const std::string& path) {
  uint64_t file_bytes = file_size_of(file, path);
  if (file_bytes < kShardHeaderBytes)
    throw Error(cat("shard '", path, "' is truncated: ", file_bytes, " bytes, shorter than the ",
                    kShardHeaderBytes, "-byte llm.c shard header"));
  int32_t header[kShardHeaderInts];
  read_exactly(file, path, header, kShardHeaderBytes, 0);
  for (int32_t& value : header) value = int32_t(little_endian_u32(uint32_t(value)));

  if (header[0] != kShardMagic)
    throw Error(cat("shard '", path, "' has magic number ", header[0], " at byte offset 0, expected ",
                    kShardMagic, ": it is not an llm.c-format token shard"));
  if (header[1] != kShardVersion)
    throw Error(cat("shard '", path, "' has format version ", header[1], " at byte offset 4; only version ",
                    kShardVersion, " (uint16 tokens) is supported"));
  if (header[2] < 0)
    throw Error(cat("shard '", path, "' has a negative token count ", header[2], " at byte offset 8"));

  uint64_t num_tokens = uint64_t(header[2]);
  uint64_t expected_bytes = kShardHeaderBytes + num_tokens * sizeof(uint16_t);
  if (file_bytes < expected_bytes)
    throw Error(cat("shard '", path, "' is truncated: its header promises ", num_tokens, " tokens, so ",
                    expected_bytes, " bytes, but the file has ", file_bytes, " bytes"));
  if (file_bytes > expected_bytes)
    throw Error(cat("shard '", path, "' is longer than its header says: ", num_tokens, " tokens means ",
                    expected_bytes, " bytes, but the file has ", file_bytes,
                    " bytes (trailing data after byte offset ", expected_bytes, ")"));
  return ShardInfo{path, num_tokens};
}

}  // namespace

void write_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
  if (tokens.size() > uint64_t(INT32_MAX))
    throw Error(cat("cannot write shard '", path, "': ", tokens.size(),
                    " tokens exceed the format's limit of ", INT32_MAX, " per shard"));

  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = int32_t(tokens.size());
  for (int32_t& value : header) value = int32_t(little_endian_u32(uint32_t(value)));

  // The temporary lives in the same directory so rename() is atomic (same file system); the pid
  // keeps concurrent writers (e.g. ranks preparing data) from clobbering each other's temp files.
  std::string temp_path = cat(path, ".tmp.", ::getpid());
  FileDescriptor file(::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (file.get() < 0) throw Error(cat("cannot create '", temp_path, "': ", errno_text()));
  try {
    write_all(file.get(), temp_path, header, kShardHeaderBytes);
    if constexpr (std::endian::native == std::endian::little) {
      write_all(file.get(), temp_path, tokens.data(), tokens.size() * sizeof(uint16_t));
    } else {
      std::vector<uint16_t> swapped = tokens;
      little_endian_u16_inplace(swapped.data(), swapped.size());
      write_all(file.get(), temp_path, swapped.data(), swapped.size() * sizeof(uint16_t));
    }
    if (::fsync(file.get()) != 0) throw Error(cat("cannot fsync '", temp_path, "': ", errno_text()));
    if (::close(file.release()) != 0) throw Error(cat("cannot close '", temp_path, "': ", errno_text()));
    if (::rename(temp_path.c_str(), path.c_str()) != 0)
      throw Error(cat("cannot rename '", temp_path, "' to '", path, "': ", errno_text()));
  } catch (...) {
    ::unlink(temp_path.c_str());
    throw;
  }
  // Make the rename itself durable. Failure here is not worth failing the write for: the data is
  // on disk, only the directory entry might be lost in a crash.
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dir_fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

ShardInfo read_shard_header(const std::string& path) {
  FileDescriptor file = open_for_reading(path);
  return validate_header(file, path);
}

std::vector<uint16_t> read_shard(const std::string& path, int vocab_size) {
  if (vocab_size <= 0) throw UsageError(cat("vocab_size must be positive, got ", vocab_size));
  FileDescriptor file = open_for_reading(path);
  ShardInfo info = validate_header(file, path);
  std::vector<uint16_t> tokens(info.num_tokens);
  read_exactly(file, path, tokens.data(), info.num_tokens * sizeof(uint16_t), kShardHeaderBytes);
  little_endian_u16_inplace(tokens.data(), tokens.size());

  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= vocab_size)
      throw Error(cat("shard '", path, "' has token ", tokens[i], " at byte offset ",
                      kShardHeaderBytes + i * sizeof(uint16_t), " (token index ", i,
                      "), which is not below the vocabulary size ", vocab_size,
                      ": the shard was made with a different tokenizer, or the model's vocab_size is "
                      "too small"));
  }
  return tokens;
}

std::vector<std::string> expand_glob(const std::string& pattern) {
  glob_t matches{};
  // GLOB_MARK appends '/' to directories so we can skip them.
  int rc = ::glob(pattern.c_str(), GLOB_MARK, nullptr, &matches);
  std::vector<std::string> files;
  if (rc == 0) {
    for (size_t i = 0; i < matches.gl_pathc; ++i) {
      std::string match = matches.gl_pathv[i];
      if (!match.empty() && match.back() != '/') files.push_back(std::move(match));
    }
  }
  ::globfree(&matches);
  if (rc != 0 && rc != GLOB_NOMATCH)
    throw Error(cat("cannot expand the file pattern '", pattern, "' (glob error ", rc,
                    ", e.g. an unreadable directory)"));
  if (files.empty())
    throw Error(cat("no files match '", pattern,
                    "': check the path, or make the shards first with `slimtrain prepare`"));
  // glob() sorts by the locale's collation; byte order is the same on every machine.
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace slim
