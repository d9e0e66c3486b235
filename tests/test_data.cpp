// Tests for the data layer: llm.c shard files (round trip and every validation error), the data
// loader (exact windows, shuffling, rank partitioning, cursor resume) and text preparation.
// Shards here are tiny and synthetic, with token values chosen so that every window can be
// traced back to the shard and position it came from.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "util/error.h"

#ifndef SLIMTRAIN_TEST_TMP
#define SLIMTRAIN_TEST_TMP "/tmp/slim_test"
#endif

namespace fs = std::filesystem;
using namespace slim;

namespace {

constexpr int kVocab = 50257;

// A fresh, empty scratch directory for one test.
std::string scratch_dir(const std::string& name) {
  fs::path dir = fs::path(SLIMTRAIN_TEST_TMP) / "data" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Runs f, which must throw slim::Error, and returns the message (empty + test failure if not).
template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a slim::Error";
  return "";
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

int32_t header_int(const std::vector<char>& bytes, int index) {
  int32_t value;
  std::memcpy(&value, bytes.data() + 4 * index, 4);
  return value;
}

void set_header_int(std::vector<char>& bytes, int index, int32_t value) {
  std::memcpy(bytes.data() + 4 * index, &value, 4);
}

// Tokens first, first+1, ..., first+count-1: unique across shards when the ranges do not overlap.
std::vector<uint16_t> counting_tokens(int first, int count) {
  std::vector<uint16_t> tokens(count);
  for (int i = 0; i < count; ++i) tokens[i] = uint16_t(first + i);
  return tokens;
}

// Writes shards <dir>/shard_<i>.bin with the given token counts and globally unique tokens.
// Returns the shards' tokens in file order.
std::vector<std::vector<uint16_t>> write_counting_shards(const std::string& dir, const std::vector<int>& lengths) {
  std::vector<std::vector<uint16_t>> shards;
  int next = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    shards.push_back(counting_tokens(next, lengths[i]));
    next += lengths[i];
    write_shard(cat(dir, "/shard_", i, ".bin"), shards.back());
  }
  return shards;
}

struct Batch {
  std::vector<int> inputs, targets;
  bool operator==(const Batch&) const = default;
};

Batch take_batch(DataLoader& loader) {
  Batch batch;
  batch.inputs.resize(size_t(loader.B()) * loader.T());
  batch.targets.resize(batch.inputs.size());
  loader.next_batch(batch.inputs.data(), batch.targets.data());
  return batch;
}

// With counting tokens, a sample is named by its first input token (its global token index).
std::vector<int> sample_ids(const Batch& batch, int B, int T) {
  std::vector<int> ids;
  for (int b = 0; b < B; ++b) ids.push_back(batch.inputs[size_t(b) * T]);
  return ids;
}

// Checks every row is a contiguous counting window with targets = inputs shifted by one, i.e. a
// real window of T + 1 consecutive tokens of one shard.
void expect_windows_are_shifted(const Batch& batch, int B, int T) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      int first = batch.inputs[size_t(b) * T];
      EXPECT_EQ(batch.inputs[size_t(b) * T + t], first + t);
      EXPECT_EQ(batch.targets[size_t(b) * T + t], first + t + 1);
    }
}

// All sample ids (first token of each window) of counting shards with these lengths and T.
std::set<int> all_sample_ids(const std::vector<int>& lengths, int T) {
  std::set<int> ids;
  int start = 0;
  for (int length : lengths) {
    for (int k = 0; k < (length - 1) / T; ++k) ids.insert(start + k * T);
    start += length;
  }
  return ids;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Shard files

TEST(Shard, RoundTripAndHeaderFields) {
  std::string dir = scratch_dir("roundtrip");
  std::string path = dir + "/a.bin";
  std::vector<uint16_t> tokens = {0, 1, 50256, 65535, 7, 300};
  write_shard(path, tokens);

  std::vector<char> bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 1024u + 2 * tokens.size());
  EXPECT_EQ(header_int(bytes, 0), 20240520);
  EXPECT_EQ(header_int(bytes, 1), 1);
  EXPECT_EQ(header_int(bytes, 2), int32_t(tokens.size()));
  for (int i = 3; i < 256; ++i) EXPECT_EQ(header_int(bytes, i), 0) << "header int " << i;
  // Tokens are little-endian uint16 right after the header.
  EXPECT_EQ(uint8_t(bytes[1024 + 2 * 3]), 0xFF);
  EXPECT_EQ(uint8_t(bytes[1024 + 2 * 5]), 300 & 0xFF);
  EXPECT_EQ(uint8_t(bytes[1024 + 2 * 5 + 1]), 300 >> 8);

  ShardInfo info = read_shard_header(path);
  EXPECT_EQ(info.path, path);
  EXPECT_EQ(info.num_tokens, tokens.size());
  EXPECT_EQ(read_shard(path, 65536), tokens);

  // The atomic write leaves no temporary file behind; an empty shard is legal.
  write_shard(dir + "/empty.bin", {});
  EXPECT_EQ(read_shard_header(dir + "/empty.bin").num_tokens, 0u);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"a.bin", "empty.bin"}));
}

TEST(Shard, BadMagicNamesFileAndOffset) {
  std::string path = scratch_dir("badmagic") + "/bad_magic.bin";
  write_shard(path, {1, 2, 3});
  std::vector<char> bytes = read_bytes(path);
  set_header_int(bytes, 0, 12345);
  write_bytes(path, bytes);
  std::string message = error_message([&] { read_shard_header(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("12345"), std::string::npos) << message;
  EXPECT_NE(message.find("offset 0"), std::string::npos) << message;
  EXPECT_NE(message.find("not an llm.c-format"), std::string::npos) << message;
  EXPECT_EQ(error_message([&] { read_shard(path, kVocab); }), message);
}

TEST(Shard, WrongVersionNamesFileAndVersion) {
  std::string path = scratch_dir("badversion") + "/bad_version.bin";
  write_shard(path, {1, 2, 3});
  std::vector<char> bytes = read_bytes(path);
  set_header_int(bytes, 1, 7);
  write_bytes(path, bytes);
  std::string message = error_message([&] { read_shard_header(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("version 7"), std::string::npos) << message;
  EXPECT_NE(message.find("offset 4"), std::string::npos) << message;
}

TEST(Shard, TruncatedAndOverlongFilesGiveExpectedAndActualBytes) {
  std::string dir = scratch_dir("truncated");
  std::string path = dir + "/truncated.bin";
  write_shard(path, counting_tokens(0, 10));  // 1024 + 20 bytes
  fs::resize_file(path, 1024 + 17);
  std::string message = error_message([&] { read_shard_header(path); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find("1044"), std::string::npos) << message;  // expected
  EXPECT_NE(message.find("1041"), std::string::npos) << message;  // actual

  std::string short_path = dir + "/no_header.bin";
  write_bytes(short_path, std::vector<char>(100, 0));
  message = error_message([&] { read_shard_header(short_path); });
  EXPECT_NE(message.find(short_path), std::string::npos) << message;
  EXPECT_NE(message.find("100 bytes"), std::string::npos) << message;

  std::string long_path = dir + "/trailing.bin";
  write_shard(long_path, counting_tokens(0, 10));
  fs::resize_file(long_path, 1024 + 24);
  message = error_message([&] { read_shard(long_path, kVocab); });
  EXPECT_NE(message.find(long_path), std::string::npos) << message;
  EXPECT_NE(message.find("1048"), std::string::npos) << message;

  message = error_message([&] { read_shard_header(dir + "/missing.bin"); });
  EXPECT_NE(message.find(dir + "/missing.bin"), std::string::npos) << message;
}

TEST(Shard, TokenOutsideVocabularyNamesFileOffsetValueAndVocab) {
  std::string path = scratch_dir("vocab") + "/big_token.bin";
  write_shard(path, {1, 2, 3, 500, 4});
  EXPECT_EQ(read_shard(path, 501).size(), 5u);
  std::string message = error_message([&] { read_shard(path, 500); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("byte offset 1030"), std::string::npos) << message;  // 1024 + 2 * 3
  EXPECT_NE(message.find("token 500"), std::string::npos) << message;
  EXPECT_NE(message.find("vocabulary size 500"), std::string::npos) << message;
}

TEST(Shard, GlobIsSortedAndSkipsDirectories) {
  std::string dir = scratch_dir("glob");
  for (const char* name : {"x_10.bin", "x_02.bin", "x_B.bin", "x_a.bin"}) write_shard(dir + "/" + name, {1});
  fs::create_directories(dir + "/x_dir.bin");
  EXPECT_EQ(expand_glob(dir + "/x_*.bin"),
            (std::vector<std::string>{dir + "/x_02.bin", dir + "/x_10.bin", dir + "/x_B.bin", dir + "/x_a.bin"}));
  std::string message = error_message([&] { expand_glob(dir + "/nothing_*.bin"); });
  EXPECT_NE(message.find(dir + "/nothing_*.bin"), std::string::npos) << message;
}

// ---------------------------------------------------------------------------------------------
// Loader without shuffle: exact windows

TEST(Loader, SequentialWindowsAcrossShardsAndEpochs) {
  std::string dir = scratch_dir("sequential");
  const int B = 2, T = 4;
  // 5, 3 and 3 samples ((N - 1) / T): the extra tokens of shards 0 and 2 are never a window start.
  std::vector<int> lengths = {4 * 5 + 1 + 2, 4 * 3 + 1, 4 * 4};
  auto shards = write_counting_shards(dir, lengths);
  DataLoader loader(dir + "/shard_*.bin", B, T, 0, 1, false, 0, kVocab);
  EXPECT_EQ(loader.total_tokens(), uint64_t(lengths[0] + lengths[1] + lengths[2]));
  EXPECT_EQ(loader.num_shards(), 3u);
  // 11 samples -> 5 batches of 2; the 11th sample is skipped at the end of every epoch.
  ASSERT_EQ(loader.batches_per_epoch(), 5u);

  // The expected stream: (shard, window start) for every sample in file order.
  std::vector<std::pair<int, int>> stream;
  for (int s = 0; s < 3; ++s)
    for (int k = 0; k < (lengths[s] - 1) / T; ++k) stream.push_back({s, k * T});
  stream.resize(10);

  for (int epoch = 0; epoch < 3; ++epoch) {
    for (int b = 0; b < 5; ++b) {
      EXPECT_EQ(loader.cursor().epoch, uint64_t(epoch));
      Batch batch = take_batch(loader);
      for (int row = 0; row < B; ++row) {
        auto [s, start] = stream[size_t(b * B + row)];
        for (int t = 0; t < T; ++t) {
          ASSERT_EQ(batch.inputs[row * T + t], shards[s][start + t]) << "epoch " << epoch << " batch " << b;
          ASSERT_EQ(batch.targets[row * T + t], shards[s][start + t + 1]) << "epoch " << epoch << " batch " << b;
        }
      }
    }
  }
  EXPECT_EQ(loader.cursor(), (LoaderCursor{3, 0, 0}));

  loader.reset();
  EXPECT_EQ(loader.cursor(), (LoaderCursor{0, 0, 0}));
  Batch first = take_batch(loader);
  EXPECT_EQ(first.inputs, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(first.targets, (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(Loader, BatchSpansShardBoundaryAndCursorFollows) {
  std::string dir = scratch_dir("span");
  const int B = 3, T = 2;
  write_counting_shards(dir, {2 * 2 + 1, 2 * 4 + 1});  // 2 + 4 samples
  DataLoader loader(dir + "/shard_*.bin", B, T, 0, 1, false, 0, kVocab);
  ASSERT_EQ(loader.batches_per_epoch(), 2u);
  Batch batch = take_batch(loader);
  // Samples 0, 2 of shard 0 (tokens 0.., 2..), then sample 0 of shard 1 (starts at token 5).
  EXPECT_EQ(sample_ids(batch, B, T), (std::vector<int>{0, 2, 5}));
  expect_windows_are_shifted(batch, B, T);
  EXPECT_EQ(loader.cursor(), (LoaderCursor{0, 1, 1}));
  EXPECT_EQ(sample_ids(take_batch(loader), B, T), (std::vector<int>{7, 9, 11}));
  EXPECT_EQ(loader.cursor(), (LoaderCursor{1, 0, 0}));
}

TEST(Loader, TooLittleDataIsAClearError) {
  std::string dir = scratch_dir("toolittle");
  write_shard(dir + "/tiny.bin", counting_tokens(0, 8));
  std::string message = error_message([&] { DataLoader(dir + "/tiny.bin", 1, 8, 0, 1, false, 0, kVocab); });
  EXPECT_NE(message.find(dir + "/tiny.bin"), std::string::npos) << message;
  EXPECT_NE(message.find("8 tokens"), std::string::npos) << message;

  // 8 tokens, T = 1: 7 samples, 3 per rank with world 2: no batch of 4.
  message = error_message([&] { DataLoader(dir + "/tiny.bin", 4, 1, 1, 2, true, 0, kVocab); });
  for (const char* part : {"8 tokens", "B = 4", "T + 1 = 2", "world size 2", "smaller micro_batch"})
    EXPECT_NE(message.find(part), std::string::npos) << part << " missing from: " << message;

  EXPECT_THROW(DataLoader(dir + "/tiny.bin", 1, 1, 2, 2, false, 0, kVocab), UsageError);
  EXPECT_THROW(DataLoader(dir + "/tiny.bin", 0, 1, 0, 1, false, 0, kVocab), UsageError);
  // Tokens are checked against the vocabulary when a shard is loaded.
  DataLoader small_vocab(dir + "/tiny.bin", 1, 2, 0, 1, false, 0, 5);
  message = error_message([&] { take_batch(small_vocab); });
  EXPECT_NE(message.find("byte offset 1034"), std::string::npos) << message;  // token 5 at index 5
}

// ---------------------------------------------------------------------------------------------
// Loader with shuffle

TEST(Loader, ShuffleIsDeterministicAndVisitsEverySampleOncePerEpoch) {
  std::string dir = scratch_dir("shuffle");
  const int B = 3, T = 4;
  std::vector<int> lengths = {6 * T + 1, 4 * T + 3, 2 * T + 1};  // 12 samples = 4 batches
  write_counting_shards(dir, lengths);
  const std::string glob = dir + "/shard_*.bin";
  const std::set<int> expected = all_sample_ids(lengths, T);
  ASSERT_EQ(expected.size(), 12u);

  auto run_epochs = [&](uint64_t seed, int epochs) {
    DataLoader loader(glob, B, T, 0, 1, true, seed, kVocab);
    EXPECT_EQ(loader.batches_per_epoch(), 4u);
    std::vector<std::vector<int>> per_epoch(epochs);
    for (int e = 0; e < epochs; ++e)
      for (int b = 0; b < 4; ++b) {
        Batch batch = take_batch(loader);
        expect_windows_are_shifted(batch, B, T);
        for (int id : sample_ids(batch, B, T)) per_epoch[e].push_back(id);
      }
    return per_epoch;
  };

  auto seed7 = run_epochs(7, 3);
  EXPECT_EQ(run_epochs(7, 3), seed7) << "same seed must give the same order";
  EXPECT_NE(run_epochs(8, 3), seed7) << "another seed should give another order";
  for (const auto& epoch : seed7) {
    EXPECT_EQ(std::set<int>(epoch.begin(), epoch.end()), expected);
    EXPECT_EQ(epoch.size(), expected.size()) << "a sample was visited twice";
  }
  EXPECT_NE(seed7[0], seed7[1]) << "each epoch should draw a new order";
  // ... within each shard too, not only the order of the shards: shard 0's 6 samples.
  auto shard0_order = [&](const std::vector<int>& epoch) {
    std::vector<int> ids;
    for (int id : epoch)
      if (id < lengths[0]) ids.push_back(id);
    return ids;
  };
  EXPECT_NE(shard0_order(seed7[0]), shard0_order(seed7[1]));
  // The order is pinned: it must be the same on every machine, compiler and standard library
  // (a checkpoint resumed elsewhere continues with the same data), so an accidental change of
  // the generator, the seeding or the Fisher-Yates loop shows up here.
  EXPECT_EQ(seed7[0], (std::vector<int>{33, 37, 25, 29, 48, 44, 20, 8, 0, 16, 12, 4}));

  std::vector<int> sorted_order(expected.begin(), expected.end());
  EXPECT_NE(seed7[0], sorted_order) << "shuffle should change the order";

  // One shard at a time: an epoch is runs of samples from one shard each, and over epochs/seeds
  // the shard order itself changes.
  auto shard_of = [&](int id) { return id < lengths[0] ? 0 : id < lengths[0] + lengths[1] ? 1 : 2; };
  std::set<std::vector<int>> shard_orders;
  for (uint64_t seed : {1, 2, 3, 4, 5})
    for (const auto& epoch : run_epochs(seed, 2)) {
      std::vector<int> order;
      for (int id : epoch)
        if (order.empty() || order.back() != shard_of(id)) order.push_back(shard_of(id));
      EXPECT_EQ(order.size(), 3u) << "samples of one shard must be contiguous";
      shard_orders.insert(order);
    }
  EXPECT_GT(shard_orders.size(), 1u) << "the shard order should be shuffled too";
}

TEST(Loader, RanksPartitionEachEpochDisjointlyAndCompletely) {
  std::string dir = scratch_dir("ranks");
  const int T = 3;
  std::vector<int> lengths = {6 * T + 1, 12 * T + 2, 6 * T + 1};  // 24 samples, divisible by 2 and 3
  write_counting_shards(dir, lengths);
  const std::string glob = dir + "/shard_*.bin";
  const std::set<int> expected = all_sample_ids(lengths, T);

  for (bool shuffle : {false, true})
    for (int world : {2, 3}) {
      const int B = 2;
      const uint64_t batches = 24 / world / B;
      std::vector<DataLoader> loaders;
      for (int rank = 0; rank < world; ++rank) loaders.emplace_back(glob, B, T, rank, world, shuffle, 42, kVocab);
      for (int epoch = 0; epoch < 2; ++epoch) {
        std::vector<int> seen;
        for (uint64_t b = 0; b < batches; ++b) {
          for (int rank = 0; rank < world; ++rank) {
            ASSERT_EQ(loaders[rank].batches_per_epoch(), batches);
            Batch batch = take_batch(loaders[rank]);
            expect_windows_are_shifted(batch, B, T);
            for (int id : sample_ids(batch, B, T)) seen.push_back(id);
          }
          // Ranks move in step, so one cursor describes all of them.
          for (int rank = 1; rank < world; ++rank) EXPECT_EQ(loaders[rank].cursor(), loaders[0].cursor());
        }
        EXPECT_EQ(seen.size(), expected.size()) << "world " << world << ": a sample went to two ranks";
        EXPECT_EQ(std::set<int>(seen.begin(), seen.end()), expected) << "world " << world << " shuffle " << shuffle;
        EXPECT_EQ(loaders[0].cursor().epoch, uint64_t(epoch + 1));
      }
    }
}

TEST(Loader, UnevenShardsGiveEveryRankTheSameBatchCountWithoutRepeats) {
  std::string dir = scratch_dir("uneven");
  const int T = 2, B = 2, world = 3;
  std::vector<int> lengths = {7 * T + 1, 5 * T + 1, 2 * T + 1, 1 * T + 1};  // 7, 5, 2, 1 samples
  write_counting_shards(dir, lengths);
  // Per rank: 2 + 1 + 0 + 0 = 3 samples -> 1 batch; the leftover samples are skipped, not repeated.
  std::vector<int> seen;
  for (int rank = 0; rank < world; ++rank) {
    DataLoader loader(dir + "/shard_*.bin", B, T, rank, world, true, 5, kVocab);
    ASSERT_EQ(loader.batches_per_epoch(), 1u);
    for (int id : sample_ids(take_batch(loader), B, T)) seen.push_back(id);
    EXPECT_EQ(loader.cursor().epoch, 1u);
  }
  std::set<int> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size());
  for (int id : unique) EXPECT_TRUE(all_sample_ids(lengths, T).count(id));
}

// ---------------------------------------------------------------------------------------------
// Cursor and resume

TEST(Loader, RestoreResumesExactlyAcrossShardAndEpochBoundaries) {
  std::string dir = scratch_dir("resume");
  const int T = 4;
  std::vector<int> lengths = {5 * T + 1, 3 * T + 2, 4 * T + 1};  // 5 + 3 + 4 = 12 samples
  write_counting_shards(dir, lengths);
  const std::string glob = dir + "/shard_*.bin";

  for (bool shuffle : {false, true})
    for (int world : {1, 2}) {
      const int B = 2;
      const int rank = world - 1;
      DataLoader probe(glob, B, T, rank, world, shuffle, 99, kVocab);
      const int per_epoch = int(probe.batches_per_epoch());
      // Every save point of the first epoch and a half; the m = per_epoch + 2 batches after it
      // always cross at least one shard boundary and one epoch boundary.
      for (int k = 0; k <= per_epoch + per_epoch / 2; ++k) {
        DataLoader original(glob, B, T, rank, world, shuffle, 99, kVocab);
        for (int i = 0; i < k; ++i) take_batch(original);
        LoaderCursor saved = original.cursor();
        std::vector<Batch> expected;
        for (int i = 0; i < per_epoch + 2; ++i) expected.push_back(take_batch(original));

        DataLoader resumed(glob, B, T, rank, world, shuffle, 99, kVocab);
        take_batch(resumed);  // somewhere else first: restore must not depend on the current state
        resumed.restore(cursor_from_string(cursor_to_string(saved)));
        EXPECT_EQ(resumed.cursor(), saved);
        for (int i = 0; i < per_epoch + 2; ++i)
          ASSERT_EQ(take_batch(resumed), expected[i]) << "shuffle " << shuffle << " world " << world << " k " << k
                                                      << " batch " << i;
      }
    }
}

TEST(Loader, RestoreRejectsCursorsThatDoNotFitTheData) {
  std::string dir = scratch_dir("badcursor");
  write_counting_shards(dir, {5 * 4 + 1, 3 * 4 + 1});  // 5 + 3 samples, T = 4
  DataLoader loader(dir + "/shard_*.bin", 2, 4, 0, 1, true, 4, kVocab);
  DataLoader reference(dir + "/shard_*.bin", 2, 4, 0, 1, true, 4, kVocab);
  take_batch(loader);
  take_batch(reference);
  LoaderCursor before = loader.cursor();
  // Epoch 2 (with seed 4 another shard order than epoch 0's, so a restore that failed half-way
  // would show) with a bad position in it.
  for (LoaderCursor bad : {LoaderCursor{2, 2, 0}, LoaderCursor{2, 0, 1}, LoaderCursor{2, 1, 6}}) {
    std::string message = error_message([&] { loader.restore(bad); });
    EXPECT_NE(message.find(cursor_to_string(bad)), std::string::npos) << message;
    EXPECT_NE(message.find("same data"), std::string::npos) << message;
  }
  EXPECT_EQ(loader.cursor(), before) << "a rejected cursor must leave the loader where it was";
  EXPECT_EQ(take_batch(loader), take_batch(reference));
  EXPECT_EQ(take_batch(loader), take_batch(reference));
}

TEST(Loader, CursorStringRoundTripAndErrors) {
  LoaderCursor cursor{3, 17, 123456789012345ull};
  EXPECT_EQ(cursor_to_string(cursor), "3 17 123456789012345");
  EXPECT_EQ(cursor_from_string(cursor_to_string(cursor)), cursor);
  EXPECT_EQ(cursor_from_string(" 0 1 2\n"), (LoaderCursor{0, 1, 2}));
  for (const char* bad : {"", "1 2", "1 2 3 4", "a b c", "-1 2 3", "1 2 3x", "1,2,3", "99999999999999999999 0 0"}) {
    std::string message = error_message([&] { cursor_from_string(bad); });
    EXPECT_NE(message.find(cat("'", bad, "'")), std::string::npos) << message;
    EXPECT_NE(message.find("epoch shard_index sample_index"), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------------------------------------
// Text preparation

TEST(Prepare, Utf8Validation) {
  EXPECT_EQ(find_invalid_utf8("plain ascii\n"), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("ab\xFF"), 2u);              // never valid
  EXPECT_EQ(find_invalid_utf8("a\xC0\xAF"), 1u);           // overlong '/'
  EXPECT_EQ(find_invalid_utf8("a\xE0\x80\xAF"), 1u);       // overlong 3-byte
  EXPECT_EQ(find_invalid_utf8("ab\xED\xA0\x80"), 2u);      // surrogate U+D800
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);    // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("abc\xE2\x82"), 3u);         // truncated sequence
  EXPECT_EQ(find_invalid_utf8("x\x80"), 1u);               // lone continuation byte
}

TEST(Prepare, SplitForEncodingCutsOnlyAtSafeLineBreaks) {
  std::string text = "alpha\nbeta\n  gamma\n\ndelta \nepsilon\nzeta";
  for (size_t target : {1, 3, 7, 100}) {
    auto pieces = split_for_encoding(text, target);
    std::string joined;
    for (auto piece : pieces) joined += piece;
    EXPECT_EQ(joined, text);
    for (size_t i = 0; i + 1 < pieces.size(); ++i) {
      std::string_view piece = pieces[i];
      ASSERT_GE(piece.size(), 2u);
      EXPECT_EQ(piece.back(), '\n');
      EXPECT_NE(piece[piece.size() - 2], ' ');
      EXPECT_NE(pieces[i + 1].front(), ' ');
      EXPECT_NE(pieces[i + 1].front(), '\n');
      if (target == 100) ADD_FAILURE() << "text shorter than the target must stay whole";
    }
  }
  // Cut only after "alpha" and after "epsilon": every other line break touches whitespace.
  EXPECT_EQ(split_for_encoding(text, 1).size(), 3u);
  EXPECT_EQ(split_for_encoding("", 10).size(), 1u);
}

namespace {

// The tokenizer files are fetched at setup; without them the prepare tests cannot run.
Gpt2Tokenizer load_tokenizer_or_fail() {
  std::string dir = default_tokenizer_dir();
  if (!fs::exists(fs::path(dir) / "encoder.json") || !fs::exists(fs::path(dir) / "vocab.bpe"))
    throw std::runtime_error("GPT-2 tokenizer files missing in " + dir + ": run scripts/setup.sh");
  return Gpt2Tokenizer::load(dir);
}

std::vector<int> shard_ids(const std::string& path) {
  std::vector<uint16_t> tokens = read_shard(path, kVocab);
  return std::vector<int>(tokens.begin(), tokens.end());
}

}  // namespace

TEST(Prepare, ShardsDecodeBackToTheText) {
  Gpt2Tokenizer tokenizer = load_tokenizer_or_fail();
  const int eot = tokenizer.eot_token();
  std::string dir = scratch_dir("prepare");
  // Lines of several shapes (indentation, blank lines, trailing spaces, non-ASCII) so that the
  // piecewise encoding and the line-boundary split are exercised.
  std::string text;
  for (int i = 0; i < 40; ++i)
    text += cat("Verse ", i, ": In the beginning, na\xC3\xAFve caf\xC3\xA9s said \"hello\" ", i * 37, ".\n",
                i % 7 == 0 ? "\n" : "", i % 5 == 0 ? "    indented line  \n" : "");
  const std::string input = dir + "/little_book.txt";
  write_bytes(input, std::vector<char>(text.begin(), text.end()));

  // A stale shard from an "earlier run" must disappear; an unrelated file must not.
  write_shard(dir + "/little_book_train_000099.bin", {1});
  write_shard(dir + "/other_train_000000.bin", {1});

  PrepareResult result = prepare_text(input, dir, 0.25, 64, default_tokenizer_dir());
  ASSERT_GE(result.files.size(), 3u);
  EXPECT_EQ(result.files[0], dir + "/little_book_val_000000.bin");
  EXPECT_EQ(fs::path(result.files.back()).filename().string().rfind("little_book_train_", 0), 0u);
  EXPECT_FALSE(fs::exists(dir + "/little_book_train_000099.bin"));
  EXPECT_TRUE(fs::exists(dir + "/other_train_000000.bin"));

  std::string val_text, train_text;
  uint64_t val_tokens = 0, train_tokens = 0;
  for (const std::string& file : result.files) {
    std::vector<int> ids = shard_ids(file);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], eot) << file << " must start with the eot delimiter";
    EXPECT_LE(ids.size(), 64u) << file;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), eot), 1) << file;
    std::string decoded = tokenizer.decode(std::vector<int>(ids.begin() + 1, ids.end()));
    bool is_val = file.find("_val_") != std::string::npos;
    (is_val ? val_text : train_text) += decoded;
    (is_val ? val_tokens : train_tokens) += ids.size();
  }
  EXPECT_EQ(val_text + train_text, text);
  EXPECT_EQ(result.val_tokens, val_tokens);
  EXPECT_EQ(result.train_tokens, train_tokens);
  // Val is the first quarter, cut at the next line boundary.
  EXPECT_GE(val_text.size(), text.size() / 4);
  EXPECT_EQ(val_text.back(), '\n');
  EXPECT_LT(val_text.size(), text.size() / 4 + 80);

  // Encoding in pieces gives what encoding each split whole gives.
  std::vector<int> train_ids;
  for (const std::string& file : result.files)
    if (file.find("_train_") != std::string::npos) {
      std::vector<int> ids = shard_ids(file);
      train_ids.insert(train_ids.end(), ids.begin() + 1, ids.end());
    }
  EXPECT_EQ(train_ids, tokenizer.encode(train_text));

  // The loader reads what prepare wrote (T = 1: every shard holds at least eot + one token).
  DataLoader loader(dir + "/little_book_train_*.bin", 1, 1, 0, 1, true, 1, kVocab);
  EXPECT_EQ(loader.total_tokens(), result.train_tokens);
}

TEST(Prepare, PiecewiseEncodingEqualsWholeEncoding) {
  Gpt2Tokenizer tokenizer = load_tokenizer_or_fail();
  std::string text;
  for (int i = 0; i < 200; ++i)
    text += cat(i % 3 ? "And" : "  And", " it was so ", i, "; 'tis well.\n", i % 4 ? "" : "\n \n", "x\n");
  std::vector<int> whole = tokenizer.encode(text);
  std::vector<int> pieced;
  auto pieces = split_for_encoding(text, 50);
  EXPECT_GT(pieces.size(), 20u);
  for (auto piece : pieces) {
    std::vector<int> ids = tokenizer.encode(piece);
    pieced.insert(pieced.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(pieced, whole);
}

TEST(Prepare, BadInputsGiveClearErrors) {
  std::string dir = scratch_dir("prepare_errors");
  const std::string tok = default_tokenizer_dir();

  std::string message = error_message([&] { prepare_text(dir + "/absent.txt", dir, 0.1, 1000, tok); });
  EXPECT_NE(message.find(dir + "/absent.txt"), std::string::npos) << message;

  write_bytes(dir + "/latin1.txt", {'o', 'k', '\n', 'c', 'a', 'f', char(0xE9), '\n'});
  message = error_message([&] { prepare_text(dir + "/latin1.txt", dir, 0.1, 1000, tok); });
  EXPECT_NE(message.find("UTF-8"), std::string::npos) << message;
  EXPECT_NE(message.find("byte offset 6"), std::string::npos) << message;
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;

  write_bytes(dir + "/empty.txt", {});
  message = error_message([&] { prepare_text(dir + "/empty.txt", dir, 0.1, 1000, tok); });
  EXPECT_NE(message.find("empty"), std::string::npos) << message;

  for (double fraction : {0.0, 1.0, -0.5, 1.5}) {
    try {
      prepare_text(dir + "/empty.txt", dir, fraction, 1000, tok);
      ADD_FAILURE() << "val_fraction " << fraction << " accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(cat("val_fraction ", fraction)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("(0, 1)"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(prepare_text(dir + "/empty.txt", dir, 0.1, 1, tok), UsageError);

  // One line cannot be split at a line boundary into val and train.
  write_bytes(dir + "/one_line.txt", {'a', 'b', 'c', '\n'});
  message = error_message([&] { prepare_text(dir + "/one_line.txt", dir, 0.5, 1000, tok); });
  EXPECT_NE(message.find("line"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(dir + "/one_line_val_000000.bin"));
}
