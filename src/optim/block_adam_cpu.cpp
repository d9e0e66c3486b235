// CPU reference loops of block-wise Adam over one tensor (block_adam_cpu.h): block reductions of
// the squared gradient, the grads-mode step, AdamA fold / apply, and their inverses.
#include "optim/block_adam_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "util/error.h"

namespace slim {

namespace {

// Below this many elements a loop runs on the calling thread: waking the OpenMP team costs more.
constexpr int64_t kMinParallelWork = int64_t(1) << 15;
// A whole-tensor block is summed in spans of this many elements (a multiple of kPartialChunk,
// so the fp32 partials are the same however the spans are shared among threads).
constexpr int64_t kWholeSpan = int64_t(1) << 16;
// Columns per thread-owned tile of a column reduction (four cache lines of floats).
constexpr int64_t kColumnTile = 64;
// fp32 lanes of a partial sum: independent accumulators the compiler can keep in one vector
// register; they are combined in a fixed order, so the result is the same on every machine
// with IEEE fp32.
constexpr int kLanes = 8;
static_assert(kPartialChunk % kLanes == 0 && kWholeSpan % kPartialChunk == 0);

// Sum of term(i) over i in [0, n): fp32 partials over kPartialChunk terms (kLanes interleaved
// fp32 lanes combined by a fixed tree), each added into a double in order. term must be cheap and
// inline: it is the body of the vectorised loop.
template <typename Term>
double chunked_sum(int64_t n, const Term& term) {
  double total = 0.0;
  int64_t begin = 0;
  for (; begin + kPartialChunk <= n; begin += kPartialChunk) {
    float lane[kLanes] = {};
    for (int64_t i = 0; i < kPartialChunk; i += kLanes)
      for (int k = 0; k < kLanes; ++k) lane[k] += term(begin + i + k);
    total += ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
  float partial = 0.0f;
  for (; begin < n; ++begin) partial += term(begin);
  return total + partial;
}

// Sum of (c*g)^2 over n contiguous elements.
double span_sum_squares(const float* g, int64_t n, float c) {
  return chunked_sum(n, [g, c](int64_t i) { return scaled_square(g[i], c); });
}

// Sum of (c*g)^2 over a long contiguous run, by fixed spans summed in order (deterministic for
// any thread count).
double whole_sum_squares(const float* g, int64_t n, float c) {
  const int64_t spans = (n + kWholeSpan - 1) / kWholeSpan;
  std::vector<double> span_sum(size_t(spans), 0.0);
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
  for (int64_t s = 0; s < spans; ++s) {
    const int64_t begin = s * kWholeSpan;
    span_sum[size_t(s)] = span_sum_squares(g + begin, std::min(kWholeSpan, n - begin), c);
  }
  double total = 0.0;
  for (double x : span_sum) total += x;
  return total;
}

// Per-column sums of (c*g)^2 over the first `rows` rows of a row-major matrix with `cols`
// columns: fp32 partials over kPartialChunk rows, added into a double per column.
void column_sum_squares(const float* g, int64_t rows, int64_t cols, float c, double* column_sum) {
  const int64_t tiles = (cols + kColumnTile - 1) / kColumnTile;
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelWork)
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int64_t c0 = tile * kColumnTile, width = std::min(kColumnTile, cols - c0);
    double total[kColumnTile] = {};
    float partial[kColumnTile] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = g + r * cols + c0;
      for (int64_t j = 0; j < width; ++j) partial[j] += scaled_square(row[j], c);
      if ((r + 1) % kPartialChunk == 0 || r + 1 == rows)
        for (int64_t j = 0; j < width; ++j) {
          total[j] += partial[j];
          partial[j] = 0.0f;
        }
    }
    for (int64_t j = 0; j < width; ++j) column_sum[c0 + j] = total[j];
  }
}

// The block means of one non-Element segment (g at the segment's first element, out at its
// first v entry). Returns whether every mean is finite (a non-finite square makes its sum so).
bool segment_mean_squares(const BlockGeometry& geo, const float* g, float c, float* out) {
  const double count = double(block_mean_count(geo));
  const int64_t blocks = block_count(geo);
  switch (geo.kind) {
    case BlockKind::Element: {
      const int64_t n = geo.rows * geo.cols;
#pragma omp parallel for schedule(static) if (n >= kMinParallelWork)
      for (int64_t i = 0; i < n; ++i) out[i] = scaled_square(g[i], c);
      break;
    }
    case BlockKind::Row:
    case BlockKind::Head: {
      const int64_t block_numel = geo.kind == BlockKind::Row ? geo.cols : geo.head_dim * geo.cols;
#pragma omp parallel for schedule(static) if (blocks * block_numel >= kMinParallelWork)
      for (int64_t b = 0; b < blocks; ++b)
        out[b] = float(span_sum_squares(g + b * block_numel, block_numel, c) / count);
      break;
    }
    case BlockKind::Column: {
      std::vector<double> column_sum(size_t(geo.cols));
      column_sum_squares(g, geo.real_rows, geo.cols, c, column_sum.data());
      for (int64_t j = 0; j < geo.cols; ++j) out[j] = float(column_sum[size_t(j)] / count);
      break;
    }
    case BlockKind::Whole:
      out[0] = float(whole_sum_squares(g, geo.real_rows * geo.cols, c) / count);
      break;
  }
  int finite = 1;
  for (int64_t b = 0; b < blocks; ++b) finite &= std::isfinite(out[b]) ? 1 : 0;
  return finite != 0;
}

// Whether every (c*g)^2 of n elements is finite, checked through fp32 partial sums (a NaN or an
// infinity makes its partial non-finite; so does an fp32 overflow of a partial).
bool all_squares_finite(const float* g, int64_t n, float c) {
  const int64_t chunks = (n + kPartialChunk - 1) / kPartialChunk;
  int finite = 1;
#pragma omp parallel for schedule(static) reduction(& : finite) if (n >= kMinParallelWork)
  for (int64_t k = 0; k < chunks; ++k) {
    const int64_t begin = k * kPartialChunk, end = std::min(n, begin + kPartialChunk);
    float partial = 0.0f;
    for (int64_t i = begin; i < end; ++i) partial += scaled_square(g[i], c);
    finite &= std::isfinite(partial) ? 1 : 0;
  }
  return finite != 0;
}

// The first moment's storage, as the loops see it: get(i) reads element i of the span as fp32,
// set(i, x) stores x; at(offset) is the span from element `offset` on. F32Moment is plain fp32
// access (the loops then compile to exactly what they were before bf16 m existed). Bf16Moment
// holds bf16 bits and rounds every store stochastically with random_bits(seed, e), e the
// element's index in the tensor (`first` is the span's first element's index). A const element
// type gives a read-only accessor (set is then never instantiated).
template <typename Float>  // float or const float
struct F32Moment {
  Float* p;
  float get(int64_t i) const { return p[i]; }
  void set(int64_t i, float x) const { p[i] = x; }
  F32Moment at(int64_t offset) const { return {p + offset}; }
};

template <typename Bits>  // uint16_t or const uint16_t
struct Bf16Moment {
  Bits* p;
  uint32_t seed;
  int64_t first;
  float get(int64_t i) const { return bf16_bits_to_float(p[i]); }
  void set(int64_t i, float x) const {
    p[i] = stochastic_round_bf16_bits(x, random_bits(seed, uint64_t(first + i)));
  }
  Bf16Moment at(int64_t offset) const { return {p + offset, seed, first + offset}; }
};

// Calls body(moment) with the accessor of the tensor's m (void* or const void*) that
// hyper.m_bf16 names: one instantiation of each loop per storage type.
template <typename Void, typename Body>
void with_moment(Void* m, const BlockAdamHyper& h, Body&& body) {
  constexpr bool kReadOnly = std::is_const_v<Void>;
  using Float = std::conditional_t<kReadOnly, const float, float>;
  using Bits = std::conditional_t<kReadOnly, const uint16_t, uint16_t>;
  if (h.m_bf16)
    body(Bf16Moment<Bits>{static_cast<Bits*>(m), h.m_seed, 0});
  else
    body(F32Moment<Float>{static_cast<Float*>(m)});
}

// The loops below run a lambda per element. Each thread first copies the lambda (its captured
// pointers and hyperparameters) into a local: read through the shared closure, GCC reloads the
// pointers every iteration and falls back to gathers and scatters, three times slower.

// Calls op(i, vi) for every element of a segment: i counts from the segment's first element, vi
// is its v entry counted from the segment's first. Parallel over rows.
template <typename Op>
void for_each_element_with_v(const BlockGeometry& geo, const Op& op) {
  const int64_t stride = col_v_stride(geo), rows = geo.rows, cols = geo.cols;
  const BlockGeometry shape = geo;
#pragma omp parallel if (rows * cols >= kMinParallelWork)
  {
    const Op local_op = op;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t first = r * cols, v_base = row_v_base(shape, r);
      if (stride == 0) {
#pragma omp simd
        for (int64_t col = 0; col < cols; ++col) local_op(first + col, v_base);
      } else {
#pragma omp simd
        for (int64_t col = 0; col < cols; ++col) local_op(first + col, v_base + col);
      }
    }
  }
}

// Calls op(i) for each of n elements, parallel.
template <typename Op>
void for_each_element(int64_t n, const Op& op) {
#pragma omp parallel if (n >= kMinParallelWork)
  {
    const Op local_op = op;
#pragma omp for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) local_op(i);
  }
}

// The block means of every non-Element segment of a tensor (empty for Element segments).
// Returns false as soon as a segment has a non-finite mean or an Element segment a non-finite
// square.
bool tensor_block_means(const TensorPartition& part, const float* grads, float c,
                        std::vector<std::vector<float>>& means) {
  means.assign(part.segments.size(), {});
  for (size_t k = 0; k < part.segments.size(); ++k) {
    const PartitionSegment& s = part.segments[k];
    const BlockGeometry geo = s.geometry(part.cols);
    const float* g = grads + s.row_begin * part.cols;
    if (s.kind == BlockKind::Element) {
      if (!all_squares_finite(g, geo.rows * geo.cols, c)) return false;
      continue;
    }
    means[k].resize(size_t(s.v_entries));
    if (!segment_mean_squares(geo, g, c, means[k].data())) return false;
    // Column and Whole means skip the padded rows; the check must still see them, so that a
    // non-finite value anywhere in the tensor stops the fold (as on the GPU).
    const int64_t padded = geo.rows - geo.real_rows;
    if (padded > 0 && (s.kind == BlockKind::Column || s.kind == BlockKind::Whole) &&
        !all_squares_finite(g + geo.real_rows * geo.cols, padded * geo.cols, c))
      return false;
  }
  return true;
}

// Sum of u^2, u = adam_direction(m, v_B), over the real rows of one segment (m at the segment's
// first element, v at its first v entry). Rows run in parallel; each row's chunked sum lands in
// its own double and the rows are added in order, so the thread count never changes the bits.
template <typename Moment>
double segment_direction_sum_squares(const BlockGeometry& geo, const Moment& m, const float* v,
                                     const BlockAdamHyper& h) {
  const int64_t rows = geo.real_rows, cols = geo.cols, stride = col_v_stride(geo);
  std::vector<double> row_sum(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static) if (rows * cols >= kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const Moment m_row = m.at(r * cols);
    const float* v_row = v + row_v_base(geo, r);
    row_sum[size_t(r)] = chunked_sum(cols, [=](int64_t j) {
      const float u = adam_direction(m_row.get(j), v_row[j * stride], h);
      return u * u;
    });
  }
  double total = 0.0;
  for (double x : row_sum) total += x;
  return total;
}

}  // namespace

bool block_mean_squares_cpu(const TensorPartition& part, const float* grads, float grad_scale,
                            float* mean_square) {
  bool finite = true;
  for (const PartitionSegment& s : part.segments)
    finite &= segment_mean_squares(s.geometry(part.cols), grads + s.row_begin * part.cols,
                                   grad_scale, mean_square + s.v_offset);
  return finite;
}

namespace {

template <typename Moment>
void step_impl(const TensorPartition& part, float* weights, const float* grads, const Moment& m,
               float* v, const BlockAdamHyper& hyper) {
  const BlockAdamHyper h = hyper;  // a local copy: stores through float* cannot alias it
  const float c = h.grad_scale, m_weight = 1.0f - h.beta1, v_weight = 1.0f - h.beta2;
  for (const PartitionSegment& s : part.segments) {
    const BlockGeometry geo = s.geometry(part.cols);
    const int64_t first = s.row_begin * part.cols;
    float* w_seg = weights + first;
    const Moment m_seg = m.at(first);
    float* v_seg = v + s.v_offset;
    const float* g_seg = grads + first;
    if (s.kind == BlockKind::Element) {
      // AdamW exactly: the same expressions, in the same order, as cpu_ops.h adamw_update.
      for_each_element(geo.rows * geo.cols, [=](int64_t i) {
        const float g = g_seg[i] * c;
        const float m_new = moment_step(m_seg.get(i), h.beta1, m_weight, g);
        const float v_new = square_moment_step(v_seg[i], h.beta2, v_weight, g);
        m_seg.set(i, m_new);
        v_seg[i] = v_new;
        w_seg[i] = adam_apply(w_seg[i], m_new, v_new, h);
      });
      continue;
    }
    std::vector<float> mean_square(size_t(s.v_entries));
    segment_mean_squares(geo, g_seg, c, mean_square.data());
    for (int64_t b = 0; b < s.v_entries; ++b)
      v_seg[b] = moment_step(v_seg[b], h.beta2, v_weight, mean_square[size_t(b)]);
    for_each_element_with_v(geo, [=](int64_t i, int64_t vi) {
      const float m_new = moment_step(m_seg.get(i), h.beta1, m_weight, g_seg[i] * c);
      m_seg.set(i, m_new);
      w_seg[i] = adam_apply(w_seg[i], m_new, v_seg[vi], h);
    });
  }
}

template <typename Moment>
bool fold_impl(const TensorPartition& part, const float* grads, const Moment& m, float* v,
               const BlockAdamHyper& hyper, bool first_fold) {
  const BlockAdamHyper h = hyper;
  const float c = h.grad_scale, m_weight = 1.0f - h.beta1, v_weight = v_fold_weight(h.beta2, h.fold_scale);
  const float m_keep = fold_keep(h.beta1, first_fold), v_keep = fold_keep(h.beta2, first_fold);
  // Pass 1: check (and reduce) the whole tensor before anything is written.
  std::vector<std::vector<float>> means;
  if (!tensor_block_means(part, grads, c, means)) return false;
  // Pass 2: fold.
  for (size_t k = 0; k < part.segments.size(); ++k) {
    const PartitionSegment& s = part.segments[k];
    const BlockGeometry geo = s.geometry(part.cols);
    const int64_t first = s.row_begin * part.cols, n = geo.rows * geo.cols;
    const Moment m_seg = m.at(first);
    float* v_seg = v + s.v_offset;
    const float* g_seg = grads + first;
    if (s.kind == BlockKind::Element) {
      for_each_element(n, [=](int64_t i) {
        const float g = g_seg[i] * c;
        m_seg.set(i, moment_step(m_seg.get(i), m_keep, m_weight, g));
        v_seg[i] = square_moment_step(v_seg[i], v_keep, v_weight, g);
      });
      continue;
    }
    for (int64_t b = 0; b < s.v_entries; ++b)
      v_seg[b] = moment_step(v_seg[b], v_keep, v_weight, means[k][size_t(b)]);
    for_each_element(n, [=](int64_t i) {
      m_seg.set(i, moment_step(m_seg.get(i), m_keep, m_weight, g_seg[i] * c));
    });
  }
  return true;
}

template <typename Moment>
double update_mean_square_impl(const TensorPartition& part, const Moment& m, const float* v,
                               const BlockAdamHyper& hyper) {
  const BlockAdamHyper h = hyper;
  double total = 0.0;
  int64_t count = 0;
  for (const PartitionSegment& s : part.segments) {
    const BlockGeometry geo = s.geometry(part.cols);
    total += segment_direction_sum_squares(geo, m.at(s.row_begin * part.cols), v + s.v_offset, h);
    count += geo.real_rows * geo.cols;
  }
  return count > 0 ? total / double(count) : 0.0;
}

template <typename Moment>
void apply_impl(const TensorPartition& part, float* weights, const Moment& m, const float* v,
                const BlockAdamHyper& hyper) {
  const BlockAdamHyper h = hyper;
  const float scale =
      h.update_clip > 0.0f
          ? update_clip_scale(update_mean_square_impl(part, m, v, h), h.update_clip)
          : 1.0f;
  for (const PartitionSegment& s : part.segments) {
    const int64_t first = s.row_begin * part.cols;
    float* w_seg = weights + first;
    const Moment m_seg = m.at(first);
    const float* v_seg = v + s.v_offset;
    const BlockGeometry geo = s.geometry(part.cols);
    // Unclipped stays adam_apply itself (block_adam.h says why), so AdamA without update
    // clipping is AdamW bit for bit.
    if (scale == 1.0f) {
      for_each_element_with_v(geo, [=](int64_t i, int64_t vi) {
        w_seg[i] = adam_apply(w_seg[i], m_seg.get(i), v_seg[vi], h);
      });
    } else {
      for_each_element_with_v(geo, [=](int64_t i, int64_t vi) {
        w_seg[i] = adam_apply_scaled(w_seg[i], m_seg.get(i), v_seg[vi], h, scale);
      });
    }
  }
}

template <typename Moment>
void unfold_impl(const TensorPartition& part, const float* grads, const Moment& m, float* v,
                 const BlockAdamHyper& hyper) {
  const BlockAdamHyper h = hyper;
  const float c = h.grad_scale, m_weight = 1.0f - h.beta1, v_weight = v_fold_weight(h.beta2, h.fold_scale);
  std::vector<std::vector<float>> means;
  SLIM_CHECK(tensor_block_means(part, grads, c, means), part.tensor,
             ": unfold of a gradient that is not finite (it was never folded)");
  for (size_t k = 0; k < part.segments.size(); ++k) {
    const PartitionSegment& s = part.segments[k];
    const BlockGeometry geo = s.geometry(part.cols);
    const int64_t first = s.row_begin * part.cols, n = geo.rows * geo.cols;
    const Moment m_seg = m.at(first);
    float* v_seg = v + s.v_offset;
    const float* g_seg = grads + first;
    if (s.kind == BlockKind::Element) {
      for_each_element(n, [=](int64_t i) {
        const float g = g_seg[i] * c;
        m_seg.set(i, moment_unstep(m_seg.get(i), m_weight, g));
        v_seg[i] = square_moment_unstep(v_seg[i], v_weight, g);
      });
      continue;
    }
    for (int64_t b = 0; b < s.v_entries; ++b)
      v_seg[b] = block_moment_unstep(v_seg[b], v_weight, means[k][size_t(b)]);
    for_each_element(n, [=](int64_t i) {
      m_seg.set(i, moment_unstep(m_seg.get(i), m_weight, g_seg[i] * c));
    });
  }
}

template <typename Moment>
void undo_decay_impl(const TensorPartition& part, const Moment& m, float* v,
                     const BlockAdamHyper& hyper) {
  const float beta1 = hyper.beta1, beta2 = hyper.beta2;
  for_each_element(part.rows * part.cols,
                   [=](int64_t i) { m.set(i, undo_decay(m.get(i), beta1)); });
  for_each_element(part.v_entries, [=](int64_t b) { v[b] = undo_decay(v[b], beta2); });
}

}  // namespace

void block_adam_step_cpu(const TensorPartition& part, float* weights, const float* grads, void* m,
                         float* v, const BlockAdamHyper& hyper) {
  with_moment(m, hyper,
              [&](const auto& moment) { step_impl(part, weights, grads, moment, v, hyper); });
}

bool block_adam_fold_cpu(const TensorPartition& part, const float* grads, void* m, float* v,
                         const BlockAdamHyper& hyper, bool first_fold) {
  bool folded = false;
  with_moment(m, hyper, [&](const auto& moment) {
    folded = fold_impl(part, grads, moment, v, hyper, first_fold);
  });
  return folded;
}

double block_update_mean_square_cpu(const TensorPartition& part, const void* m, const float* v,
                                    const BlockAdamHyper& hyper) {
  double mean = 0.0;
  with_moment(m, hyper, [&](const auto& moment) {
    mean = update_mean_square_impl(part, moment, v, hyper);
  });
  return mean;
}

void block_adam_apply_cpu(const TensorPartition& part, float* weights, const void* m,
                          const float* v, const BlockAdamHyper& hyper) {
  with_moment(m, hyper, [&](const auto& moment) { apply_impl(part, weights, moment, v, hyper); });
}

void block_adam_unfold_cpu(const TensorPartition& part, const float* grads, void* m, float* v,
                           const BlockAdamHyper& hyper) {
  with_moment(m, hyper, [&](const auto& moment) { unfold_impl(part, grads, moment, v, hyper); });
}

void block_adam_undo_decay_cpu(const TensorPartition& part, void* m, float* v,
                               const BlockAdamHyper& hyper) {
  with_moment(m, hyper, [&](const auto& moment) { undo_decay_impl(part, moment, v, hyper); });
}

}  // namespace slim
