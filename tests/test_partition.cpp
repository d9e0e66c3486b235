// The per-tensor v partition: the v-entry counts of OPTIMIZERS.md §4 for GPT-2 124M, what
// padding the vocabulary changes, per-layer detail, row coverage, GQA heads, the printed table,
// and SlimAdam rules files (round trip and every kind of bad file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "model/param_table.h"
#include "optim/partition.h"
#include "util/error.h"

#include "partition_fixtures.h"

#ifndef SLIMTRAIN_TEST_TMP
#define SLIMTRAIN_TEST_TMP "/tmp/slim_test"
#endif

namespace fs = std::filesystem;
using namespace slim;

namespace {

ModelConfig gpt2_124m(int padded_vocab) {
  ModelConfig c;
  c.n_layer = 12;
  c.n_head = 12;
  c.n_kv_head = 12;
  c.n_embd = 768;
  c.vocab_size = 50257;
  c.padded_vocab_size = padded_vocab;
  c.max_seq_len = 1024;
  c.ffn_hidden = 3072;
  return c;
}

int64_t count_v(const std::string& optimizer, const ModelConfig& model,
                const PartitionOptions& options = {}) {
  return build_partition(optimizer, build_param_table(model), model, options).total_v;
}

// The v entries of every tensor of one transformer layer (-1: the tensors outside the blocks).
int64_t layer_v(const PartitionTable& table, const ParamTable& params, int layer) {
  int64_t total = 0;
  for (const TensorPartition& t : table.tensors)
    if (params.params[t.param_index].layer == layer) total += t.v_entries;
  return total;
}

std::string scratch_file(const std::string& name, const std::string& text) {
  const fs::path dir = fs::path(SLIMTRAIN_TEST_TMP) / "partition";
  fs::create_directories(dir);
  const fs::path path = dir / name;
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

// Runs f, expects a UsageError whose message contains every one of `parts`.
void expect_usage_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected a UsageError";
  } catch (const UsageError& e) {
    const std::string message = e.what();
    for (const std::string& part : parts)
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

// Same kinds, head sizes, rows and offsets (the rule texts may differ).
void expect_same_partition(const PartitionTable& a, const PartitionTable& b) {
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  EXPECT_EQ(a.total_v, b.total_v);
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const TensorPartition &x = a.tensors[i], &y = b.tensors[i];
    ASSERT_EQ(x.segments.size(), y.segments.size()) << x.tensor;
    EXPECT_EQ(x.v_offset, y.v_offset) << x.tensor;
    EXPECT_EQ(x.v_entries, y.v_entries) << x.tensor;
    for (size_t k = 0; k < x.segments.size(); ++k) {
      EXPECT_EQ(x.segments[k].kind, y.segments[k].kind) << x.tensor << " segment " << k;
      EXPECT_EQ(x.segments[k].head_dim, y.segments[k].head_dim) << x.tensor;
      EXPECT_EQ(x.segments[k].row_begin, y.segments[k].row_begin) << x.tensor;
      EXPECT_EQ(x.segments[k].row_end, y.segments[k].row_end) << x.tensor;
      EXPECT_EQ(x.segments[k].v_offset, y.segments[k].v_offset) << x.tensor;
    }
  }
}

}  // namespace

TEST(Partition, Gpt2SmallCountsMatchOptimizersMd) {
  const ModelConfig model = gpt2_124m(50257);
  EXPECT_EQ(build_param_table(model).total_numel, 124439808u);
  EXPECT_EQ(count_v("adamw", model), 124439808);
  EXPECT_EQ(count_v("adam_mini", model), 217227);
  EXPECT_EQ(count_v("slim_adam", model), 255569);
  PartitionOptions single_v;
  single_v.adam_mini_single_block_v = true;
  EXPECT_EQ(count_v("adam_mini", model, single_v), 208023);
  PartitionOptions per_position;
  per_position.adam_mini_per_position_wpe = true;
  EXPECT_EQ(count_v("adam_mini", model, per_position), 217227 - 1 + 1024);
}

TEST(Partition, PaddingTheVocabularyAddsItsRows) {
  const ModelConfig real = gpt2_124m(50257), padded = gpt2_124m(50304);
  EXPECT_EQ(count_v("adam_mini", padded) - count_v("adam_mini", real), 47);
  EXPECT_EQ(count_v("slim_adam", padded) - count_v("slim_adam", real), 47);
  EXPECT_EQ(count_v("adamw", padded) - count_v("adamw", real), 47 * 768);
  // The padded rows are in the one wte segment, marked as not real.
  const PartitionTable table = build_partition("slim_adam", build_param_table(padded), padded, {});
  const TensorPartition& wte = table.find("wte");
  ASSERT_EQ(wte.segments.size(), 1u);
  EXPECT_EQ(wte.segments[0].row_end, 50304);
  EXPECT_EQ(wte.segments[0].real_rows, 50257);
  EXPECT_EQ(wte.segments[0].geometry(wte.cols).real_rows, 50257);
}

TEST(Partition, PerLayerDetail) {
  const ModelConfig model = gpt2_124m(50257);
  const ParamTable params = build_param_table(model);
  const PartitionTable mini = build_partition("adam_mini", params, model, {});
  for (int l = 0; l < 12; ++l) EXPECT_EQ(layer_v(mini, params, l), 13850) << "layer " << l;
  EXPECT_EQ(mini.find("wte").v_entries, 50257);
  EXPECT_EQ(mini.find("wpe").v_entries, 1);
  EXPECT_EQ(mini.find("lnf.weight").v_entries + mini.find("lnf.bias").v_entries, 769);
  const TensorPartition& qkv = mini.find("h.5.attn.qkv.weight");
  ASSERT_EQ(qkv.segments.size(), 3u);
  EXPECT_EQ(qkv.segments[0].what, "q");
  EXPECT_EQ(qkv.segments[0].kind, BlockKind::Head);
  EXPECT_EQ(qkv.segments[0].head_dim, 64);
  EXPECT_EQ(qkv.segments[0].v_entries, 12);
  EXPECT_EQ(qkv.segments[1].kind, BlockKind::Head);
  EXPECT_EQ(qkv.segments[1].v_entries, 12);
  EXPECT_EQ(qkv.segments[2].kind, BlockKind::Row);
  EXPECT_EQ(qkv.segments[2].v_entries, 768);
  EXPECT_EQ(mini.find("h.5.attn.qkv.bias").v_entries, 2304);
  EXPECT_EQ(mini.find("h.5.ln1.weight").v_entries, 1);
  EXPECT_EQ(mini.find("h.5.mlp.fc.weight").v_entries, 3072);
  EXPECT_EQ(mini.find("h.5.mlp.proj.weight").v_entries, 768);

  const PartitionTable slim = build_partition("slim_adam", params, model, {});
  for (int l = 0; l < 12; ++l) EXPECT_EQ(layer_v(slim, params, l), 16896) << "layer " << l;
  EXPECT_EQ(slim.find("wte").v_entries, 50257);
  EXPECT_EQ(slim.find("wpe").v_entries, 1024);
  EXPECT_EQ(slim.find("lnf.weight").v_entries + slim.find("lnf.bias").v_entries, 1536);
  const TensorPartition& sqkv = slim.find("h.0.attn.qkv.weight");
  EXPECT_EQ(sqkv.segments[0].kind, BlockKind::Row);
  EXPECT_EQ(sqkv.segments[1].kind, BlockKind::Row);
  EXPECT_EQ(sqkv.segments[2].kind, BlockKind::Column);
  EXPECT_EQ(sqkv.segments[2].v_entries, 768);
  EXPECT_EQ(slim.find("h.0.attn.proj.weight").segments[0].kind, BlockKind::Column);
  EXPECT_EQ(slim.find("h.0.mlp.fc.weight").v_entries, 768);
  EXPECT_EQ(slim.find("h.0.mlp.proj.weight").v_entries, 3072);
  EXPECT_EQ(slim.find("h.0.ln2.weight").segments[0].kind, BlockKind::Element);
}

TEST(Partition, SegmentsCoverEveryRowOnceAndOffsetsChain) {
  for (const ModelConfig& model : {gpt2_124m(50304), test::tiny_partition_model()}) {
    const ParamTable params = build_param_table(model);
    for (const char* optimizer : {"adamw", "adam_mini", "slim_adam"}) {
      const PartitionTable table = build_partition(optimizer, params, model, {});
      ASSERT_EQ(table.tensors.size(), params.params.size());
      int64_t next_v = 0;
      for (size_t i = 0; i < table.tensors.size(); ++i) {
        const TensorPartition& t = table.tensors[i];
        const ParamInfo& p = params.params[i];
        EXPECT_EQ(t.tensor, p.name);
        EXPECT_EQ(t.param_index, i);
        EXPECT_EQ(size_t(t.rows * t.cols), p.numel) << t.tensor;
        EXPECT_EQ(t.v_offset, next_v) << t.tensor;
        int64_t next_row = 0, next_segment_v = 0;
        for (const PartitionSegment& s : t.segments) {
          EXPECT_EQ(s.row_begin, next_row) << t.tensor;
          EXPECT_GT(s.row_end, s.row_begin) << t.tensor;
          EXPECT_GT(s.real_rows, 0) << t.tensor;
          EXPECT_LE(s.real_rows, s.rows()) << t.tensor;
          EXPECT_EQ(s.v_offset, next_segment_v) << t.tensor;
          EXPECT_EQ(s.v_entries, block_count(s.geometry(t.cols))) << t.tensor;
          if (s.kind == BlockKind::Head) {
            EXPECT_EQ(s.rows() % s.head_dim, 0) << t.tensor;
          }
          next_row = s.row_end;
          next_segment_v += s.v_entries;
        }
        EXPECT_EQ(next_row, t.rows) << t.tensor;
        EXPECT_EQ(next_segment_v, t.v_entries) << t.tensor;
        next_v += t.v_entries;
      }
      EXPECT_EQ(next_v, table.total_v);
      if (std::string(optimizer) == "adamw") {
        EXPECT_EQ(size_t(table.total_v), params.total_numel);
      }
    }
  }
}

TEST(Partition, AdamMiniGivesKeyOneBlockPerKvHead) {
  // A GQA attention (4 query heads, 2 kv heads of 8 rows, C = 32) by hand: the GPT-2 table
  // builder has no GQA yet, the partition already follows the k segment's rows.
  ModelConfig model;
  model.n_head = 4;
  model.n_kv_head = 2;
  model.n_embd = 32;
  ParamTable params;
  ParamInfo qkv;
  qkv.name = "h.0.attn.qkv.weight";
  qkv.shape = {32 + 16 + 16, 32};
  qkv.numel = 64 * 32;
  qkv.role = ParamRole::AttnQKVWeight;
  qkv.layer = 0;
  qkv.real_rows = 64;
  qkv.segments = {{"q", 0, 32, 8}, {"k", 32, 48, 8}, {"v", 48, 64, 8}};
  params.params.push_back(qkv);
  params.total_numel = qkv.numel;
  const PartitionTable table = build_partition("adam_mini", params, model, {});
  const TensorPartition& t = table.tensors[0];
  EXPECT_EQ(t.segments[0].v_entries, 4);
  EXPECT_EQ(t.segments[1].v_entries, 2);
  EXPECT_EQ(t.segments[2].v_entries, 16);
  EXPECT_EQ(table.total_v, 22);
}

TEST(Partition, FormatEndsWithTheVEntriesLine) {
  const ModelConfig model = gpt2_124m(50257);
  const ParamTable params = build_param_table(model);
  const std::pair<const char*, const char*> expected[] = {
      {"adamw", "v entries: 124,439,808"},
      {"adam_mini", "v entries: 217,227"},
      {"slim_adam", "v entries: 255,569"}};
  for (const auto& [optimizer, last_line] : expected) {
    const std::string text = build_partition(optimizer, params, model, {}).format();
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    const std::string body = text.substr(0, text.size() - 1);
    EXPECT_EQ(body.substr(body.rfind('\n') + 1), last_line) << optimizer;
    EXPECT_NE(text.find("h.11.attn.qkv.weight"), std::string::npos);
  }
  const std::string mini = build_partition("adam_mini", params, model, {}).format();
  EXPECT_NE(mini.find("12 heads of 64 rows"), std::string::npos) << mini.substr(0, 2000);
  EXPECT_EQ(with_thousands(0), "0");
  EXPECT_EQ(with_thousands(999), "999");
  EXPECT_EQ(with_thousands(1000), "1,000");
  EXPECT_EQ(with_thousands(124439808), "124,439,808");
}

TEST(Partition, SlimRulesRoundTrip) {
  const ModelConfig model = gpt2_124m(50304);
  const ParamTable params = build_param_table(model);
  const PartitionTable defaults = build_partition("slim_adam", params, model, {});
  const std::string json = slim_rules_to_json(defaults);
  EXPECT_NE(json.find("\"h.0.attn.qkv.weight/v\": [0]"), std::string::npos) << json.substr(0, 600);
  EXPECT_NE(json.find("\"wte\": [1]"), std::string::npos);
  EXPECT_NE(json.find("\"h.0.ln1.weight\": null"), std::string::npos);
  PartitionOptions options;
  options.slim_rules_path = scratch_file("defaults.json", json);
  const PartitionTable loaded = build_partition("slim_adam", params, model, options);
  expect_same_partition(defaults, loaded);
  EXPECT_EQ(slim_rules_to_json(loaded), json);

  // Every kind a file can give, including [0] on a 1-D tensor (one v for it).
  std::string edited = json;
  auto set_rule = [&](const std::string& key, const std::string& old_rule, const std::string& rule) {
    const std::string from = "\"" + key + "\": " + old_rule, to = "\"" + key + "\": " + rule;
    const size_t at = edited.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    edited.replace(at, from.size(), to);
  };
  set_rule("wte", "[1]", "null");
  set_rule("h.0.ln1.weight", "null", "[0]");
  set_rule("h.3.attn.qkv.weight/q", "[1]", "[1, 0]");
  set_rule("h.3.attn.proj.weight", "[0]", "[1]");
  options.slim_rules_path = scratch_file("edited.json", edited);
  const PartitionTable custom = build_partition("slim_adam", params, model, options);
  EXPECT_EQ(custom.find("wte").segments[0].kind, BlockKind::Element);
  EXPECT_EQ(custom.find("h.0.ln1.weight").segments[0].kind, BlockKind::Whole);
  EXPECT_EQ(custom.find("h.3.attn.qkv.weight").segments[0].kind, BlockKind::Whole);
  EXPECT_EQ(custom.find("h.3.attn.proj.weight").segments[0].kind, BlockKind::Row);
  EXPECT_EQ(custom.total_v, defaults.total_v + (50304 * 768 - 50304) + (1 - 768) + (1 - 768) + 0);
  options.slim_rules_path = scratch_file("custom.json", slim_rules_to_json(custom));
  expect_same_partition(custom, build_partition("slim_adam", params, model, options));
}

TEST(Partition, SlimRulesAllNullIsAdamW) {
  const ModelConfig model = test::tiny_partition_model();
  const ParamTable params = build_param_table(model);
  const std::string all_null = slim_rules_to_json(build_partition("adamw", params, model, {}));
  EXPECT_EQ(all_null.find('['), std::string::npos);  // nothing compressed
  PartitionOptions options;
  options.slim_rules_path = scratch_file("all_null.json", all_null);
  const PartitionTable slim = build_partition("slim_adam", params, model, options);
  expect_same_partition(build_partition("adamw", params, model, {}), slim);
  for (const TensorPartition& t : slim.tensors) EXPECT_TRUE(t.all_element()) << t.tensor;
}

TEST(Partition, AdamMiniHeadsCannotBeWrittenAsSlimRules) {
  const ModelConfig model = test::tiny_partition_model();
  const ParamTable params = build_param_table(model);
  try {
    slim_rules_to_json(build_partition("adam_mini", params, model, {}));
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("h.0.attn.qkv.weight/q"), std::string::npos) << e.what();
  }
}

TEST(Partition, BadRulesFilesNameTheFileAndKey) {
  const ModelConfig model = test::tiny_partition_model();
  const ParamTable params = build_param_table(model);
  const std::string good = slim_rules_to_json(build_partition("slim_adam", params, model, {}));
  auto load = [&](const std::string& name, const std::string& text) {
    PartitionOptions options;
    options.slim_rules_path = scratch_file(name, text);
    build_partition("slim_adam", params, model, options);
  };
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return text;
  };
  // Sanity: the unmodified file loads.
  load("good.json", good);

  expect_usage_error([&] { load("missing.json", replaced("    \"wpe\": [1],\n", "")); },
                     {"missing.json", "wpe", "no rule for 1 tensor"});
  expect_usage_error(
      [&] { load("unknown.json", replaced("\"wpe\": [1]", "\"wpe\": [1], \"h.9.mlp.fc.weight\": [0]")); },
      {"unknown.json", "h.9.mlp.fc.weight", "no tensor"});
  expect_usage_error(
      [&] {
        load("fused.json", replaced("\"wpe\": [1]", "\"wpe\": [1], \"h.0.attn.qkv.weight\": [0]"));
      },
      {"fused.json", "'h.0.attn.qkv.weight'", "h.0.attn.qkv.weight/q"});
  expect_usage_error([&] { load("one_d.json", replaced("\"h.1.ln2.bias\": null", "\"h.1.ln2.bias\": [1]")); },
                     {"one_d.json", "h.1.ln2.bias", "1-D"});
  expect_usage_error(
      [&] { load("one_d_whole.json", replaced("\"h.1.ln2.bias\": null", "\"h.1.ln2.bias\": [0, 1]")); },
      {"one_d_whole.json", "h.1.ln2.bias", "1-D"});
  for (const std::string bad : {"[2]", "\"row\"", "[]", "[0, 0]", "1", "[0.5]"})
    expect_usage_error([&] { load("value.json", replaced("\"wpe\": [1]", "\"wpe\": " + bad)); },
                       {"value.json", "'wpe'", "not a valid rule"});
  expect_usage_error([&] { load("format.json", replaced("slimtrain-slim-rules", "other")); },
                     {"format.json", "format"});
  expect_usage_error([&] { load("version.json", replaced("\"version\": 1", "\"version\": 2")); },
                     {"version.json", "version"});
  expect_usage_error([&] { load("syntax.json", good.substr(0, good.size() / 2)); },
                     {"syntax.json", "not valid JSON"});
  expect_usage_error([&] { load("rules.json", "{\"format\": \"slimtrain-slim-rules\", \"version\": 1}"); },
                     {"rules.json", "\"rules\""});
  expect_usage_error(
      [&] {
        PartitionOptions options;
        options.slim_rules_path = (fs::path(SLIMTRAIN_TEST_TMP) / "partition" / "absent.json").string();
        build_partition("slim_adam", params, model, options);
      },
      {"absent.json", "cannot open"});
}

TEST(Partition, OptionsMustBelongToTheOptimizer) {
  const ModelConfig model = test::tiny_partition_model();
  const ParamTable params = build_param_table(model);
  expect_usage_error([&] { build_partition("adam", params, model, {}); }, {"'adam'", "adam_mini"});
  PartitionOptions rules;
  rules.slim_rules_path = "x.json";
  expect_usage_error([&] { build_partition("adam_mini", params, model, rules); }, {"x.json", "slim_adam"});
  PartitionOptions single_v;
  single_v.adam_mini_single_block_v = true;
  expect_usage_error([&] { build_partition("slim_adam", params, model, single_v); }, {"adam_mini"});
}
