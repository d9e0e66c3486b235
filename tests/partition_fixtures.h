// Small partitions and models shared by the optimizer tests (CPU and emulated kernel tests).
#pragma once
#include <cstdint>
#include <string>

#include "model/model_config.h"
#include "optim/block_adam.h"
#include "optim/partition.h"

namespace slim::test {

// A tensor of one segment, as build_partition would make it.
inline TensorPartition one_segment(const std::string& name, int64_t rows, int64_t cols,
                                   BlockKind kind, int head_dim = 0, int64_t real_rows = -1) {
  TensorPartition t;
  t.tensor = name;
  t.ndim = 2;
  t.rows = rows;
  t.cols = cols;
  PartitionSegment s;
  s.row_begin = 0;
  s.row_end = rows;
  s.real_rows = real_rows < 0 ? rows : real_rows;
  s.kind = kind;
  s.head_dim = head_dim;
  s.v_entries = block_count(s.geometry(cols));
  t.segments.push_back(s);
  t.v_entries = s.v_entries;
  return t;
}

// A 2-layer GPT-2 of width 8 with a padded vocabulary (10 -> 16): every tensor kind, tiny.
inline ModelConfig tiny_partition_model() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.n_embd = 8;
  c.vocab_size = 10;
  c.padded_vocab_size = 16;
  c.max_seq_len = 4;
  c.ffn_hidden = 32;
  return c;
}

// A GPT-2 of width 16 with a padded vocabulary (50 -> 64): every tensor kind, small enough for
// the emulator.
inline ModelConfig tiny_padded_model(int n_layer) {
  ModelConfig c;
  c.n_layer = n_layer;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.n_embd = 16;
  c.vocab_size = 50;
  c.padded_vocab_size = 64;
  c.max_seq_len = 8;
  c.ffn_hidden = 64;
  return c;
}

}  // namespace slim::test
