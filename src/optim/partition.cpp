// Builds the per-tensor v partition (partition.h) for AdamW, Adam-mini and SlimAdam, reads and
// writes SlimAdam rules files, and prints the table a run shows at start.
#include "optim/partition.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "util/error.h"

namespace slim {

namespace {

// What one segment becomes: a block kind, the head size for Head, and the reason shown in the
// printed table.
struct Choice {
  BlockKind kind;
  int head_dim = 0;
  std::string rule;
};

// The segments of a tensor before any optimizer decides their kinds: one for a tensor without
// a row hint, or one per RowSegment. A single hint of the real rows of a padded tensor (wte's
// "tokens" [0, V)) becomes one segment over all rows with real_rows = V.
std::vector<PartitionSegment> base_segments(const ParamInfo& p, int64_t rows) {
  std::vector<PartitionSegment> segments;
  if (p.segments.size() <= 1) {
    PartitionSegment s;
    s.what = p.segments.empty() ? "" : p.segments[0].what;
    s.row_begin = 0;
    s.row_end = rows;
    s.real_rows = p.real_rows;
    s.head_dim = p.segments.empty() ? 0 : p.segments[0].head_dim;
    SLIM_CHECK(p.real_rows > 0 && p.real_rows <= rows, p.name, ": real_rows ", p.real_rows,
               " outside (0, ", rows, "]");
    if (!p.segments.empty())
      SLIM_CHECK(p.segments[0].row_begin == 0 &&
                     (p.segments[0].row_end == rows || p.segments[0].row_end == p.real_rows),
                 p.name, ": a single row segment must start at row 0 and end at the real or last row");
    segments.push_back(s);
    return segments;
  }
  SLIM_CHECK(p.real_rows == rows, p.name, ": padded rows are only supported on a tensor with one segment");
  int64_t next_row = 0;
  for (const RowSegment& hint : p.segments) {
    SLIM_CHECK(hint.row_begin == next_row && hint.row_end > hint.row_begin, p.name,
               ": row segments must be contiguous and non-empty from row 0 (segment ", hint.what, ")");
    PartitionSegment s;
    s.what = hint.what;
    s.row_begin = hint.row_begin;
    s.row_end = hint.row_end;
    s.real_rows = hint.row_end - hint.row_begin;
    s.head_dim = hint.head_dim;
    segments.push_back(s);
    next_row = hint.row_end;
  }
  SLIM_CHECK(next_row == rows, p.name, ": row segments end at row ", next_row, " of ", rows);
  return segments;
}

// The number of heads a q or k segment of the fused qkv must split into.
int expected_heads(const std::string& what, const ModelConfig& model) {
  return what == "k" ? model.n_kv_head : model.n_head;
}

Choice adam_mini_choice(const ParamInfo& p, const PartitionSegment& s, const ModelConfig& model,
                        const PartitionOptions& options) {
  switch (p.role) {
    case ParamRole::TokenEmbedding: return {BlockKind::Row, 0, "per token (Adam-mini embd rule)"};
    case ParamRole::LmHead: return {BlockKind::Row, 0, "per token (Adam-mini output rule)"};
    case ParamRole::PositionEmbedding:
      if (options.adam_mini_per_position_wpe)
        return {BlockKind::Row, 0, "per position (option; official v1.1.1: one block)"};
      return {BlockKind::Whole, 0, "one block (official v1.1.1: no name rule matches wpe)"};
    case ParamRole::NormWeight: return {BlockKind::Whole, 0, "one block (norm weight)"};
    case ParamRole::NormBias:
    case ParamRole::AttnQKVBias:
    case ParamRole::AttnProjBias:
    case ParamRole::MlpUpBias:
    case ParamRole::MlpDownBias: return {BlockKind::Element, 0, "per element (bias: plain Adam)"};
    case ParamRole::AttnQKVWeight:
      if (s.what == "q" || s.what == "k") {
        SLIM_CHECK(s.head_dim > 0 && s.rows() == int64_t(expected_heads(s.what, model)) * s.head_dim,
                   p.name, "/", s.what, ": ", s.rows(), " rows are not ",
                   expected_heads(s.what, model), " heads of ", s.head_dim, " rows");
        return {BlockKind::Head, s.head_dim, s.what == "q" ? "per head (Adam-mini query rule)"
                                                           : "per kv head (Adam-mini key rule)"};
      }
      SLIM_CHECK(s.what == "v", p.name, ": unexpected qkv row segment '", s.what, "'");
      if (options.adam_mini_single_block_v)
        return {BlockKind::Whole, 0, "one block (option: wv_names={})"};
      return {BlockKind::Row, 0, "per row (Adam-mini value rule)"};
    case ParamRole::AttnProjWeight: return {BlockKind::Row, 0, "per row (Adam-mini attn.proj rule)"};
    case ParamRole::MlpUpWeight:
    case ParamRole::MlpDownWeight: return {BlockKind::Row, 0, "per row (Adam-mini mlp rule)"};
  }
  throw Error(cat(p.name, ": no Adam-mini rule for role ", param_role_name(p.role)));
}

// SlimAdam's DEFAULT_COMPRESSION_RULES ("Table 1"); norms and biases keep a full v.
Choice slim_default_choice(const ParamInfo& p, const PartitionSegment& s) {
  switch (p.role) {
    case ParamRole::TokenEmbedding: return {BlockKind::Row, 0, "(1,) token_embedding (Table 1)"};
    case ParamRole::LmHead: return {BlockKind::Row, 0, "(1,) lm_head (Table 1)"};
    case ParamRole::PositionEmbedding: return {BlockKind::Row, 0, "(1,) position_embedding (Table 1)"};
    case ParamRole::NormWeight:
    case ParamRole::NormBias: return {BlockKind::Element, 0, "None: norm (Table 1)"};
    case ParamRole::AttnQKVBias:
    case ParamRole::AttnProjBias:
    case ParamRole::MlpUpBias:
    case ParamRole::MlpDownBias: return {BlockKind::Element, 0, "None: bias"};
    case ParamRole::AttnQKVWeight:
      if (s.what == "q") return {BlockKind::Row, 0, "(1,) attention_query (Table 1)"};
      if (s.what == "k") return {BlockKind::Row, 0, "(1,) attention_key (Table 1)"};
      SLIM_CHECK(s.what == "v", p.name, ": unexpected qkv row segment '", s.what, "'");
      return {BlockKind::Column, 0, "(0,) attention_value (Table 1)"};
    case ParamRole::AttnProjWeight: return {BlockKind::Column, 0, "(0,) attention_output (Table 1)"};
    case ParamRole::MlpUpWeight: return {BlockKind::Column, 0, "(0,) mlp_up (Table 1)"};
    case ParamRole::MlpDownWeight: return {BlockKind::Column, 0, "(0,) mlp_down (Table 1)"};
  }
  throw Error(cat(p.name, ": no SlimAdam rule for role ", param_role_name(p.role)));
}


std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw UsageError(cat("cannot open the SlimAdam rules file '", path,
                         "' (optimizer.slim_rules): check the path, or leave it empty for the "
                         "Table 1 defaults"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A SlimAdam rules file: key -> the compress dims as written (null kept as a JSON null).
struct SlimRules {
  std::string path;
  std::map<std::string, nlohmann::json> rules;
};

SlimRules load_slim_rules(const std::string& path) {
  const std::string text = read_text_file(path);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw UsageError(cat("SlimAdam rules file '", path, "' is not valid JSON: ", e.what()));
  }
  if (!doc.is_object() || !doc.contains("format") || doc["format"] != kSlimRulesFormat)
    throw UsageError(cat("SlimAdam rules file '", path, "': \"format\" must be \"", kSlimRulesFormat,
                         "\" (write one with `slimtrain calibrate`)"));
  if (!doc.contains("version") || doc["version"] != kSlimRulesVersion)
    throw UsageError(cat("SlimAdam rules file '", path, "': \"version\" ",
                         doc.contains("version") ? doc["version"].dump() : std::string("(missing)"),
                         " is not supported; this slimtrain reads version ", kSlimRulesVersion));
  if (!doc.contains("rules") || !doc["rules"].is_object())
    throw UsageError(cat("SlimAdam rules file '", path,
                         "': \"rules\" must be an object mapping tensor names to compress dims"));
  SlimRules result;
  result.path = path;
  for (const auto& [key, value] : doc["rules"].items()) result.rules[key] = value;
  return result;
}

// One rules-file value -> a block kind for a segment of an ndim-D tensor.
Choice slim_file_choice(const SlimRules& file, const std::string& key, const nlohmann::json& value,
                        int ndim) {
  const std::string shown = value.dump();
  auto invalid = [&](const std::string& why) {
    return UsageError(cat("SlimAdam rules file '", file.path, "', key '", key, "': ", shown,
                          " is not a valid rule: ", why));
  };
  if (value.is_null()) return {BlockKind::Element, 0, "None (rules file)"};
  if (!value.is_array() || value.empty())
    throw invalid("use null (no compression), [1] (mean over fan_in: one v per row), "
                  "[0] (mean over fan_out: one v per column) or [0, 1] (one v)");
  std::set<int> dims;
  for (const auto& d : value) {
    if (!d.is_number_integer() || (d.get<int64_t>() != 0 && d.get<int64_t>() != 1))
      throw invalid("the compress dims are PyTorch dims of a weight: 0 and/or 1");
    if (!dims.insert(d.get<int>()).second) throw invalid("a dim is listed twice");
  }
  if (ndim == 1) {
    if (dims != std::set<int>{0})
      throw invalid("this tensor is 1-D (it has only dim 0): use null or [0] (one v for the tensor)");
    return {BlockKind::Whole, 0, "(0,) whole 1-D tensor (rules file)"};
  }
  if (dims == std::set<int>{1}) return {BlockKind::Row, 0, "(1,) per row (rules file)"};
  if (dims == std::set<int>{0}) return {BlockKind::Column, 0, "(0,) per column (rules file)"};
  return {BlockKind::Whole, 0, "(0, 1) one block (rules file)"};
}

// Decides every segment of every tensor from a complete rules file.
void apply_slim_rules_file(const SlimRules& file, const ParamTable& params,
                           std::vector<TensorPartition>& tensors) {
  std::set<std::string> used, fused_names;
  std::vector<std::string> missing;
  for (TensorPartition& t : tensors) {
    const ParamInfo& p = params.params[t.param_index];
    if (t.segments.size() > 1) fused_names.insert(t.tensor);
    for (PartitionSegment& s : t.segments) {
      const std::string key = slim_rules_key(t.tensor, t.segments.size(), s.what);
      const auto it = file.rules.find(key);
      if (it == file.rules.end()) {
        missing.push_back(key);
        continue;
      }
      used.insert(key);
      const Choice c = slim_file_choice(file, key, it->second, int(p.shape.size()));
      s.kind = c.kind;
      s.head_dim = c.head_dim;
      s.rule = c.rule;
    }
  }
  for (const auto& [key, value] : file.rules) {
    if (used.count(key)) continue;
    if (fused_names.count(key))
      throw UsageError(cat("SlimAdam rules file '", file.path, "', key '", key,
                           "': this tensor is fused; give one rule per segment: '", key, "/q', '",
                           key, "/k', '", key, "/v'"));
    throw UsageError(cat("SlimAdam rules file '", file.path, "', key '", key,
                         "': no tensor of this model has that name (keys are tensor names, or "
                         "name/q, name/k, name/v for the fused qkv weight)"));
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 8) list += cat(", ... (", missing.size() - 8, " more)");
    throw UsageError(cat("SlimAdam rules file '", file.path, "' has no rule for ", missing.size(),
                         " tensor(s) of this model: ", list,
                         ". A rules file must be complete; write null for a full v"));
  }
}

std::string shape_text(int64_t rows, int64_t cols, int ndim) {
  return ndim == 1 ? std::to_string(rows) : cat(rows, "x", cols);
}

std::string blocks_text(const PartitionSegment& s, int64_t cols) {
  const int64_t n = block_count(s.geometry(cols));
  switch (s.kind) {
    case BlockKind::Element: return cat(with_thousands(n), " elements");
    case BlockKind::Row: return cat(with_thousands(n), " rows");
    case BlockKind::Head: return cat(n, " heads of ", s.head_dim, " rows");
    case BlockKind::Column:
      return s.real_rows < s.rows() ? cat(with_thousands(n), " columns over ", s.real_rows, " rows")
                                    : cat(with_thousands(n), " columns");
    case BlockKind::Whole: return "1 (whole)";
  }
  return "?";
}

}  // namespace

const char* block_kind_name(BlockKind kind) {
  switch (kind) {
    case BlockKind::Element: return "element";
    case BlockKind::Row: return "row";
    case BlockKind::Head: return "head";
    case BlockKind::Column: return "column";
    case BlockKind::Whole: return "whole";
  }
  return "?";
}

BlockGeometry PartitionSegment::geometry(int64_t cols) const {
  BlockGeometry g;
  g.kind = kind;
  g.rows = rows();
  g.real_rows = real_rows;
  g.cols = cols;
  g.head_dim = head_dim;
  return g;
}

bool TensorPartition::all_element() const {
  for (const auto& s : segments)
    if (s.kind != BlockKind::Element) return false;
  return true;
}

const TensorPartition& PartitionTable::find(const std::string& tensor) const {
  for (const auto& t : tensors)
    if (t.tensor == tensor) return t;
  throw Error(cat("no tensor named '", tensor, "' in the ", optimizer, " partition"));
}

std::string with_thousands(int64_t n) {
  const std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

PartitionTable build_partition(const std::string& optimizer, const ParamTable& params,
                               const ModelConfig& model, const PartitionOptions& options) {
  if (optimizer != "adamw" && optimizer != "adam_mini" && optimizer != "slim_adam")
    throw UsageError(cat("optimizer.kind '", optimizer,
                         "' is unknown; use \"adamw\", \"adam_mini\" or \"slim_adam\""));
  if (optimizer != "adam_mini" &&
      (options.adam_mini_single_block_v || options.adam_mini_per_position_wpe))
    throw UsageError(cat("the Adam-mini options (single-block v, per-position wpe) only apply to "
                         "optimizer.kind \"adam_mini\", not \"", optimizer, "\""));
  if (optimizer != "slim_adam" && !options.slim_rules_path.empty())
    throw UsageError(cat("a SlimAdam rules file ('", options.slim_rules_path,
                         "') only applies to optimizer.kind \"slim_adam\", not \"", optimizer, "\""));

  PartitionTable table;
  table.optimizer = optimizer;
  for (size_t i = 0; i < params.params.size(); ++i) {
    const ParamInfo& p = params.params[i];
    SLIM_CHECK(p.shape.size() == 1 || p.shape.size() == 2, p.name, ": only 1-D and 2-D tensors are partitioned");
    TensorPartition t;
    t.tensor = p.name;
    t.param_index = i;
    t.ndim = int(p.shape.size());
    t.rows = p.shape[0];
    t.cols = p.shape.size() == 2 ? p.shape[1] : 1;
    t.segments = base_segments(p, t.rows);
    for (PartitionSegment& s : t.segments) {
      Choice c{BlockKind::Element, 0, "per element (AdamW)"};
      if (optimizer == "adam_mini") c = adam_mini_choice(p, s, model, options);
      else if (optimizer == "slim_adam") c = slim_default_choice(p, s);
      s.kind = c.kind;
      s.head_dim = c.head_dim;
      s.rule = c.rule;
    }
    table.tensors.push_back(std::move(t));
  }
  if (optimizer == "slim_adam" && !options.slim_rules_path.empty())
    apply_slim_rules_file(load_slim_rules(options.slim_rules_path), params, table.tensors);

  for (TensorPartition& t : table.tensors) {
    t.v_offset = table.total_v;
    t.v_entries = 0;
    for (PartitionSegment& s : t.segments) {
      s.v_offset = t.v_entries;
      s.v_entries = block_count(s.geometry(t.cols));
      t.v_entries += s.v_entries;
    }
    table.total_v += t.v_entries;
  }
  return table;
}

std::string slim_rules_to_json(const PartitionTable& table) {
  std::string out = cat("{\n  \"format\": \"", kSlimRulesFormat, "\",\n  \"version\": ", kSlimRulesVersion,
                        ",\n  \"rules\": {");
  bool first = true;
  for (const TensorPartition& t : table.tensors) {
    const bool one_dim = t.ndim == 1;
    for (const PartitionSegment& s : t.segments) {
      const std::string key = slim_rules_key(t.tensor, t.segments.size(), s.what);
      // Row or Head blocks of one row on a 1-D tensor are single elements: null.
      const bool single_rows = s.kind == BlockKind::Row || (s.kind == BlockKind::Head && s.head_dim == 1);
      std::string rule;
      if (s.kind == BlockKind::Element || (one_dim && single_rows)) rule = "null";
      else if (single_rows) rule = "[1]";
      else if (s.kind == BlockKind::Column) rule = "[0]";  // on a 1-D tensor also the whole tensor
      else if (s.kind == BlockKind::Whole) rule = one_dim ? "[0]" : "[0, 1]";
      else
        throw Error(cat("segment '", key, "' has ", block_kind_name(s.kind), " blocks of ",
                        s.head_dim, " rows, which a SlimAdam rules file cannot express"));
      out += cat(first ? "\n" : ",\n", "    ", nlohmann::json(key).dump(), ": ", rule);
      first = false;
    }
  }
  out += "\n  }\n}\n";
  return out;
}

std::string PartitionTable::format() const {
  // Column widths from the content, so that the table lines up for any model.
  size_t name_width = 6, shape_width = 5, rows_width = 4, blocks_width = 6;
  struct Line { std::string name, shape, rows, blocks, v, rule; };
  std::vector<Line> lines;
  int64_t total_params = 0;
  for (const TensorPartition& t : tensors) {
    total_params += t.rows * t.cols;
    for (size_t k = 0; k < t.segments.size(); ++k) {
      const PartitionSegment& s = t.segments[k];
      Line line;
      line.name = k == 0 ? t.tensor : "";
      line.shape = k == 0 ? shape_text(t.rows, t.cols, t.ndim) : "";
      line.rows = cat(s.what.empty() || t.segments.size() == 1 ? "" : s.what + " ", "[", s.row_begin,
                      ",", s.row_end, ")");
      if (s.real_rows < s.rows()) line.rows += cat(" (", s.real_rows, " real)");
      line.blocks = blocks_text(s, t.cols);
      line.v = with_thousands(s.v_entries);
      line.rule = s.rule;
      name_width = std::max(name_width, line.name.size());
      shape_width = std::max(shape_width, line.shape.size());
      rows_width = std::max(rows_width, line.rows.size());
      blocks_width = std::max(blocks_width, line.blocks.size());
      lines.push_back(std::move(line));
    }
  }
  std::ostringstream os;
  os << "v partition (" << optimizer << "), " << tensors.size() << " tensors\n";
  auto row = [&](const std::string& a, const std::string& b, const std::string& c,
                 const std::string& d, const std::string& e, const std::string& f) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%12s", e.c_str());
    os << a << std::string(name_width - a.size() + 2, ' ') << b
       << std::string(shape_width - b.size() + 2, ' ') << c << std::string(rows_width - c.size() + 2, ' ')
       << d << std::string(blocks_width - d.size(), ' ') << buffer << "  " << f << "\n";
  };
  row("tensor", "shape", "rows", "blocks", "v entries", "rule");
  for (const Line& l : lines) row(l.name, l.shape, l.rows, l.blocks, l.v, l.rule);
  char percent[32];
  std::snprintf(percent, sizeof percent, "%.4f%%",
                total_params ? 100.0 * double(total_v) / double(total_params) : 0.0);
  os << "parameters: " << with_thousands(total_params) << ", v per parameter: " << percent << "\n";
  os << "v entries: " << with_thousands(total_v) << "\n";
  return os.str();
}

std::string slim_rules_key(const std::string& tensor, size_t n_segments, const std::string& segment) {
  return n_segments == 1 ? tensor : tensor + "/" + segment;
}

}  // namespace slim
