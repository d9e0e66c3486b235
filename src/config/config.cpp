// Reading, checking and writing the run configuration (see config.h for the schema).
//
// The schema is written once, as a table of (key, pointer to the struct field) per section
// (config_schema below). Reading, "--set" path checking, "did you mean" suggestions and writing
// all walk that table, so a field added to a struct and to the table is parsed, validated for
// type, suggested and serialized without touching anything else; its range check goes in
// validate_*.
//
// The order of work: parse the text (rejecting duplicate keys, which nlohmann would silently
// collapse) -> apply the --set overrides to the JSON document -> read every key into a default
// RunConfig, checking names and types -> fill the model defaults that depend on other fields ->
// check ranges and cross-field rules -> derive training.grad_accum. The first problem found is
// thrown as a UsageError naming the source, the JSON path, the value and what is allowed.
#include "config/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <variant>

#include "util/error.h"

namespace slim {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// GPT-2's 50257-token vocabulary becomes 50304 rows of wte, as in llm.c: a multiple of 128 keeps
// the classifier matmul on fast tensor-core tiles; the extra rows are never a target.
constexpr int kVocabPaddingMultiple = 128;

// ---------------------------------------------------------------------------------------------
// The schema: every settable key, in the order run_config_to_json writes them.

using FieldTarget = std::variant<int*, int64_t*, uint64_t*, float*, bool*, std::string*>;

struct Field {
  std::string key;
  FieldTarget target;
};

struct Section {
  std::string name;  // "" = the top level of the document
  std::vector<Field> fields;
};

std::vector<Field> model_fields(ModelConfig& m) {
  return {{"family", &m.family},
          {"n_layer", &m.n_layer},
          {"n_head", &m.n_head},
          {"n_kv_head", &m.n_kv_head},
          {"n_embd", &m.n_embd},
          {"vocab_size", &m.vocab_size},
          {"padded_vocab_size", &m.padded_vocab_size},
          {"max_seq_len", &m.max_seq_len},
          {"ffn_hidden", &m.ffn_hidden},
          {"tied_embeddings", &m.tied_embeddings},
          {"bias", &m.bias},
          {"norm", &m.norm},
          {"position", &m.position},
          {"mlp", &m.mlp},
          {"norm_eps", &m.norm_eps},
          {"rope_theta", &m.rope_theta},
          {"init_std", &m.init_std}};
}

// Binds the schema to one RunConfig: the pointers point into C.
std::vector<Section> config_schema(RunConfig& c) {
  return {
      {"",
       {{"backend", &c.backend},
        {"precision", &c.precision},
        {"seed", &c.seed},
        {"out_dir", &c.out_dir}}},
      {"model", model_fields(c.model)},
      {"data",
       {{"train", &c.data.train},
        {"val", &c.data.val},
        {"tokenizer_dir", &c.data.tokenizer_dir},
        {"shuffle", &c.data.shuffle}}},
      {"optimizer",
       {{"kind", &c.optimizer.kind},
        {"accumulation", &c.optimizer.accumulation},
        {"lr", &c.optimizer.lr},
        {"beta1", &c.optimizer.beta1},
        {"beta2", &c.optimizer.beta2},
        {"eps", &c.optimizer.eps},
        {"weight_decay", &c.optimizer.weight_decay},
        {"adam_mini_single_block_v", &c.optimizer.adam_mini_single_block_v},
        {"adam_mini_per_position_wpe", &c.optimizer.adam_mini_per_position_wpe},
        {"slim_rules", &c.optimizer.slim_rules},
        {"adama_clip", &c.optimizer.adama_clip},
        {"update_clip", &c.optimizer.update_clip},
        {"adama_scale", &c.optimizer.adama_scale},
        {"master_weights", &c.optimizer.master_weights},
        {"m_dtype", &c.optimizer.m_dtype}}},
      {"training",
       {{"steps", &c.training.steps},
        {"micro_batch", &c.training.micro_batch},
        {"seq_len", &c.training.seq_len},
        {"total_batch_tokens", &c.training.total_batch_tokens},
        {"schedule", &c.training.schedule},
        {"warmup_steps", &c.training.warmup_steps},
        {"min_lr_fraction", &c.training.min_lr_fraction},
        {"wsd_decay_fraction", &c.training.wsd_decay_fraction},
        {"grad_clip", &c.training.grad_clip},
        {"recompute", &c.training.recompute}}},
      {"eval",
       {{"every", &c.eval.every},
        {"batches", &c.eval.batches},
        {"sample_every", &c.eval.sample_every},
        {"sample_tokens", &c.eval.sample_tokens},
        {"sample_prompt", &c.eval.sample_prompt}}},
      {"checkpoint", {{"every", &c.checkpoint.every}, {"keep", &c.checkpoint.keep}}},
      {"logging", {{"every", &c.logging.every}}},
  };
}

// Top-level keys that are not settings: a free-text comment, and run_config_to_json's record of
// the derived values (recomputed on every load, so its content is never read).
constexpr const char* kCommentKey = "_comment";
constexpr const char* kDerivedKey = "_derived";

std::string join_path(const std::string& section, const std::string& key) {
  return section.empty() ? key : section + "." + key;
}

const Section* find_section(const std::vector<Section>& schema, const std::string& name) {
  for (const Section& s : schema)
    if (!s.name.empty() && s.name == name) return &s;
  return nullptr;
}

const Field* find_field(const Section& section, const std::string& key) {
  for (const Field& f : section.fields)
    if (f.key == key) return &f;
  return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Formatting values for messages and output.

// The shortest decimal that reads back as the same float: 6e-4f prints as 0.0006, not as the
// 0.0006000000284984708 that widening to double would show.
std::string float_text(float value) {
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

double float_for_json(float value) { return std::strtod(float_text(value).c_str(), nullptr); }

std::string quoted(const std::string& s) { return json(s).dump(); }

// "a string", "an integer", ...: how a JSON value's type is named in messages.
std::string json_type_phrase(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a non-integer number";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    default: return "an unsupported JSON value";
  }
}

std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

// ---------------------------------------------------------------------------------------------
// "Did you mean": the closest valid key by edit distance.

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                        std::tolower(static_cast<unsigned char>(b[j - 1]));
      current[j] =
          std::min({previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (same ? 0 : 1)});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

// The candidate nearest to WORD, or "" when none is near enough to be a plausible typo (short
// keys tolerate one edit, longer ones about a third of their length).
std::string closest(const std::string& word, const std::vector<std::string>& candidates) {
  const size_t allowed = word.size() <= 3 ? 1 : std::max<size_t>(2, word.size() / 3);
  std::string best;
  size_t best_distance = allowed + 1;
  for (const std::string& candidate : candidates) {
    const size_t d = edit_distance(word, candidate);
    if (d < best_distance) best = candidate, best_distance = d;
  }
  return best;
}

std::vector<std::string> keys_of(const Section& section) {
  std::vector<std::string> keys;
  for (const Field& f : section.fields) keys.push_back(f.key);
  return keys;
}

// The message for an unknown key KEY inside SECTION ("" = top level).
std::string unknown_key_message(const std::vector<Section>& schema, const std::string& section,
                                const std::string& key) {
  const std::string path = join_path(section, key);
  std::string msg = cat("unknown key '", path, "'");
  // A valid key placed in the wrong section (training.lr) is the likeliest mistake: name its
  // real home before trying spelling corrections.
  for (const Section& s : schema)
    if (s.name != section && find_field(s, key))
      return cat(msg, "; did you mean '", join_path(s.name, key), "'?");

  std::vector<std::string> candidates;
  if (section.empty()) {
    for (const Section& s : schema)
      for (const std::string& k : s.name.empty() ? keys_of(s) : std::vector<std::string>{s.name})
        candidates.push_back(k);
  } else {
    candidates = keys_of(*find_section(schema, section));
  }
  const std::string suggestion = closest(key, candidates);
  if (!suggestion.empty())
    return cat(msg, "; did you mean '", join_path(section, suggestion), "'?");
  if (section.empty())
    return cat(msg, "; the top level holds the sections and keys: ", join_list(candidates),
               " (and \"", kCommentKey, "\")");
  return cat(msg, "; the keys of '", section, "' are: ", join_list(candidates));
}

std::string derived_grad_accum_message() {
  return "training.grad_accum is derived, not set: it is training.total_batch_tokens / "
         "(training.micro_batch * training.seq_len * world size). Set "
         "training.total_batch_tokens instead (0 = no accumulation)";
}

// ---------------------------------------------------------------------------------------------
// Error reporting: every message starts with the source (file name) and, when the offending value
// came from the command line, ends with the --set argument that put it there.

class Reporter {
 public:
  explicit Reporter(std::string source) : source_(std::move(source)) {}

  void note_override(const std::string& path, const std::string& argument) {
    override_of_path_[path] = argument;
  }

  [[noreturn]] void fail(const std::string& path, const std::string& message) const {
    std::string text = cat(source_, ": ", message);
    auto it = override_of_path_.find(path);
    if (it != override_of_path_.end()) text += cat(" (from --set '", it->second, "')");
    throw UsageError(text);
  }

  [[noreturn]] void fail_override(const std::string& argument, const std::string& message) const {
    throw UsageError(cat(source_, ": --set '", argument, "': ", message));
  }

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::map<std::string, std::string> override_of_path_;
};

// ---------------------------------------------------------------------------------------------
// Parsing text.

json parse_json_text(const std::string& text, const Reporter& reporter) {
  // nlohmann keeps the last of two equal keys without a word; in a config that hides an edit.
  // The parser callback sees every key, so track the keys of each open object.
  struct OpenObject {
    std::string path;
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<OpenObject> open_objects;
  std::string duplicate_path;
  auto watch_keys = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: {
        std::string path;
        if (!open_objects.empty())
          path = join_path(open_objects.back().path, open_objects.back().last_key);
        open_objects.push_back({path, {}, {}});
        break;
      }
      case json::parse_event_t::key: {
        OpenObject& object = open_objects.back();
        object.last_key = parsed.get<std::string>();
        if (!object.keys.insert(object.last_key).second && duplicate_path.empty())
          duplicate_path = join_path(object.path, object.last_key);
        break;
      }
      case json::parse_event_t::object_end: open_objects.pop_back(); break;
      default: break;
    }
    return true;
  };

  json document;
  try {
    document = json::parse(text, watch_keys);
  } catch (const json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line L, column C: ...";
    // the bracketed id means nothing to a user.
    std::string detail = e.what();
    if (auto close = detail.find("] ");
        detail.rfind("[json.exception", 0) == 0 && close != std::string::npos)
      detail = detail.substr(close + 2);
    throw UsageError(cat(reporter.source(), ": not valid JSON: ", detail));
  }
  if (!duplicate_path.empty())
    throw UsageError(cat(reporter.source(), ": key '", duplicate_path,
                         "' appears twice; keep one (JSON parsers disagree on which one wins)"));
  return document;
}

// ---------------------------------------------------------------------------------------------
// --set overrides, applied to the parsed document before it is read.

void apply_override(json& document, const std::string& argument, const std::vector<Section>& schema,
                    Reporter& reporter) {
  const size_t equals = argument.find('=');
  if (equals == std::string::npos || equals == 0)
    reporter.fail_override(argument,
                           "expected the form KEY=VALUE where KEY is 'section.key' or a top-level "
                           "key, e.g. --set training.steps=500 or --set out_dir=runs/x");
  const std::string path = argument.substr(0, equals);
  const std::string raw_value = argument.substr(equals + 1);

  // Resolve PATH against the schema: either one field (section.key / top-level key) or a whole
  // section, whose JSON object value is merged key by key.
  std::string section_name, key;
  const size_t dot = path.find('.');
  if (dot == std::string::npos) {
    if (find_section(schema, path))
      section_name = path;
    else
      key = path;
  } else {
    section_name = path.substr(0, dot);
    key = path.substr(dot + 1);
    if (!find_section(schema, section_name)) {
      // Suggest the nearest section, and within it the nearest key (trainig.micro_bach ->
      // training.micro_batch).
      std::vector<std::string> names;
      for (const Section& s : schema)
        if (!s.name.empty()) names.push_back(s.name);
      const std::string guess = closest(section_name, names);
      if (guess.empty())
        reporter.fail_override(argument,
                               cat("unknown key '", path, "': '", section_name,
                                   "' is not a section; the sections are: ", join_list(names)));
      const Section& guessed = *find_section(schema, guess);
      std::string guessed_key = find_field(guessed, key) ? key : closest(key, keys_of(guessed));
      reporter.fail_override(argument,
                             cat("unknown key '", path, "'; did you mean '",
                                 join_path(guess, guessed_key.empty() ? key : guessed_key), "'?"));
    }
    if (key.find('.') != std::string::npos)
      reporter.fail_override(argument,
                             cat("unknown key '", path,
                                 "': keys are 'section.key' or a top-level key, one dot at most"));
  }

  const Field* field = nullptr;
  if (!key.empty()) {
    const Section& home =
        section_name.empty() ? schema.front() : *find_section(schema, section_name);
    field = find_field(home, key);
    if (section_name == "training" && key == "grad_accum")
      reporter.fail_override(argument, derived_grad_accum_message());
    if (!field && !(section_name.empty() && key == kCommentKey))
      reporter.fail_override(argument, unknown_key_message(schema, section_name, key));
  }

  // The value is JSON when it parses as JSON; otherwise, and always for string fields unless it is
  // a quoted JSON string, it is the text itself, so --set out_dir=runs/x needs no shell quoting.
  json value;
  bool parsed_as_json = true;
  try {
    value = json::parse(raw_value);
  } catch (const json::parse_error&) {
    parsed_as_json = false;
  }
  const bool string_field = field && std::holds_alternative<std::string*>(field->target);
  if (!parsed_as_json || (string_field && !value.is_string())) value = raw_value;

  if (key.empty()) {  // a whole section
    if (!value.is_object())
      reporter.fail_override(
          argument, cat("'", section_name, "' is a section: set one key (--set ", section_name,
                        ".KEY=VALUE) or give a JSON object, e.g. --set ", section_name,
                        "='{\"KEY\": VALUE}'"));
    json& target = document[section_name];
    if (!target.is_null() && !target.is_object())
      reporter.fail(section_name, cat("'", section_name, "' must be an object (a section), got ",
                                      target.dump(), " (", json_type_phrase(target), ")"));
    if (target.is_null()) target = json::object();
    for (auto& [member, member_value] : value.items()) {
      target[member] = member_value;
      reporter.note_override(join_path(section_name, member), argument);
    }
    return;
  }
  if (section_name.empty()) {
    document[key] = value;
  } else {
    json& target = document[section_name];
    if (!target.is_null() && !target.is_object())
      reporter.fail(section_name, cat("'", section_name, "' must be an object (a section), got ",
                                      target.dump(), " (", json_type_phrase(target), ")"));
    target[key] = value;
  }
  reporter.note_override(path, argument);
}

// ---------------------------------------------------------------------------------------------
// Reading the document into the structs (names and types; ranges come later).

void read_field(const json& value, const FieldTarget& target, const std::string& path,
                const Reporter& reporter) {
  auto wrong_type = [&](const char* expected) {
    reporter.fail(path, cat(path, ": expected ", expected, ", got ", value.dump(), " (",
                            json_type_phrase(value), ")"));
  };
  auto out_of_range = [&](const std::string& allowed) {
    reporter.fail(path, cat(path, " = ", value.dump(), " is out of range: ", allowed));
  };
  std::visit(
      [&](auto* field) {
        using T = std::remove_pointer_t<decltype(field)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!value.is_string()) wrong_type("a string");
          *field = value.get<std::string>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!value.is_boolean()) wrong_type("a boolean (true or false, unquoted)");
          *field = value.get<bool>();
        } else if constexpr (std::is_same_v<T, float>) {
          if (!value.is_number()) wrong_type("a number");
          const double d = value.get<double>();
          if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max())
            out_of_range("it must fit in a 32-bit float");
          *field = static_cast<float>(d);
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          if (!value.is_number_integer()) wrong_type("a non-negative integer");
          if (!value.is_number_unsigned()) out_of_range("it must be >= 0");
          *field = value.get<uint64_t>();
        } else {  // int, int64_t
          if (!value.is_number_integer()) wrong_type("an integer");
          if (value.is_number_unsigned()) {
            if (value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max()))
              out_of_range(cat("it must be at most ", std::numeric_limits<T>::max()));
          } else {
            const int64_t v = value.get<int64_t>();
            if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max())
              out_of_range(cat("it must be between ", std::numeric_limits<T>::min(), " and ",
                               std::numeric_limits<T>::max()));
          }
          *field = value.get<T>();
        }
      },
      target);
}

// Reads one section object into its fields. GIVEN collects the keys present (the model defaults
// that depend on other fields apply only to keys the user left out).
void read_section(const json& object, const Section& section, const std::vector<Section>& schema,
                  std::set<std::string>& given, const Reporter& reporter) {
  if (!object.is_object())
    reporter.fail(section.name, cat("'", section.name, "' must be an object (a section), got ",
                                    object.dump(), " (", json_type_phrase(object), ")"));
  for (auto& [key, value] : object.items()) {
    const std::string path = join_path(section.name, key);
    if (section.name == "training" && key == "grad_accum")
      reporter.fail(path, derived_grad_accum_message());
    const Field* field = find_field(section, key);
    if (!field) reporter.fail(path, unknown_key_message(schema, section.name, key));
    read_field(value, field->target, path, reporter);
    given.insert(path);
  }
}

// Reads a whole run-config document (a JSON object) into CONFIG, which holds the defaults on entry.
void read_document(const json& document, RunConfig& config, std::set<std::string>& given,
                   const Reporter& reporter) {
  const std::vector<Section> schema = config_schema(config);
  for (auto& [key, value] : document.items()) {
    if (key == kCommentKey) {
      if (!value.is_string())
        reporter.fail(key, cat(key, ": expected a string, got ", value.dump(), " (",
                               json_type_phrase(value), ")"));
      continue;
    }
    if (key == kDerivedKey) {
      if (!value.is_object())
        reporter.fail(key, cat(key, ": expected an object (as written by slimtrain), got ",
                               value.dump(), " (", json_type_phrase(value), ")"));
      continue;
    }
    if (!key.empty() && key[0] == '_')
      reporter.fail(key, cat("unknown key '", key, "': the only keys starting with '_' are \"",
                             kCommentKey, "\" (a free-text string) and \"", kDerivedKey,
                             "\" (written by slimtrain, ignored)"));
    if (const Section* section = find_section(schema, key)) {
      read_section(value, *section, schema, given, reporter);
    } else if (const Field* field = find_field(schema.front(), key)) {
      read_field(value, field->target, key, reporter);
      given.insert(key);
    } else {
      reporter.fail(key, unknown_key_message(schema, "", key));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Range and cross-field checks.

class Checker {
 public:
  explicit Checker(const Reporter& reporter) : reporter_(reporter) {}

  void positive(const std::string& path, int64_t value) const {
    if (value <= 0)
      fail(path, cat(path, " = ", value, " is out of range: it must be a positive integer"));
  }
  void non_negative(const std::string& path, int64_t value, const char* zero_means) const {
    if (value < 0)
      fail(path,
           cat(path, " = ", value, " is out of range: it must be >= 0 (0 = ", zero_means, ")"));
  }
  void at_least(const std::string& path, int64_t value, int64_t minimum, const char* why) const {
    if (value < minimum)
      fail(path,
           cat(path, " = ", value, " is out of range: it must be >= ", minimum, " (", why, ")"));
  }
  void positive_float(const std::string& path, float value) const {
    if (!(value > 0.0f))
      fail(path, cat(path, " = ", float_text(value), " is out of range: it must be > 0"));
  }
  void non_negative_float(const std::string& path, float value, const char* zero_means) const {
    if (!(value >= 0.0f))
      fail(path,
           cat(path, " = ", float_text(value), " is out of range: it must be >= 0", zero_means));
  }
  // [low, high] with high_open = [low, high).
  void in_interval(const std::string& path, float value, float low, float high,
                   bool high_open) const {
    const bool ok = value >= low && (high_open ? value < high : value <= high);
    if (!ok)
      fail(path, cat(path, " = ", float_text(value), " is out of range: it must be in [",
                     float_text(low), ", ", float_text(high), high_open ? ")" : "]"));
  }
  // VALUE must be one of AVAILABLE; a value of PLANNED is known but not implemented yet, which
  // gets its own message (PLANNED_NOTE says what it waits for).
  void one_of(const std::string& path, const std::string& value,
              const std::vector<std::string>& available,
              const std::vector<std::string>& planned = {},
              const std::string& planned_note = "") const {
    if (std::find(available.begin(), available.end(), value) != available.end()) return;
    if (std::find(planned.begin(), planned.end(), value) != planned.end())
      fail(path, cat(path, " = ", quoted(value), ": ", planned_note,
                     "; available now: ", join_list(available)));
    std::vector<std::string> all = available;
    all.insert(all.end(), planned.begin(), planned.end());
    std::string message = cat(path, " = ", quoted(value), " is not one of: ", join_list(all));
    if (!planned.empty())
      message += cat(" (", join_list(planned), " planned, not yet implemented)");
    if (const std::string guess = closest(value, all); !guess.empty())
      message += cat("; did you mean ", quoted(guess), "?");
    fail(path, message);
  }
  [[noreturn]] void fail(const std::string& path, const std::string& message) const {
    reporter_.fail(path, message);
  }

 private:
  const Reporter& reporter_;
};

// The model defaults that follow other fields, for keys the config left out.
void complete_model_defaults(ModelConfig& m, const std::set<std::string>& given,
                             const Checker& check) {
  if (!given.count("model.n_kv_head")) m.n_kv_head = m.n_head;  // no grouped-query attention
  if (!given.count("model.ffn_hidden")) {
    const int64_t hidden = 4 * int64_t(m.n_embd);  // GPT-2's MLP width
    if (hidden > std::numeric_limits<int>::max())
      check.fail("model.ffn_hidden",
                 cat("model.ffn_hidden defaults to 4*n_embd = ", hidden,
                     ", which does not fit in 32 bits; model.n_embd is too large"));
    m.ffn_hidden = int(hidden);
  }
  if (!given.count("model.padded_vocab_size") && m.vocab_size > 0) {
    const int64_t padded = (int64_t(m.vocab_size) + kVocabPaddingMultiple - 1) /
                           kVocabPaddingMultiple * kVocabPaddingMultiple;
    m.padded_vocab_size = int(std::min<int64_t>(padded, std::numeric_limits<int>::max()));
  }
}

void validate_model(const ModelConfig& m, const Checker& check) {
  const std::string llama_planned =
      " comes with the Llama family, which is planned but not yet implemented";
  check.one_of("model.family", m.family, {"gpt2"}, {"llama"},
               "the Llama family is planned but not yet implemented");
  check.one_of("model.norm", m.norm, {"layernorm"}, {"rmsnorm"}, "RMSNorm" + llama_planned);
  check.one_of("model.position", m.position, {"learned"}, {"rope"}, "RoPE" + llama_planned);
  check.one_of("model.mlp", m.mlp, {"gelu"}, {"swiglu"}, "SwiGLU" + llama_planned);
  check.positive("model.n_layer", m.n_layer);
  check.positive("model.n_head", m.n_head);
  check.positive("model.n_kv_head", m.n_kv_head);
  check.positive("model.n_embd", m.n_embd);
  check.positive("model.vocab_size", m.vocab_size);
  check.positive("model.padded_vocab_size", m.padded_vocab_size);
  check.positive("model.max_seq_len", m.max_seq_len);
  check.positive("model.ffn_hidden", m.ffn_hidden);
  if (m.n_embd % m.n_head != 0)
    check.fail("model.n_embd",
               cat("model.n_embd = ", m.n_embd, " must be divisible by model.n_head = ", m.n_head,
                   " (each head gets n_embd / n_head channels)"));
  if (m.n_head % m.n_kv_head != 0)
    check.fail("model.n_kv_head",
               cat("model.n_kv_head = ", m.n_kv_head, " must divide model.n_head = ", m.n_head,
                   " (each key/value head serves n_head / n_kv_head query heads)"));
  if (m.padded_vocab_size < m.vocab_size)
    check.fail("model.padded_vocab_size",
               cat("model.padded_vocab_size = ", m.padded_vocab_size,
                   " must be >= model.vocab_size = ", m.vocab_size,
                   " (leave it out to get vocab_size rounded up to a multiple of ",
                   kVocabPaddingMultiple, ")"));
  // GPT-2 always has full multi-head attention, biases and a tied head; the other choices are
  // the Llama family's, so accepting them now would silently train a different model.
  if (m.family == "gpt2") {
    if (m.n_kv_head != m.n_head)
      check.fail("model.n_kv_head",
                 cat("model.n_kv_head = ", m.n_kv_head, " differs from model.n_head = ", m.n_head,
                     ": grouped-query attention comes with the Llama family, "
                     "which is planned but not yet implemented; leave n_kv_head out"));
    if (!m.bias)
      check.fail("model.bias",
                 "model.bias = false: GPT-2 has biases; bias-free layers come with the Llama "
                 "family, which is planned but not yet implemented");
    if (!m.tied_embeddings)
      check.fail(
          "model.tied_embeddings",
          "model.tied_embeddings = false: GPT-2 ties its output head to wte; an untied head comes "
          "with the Llama family, which is planned but not yet implemented");
  }
  check.positive_float("model.norm_eps", m.norm_eps);
  check.positive_float("model.rope_theta", m.rope_theta);
  check.positive_float("model.init_std", m.init_std);
}

void validate_run(const RunConfig& c, const Checker& check) {
  check.one_of("backend", c.backend, {"cpu", "cuda", "auto"});
  check.one_of("precision", c.precision, {"fp32", "bf16", "auto"});
  if (c.out_dir.empty())
    check.fail("out_dir", "out_dir is empty: give the directory for checkpoints and logs");

  if (c.data.train.empty())
    check.fail(
        "data.train",
        "data.train is empty: give a glob of training shards, e.g. \"data/kjv/kjv_train_*.bin\"");

  const OptimizerConfig& o = c.optimizer;
  check.one_of("optimizer.kind", o.kind, {"adamw", "adam_mini", "slim_adam"});
  if (o.kind != "adam_mini" && (o.adam_mini_single_block_v || o.adam_mini_per_position_wpe))
    check.fail("optimizer.kind",
               cat("optimizer.adam_mini_* options apply to optimizer.kind \"adam_mini\", not \"",
                   o.kind, "\""));
  if (o.kind != "slim_adam" && !o.slim_rules.empty())
    check.fail("optimizer.slim_rules",
               cat("optimizer.slim_rules applies to optimizer.kind \"slim_adam\", not \"", o.kind,
                   "\""));
  check.one_of("optimizer.accumulation", o.accumulation, {"grads", "adama"});
  check.one_of("optimizer.adama_clip", o.adama_clip, {"lagged", "update", "none"});
  check.one_of("optimizer.m_dtype", o.m_dtype, {"fp32", "bf16"});
  check.positive_float("optimizer.update_clip", o.update_clip);
  check.positive_float("optimizer.adama_scale", o.adama_scale);
  check.positive_float("optimizer.lr", o.lr);
  check.in_interval("optimizer.beta1", o.beta1, 0.0f, 1.0f, true);
  check.in_interval("optimizer.beta2", o.beta2, 0.0f, 1.0f, true);
  check.positive_float("optimizer.eps", o.eps);
  check.non_negative_float("optimizer.weight_decay", o.weight_decay, " (0 = no weight decay)");

  const TrainingConfig& t = c.training;
  check.positive("training.steps", t.steps);
  check.positive("training.micro_batch", t.micro_batch);
  check.positive("training.seq_len", t.seq_len);
  if (t.seq_len > c.model.max_seq_len)
    check.fail("training.seq_len",
               cat("training.seq_len = ", t.seq_len,
                   " is out of range: it must be <= model.max_seq_len = ", c.model.max_seq_len,
                   " (the model has positions for that many tokens)"));
  check.non_negative("training.total_batch_tokens", t.total_batch_tokens,
                     "micro_batch*seq_len*world, no accumulation");
  check.one_of("training.schedule", t.schedule, {"cosine", "linear", "wsd", "constant"});
  check.non_negative("training.warmup_steps", t.warmup_steps, "no warmup");
  if (t.warmup_steps > t.steps)
    check.fail("training.warmup_steps",
               cat("training.warmup_steps = ", t.warmup_steps,
                   " is out of range: it must be <= training.steps = ", t.steps));
  check.in_interval("training.min_lr_fraction", t.min_lr_fraction, 0.0f, 1.0f, false);
  check.in_interval("training.wsd_decay_fraction", t.wsd_decay_fraction, 0.0f, 1.0f, false);
  check.non_negative_float("training.grad_clip", t.grad_clip, " (0 = no clipping)");
  if (t.recompute < 0 || t.recompute > 2)
    check.fail("training.recompute",
               cat("training.recompute = ", t.recompute,
                   " is out of range: use 0 (keep all activations), 1 (recompute GELU) or 2 "
                   "(recompute GELU and LayerNorm)"));

  check.non_negative("eval.every", c.eval.every, "never");
  check.non_negative("eval.batches", c.eval.batches, "the whole validation set");
  check.non_negative("eval.sample_every", c.eval.sample_every, "never");
  check.positive("eval.sample_tokens", c.eval.sample_tokens);
  // sample_tokens may exceed max_seq_len: sampling slides its context window.

  check.non_negative("checkpoint.every", c.checkpoint.every, "never");
  check.at_least("checkpoint.keep", c.checkpoint.keep, 1, "the newest N checkpoints are kept");
  check.positive("logging.every", c.logging.every);
}

// training.grad_accum = total_batch_tokens / (micro_batch * seq_len * world).
void derive_grad_accum(TrainingConfig& t, int world_size, const Checker& check) {
  const int64_t per_micro_step = int64_t(t.micro_batch) * t.seq_len * world_size;
  if (t.total_batch_tokens == 0) {
    t.grad_accum = 1;
    return;
  }
  const std::string product = cat("micro_batch*seq_len*world = ", t.micro_batch, "*", t.seq_len,
                                  "*", world_size, " = ", per_micro_step);
  if (t.total_batch_tokens % per_micro_step != 0) {
    const int64_t below = t.total_batch_tokens / per_micro_step * per_micro_step;
    const int64_t above = below + per_micro_step;
    std::string nearest =
        below > 0
            ? cat("nearest valid totals: ", below, " (", below / per_micro_step,
                  " micro-steps) and ", above, " (", above / per_micro_step, " micro-steps)")
            : cat("nearest valid total: ", above, " (1 micro-step), or 0 for no accumulation");
    check.fail("training.total_batch_tokens",
               cat("training.total_batch_tokens = ", t.total_batch_tokens,
                   " is not a multiple of the tokens per micro-step, ", product, "; ", nearest,
                   " (or change micro_batch / seq_len)"));
  }
  const int64_t accumulation = t.total_batch_tokens / per_micro_step;
  if (accumulation > std::numeric_limits<int>::max())
    check.fail("training.total_batch_tokens",
               cat("training.total_batch_tokens = ", t.total_batch_tokens, " means ", accumulation,
                   " micro-steps per step (", product, "), more than 32 bits hold"));
  t.grad_accum = int(accumulation);
}

// ---------------------------------------------------------------------------------------------
// Writing.

void write_field(ordered_json& object, const Field& field) {
  std::visit(
      [&](auto* value) {
        using T = std::remove_pointer_t<decltype(value)>;
        if constexpr (std::is_same_v<T, float>)
          object[field.key] = float_for_json(*value);
        else
          object[field.key] = *value;
      },
      field.target);
}

ordered_json model_to_ordered_json(ModelConfig model) {
  ordered_json object = ordered_json::object();
  for (const Field& f : model_fields(model)) write_field(object, f);
  return object;
}

}  // namespace

RunConfig parse_run_config(const std::string& json_text, const std::vector<std::string>& overrides,
                           int world_size, const std::string& source_name) {
  SLIM_CHECK(world_size >= 1, "world_size = ", world_size);
  Reporter reporter(source_name);
  json document = parse_json_text(json_text, reporter);
  if (!document.is_object())
    reporter.fail(
        "", cat("the top level must be a JSON object { ... }, got ", json_type_phrase(document)));

  RunConfig config;
  {
    const std::vector<Section> schema = config_schema(config);
    for (const std::string& argument : overrides)
      apply_override(document, argument, schema, reporter);
  }
  std::set<std::string> given;
  read_document(document, config, given, reporter);

  const Checker check(reporter);
  complete_model_defaults(config.model, given, check);
  validate_model(config.model, check);
  validate_run(config, check);
  derive_grad_accum(config.training, world_size, check);
  return config;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides,
                          int world_size) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw UsageError(cat("config file '", path,
                         "' does not exist (the configs/ directory of the source "
                         "tree has examples, e.g. configs/tiny.json)"));
  if (!std::filesystem::is_regular_file(path, ec))
    throw UsageError(cat("config file '", path, "' is not a regular file"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(cat("cannot open config file '", path, "': ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw UsageError(cat("cannot read config file '", path, "': ", std::strerror(errno)));
  return parse_run_config(text.str(), overrides, world_size, path);
}

std::string run_config_to_json(const RunConfig& config) {
  RunConfig copy = config;  // the schema binds non-const pointers; writing only reads them
  ordered_json document = ordered_json::object();
  for (const Section& section : config_schema(copy)) {
    if (section.name.empty()) {
      for (const Field& f : section.fields) write_field(document, f);
      continue;
    }
    ordered_json object = ordered_json::object();
    for (const Field& f : section.fields) write_field(object, f);
    document[section.name] = std::move(object);
  }
  document[kDerivedKey] = {{"training", {{"grad_accum", config.training.grad_accum}}}};
  return document.dump(2) + "\n";
}

std::string model_config_to_json(const ModelConfig& model) {
  return model_to_ordered_json(model).dump(2) + "\n";
}

ModelConfig model_config_from_json(const std::string& json_text, const std::string& source_name) {
  Reporter reporter(source_name);
  json object = parse_json_text(json_text, reporter);
  if (!object.is_object())
    reporter.fail("model", cat("a model config must be a JSON object { ... }, got ",
                               json_type_phrase(object)));
  RunConfig holder;  // the model section is read with the run config's schema and messages
  const std::vector<Section> schema = config_schema(holder);
  std::set<std::string> given;
  read_section(object, *find_section(schema, "model"), schema, given, reporter);
  const Checker check(reporter);
  complete_model_defaults(holder.model, given, check);
  validate_model(holder.model, check);
  return holder.model;
}

}  // namespace slim
