// DataLoader: see loader.h for the sample/rank/epoch layout. The position is kept as a cursor
// (epoch, position in the epoch's shard order, samples taken from that shard) and "settled" after
// every sample, so that cursor() always names where the next batch starts.
#include "data/loader.h"

#include <charconv>
#include <random>
#include <sstream>
#include <utility>

#include "util/error.h"

namespace slim {
namespace {

// SplitMix64's finaliser: spreads nearby inputs (epoch 3 vs 4, file 0 vs 1) over unrelated
// generator seeds.
uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Stream 0 draws the epoch's shard order; stream 1 + f draws the sample order of shard file f.
uint64_t stream_seed(uint64_t seed, uint64_t epoch, uint64_t stream) {
  return mix64(mix64(mix64(seed) ^ epoch) ^ stream);
}

// Uniform integer in [0, n) by rejection, so it is exact and its output depends only on the
// generator (std::uniform_int_distribution's algorithm is unspecified).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  // Values below `threshold` (= 2^64 mod n) would make x % n slightly favour small results.
  uint64_t threshold = (0 - n) % n;
  while (true) {
    uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

// 0, 1, ..., n-1 in a Fisher-Yates random order drawn from `seed`.
std::vector<uint32_t> random_permutation(uint64_t n, uint64_t seed) {
  std::vector<uint32_t> order(n);
  for (uint64_t i = 0; i < n; ++i) order[i] = uint32_t(i);
  std::mt19937_64 rng(seed);
  for (uint64_t i = n; i > 1; --i) {
    uint64_t j = uniform_below(rng, i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

}  // namespace

bool operator==(const LoaderCursor& a, const LoaderCursor& b) {
  return a.epoch == b.epoch && a.shard_index == b.shard_index && a.sample_index == b.sample_index;
}

DataLoader::DataLoader(const std::string& glob, int B, int T, int rank, int world, bool shuffle,
                       uint64_t seed, int vocab_size)
    : B_(B), T_(T), rank_(rank), world_(world), shuffle_(shuffle), seed_(seed), vocab_size_(vocab_size) {
  if (B < 1) throw UsageError(cat("data loader: the micro-batch size B must be at least 1, got ", B));
  if (T < 1) throw UsageError(cat("data loader: the sequence length T must be at least 1, got ", T));
  if (world < 1) throw UsageError(cat("data loader: the world size must be at least 1, got ", world));
  if (rank < 0 || rank >= world)
    throw UsageError(cat("data loader: rank ", rank, " is outside [0, ", world, ")"));
  if (vocab_size < 1) throw UsageError(cat("data loader: vocab_size must be positive, got ", vocab_size));

  uint64_t total_samples = 0, total_rank_samples = 0;
  for (const std::string& path : expand_glob(glob)) {
    ShardInfo info = read_shard_header(path);
    if (info.num_tokens < uint64_t(T) + 1)
      throw Error(cat("shard '", path, "' has ", info.num_tokens, " tokens, fewer than the T + 1 = ", T + 1,
                      " that one sample of sequence length ", T,
                      " needs: remove it from the pattern, or use a smaller seq_len"));
    Shard shard;
    shard.path = path;
    shard.num_tokens = info.num_tokens;
    shard.num_samples = (info.num_tokens - 1) / uint64_t(T);
    shard.samples_per_rank = shard.num_samples / uint64_t(world);
    total_tokens_ += shard.num_tokens;
    total_samples += shard.num_samples;
    total_rank_samples += shard.samples_per_rank;
    shards_.push_back(std::move(shard));
  }
  batches_per_epoch_ = total_rank_samples / uint64_t(B);
  if (batches_per_epoch_ == 0)
    throw Error(cat("the data '", glob, "' gives no batch per epoch: ", total_tokens_, " tokens in ",
                    shards_.size(), " shard(s) make ", total_samples, " samples of T + 1 = ", T + 1,
                    " tokens, ", total_rank_samples,
                    " per rank with world size ", world, ", fewer than one batch of B = ", B,
                    " samples. Use a smaller micro_batch or seq_len, or more data"));
  reset();
}

void DataLoader::begin_epoch(uint64_t epoch) {
  position_ = LoaderCursor{epoch, 0, 0};
  if (shuffle_) {
    shard_order_ = random_permutation(shards_.size(), stream_seed(seed_, epoch, 0));
  } else {
    shard_order_.resize(shards_.size());
    for (size_t i = 0; i < shards_.size(); ++i) shard_order_[i] = uint32_t(i);
  }
  samples_before_shard_.assign(shards_.size() + 1, 0);
  for (size_t i = 0; i < shards_.size(); ++i)
    samples_before_shard_[i + 1] = samples_before_shard_[i] + shards_[shard_order_[i]].samples_per_rank;
}

uint64_t DataLoader::samples_taken_in_epoch() const {
  return samples_before_shard_[position_.shard_index] + position_.sample_index;
}

void DataLoader::settle() {
  while (true) {
    // The epoch ends after its last whole batch, even if a few samples are left.
    if (samples_taken_in_epoch() >= batches_per_epoch_ * uint64_t(B_)) {
      begin_epoch(position_.epoch + 1);
      continue;
    }
    // Past this shard's samples for this rank (or a shard too small to give this rank any).
    if (position_.sample_index >= shards_[shard_order_[position_.shard_index]].samples_per_rank) {
      position_.shard_index++;
      position_.sample_index = 0;
      continue;
    }
    return;
  }
}

void DataLoader::load_current_shard() {
  uint32_t file = shard_order_[position_.shard_index];
  bool new_file = loaded_file_ != int64_t(file);
  if (new_file) {
    tokens_.clear();
    tokens_.shrink_to_fit();  // free the old shard before reading the next: one shard in memory
    tokens_ = read_shard(shards_[file].path, vocab_size_);
    // The header was validated at construction; a different count now means the file changed.
    if (tokens_.size() != shards_[file].num_tokens)
      throw Error(cat("shard '", shards_[file].path, "' changed while training: it had ",
                      shards_[file].num_tokens, " tokens at start and has ", tokens_.size(), " now"));
  }
  if (shuffle_ && (new_file || loaded_epoch_ != position_.epoch))
    sample_order_ = random_permutation(shards_[file].num_samples, stream_seed(seed_, position_.epoch, 1 + file));
  loaded_file_ = file;
  loaded_epoch_ = position_.epoch;
}

void DataLoader::next_batch(int* inputs, int* targets) {
  const size_t T = size_t(T_);
  for (size_t b = 0; b < size_t(B_); ++b) {
    load_current_shard();
    // This rank's j-th sample of the shard sits at position j * world + rank of the shard's order.
    uint64_t order_position = position_.sample_index * uint64_t(world_) + uint64_t(rank_);
    uint64_t sample = shuffle_ ? sample_order_[order_position] : order_position;
    const uint16_t* window = tokens_.data() + sample * T;  // T + 1 tokens
    int* input_row = inputs + b * T;
    int* target_row = targets + b * T;
    for (size_t t = 0; t < T; ++t) {
      input_row[t] = window[t];
      target_row[t] = window[t + 1];
    }
    position_.sample_index++;
    settle();
  }
}

LoaderCursor DataLoader::cursor() const { return position_; }

void DataLoader::restore(const LoaderCursor& cursor) {
  auto mismatch = [&](const std::string& why) {
    return Error(cat("data cursor '", cursor_to_string(cursor), "' does not fit this data (", shards_.size(),
                     " shards, B = ", B_, ", T = ", T_, ", world = ", world_, "): ", why,
                     ". Resume with the same data, micro_batch, seq_len and world size as the run that "
                     "saved it"));
  };
  if (cursor.shard_index >= shards_.size()) throw mismatch("its shard index is past the last shard");

  LoaderCursor previous = position_;
  begin_epoch(cursor.epoch);
  uint64_t shard_samples = shards_[shard_order_[cursor.shard_index]].samples_per_rank;
  uint64_t taken = samples_before_shard_[cursor.shard_index] + cursor.sample_index;
  const char* problem = nullptr;
  if (cursor.sample_index > shard_samples)
    problem = "its sample index is past the end of that shard";
  else if (taken % uint64_t(B_) != 0)
    problem = "it is not at a batch boundary";
  else if (taken > batches_per_epoch_ * uint64_t(B_))
    problem = "it is past the end of the epoch";
  if (problem) {
    begin_epoch(previous.epoch);  // leave the loader where it was
    position_ = previous;
    throw mismatch(problem);
  }
  position_ = cursor;
  settle();
}

void DataLoader::reset() {
  begin_epoch(0);
  settle();
}

uint64_t DataLoader::total_tokens() const { return total_tokens_; }

uint64_t DataLoader::batches_per_epoch() const { return batches_per_epoch_; }

std::string cursor_to_string(const LoaderCursor& cursor) {
  return cat(cursor.epoch, " ", cursor.shard_index, " ", cursor.sample_index);
}

LoaderCursor cursor_from_string(const std::string& text) {
  auto bad = [&]() {
    return Error(cat("malformed data cursor '", text,
                     "': expected three non-negative integers 'epoch shard_index sample_index', e.g. '0 3 120'"));
  };
  std::istringstream words(text);
  uint64_t values[3];
  std::string word;
  int count = 0;
  while (words >> word) {
    if (count == 3) throw bad();
    // from_chars, unlike stream extraction, rejects "-1" and "12abc" instead of wrapping/stopping.
    auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), values[count]);
    if (ec != std::errc() || end != word.data() + word.size()) throw bad();
    ++count;
  }
  if (count != 3) throw bad();
  return LoaderCursor{values[0], values[1], values[2]};
}

}  // namespace slim
