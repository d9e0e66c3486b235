// The training/validation data loader: batches of (inputs, targets) from llm.c-format shards,
// split across data-parallel ranks, optionally shuffled, and resumable exactly from a cursor.
//
// Samples. A shard of N tokens holds S = (N - 1) / T samples: sample k is the window of T + 1
// tokens starting at k * T (llm.c's layout); inputs are its first T tokens, targets its last T.
//
// Ranks. Within a shard, the samples are taken in the epoch's order (identity, or a permutation)
// and the sample at position p of that order goes to rank p % world. Every rank takes the same
// number of samples from each shard, S / world; the last S % world positions are skipped. That
// way all ranks cross shard boundaries at the same batch, which makes the cursor the same on
// every rank: a checkpoint stores one cursor and every rank restores it.
//
// Epochs. A rank's stream in one epoch is its samples of each shard, shard after shard in the
// epoch's shard order; batch b is B consecutive samples of that stream (a batch may span two
// shards). An epoch has batches_per_epoch() = floor(sum over shards of (S / world) / B) batches,
// the same on every rank; the last few samples that do not fill a batch are skipped, then the
// next epoch starts. With shuffle, the shard order and each shard's sample order are permutations
// drawn from (seed, epoch) with std::mt19937_64 and our own Fisher-Yates (std::shuffle's
// algorithm is unspecified), so they are the same on every rank, machine and compiler.
//
// Memory: one shard's tokens (the current one) plus its sample permutation.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"

namespace slim {

// The position of the next batch. epoch counts from 0; shard_index is the position in that
// epoch's shard order (not the file's index); sample_index counts this rank's samples already
// taken from that shard. Identical on every rank (see above).
struct LoaderCursor {
  uint64_t epoch = 0;
  uint64_t shard_index = 0;
  uint64_t sample_index = 0;
};
bool operator==(const LoaderCursor& a, const LoaderCursor& b);

class DataLoader {
 public:
  // glob: shard files (see expand_glob). B: samples per batch; T: sequence length; rank in
  // [0, world). vocab_size: every token of a loaded shard is checked against it.
  // Throws UsageError for bad B/T/rank/world, Error for missing or bad shards, a shard shorter
  // than T + 1 tokens, or data that gives no batch at all.
  DataLoader(const std::string& glob, int B, int T, int rank, int world, bool shuffle, uint64_t seed,
             int vocab_size);

  // Fills B*T inputs and B*T targets (row-major [B][T], host memory) with the next batch, moving
  // on to the next shard and the next epoch as needed.
  void next_batch(int* inputs, int* targets);

  LoaderCursor cursor() const;  // position of the NEXT batch
  // After restore(c), next_batch yields exactly what it would have yielded when cursor() was c.
  // A cursor that cannot come from this data and B/world (past the end of a shard, or not on a
  // batch boundary) is an Error: the data, B, T and world size must match the run that saved it.
  void restore(const LoaderCursor& cursor);
  void reset();  // back to the start of epoch 0

  uint64_t total_tokens() const;       // tokens in all shards
  uint64_t batches_per_epoch() const;  // for this rank; the same on every rank
  size_t num_shards() const { return shards_.size(); }
  int B() const { return B_; }
  int T() const { return T_; }

 private:
  struct Shard {
    std::string path;
    uint64_t num_tokens;
    uint64_t num_samples;       // (num_tokens - 1) / T
    uint64_t samples_per_rank;  // num_samples / world
  };

  void begin_epoch(uint64_t epoch);  // computes the epoch's shard order and its prefix sums
  void settle();                     // moves the position past finished shards / the epoch end
  void load_current_shard();         // makes tokens_/sample_order_ hold the shard at position_
  uint64_t samples_taken_in_epoch() const;

  int B_, T_, rank_, world_;
  bool shuffle_;
  uint64_t seed_;
  int vocab_size_;
  std::vector<Shard> shards_;  // in sorted file order
  uint64_t total_tokens_ = 0;
  uint64_t batches_per_epoch_ = 0;

  LoaderCursor position_;
  std::vector<uint32_t> shard_order_;           // epoch's order: position -> file index
  std::vector<uint64_t> samples_before_shard_;  // rank samples in the epoch before each position

  // The shard in memory: its file index, the epoch its sample order was drawn for, its tokens,
  // and the order of its samples (order position -> sample k).
  int64_t loaded_file_ = -1;
  uint64_t loaded_epoch_ = 0;
  std::vector<uint16_t> tokens_;
  std::vector<uint32_t> sample_order_;
};

// Cursor <-> text for checkpoints: "epoch shard_index sample_index", three decimal numbers.
std::string cursor_to_string(const LoaderCursor& cursor);
LoaderCursor cursor_from_string(const std::string& text);  // malformed text -> Error

}  // namespace slim
