// Checkpoint directories (see checkpoint.h for the layout and the crash-safety argument) and the
// durable-write helpers. Writes use POSIX calls directly because fsync of files and directories
// is the point; every call is checked and its error names the path and the system's reason.
#include "io/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/hash.h"

namespace slim {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "slimtrain-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kManifestName = "manifest.json";
constexpr const char* kLatestName = "latest";
constexpr const char* kTempPrefix = ".tmp_";
// Large blobs go through the hash and write() in chunks of this size: each chunk is hashed while
// it is still in cache and then handed to the kernel, with no copy of the caller's buffer.
constexpr size_t kIoChunkBytes = size_t(4) << 20;

std::string system_reason() { return std::strerror(errno); }

// Closes on destruction (error paths); the success path calls close_checked() so that a failed
// close (which can report a deferred write error) is not lost.
class FileHandle {
 public:
  FileHandle(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;
  ~FileHandle() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  void close_checked() {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error(cat("cannot close '", path_, "': ", system_reason()));
  }

 private:
  int fd_;
  std::string path_;
};

FileHandle open_checked(const std::string& path, int flags, mode_t mode = 0644) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw Error(cat("cannot open '", path, "': ", system_reason()));
  return FileHandle(fd, path);
}

void write_all(const FileHandle& file, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t written = ::write(file.fd(), p, std::min(bytes, kIoChunkBytes));
    if (written < 0) {
      if (errno == EINTR) continue;
      throw Error(cat("cannot write '", file.path(), "': ", system_reason()));
    }
    p += written;
    bytes -= size_t(written);
  }
}

void fsync_checked(const FileHandle& file) {
  if (::fsync(file.fd()) != 0)
    throw Error(cat("cannot fsync '", file.path(), "': ", system_reason()));
}

// Creates (or truncates) PATH, writes the pieces, fsyncs and closes it. If `hasher` is given it
// sees every byte, chunk by chunk, just before the chunk is written.
void write_durable_file(const std::string& path, const std::vector<FilePiece>& pieces,
                        Hash64* hasher) {
  FileHandle file = open_checked(path, O_WRONLY | O_CREAT | O_TRUNC);
  for (const FilePiece& piece : pieces) {
    if (piece.bytes > 0 && piece.data == nullptr)
      throw Error(cat("internal error writing '", path, "': a piece of ", piece.bytes,
                      " bytes has no data"));
    const char* p = static_cast<const char*>(piece.data);
    for (size_t left = piece.bytes; left > 0;) {
      const size_t n = std::min(left, kIoChunkBytes);
      if (hasher) hasher->update(p, n);
      write_all(file, p, n);
      p += n;
      left -= n;
    }
  }
  fsync_checked(file);
  file.close_checked();
}

void rename_checked(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw Error(cat("cannot rename '", from, "' to '", to, "': ", system_reason()));
}

void make_directory_checked(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0)
    throw Error(cat("cannot create directory '", path, "': ", system_reason()));
}

// Reads a whole file. A missing file is an Error like any other; callers that probe use
// file_exists() first.
std::string read_text_file(const std::string& path) {
  FileHandle file = open_checked(path, O_RDONLY);
  std::string text;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t got = ::read(file.fd(), buffer, sizeof(buffer));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(cat("cannot read '", path, "': ", system_reason()));
    }
    if (got == 0) break;
    text.append(buffer, size_t(got));
  }
  return text;
}

bool is_directory(const std::string& path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool file_exists(const std::string& path) {
  struct stat info;
  return ::stat(path.c_str(), &info) == 0;
}

bool has_our_format(const json& manifest) {
  return manifest.is_object() && manifest.contains("format") && manifest["format"].is_string() &&
         manifest["format"].get<std::string>() == kFormat;
}

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

std::string step_dir_name(int64_t step) {
  char name[40];
  std::snprintf(name, sizeof(name), "step_%08lld", static_cast<long long>(step));
  return name;
}

// "step_00000123" -> 123; anything else (including .tmp_step_...) -> -1.
int64_t parse_step_dir_name(const std::string& name) {
  const std::string prefix = "step_";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t step = -1;
  const char* begin = name.data() + prefix.size();
  const char* end = name.data() + name.size();
  const auto [stop, error] = std::from_chars(begin, end, step);
  if (error != std::errc() || stop != end || step < 0) return -1;
  return step;
}

// Complete = manifest.json present, parseable and of our format. Anything short of that is a
// write that never finished (or not ours), and is skipped rather than trusted.
bool is_complete_checkpoint(const std::string& dir) {
  const std::string manifest_path = join(dir, kManifestName);
  if (!file_exists(manifest_path)) return false;
  try {
    const json manifest = json::parse(read_text_file(manifest_path));
    return has_our_format(manifest);
  } catch (const std::exception&) {
    return false;
  }
}

// Temporary names end in _<pid> of the writing process. One is stale when that process is gone
// (or is us: then it is left from an earlier write of ours that failed).
bool temporary_is_stale(const std::string& name) {
  const size_t underscore = name.rfind('_');
  if (underscore == std::string::npos) return true;
  long long pid = 0;
  const char* begin = name.data() + underscore + 1;
  const char* end = name.data() + name.size();
  const auto [stop, error] = std::from_chars(begin, end, pid);
  if (error != std::errc() || stop != end || pid <= 0) return true;
  if (pid == static_cast<long long>(::getpid())) return true;
  if (::kill(static_cast<pid_t>(pid), 0) == 0) return false;
  return errno != EPERM;  // EPERM: the process exists but belongs to another user
}

// Removal of stale temporaries is housekeeping: failing at it must not fail the checkpoint.
void remove_stale_temporaries(const std::string& out_dir) {
  std::error_code ec;
  for (fs::directory_iterator it(out_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kTempPrefix, 0) != 0 || !temporary_is_stale(name)) continue;
    std::error_code remove_ec;
    fs::remove_all(it->path(), remove_ec);
    if (remove_ec)
      std::fprintf(stderr, "warning: cannot remove the stale temporary '%s' from an interrupted "
                   "write: %s\n", it->path().c_str(), remove_ec.message().c_str());
  }
}

// Deletes a checkpoint by renaming it to a temporary name first, so that a crash halfway through
// the deletion leaves a .tmp_* directory (cleaned up later), never a half-deleted step_* one.
// Pruning happens after the new checkpoint is durable, so a failure here is a warning: stopping
// the run over an old checkpoint that would not go away would lose more than it saves.
void delete_checkpoint(const std::string& out_dir, const std::string& dir) {
  const std::string doomed = join(out_dir, cat(kTempPrefix, "deleting_",
                                               fs::path(dir).filename().string(), "_", ::getpid()));
  if (::rename(dir.c_str(), doomed.c_str()) != 0) {
    std::fprintf(stderr, "warning: cannot delete the old checkpoint '%s' (rename to '%s'): %s\n",
                 dir.c_str(), doomed.c_str(), system_reason().c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(doomed, ec);
  if (ec)
    std::fprintf(stderr, "warning: cannot delete the old checkpoint '%s': %s\n", doomed.c_str(),
                 ec.message().c_str());
}

void check_blob_name(const std::string& name) {
  const bool valid_chars = !name.empty() && name[0] != '.' &&
                           std::all_of(name.begin(), name.end(), [](char c) {
                             return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                                    c == '-' || c == '.';
                           });
  if (!valid_chars)
    throw Error(cat("checkpoint blob name '", name,
                    "' is not usable as a file name: use letters, digits, '_', '-' and '.' "
                    "(not first)"));
}

// Reads one blob and checks it against its manifest entry. Every error names the checkpoint dir
// and the blob file.
std::vector<uint8_t> read_verified_blob(const std::string& dir, const std::string& file_name,
                                        uint64_t expected_bytes,
                                        const std::string& expected_checksum) {
  const std::string path = join(dir, file_name);
  const std::string where = cat("checkpoint '", dir, "': blob file '", file_name, "'");
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw Error(cat(where, " cannot be opened: ", system_reason()));
  FileHandle file(fd, path);
  struct stat info;
  if (::fstat(file.fd(), &info) != 0)
    throw Error(cat(where, " cannot be examined (fstat): ", system_reason()));
  const uint64_t actual_bytes = static_cast<uint64_t>(info.st_size);
  if (actual_bytes < expected_bytes)
    throw Error(cat(where, " is truncated: the manifest expects ", expected_bytes,
                    " bytes, the file has ", actual_bytes,
                    "; the checkpoint is damaged, resume from an older one"));
  if (actual_bytes > expected_bytes)
    throw Error(cat(where, " is larger than the manifest says: expected ", expected_bytes,
                    " bytes, the file has ", actual_bytes,
                    "; the checkpoint is damaged, resume from an older one"));

  std::vector<uint8_t> data(expected_bytes);
  Hash64 hasher;
  for (size_t done = 0; done < data.size();) {
    const ssize_t got =
        ::read(file.fd(), data.data() + done, std::min(data.size() - done, kIoChunkBytes));
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(cat(where, " cannot be read: ", system_reason()));
    }
    if (got == 0)
      throw Error(cat(where, " ended after ", done, " of ", expected_bytes,
                      " bytes while being read (was it modified meanwhile?)"));
    hasher.update(data.data() + done, size_t(got));
    done += size_t(got);
  }
  const std::string actual_checksum = checksum_string(hasher.digest());
  if (actual_checksum != expected_checksum)
    throw Error(cat(where, " fails its checksum: the manifest says ", expected_checksum,
                    ", the file hashes to ", actual_checksum,
                    "; the data is corrupt, resume from an older checkpoint"));
  return data;
}

}  // namespace

// ---- Durable file writes ----

void fsync_directory(const std::string& dir) {
  FileHandle handle = open_checked(dir.empty() ? "." : dir, O_RDONLY | O_DIRECTORY);
  fsync_checked(handle);
  handle.close_checked();
}

void write_file_atomic(const std::string& path, const std::vector<FilePiece>& pieces) {
  const fs::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const std::string temp =
      join(dir, cat(kTempPrefix, target.filename().string(), "_", ::getpid()));
  try {
    write_durable_file(temp, pieces, nullptr);
    rename_checked(temp, path);
  } catch (...) {
    ::unlink(temp.c_str());  // best effort: the error being reported matters more
    throw;
  }
  fsync_directory(dir);
}

// ---- Checkpoints ----

std::string write_checkpoint(const std::string& out_dir, int64_t step,
                             const std::string& run_manifest_json,
                             const std::vector<CheckpointBlob>& blobs, int keep) {
  if (step < 0) throw Error(cat("cannot write a checkpoint for a negative step (", step, ")"));
  std::map<std::string, const CheckpointBlob*> by_name;
  for (const CheckpointBlob& blob : blobs) {
    check_blob_name(blob.name);
    if (!by_name.emplace(blob.name, &blob).second)
      throw Error(cat("checkpoint blob '", blob.name, "' is given twice"));
  }
  json run = json::object();
  if (!run_manifest_json.empty()) {
    try {
      run = json::parse(run_manifest_json);
    } catch (const json::exception& e) {
      throw Error(cat("the run manifest to store in the checkpoint is not valid JSON: ", e.what()));
    }
  }

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(cat("cannot create the output directory '", out_dir, "': ", ec.message()));
  remove_stale_temporaries(out_dir);

  const std::string final_name = step_dir_name(step);
  const std::string final_dir = join(out_dir, final_name);
  const std::string temp_dir = join(out_dir, cat(kTempPrefix, final_name, "_", ::getpid()));
  try {
    make_directory_checked(temp_dir);
    json manifest = {{"format", kFormat}, {"version", kVersion}, {"step", step}};
    json& blob_entries = manifest["blobs"] = json::object();
    for (const auto& [name, blob] : by_name) {
      const std::string file_name = name + ".bin";
      Hash64 hasher;
      write_durable_file(join(temp_dir, file_name), {{blob->data, blob->bytes}}, &hasher);
      blob_entries[name] = {{"file", file_name},
                            {"bytes", static_cast<uint64_t>(blob->bytes)},
                            {"checksum", checksum_string(hasher.digest())}};
    }
    manifest["run"] = std::move(run);
    const std::string manifest_text = manifest.dump(2) + "\n";
    write_durable_file(join(temp_dir, kManifestName),
                       {{manifest_text.data(), manifest_text.size()}}, nullptr);
    fsync_directory(temp_dir);

    if (file_exists(final_dir)) {
      // rename() cannot replace a non-empty directory: move the old one aside, then delete it.
      const std::string replaced =
          join(out_dir, cat(kTempPrefix, "replaced_", final_name, "_", ::getpid()));
      rename_checked(final_dir, replaced);
      rename_checked(temp_dir, final_dir);
      fs::remove_all(replaced, ec);
      if (ec)
        std::fprintf(stderr, "warning: cannot delete the replaced checkpoint '%s': %s\n",
                     replaced.c_str(), ec.message().c_str());
    } else {
      rename_checked(temp_dir, final_dir);
    }
    fsync_directory(out_dir);
  } catch (...) {
    fs::remove_all(temp_dir, ec);  // best effort; a leftover is removed by the next write
    throw;
  }

  const std::string latest_text = final_name + "\n";
  write_file_atomic(join(out_dir, kLatestName), {{latest_text.data(), latest_text.size()}});

  if (keep > 0) {
    std::vector<std::string> others = list_checkpoints(out_dir);  // oldest first
    others.erase(std::remove(others.begin(), others.end(), final_dir), others.end());
    const size_t keep_others = size_t(keep - 1);
    if (others.size() > keep_others) {
      for (size_t i = 0; i < others.size() - keep_others; ++i) delete_checkpoint(out_dir, others[i]);
      fsync_directory(out_dir);
    }
  }
  return final_dir;
}

const std::vector<uint8_t>& LoadedCheckpoint::blob(const std::string& name) const {
  const auto it = blobs.find(name);
  if (it != blobs.end()) return it->second;
  std::string held;
  for (const auto& [held_name, data] : blobs) held += (held.empty() ? "" : ", ") + held_name;
  throw Error(cat("checkpoint '", dir, "' has no blob '", name, "' (it holds: ",
                  held.empty() ? "nothing" : held,
                  "); was it written by a different version or configuration of slimtrain?"));
}

LoadedCheckpoint read_checkpoint(const std::string& dir) {
  const std::string manifest_path = join(dir, kManifestName);
  if (!is_directory(dir))
    throw Error(cat("checkpoint '", dir, "' does not exist or is not a directory"));
  if (!file_exists(manifest_path))
    throw Error(cat("checkpoint '", dir, "' has no ", kManifestName,
                    ": it is not a checkpoint, or its write never finished"));
  LoadedCheckpoint loaded;
  loaded.dir = dir;
  json manifest;
  try {
    manifest = json::parse(read_text_file(manifest_path));
  } catch (const json::exception& e) {
    throw Error(cat("checkpoint manifest '", manifest_path, "' is not valid JSON: ", e.what()));
  }
  const auto malformed = [&](const std::string& what) {
    return Error(cat("checkpoint manifest '", manifest_path, "' is malformed: ", what));
  };
  if (!has_our_format(manifest))
    throw malformed(cat("\"format\" is not \"", kFormat, "\""));
  if (!manifest.contains("version") || !manifest["version"].is_number_integer())
    throw malformed("no integer \"version\"");
  const int64_t version = manifest["version"].get<int64_t>();
  if (version != kVersion)
    throw Error(cat("checkpoint '", dir, "' has format version ", version,
                    "; this slimtrain reads version ", kVersion,
                    " (use the slimtrain that wrote it)"));
  if (!manifest.contains("step") || !manifest["step"].is_number_integer() ||
      manifest["step"].get<int64_t>() < 0)
    throw malformed("no non-negative integer \"step\"");
  loaded.step = manifest["step"].get<int64_t>();
  if (!manifest.contains("blobs") || !manifest["blobs"].is_object())
    throw malformed("no \"blobs\" object");
  for (const auto& [name, entry] : manifest["blobs"].items()) {
    if (!entry.is_object() || !entry.contains("file") || !entry["file"].is_string() ||
        !entry.contains("bytes") || !entry["bytes"].is_number_unsigned() ||
        !entry.contains("checksum") || !entry["checksum"].is_string())
      throw malformed(cat("blob '", name, "' needs \"file\" (string), \"bytes\" (unsigned) and "
                          "\"checksum\" (string)"));
    const std::string file_name = entry["file"].get<std::string>();
    if (file_name.empty() || file_name.find('/') != std::string::npos || file_name[0] == '.')
      throw malformed(cat("blob '", name, "' has file '", file_name,
                          "', which is not a plain file name inside the checkpoint"));
    loaded.blobs[name] = read_verified_blob(dir, file_name, entry["bytes"].get<uint64_t>(),
                                            entry["checksum"].get<std::string>());
  }
  loaded.run_manifest_json = manifest.contains("run") ? manifest["run"].dump() : "{}";
  return loaded;
}

std::vector<std::string> list_checkpoints(const std::string& out_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!file_exists(out_dir)) return {};
  std::error_code ec;
  for (fs::directory_iterator it(out_dir, ec), end; it != end; it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    const int64_t step = parse_step_dir_name(name);
    const std::string dir = join(out_dir, name);
    if (step >= 0 && is_directory(dir) && is_complete_checkpoint(dir)) found.emplace_back(step, dir);
  }
  if (ec) throw Error(cat("cannot list the output directory '", out_dir, "': ", ec.message()));
  std::sort(found.begin(), found.end());
  std::vector<std::string> dirs;
  for (auto& [step, dir] : found) dirs.push_back(std::move(dir));
  return dirs;
}

std::string resolve_checkpoint(const std::string& dir_or_out_dir, bool auto_mode) {
  const std::string& path = dir_or_out_dir;
  if (is_directory(path) && file_exists(join(path, kManifestName))) return path;
  if (auto_mode) {
    if (!file_exists(path)) return "";  // a fresh output directory: nothing to resume
    if (!is_directory(path))
      throw UsageError(cat("cannot resume from '", path, "': expected the output directory "
                           "holding step_* checkpoints, but it is not a directory"));
    const std::string latest_path = join(path, kLatestName);
    // `latest` is trusted only if it is readable and names a complete step directory; a crash
    // or a manual deletion can leave it stale, and then the directory scan below decides.
    std::string named;
    try {
      if (file_exists(latest_path)) named = read_text_file(latest_path);
    } catch (const Error&) {
      named.clear();
    }
    named.erase(named.find_last_not_of(" \t\r\n") + 1);
    if (parse_step_dir_name(named) >= 0 && is_complete_checkpoint(join(path, named)))
      return join(path, named);
    const std::vector<std::string> complete = list_checkpoints(path);
    return complete.empty() ? "" : complete.back();
  }
  if (!file_exists(path))
    throw UsageError(cat("cannot resume from '", path, "': it does not exist; expected a "
                         "checkpoint directory (OUT_DIR/step_NNNNNNNN) or 'auto'"));
  std::string hint;
  if (is_directory(path)) {
    const std::vector<std::string> complete = list_checkpoints(path);
    if (!complete.empty())
      hint = cat(" It looks like an output directory; its newest checkpoint is '", complete.back(),
                 "', or pass 'auto' to pick it.");
  }
  throw UsageError(cat("cannot resume from '", path, "': expected a checkpoint directory (one "
                       "holding ", kManifestName, ", like OUT_DIR/step_NNNNNNNN) or 'auto'.",
                       hint));
}

}  // namespace slim
