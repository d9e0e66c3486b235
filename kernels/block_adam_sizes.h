// block_adam_sizes.h — how the block-Adam kernels (block_adam.cuh) cut one tensor's reductions
// into fp32 partial sums, and so how much device scratch one call needs, as plain C++.
//
// The CUDA backend allocates one scratch for the largest tensor of the partition, and `slimtrain
// memory` predicts those bytes without a GPU and without CUDA headers (cuda_workspace_plan.cpp),
// so this header includes nothing from CUDA. block_adam.cuh plans every launch with the same
// functions, so a launcher and the planner can never disagree.
//
// The cut is a function of the partition alone (never of the GPU or of timing), which is what
// makes every reduction's summation order, and so its bits, fixed:
//   * Row, Head and Whole blocks are contiguous spans of the gradient (a row, head_dim rows, the
//     real rows); each span is cut into chunks of kChunk elements (more for a long span, so that a
//     span never has more than kMaxChunksPerSpan chunks) and one warp sums each chunk;
//   * Column blocks are cut across the rows: one thread sums rows_per_chunk rows of one column;
//   * an Element segment has no means, but the fold still sums it in kChunk chunks: the partials
//     carry the finiteness check and ||g||^2;
//   * the padded rows that Column and Whole means leave out (wte's Vp - V rows) get chunks of their
//     own, for the check and ||g||^2 only;
//   * update clipping sums u^2 over each segment's real rows in kChunk chunks.
// A block's mean is the double sum of its chunk partials in chunk order, divided by
// block_mean_count, as the CPU reference does it (block_adam_cpu.cpp).
//
// Scratch of one call, in floats (block_adam_scratch_floats):
//   [0, kHeaderFloats)             the fold's verdict (an int: 1 = write) and the clip scale
//   then 2 x partials              the scaled sums of (grad_scale*g)^2 and the raw sums of g^2
//                                  (fold, unfold, grads-mode step)
//   or   direction_partials        the sums of u^2 (apply with update clipping), in the same place
// That is O(blocks + numel / kChunk + numel / kColumnChunkRows for Column segments): for GPT-2
// 124M the largest need is 75,460 floats under AdamW (wte), 100,612 under Adam-mini (wte's 50304
// per-token rows) and 147,460 under SlimAdam (the column-compressed MLP weights), i.e. < 0.6 MiB.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "optim/block_adam.h"
#include "optim/partition.h"
#include "util/error.h"

namespace slim {

namespace block_adam_detail {

constexpr int64_t kChunk = 1024;              // elements per warp partial (32 per lane)
constexpr int64_t kMaxChunksPerSpan = 1024;   // so one thread can add a block's partials
constexpr int64_t kColumnChunkRows = 32;      // rows per column partial, at least
constexpr int64_t kMaxColumnChunks = 256;     // row chunks per column, at most (also gridDim.y)
constexpr int64_t kHeaderFloats = 4;          // [0] verdict (int bits), [1] clip scale, 2 spare
constexpr int64_t kVerdictSlot = 0;
constexpr int64_t kClipScaleSlot = 1;

// `spans` contiguous spans of span_length elements, the i-th at element i * span_length; chunk k
// of a span covers its elements [k * chunk_length, min((k + 1) * chunk_length, span_length)).
// Partial p = span * chunks_per_span + k.
struct SpanCut {
  int64_t spans = 0;
  int64_t span_length = 0;
  int64_t chunk_length = 1;
  int64_t chunks_per_span = 0;
  SLIM_HD int64_t partials() const { return spans * chunks_per_span; }
};

// Column sums over `rows` rows of a row-major rows x cols matrix: partial k * cols + col sums the
// rows [k * rows_per_chunk, min((k + 1) * rows_per_chunk, rows)) of column col.
struct ColumnCut {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t rows_per_chunk = 1;
  int64_t row_chunks = 0;
  SLIM_HD int64_t partials() const { return row_chunks * cols; }
};

// Where block b's partials lie: partials[b * block_stride + k * chunk_stride], k < chunks; the
// mean divides their sum by count.
struct PartialLayout {
  int64_t chunks = 0;
  int64_t block_stride = 0;
  int64_t chunk_stride = 0;
  double count = 1.0;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// spans x span_length cut into chunks; capped: at most kMaxChunksPerSpan per span (a block mean
// is then added by one thread), uncapped: plain kChunk chunks (no mean is taken).
inline SpanCut cut_spans(int64_t spans, int64_t span_length, bool capped) {
  SpanCut cut;
  cut.spans = span_length > 0 ? spans : 0;
  cut.span_length = span_length;
  cut.chunk_length = kChunk;
  if (capped && span_length > kChunk * kMaxChunksPerSpan)
    cut.chunk_length = ceil_div(span_length, kMaxChunksPerSpan);
  cut.chunks_per_span = span_length > 0 ? ceil_div(span_length, cut.chunk_length) : 0;
  return cut;
}

inline ColumnCut cut_columns(int64_t rows, int64_t cols) {
  ColumnCut cut;
  cut.rows = rows;
  cut.cols = cols;
  cut.rows_per_chunk = std::max(kColumnChunkRows, ceil_div(rows, kMaxColumnChunks));
  cut.row_chunks = rows > 0 ? ceil_div(rows, cut.rows_per_chunk) : 0;
  return cut;
}

// One segment of a tensor, as the launchers see it.
struct SegmentPlan {
  BlockGeometry geo;
  int64_t first_element = 0;  // row_begin * cols: the segment's offset in params/grads/m
  int64_t v_offset = 0;       // its first v entry, relative to the tensor's
  int64_t elements = 0;       // rows * cols
  int64_t blocks = 0;         // v entries
  // The reduction of (grad_scale*g)^2. Column segments use `columns`, the others `spans` (an
  // Element segment's spans cover all its elements, for the check and ||g||^2 only).
  bool by_column = false;
  SpanCut spans;
  ColumnCut columns;
  int64_t partial_offset = 0;   // of these partials in the tensor's partial arrays
  PartialLayout layout;         // the block means (non-Element segments)
  // Padded rows that Column and Whole means leave out: checked and counted in ||g||^2 only.
  SpanCut padding;              // starts at element real_rows * cols of the segment
  int64_t padding_offset = 0;
  // Update clipping: u^2 over the real rows.
  SpanCut direction;
  int64_t direction_offset = 0;
};

struct TensorPlan {
  std::vector<SegmentPlan> segments;
  int64_t elements = 0;            // rows * cols of the tensor
  int64_t partials = 0;            // length of each of the two g^2 partial arrays
  int64_t direction_partials = 0;  // length of the u^2 partial array
  int64_t real_elements = 0;       // what update clipping's mean divides by
};

// Checks the partition's geometry (what the kernels' index math relies on) and plans every
// reduction. Throws Error naming `op`, the tensor and the bad value: a partition that fails is a
// bug in its builder (build_partition makes consistent ones), not a user input.
inline TensorPlan plan_tensor(const char* op, const TensorPartition& part) {
  auto fail = [&](const auto&... what) {
    throw Error(cat(op, ": tensor '", part.tensor, "': ", what...,
                    "; build the partition with build_partition (partition.h)"));
  };
  if (part.rows < 0 || part.cols < 0 || (part.rows > 0 && part.cols == 0))
    fail("bad shape ", part.rows, " x ", part.cols);
  if (part.rows > 0 && part.cols > std::numeric_limits<int64_t>::max() / part.rows)
    fail("shape ", part.rows, " x ", part.cols, " overflows a 64-bit element count");
  TensorPlan plan;
  plan.elements = part.rows * part.cols;
  int64_t next_row = 0, next_v = 0;
  for (size_t k = 0; k < part.segments.size(); ++k) {
    const PartitionSegment& s = part.segments[k];
    const int kind = static_cast<int>(s.kind);
    if (kind < static_cast<int>(BlockKind::Element) || kind > static_cast<int>(BlockKind::Whole))
      fail("segment ", k, " has an unknown block kind ", kind);
    if (s.row_begin != next_row || s.row_end <= s.row_begin || s.row_end > part.rows)
      fail("segment ", k, " covers rows [", s.row_begin, ", ", s.row_end, "), expected [",
           next_row, ", ...) within ", part.rows, " rows, at least one row, segments in order");
    if (s.real_rows < 0 || s.real_rows > s.rows())
      fail("segment ", k, " has ", s.real_rows, " real rows of ", s.rows());
    if ((s.kind == BlockKind::Column || s.kind == BlockKind::Whole) && s.real_rows == 0)
      fail("segment ", k, " (", block_kind_name(s.kind),
           ") has no real rows: its mean would divide by zero");
    if (s.kind == BlockKind::Head && (s.head_dim <= 0 || s.rows() % s.head_dim != 0))
      fail("segment ", k, " has head_dim ", s.head_dim, ", which does not divide its ", s.rows(),
           " rows");
    SegmentPlan p;
    p.geo = s.geometry(part.cols);
    p.first_element = s.row_begin * part.cols;
    p.v_offset = s.v_offset;
    p.elements = p.geo.rows * p.geo.cols;
    p.blocks = block_count(p.geo);
    if (s.v_offset != next_v || s.v_entries != p.blocks)
      fail("segment ", k, " has v entries [", s.v_offset, ", ", s.v_offset + s.v_entries,
           "), expected [", next_v, ", ", next_v + p.blocks, ")");
    next_row = s.row_end;
    next_v += p.blocks;

    const BlockGeometry& g = p.geo;
    p.partial_offset = plan.partials;
    switch (s.kind) {
      case BlockKind::Element:
        p.spans = cut_spans(1, p.elements, /*capped=*/false);
        break;
      case BlockKind::Row:
        p.spans = cut_spans(g.rows, g.cols, true);
        p.layout = {p.spans.chunks_per_span, p.spans.chunks_per_span, 1, double(g.cols)};
        break;
      case BlockKind::Head:
        p.spans = cut_spans(g.rows / g.head_dim, g.head_dim * g.cols, true);
        p.layout = {p.spans.chunks_per_span, p.spans.chunks_per_span, 1,
                    double(block_mean_count(g))};
        break;
      case BlockKind::Whole:
        p.spans = cut_spans(1, g.real_rows * g.cols, true);
        p.layout = {p.spans.chunks_per_span, p.spans.chunks_per_span, 1,
                    double(block_mean_count(g))};
        break;
      case BlockKind::Column:
        p.by_column = true;
        p.columns = cut_columns(g.real_rows, g.cols);
        p.layout = {p.columns.row_chunks, 1, g.cols, double(g.real_rows)};
        break;
    }
    plan.partials += p.by_column ? p.columns.partials() : p.spans.partials();
    p.padding_offset = plan.partials;
    if (s.kind == BlockKind::Column || s.kind == BlockKind::Whole)
      p.padding = cut_spans(1, (g.rows - g.real_rows) * g.cols, /*capped=*/false);
    plan.partials += p.padding.partials();
    p.direction = cut_spans(1, g.real_rows * g.cols, /*capped=*/false);
    p.direction_offset = plan.direction_partials;
    plan.direction_partials += p.direction.partials();
    plan.real_elements += g.real_rows * g.cols;
    plan.segments.push_back(p);
  }
  if (next_row != part.rows)
    fail("its segments cover ", next_row, " of its ", part.rows, " rows");
  if (next_v != part.v_entries)
    fail("its segments have ", next_v, " v entries, the tensor says ", part.v_entries);
  return plan;
}

}  // namespace block_adam_detail

// Device floats of scratch that one block_adam_step / fold / apply / unfold call on this tensor
// needs (block_adam_undo_decay needs none). Throws Error for an inconsistent partition.
inline size_t block_adam_scratch_floats(const TensorPartition& part) {
  using namespace block_adam_detail;
  const TensorPlan plan = plan_tensor("block_adam_scratch_floats", part);
  return static_cast<size_t>(kHeaderFloats + std::max(2 * plan.partials, plan.direction_partials));
}

}  // namespace slim
