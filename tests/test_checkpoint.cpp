// Checkpoints: round trips, keep-N pruning, resolution of "auto", and the failure modes a real
// run meets (corrupt or truncated blobs, interrupted writes, a stale `latest`). Also the XXH64
// checksum against reference values from `xxhsum -H1`.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "util/error.h"
#include "util/hash.h"

#include "test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string fresh_test_dir() { return slim::test::fresh_test_dir("checkpoint"); }

std::string cat_path(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

std::vector<uint8_t> pattern_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> bytes(n);
  uint32_t state = seed;
  for (auto& b : bytes) {
    state = state * 1664525u + 1013904223u;  // LCG: cheap, distinct per seed
    b = uint8_t(state >> 24);
  }
  return bytes;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> entry_names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Writes a checkpoint whose single blob is derived from the step, for tests about many steps.
std::string write_step(const std::string& out, int64_t step, int keep) {
  const std::vector<uint8_t> data = pattern_bytes(100 + size_t(step), uint32_t(step));
  return slim::write_checkpoint(out, step, R"({"step_hint": )" + std::to_string(step) + "}",
                                {{"state", data.data(), data.size()}}, keep);
}

// A pid that certainly belongs to no process now: a child we forked and reaped.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

template <typename Fn>
std::string error_message(Fn&& fn) {
  try {
    fn();
  } catch (const slim::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a slim::Error";
  return "";
}

}  // namespace

TEST(Hash64, MatchesReferenceXxh64Values) {
  EXPECT_EQ(slim::hash64("", 0), 0xef46db3751d8e999ULL);
  EXPECT_EQ(slim::hash64("abc", 3), 0x44bc2cf5ad770999ULL);
  // bytes i*7+3 for i = 0..999, prefixes chosen to cover the <32-byte path, one stripe plus a
  // tail, and many stripes plus 8/4/1-byte tails.
  std::vector<unsigned char> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = (unsigned char)(i * 7 + 3);
  EXPECT_EQ(slim::hash64(data.data(), 9), 0x170bb6bf975b4c02ULL);
  EXPECT_EQ(slim::hash64(data.data(), 33), 0x50a7cfc7ba588784ULL);
  EXPECT_EQ(slim::hash64(data.data(), 100), 0xa61f8d4c170fe531ULL);
  EXPECT_EQ(slim::hash64(data.data(), 1000), 0x5f235fa033f1a3fbULL);
  EXPECT_EQ(slim::checksum_string(0x5f235fa033f1a3fbULL), "xxh64:5f235fa033f1a3fb");
  EXPECT_EQ(slim::checksum_string(0x1ULL), "xxh64:0000000000000001");
}

TEST(Hash64, StreamingInAnyChunksEqualsOneShot) {
  const std::vector<uint8_t> data = pattern_bytes(4099, 7);
  const uint64_t expected = slim::hash64(data.data(), data.size());
  for (size_t chunk : {1, 3, 8, 31, 32, 33, 1000}) {
    slim::Hash64 hasher;
    for (size_t i = 0; i < data.size(); i += chunk)
      hasher.update(data.data() + i, std::min(chunk, data.size() - i));
    EXPECT_EQ(hasher.digest(), expected) << "chunk " << chunk;
  }
  EXPECT_NE(slim::hash64(data.data(), data.size(), /*seed=*/1), expected);
}

TEST(Checkpoint, RoundTripsBlobsStepAndRunManifest) {
  const std::string out = fresh_test_dir();
  const std::vector<uint8_t> weights = pattern_bytes(5 * 1024 * 1024 + 3, 1);  // several MB
  const std::vector<uint8_t> cursor = pattern_bytes(24, 2);
  const std::string run = R"({"model": {"n_layer": 2, "n_embd": 8}, "world_size": 1})";

  const std::string dir = slim::write_checkpoint(
      out, 123, run,
      {{"weights", weights.data(), weights.size()}, {"empty", nullptr, 0},
       {"data.cursor", cursor.data(), cursor.size()}},
      3);
  EXPECT_EQ(dir, (fs::path(out) / "step_00000123").string());
  EXPECT_EQ(read_text(out + "/latest"), "step_00000123\n");
  EXPECT_EQ(entry_names(out), (std::vector<std::string>{"latest", "step_00000123"}))
      << "no temporary may be left behind";

  const slim::LoadedCheckpoint loaded = slim::read_checkpoint(dir);
  EXPECT_EQ(loaded.dir, dir);
  EXPECT_EQ(loaded.step, 123);
  EXPECT_EQ(json::parse(loaded.run_manifest_json), json::parse(run));
  EXPECT_EQ(loaded.blobs.size(), 3u);
  EXPECT_EQ(loaded.blob("weights"), weights);
  EXPECT_TRUE(loaded.blob("empty").empty());
  EXPECT_EQ(loaded.blob("data.cursor"), cursor);

  // The manifest is self-describing: format, version, step, and per blob file/bytes/checksum.
  const json manifest = json::parse(read_text(dir + "/manifest.json"));
  EXPECT_EQ(manifest["format"], "slimtrain-checkpoint");
  EXPECT_EQ(manifest["version"], 1);
  EXPECT_EQ(manifest["step"], 123);
  EXPECT_TRUE(manifest["run"].is_object());
  EXPECT_EQ(manifest["blobs"]["weights"]["file"], "weights.bin");
  EXPECT_EQ(manifest["blobs"]["weights"]["bytes"], weights.size());
  EXPECT_EQ(manifest["blobs"]["weights"]["checksum"],
            slim::checksum_string(slim::hash64(weights.data(), weights.size())));
  EXPECT_EQ(fs::file_size(dir + "/weights.bin"), weights.size());
  EXPECT_EQ(fs::file_size(dir + "/empty.bin"), 0u);
}

TEST(Checkpoint, MissingBlobErrorNamesTheBlobAndTheDirectory) {
  const std::string out = fresh_test_dir();
  const std::string dir = write_step(out, 1, 0);
  const slim::LoadedCheckpoint loaded = slim::read_checkpoint(dir);
  const std::string message = error_message([&] { loaded.blob("optimizer.m"); });
  EXPECT_NE(message.find("optimizer.m"), std::string::npos) << message;
  EXPECT_NE(message.find(dir), std::string::npos) << message;
  EXPECT_NE(message.find("state"), std::string::npos) << "should list what it holds: " << message;
}

TEST(Checkpoint, KeepsOnlyTheNewestN) {
  const std::string out = fresh_test_dir();
  for (int64_t step = 1; step <= 5; ++step) write_step(out, step, /*keep=*/2);
  EXPECT_EQ(slim::list_checkpoints(out),
            (std::vector<std::string>{(fs::path(out) / "step_00000004").string(),
                                      (fs::path(out) / "step_00000005").string()}));
  EXPECT_EQ(read_text(out + "/latest"), "step_00000005\n");
  EXPECT_EQ(entry_names(out),
            (std::vector<std::string>{"latest", "step_00000004", "step_00000005"}));
  EXPECT_EQ(slim::read_checkpoint(out + "/step_00000004").step, 4);
}

TEST(Checkpoint, KeepZeroKeepsAll) {
  const std::string out = fresh_test_dir();
  for (int64_t step = 10; step <= 13; ++step) write_step(out, step, /*keep=*/0);
  EXPECT_EQ(slim::list_checkpoints(out).size(), 4u);
}

TEST(Checkpoint, TheCheckpointJustWrittenIsKeptEvenIfOthersHaveHigherSteps) {
  // A run resumed from an older checkpoint writes lower steps than ones already on disk; pruning
  // must never delete what it just wrote (and what `latest` names).
  const std::string out = fresh_test_dir();
  for (int64_t step : {10, 20, 30}) write_step(out, step, 0);
  const std::string dir = write_step(out, 15, /*keep=*/2);
  EXPECT_EQ(slim::list_checkpoints(out),
            (std::vector<std::string>{dir, (fs::path(out) / "step_00000030").string()}));
  EXPECT_EQ(slim::resolve_checkpoint(out, true), dir);
}

TEST(Checkpoint, RewritingAStepReplacesIt) {
  const std::string out = fresh_test_dir();
  const std::vector<uint8_t> first = pattern_bytes(1000, 1), second = pattern_bytes(500, 2);
  slim::write_checkpoint(out, 7, "{}", {{"state", first.data(), first.size()}}, 0);
  const std::string dir =
      slim::write_checkpoint(out, 7, "{}", {{"state", second.data(), second.size()}}, 0);
  EXPECT_EQ(slim::read_checkpoint(dir).blob("state"), second);
  EXPECT_EQ(entry_names(out), (std::vector<std::string>{"latest", "step_00000007"}));
}

TEST(Checkpoint, ResolveAutoWithNoCheckpointGivesEmpty) {
  const std::string out = fresh_test_dir();
  EXPECT_EQ(slim::resolve_checkpoint(out, true), "");
  EXPECT_EQ(slim::resolve_checkpoint(out + "/not_created_yet", true), "");
  EXPECT_TRUE(slim::list_checkpoints(out + "/not_created_yet").empty());
}

TEST(Checkpoint, ResolveReturnsACheckpointDirAsIsAndRejectsOtherPaths) {
  const std::string out = fresh_test_dir();
  const std::string dir = write_step(out, 3, 0);
  EXPECT_EQ(slim::resolve_checkpoint(dir, false), dir);
  EXPECT_EQ(slim::resolve_checkpoint(dir, true), dir);
  EXPECT_EQ(slim::resolve_checkpoint(out, true), dir);

  // Without auto, an output directory is not a checkpoint; the message says what was expected.
  try {
    slim::resolve_checkpoint(out, false);
    ADD_FAILURE() << "expected UsageError";
  } catch (const slim::UsageError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("manifest.json"), std::string::npos) << message;
    EXPECT_NE(message.find("auto"), std::string::npos) << message;
    EXPECT_NE(message.find("step_00000003"), std::string::npos) << message;
  }
  EXPECT_THROW(slim::resolve_checkpoint(out + "/missing", false), slim::UsageError);
}

TEST(Checkpoint, CorruptedByteIsAChecksumErrorNamingTheBlob) {
  const std::string out = fresh_test_dir();
  const std::vector<uint8_t> weights = pattern_bytes(70000, 5), other = pattern_bytes(10, 6);
  const std::string dir = slim::write_checkpoint(
      out, 2, "{}", {{"weights", weights.data(), weights.size()}, {"rng", other.data(), 10}}, 0);
  {
    std::fstream file(dir + "/weights.bin", std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(54321);
    file.put(char(weights[54321] ^ 0x10));
  }
  const std::string message = error_message([&] { slim::read_checkpoint(dir); });
  EXPECT_NE(message.find("weights.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("checksum"), std::string::npos) << message;
  EXPECT_NE(message.find(dir), std::string::npos) << message;
}

TEST(Checkpoint, TruncatedBlobReportsExpectedAndActualSize) {
  const std::string out = fresh_test_dir();
  const std::vector<uint8_t> weights = pattern_bytes(4096, 5);
  const std::string dir =
      slim::write_checkpoint(out, 2, "{}", {{"weights", weights.data(), weights.size()}}, 0);
  fs::resize_file(dir + "/weights.bin", 1000);
  const std::string message = error_message([&] { slim::read_checkpoint(dir); });
  EXPECT_NE(message.find("weights.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find("4096"), std::string::npos) << message;
  EXPECT_NE(message.find("1000"), std::string::npos) << message;
}

TEST(Checkpoint, NewerFormatVersionIsAClearError) {
  const std::string out = fresh_test_dir();
  const std::string dir = write_step(out, 1, 0);
  json manifest = json::parse(read_text(dir + "/manifest.json"));
  manifest["version"] = 2;
  std::ofstream(dir + "/manifest.json") << manifest.dump();
  const std::string message = error_message([&] { slim::read_checkpoint(dir); });
  EXPECT_NE(message.find("version 2"), std::string::npos) << message;
}

TEST(Checkpoint, InterruptedWritesAreIgnoredAndStaleTemporariesRemoved) {
  const std::string out = fresh_test_dir();
  const std::string good = write_step(out, 2, 0);
  // What crashes leave behind: a temporary dir (even one with a manifest), a step dir with no
  // manifest, and one whose manifest was cut short.
  const std::string stale_tmp = cat_path(out, ".tmp_step_00000009_" + std::to_string(dead_pid()));
  fs::copy(good, stale_tmp, fs::copy_options::recursive);
  fs::create_directories(out + "/step_00000010");
  fs::create_directories(out + "/step_00000011");
  std::ofstream(out + "/step_00000011/manifest.json") << R"({"format": "slimtrain-checkp)";

  EXPECT_EQ(slim::list_checkpoints(out), std::vector<std::string>{good});
  EXPECT_EQ(slim::resolve_checkpoint(out, true), good);
  fs::remove(out + "/latest");  // the directory scan must come to the same answer
  EXPECT_EQ(slim::resolve_checkpoint(out, true), good);

  // A temporary whose writer is still alive (our parent process) must be left alone.
  const std::string live_tmp = cat_path(out, ".tmp_step_00000012_" + std::to_string(::getppid()));
  fs::create_directories(live_tmp);
  const std::string next = write_step(out, 3, 0);
  EXPECT_FALSE(fs::exists(stale_tmp)) << "the next write removes a dead writer's temporary";
  EXPECT_TRUE(fs::exists(live_tmp));
  EXPECT_EQ(slim::resolve_checkpoint(out, true), next);
}

TEST(Checkpoint, LatestPointingAtADeletedDirFallsBackToScanning) {
  const std::string out = fresh_test_dir();
  for (int64_t step = 1; step <= 3; ++step) write_step(out, step, 0);
  fs::remove_all(out + "/step_00000003");
  EXPECT_EQ(read_text(out + "/latest"), "step_00000003\n");
  EXPECT_EQ(slim::resolve_checkpoint(out, true), (fs::path(out) / "step_00000002").string());

  std::ofstream(out + "/latest") << "../../etc";  // not a step name: ignored, scan decides
  EXPECT_EQ(slim::resolve_checkpoint(out, true), (fs::path(out) / "step_00000002").string());

  fs::remove(out + "/latest");
  fs::create_directories(out + "/latest");  // unreadable as a file: ignored as well
  EXPECT_EQ(slim::resolve_checkpoint(out, true), (fs::path(out) / "step_00000002").string());
}

TEST(Checkpoint, BadInputsAreErrorsNamingTheProblem) {
  const std::string out = fresh_test_dir();
  const uint8_t byte = 1;
  std::string message =
      error_message([&] { slim::write_checkpoint(out, 1, "{}", {{"../escape", &byte, 1}}, 0); });
  EXPECT_NE(message.find("../escape"), std::string::npos) << message;
  message = error_message(
      [&] { slim::write_checkpoint(out, 1, "{}", {{"a", &byte, 1}, {"a", &byte, 1}}, 0); });
  EXPECT_NE(message.find("twice"), std::string::npos) << message;
  message = error_message([&] { slim::write_checkpoint(out, 1, "{not json", {}, 0); });
  EXPECT_NE(message.find("JSON"), std::string::npos) << message;

  // An output directory that cannot be created: a regular file is in the way.
  std::ofstream(out + "/a_file") << "x";
  message = error_message(
      [&] { slim::write_checkpoint(out + "/a_file/run", 1, "{}", {{"a", &byte, 1}}, 0); });
  EXPECT_NE(message.find(out + "/a_file/run"), std::string::npos) << message;

  message = error_message([&] { slim::read_checkpoint(out + "/nowhere"); });
  EXPECT_NE(message.find(out + "/nowhere"), std::string::npos) << message;
}

TEST(WriteFileAtomic, ReplacesTheFileAndLeavesNoTemporary) {
  const std::string dir = fresh_test_dir();
  const std::string path = dir + "/file.txt";
  std::ofstream(path) << "old contents";
  const std::string head = "new ", tail = "contents";
  slim::write_file_atomic(path, {{head.data(), head.size()}, {tail.data(), tail.size()}});
  EXPECT_EQ(read_text(path), "new contents");
  EXPECT_EQ(entry_names(dir), std::vector<std::string>{"file.txt"});
  const std::string message =
      error_message([&] { slim::write_file_atomic(dir + "/no/such/dir/f", {}); });
  EXPECT_NE(message.find(dir + "/no/such/dir"), std::string::npos) << message;
}
