// The explicit per-tensor partition of the second moment v (OPTIMIZERS.md §8.12): for every
// tensor of the ParamTable, which rows form which blocks, and where its v entries live. Decided
// from ParamRole and the table's RowSegment hints (q / k / v rows of the fused qkv), never from
// name substrings, for AdamW (every element), Adam-mini v1.1.1 (§2.3) and SlimAdam (Table 1
// defaults of §3.2, or rules read from a JSON file that calibration writes).
//
// Conventions:
// - A tensor is a row-major rows x cols matrix: rows = shape[0], cols = numel / rows. A 1-D
//   tensor of n elements is n rows x 1 column (see block_adam.h).
// - Segments cover the tensor's rows [0, rows) exactly once, in order. Tensors without a row
//   hint have one segment; the fused qkv weight has three (q, k, v). wte's one segment covers
//   all Vp rows, with real_rows = V: the padded rows get their own v entries under per-token
//   rules (so padding V=50257 to 50304 adds 47 v entries to Adam-mini and SlimAdam, and
//   47*C to AdamW), and any mean over the vocabulary axis divides by V.
// - v offsets: TensorPartition::v_offset is the tensor's first entry in the one v buffer of the
//   run; PartitionSegment::v_offset is relative to the tensor's first entry.
//
// SlimAdam rules file (read by build_partition, written by slim_rules_to_json):
//   {"format": "slimtrain-slim-rules", "version": 1,
//    "rules": {"wte": [1], "h.0.attn.qkv.weight/q": [1], "h.0.ln1.weight": null, ...}}
// The key is the tensor name, or "name/segment" for a tensor with several segments (the fused
// qkv: /q, /k, /v). The value is SlimAdam's compress_dims, the PyTorch dims whose mean is taken:
//   [1] = mean over the columns (fan_in) = Row;   [0] = mean over the rows (fan_out) = Column;
//   [0, 1] = Whole;   null = no compression = Element.
// On a 1-D tensor (no dim 1) only null and [0] (the whole tensor, as PyTorch's mean(dim=0)) are
// valid. A rules file must be complete: a missing key, an unknown key, a key for a whole fused
// tensor instead of its segments, or an invalid value is a UsageError naming the file and key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "model/param_table.h"
#include "optim/block_adam.h"

namespace slim {

const char* block_kind_name(BlockKind kind);  // "element", "row", "head", "column", "whole"

struct PartitionSegment {
  std::string what;         // the RowSegment name ("q", "k", "v"), "" for a tensor's only segment
  int64_t row_begin = 0;    // rows [row_begin, row_end) of the tensor
  int64_t row_end = 0;
  int64_t real_rows = 0;    // leading rows of the segment that carry meaning (V of wte's Vp)
  BlockKind kind = BlockKind::Element;
  int head_dim = 0;         // rows per block, Head only
  int64_t v_offset = 0;     // first v entry, relative to the tensor's first
  int64_t v_entries = 0;
  std::string rule;         // why this kind, for the printed table

  int64_t rows() const { return row_end - row_begin; }
  BlockGeometry geometry(int64_t cols) const;
};

struct TensorPartition {
  std::string tensor;        // ParamInfo::name
  size_t param_index = 0;    // index in ParamTable::params
  int ndim = 2;              // 1 or 2 (a 1-D tensor is rows x 1)
  int64_t rows = 0, cols = 0;
  std::vector<PartitionSegment> segments;
  int64_t v_offset = 0;      // first entry in the run's v buffer
  int64_t v_entries = 0;
  bool all_element() const;  // every segment Element (the tensor is plain AdamW)
};

struct PartitionOptions {
  bool adam_mini_single_block_v = false;    // Adam-mini with wv_names={}: the v rows of qkv are one block
  bool adam_mini_per_position_wpe = false;  // wpe per position instead of the official one block
  std::string slim_rules_path;              // "" = SlimAdam Table 1 defaults
};

struct PartitionTable {
  std::string optimizer;  // adamw | adam_mini | slim_adam
  std::vector<TensorPartition> tensors;  // one per ParamTable entry, same order
  int64_t total_v = 0;

  const TensorPartition& find(const std::string& tensor) const;  // throws Error naming it
  // A readable table (tensor, shape, blocks per segment, v entries, rule), every line ending in
  // '\n', the last one "v entries: N" (N with thousands separators).
  std::string format() const;
};

// Throws UsageError for an unknown optimizer, options that do not belong to it, and a bad
// rules file.
PartitionTable build_partition(const std::string& optimizer, const ParamTable& params,
                               const ModelConfig& model, const PartitionOptions& options);

// The SlimAdam rules file (format above) that reproduces this table's partition. Throws Error
// for a partition SlimAdam cannot express (Head blocks of more than one row).
std::string slim_rules_to_json(const PartitionTable& table);

// The rules file's format tag and version, and a segment's key in it: the tensor name, or
// name/segment for a tensor with several segments (the fused qkv).
constexpr const char* kSlimRulesFormat = "slimtrain-slim-rules";
constexpr int kSlimRulesVersion = 1;
std::string slim_rules_key(const std::string& tensor, size_t n_segments, const std::string& segment);

// 1234567 -> "1,234,567".
std::string with_thousands(int64_t n);

}  // namespace slim
