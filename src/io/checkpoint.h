// Self-describing, crash-safe checkpoints: one directory per step holding a JSON manifest and one
// binary blob per piece of state (weights, optimizer moments, data cursor, RNG, ...).
//
//   OUT_DIR/step_00000123/manifest.json   {"format": "slimtrain-checkpoint", "version": 1,
//                                          "step": 123, "blobs": {NAME: {"file", "bytes",
//                                          "checksum"}}, "run": {the caller's run manifest}}
//   OUT_DIR/step_00000123/NAME.bin        raw bytes, checksummed with XXH64 (util/hash.h)
//   OUT_DIR/latest                        "step_00000123": the checkpoint written last
//
// A checkpoint is written under a temporary name (.tmp_step_..._<pid>), fsync'd file by file,
// then renamed into place, so a crash at any moment leaves either the old state or the new one
// and at worst a .tmp_* directory that the next write removes. `latest` is updated last. Readers
// trust nothing: every blob's size and checksum is verified, and errors name the file at fault.
//
// This header also holds the durable-write helpers that safetensors and export share.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace slim {

struct CheckpointBlob {
  std::string name;  // [A-Za-z0-9_.-]+, not starting with '.'; stored as NAME.bin
  const void* data;  // may be null when bytes == 0
  size_t bytes;
};

// Writes OUT_DIR/step_<8-digit step>/ as described above (replacing an existing checkpoint of the
// same step), points OUT_DIR/latest at it, then prunes: the checkpoint just written is always
// kept, plus the keep-1 other complete checkpoints with the highest steps (keep <= 0: keep all).
// run_manifest_json must be a JSON document (empty string: stored as {}); it is embedded as JSON,
// not as a string, so the manifest stays readable. Returns the checkpoint directory path.
std::string write_checkpoint(const std::string& out_dir, int64_t step,
                             const std::string& run_manifest_json,
                             const std::vector<CheckpointBlob>& blobs, int keep);

struct LoadedCheckpoint {
  std::string dir;
  int64_t step = 0;
  std::string run_manifest_json;  // the run JSON given at write time, re-serialized compactly
  std::map<std::string, std::vector<uint8_t>> blobs;

  const std::vector<uint8_t>& blob(const std::string& name) const;  // missing -> Error
};

// Reads and verifies a checkpoint directory: format, version, and every blob's size and checksum.
// Any problem is a slim::Error naming the directory, the file and what is wrong.
LoadedCheckpoint read_checkpoint(const std::string& dir);

// Turns the user's --resume value into a checkpoint directory.
//   A directory holding manifest.json is returned as is (read_checkpoint verifies it).
//   auto_mode: dir_or_out_dir is the output directory; returns the checkpoint named by `latest`
//     if it is complete, else the complete step_* directory with the highest step, else "" (no
//     checkpoint yet, including when the directory does not exist).
//   Otherwise: UsageError saying a checkpoint directory was expected.
// Complete = manifest.json present, parseable and of our format.
std::string resolve_checkpoint(const std::string& dir_or_out_dir, bool auto_mode);

// The complete checkpoints under out_dir as paths, oldest (lowest step) first. Incomplete step_*
// directories and .tmp_* leftovers are not listed. A missing out_dir gives an empty list.
std::vector<std::string> list_checkpoints(const std::string& out_dir);

// ---- Durable file writes (shared with safetensors and export) ----

struct FilePiece {
  const void* data;
  size_t bytes;
};

// Writes PATH as the concatenation of `pieces` without copying them: to DIR/.tmp_<name>_<pid>
// first, fsync, rename over PATH, fsync DIR. Readers see the old file or the new one, never a
// torn one. Errors name the path and the system's reason.
void write_file_atomic(const std::string& path, const std::vector<FilePiece>& pieces);

// fsync a directory so that renames and creations inside it survive a crash.
void fsync_directory(const std::string& dir);

}  // namespace slim
