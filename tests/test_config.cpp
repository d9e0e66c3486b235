// Tests of the run configuration: the shipped configs/ files, defaults, the derived grad_accum,
// --set overrides, the JSON round trip, and the content of every class of error message (the
// messages are the feature: each must name the JSON path, the value and what is allowed).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"
#include "util/error.h"

#ifndef SLIMTRAIN_SOURCE_DIR
#define SLIMTRAIN_SOURCE_DIR "."
#endif
#ifndef SLIMTRAIN_TEST_TMP
#define SLIMTRAIN_TEST_TMP "/tmp"
#endif

namespace slim {
namespace {

RunConfig parse(const std::string& text, const std::vector<std::string>& overrides = {},
                int world = 1) {
  return parse_run_config(text, overrides, world, "test.json");
}

// The UsageError message of parsing TEXT with OVERRIDES; fails the test if it parses.
std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {},
                        int world = 1) {
  try {
    parse(text, overrides, world);
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a UsageError for: " << text;
  return "";
}

// Checks that MESSAGE contains every one of PARTS.
void expect_contains_all(const std::string& message, const std::vector<std::string>& parts) {
  for (const std::string& part : parts)
    EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
}

// Every field, compared one by one (comparing serialized text would hide a field that the
// serializer forgets on both sides).
void expect_same_model(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.n_layer, b.n_layer);
  EXPECT_EQ(a.n_head, b.n_head);
  EXPECT_EQ(a.n_kv_head, b.n_kv_head);
  EXPECT_EQ(a.n_embd, b.n_embd);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.padded_vocab_size, b.padded_vocab_size);
  EXPECT_EQ(a.max_seq_len, b.max_seq_len);
  EXPECT_EQ(a.ffn_hidden, b.ffn_hidden);
  EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
  EXPECT_EQ(a.bias, b.bias);
  EXPECT_EQ(a.norm, b.norm);
  EXPECT_EQ(a.position, b.position);
  EXPECT_EQ(a.mlp, b.mlp);
  EXPECT_EQ(a.norm_eps, b.norm_eps);  // exact: the text form must round-trip the float
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.init_std, b.init_std);
}

void expect_same(const RunConfig& a, const RunConfig& b) {
  expect_same_model(a.model, b.model);
  EXPECT_EQ(a.data.train, b.data.train);
  EXPECT_EQ(a.data.val, b.data.val);
  EXPECT_EQ(a.data.tokenizer_dir, b.data.tokenizer_dir);
  EXPECT_EQ(a.data.shuffle, b.data.shuffle);
  EXPECT_EQ(a.optimizer.kind, b.optimizer.kind);
  EXPECT_EQ(a.optimizer.accumulation, b.optimizer.accumulation);
  EXPECT_EQ(a.optimizer.lr, b.optimizer.lr);
  EXPECT_EQ(a.optimizer.beta1, b.optimizer.beta1);
  EXPECT_EQ(a.optimizer.beta2, b.optimizer.beta2);
  EXPECT_EQ(a.optimizer.eps, b.optimizer.eps);
  EXPECT_EQ(a.optimizer.weight_decay, b.optimizer.weight_decay);
  EXPECT_EQ(a.optimizer.master_weights, b.optimizer.master_weights);
  EXPECT_EQ(a.optimizer.m_dtype, b.optimizer.m_dtype);
  EXPECT_EQ(a.training.steps, b.training.steps);
  EXPECT_EQ(a.training.micro_batch, b.training.micro_batch);
  EXPECT_EQ(a.training.seq_len, b.training.seq_len);
  EXPECT_EQ(a.training.total_batch_tokens, b.training.total_batch_tokens);
  EXPECT_EQ(a.training.grad_accum, b.training.grad_accum);
  EXPECT_EQ(a.training.schedule, b.training.schedule);
  EXPECT_EQ(a.training.warmup_steps, b.training.warmup_steps);
  EXPECT_EQ(a.training.min_lr_fraction, b.training.min_lr_fraction);
  EXPECT_EQ(a.training.wsd_decay_fraction, b.training.wsd_decay_fraction);
  EXPECT_EQ(a.training.grad_clip, b.training.grad_clip);
  EXPECT_EQ(a.eval.every, b.eval.every);
  EXPECT_EQ(a.eval.batches, b.eval.batches);
  EXPECT_EQ(a.eval.sample_every, b.eval.sample_every);
  EXPECT_EQ(a.eval.sample_tokens, b.eval.sample_tokens);
  EXPECT_EQ(a.eval.sample_prompt, b.eval.sample_prompt);
  EXPECT_EQ(a.checkpoint.every, b.checkpoint.every);
  EXPECT_EQ(a.checkpoint.keep, b.checkpoint.keep);
  EXPECT_EQ(a.logging.every, b.logging.every);
  EXPECT_EQ(a.backend, b.backend);
  EXPECT_EQ(a.precision, b.precision);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.out_dir, b.out_dir);
}

// A config in which every field differs from its default (within what validation accepts).
const char* kEveryFieldChanged = R"({
  "_comment": "every field changed",
  "backend": "cpu", "precision": "fp32", "seed": 18446744073709551615, "out_dir": "runs/all",
  "model": {"family": "gpt2", "n_layer": 3, "n_head": 6, "n_kv_head": 6, "n_embd": 96,
            "vocab_size": 1000, "padded_vocab_size": 1100, "max_seq_len": 200, "ffn_hidden": 300,
            "tied_embeddings": true, "bias": true, "norm": "layernorm", "position": "learned",
            "mlp": "gelu", "norm_eps": 1e-6, "rope_theta": 500000, "init_std": 0.013},
  "data": {"train": "a/train_*.bin", "val": "", "tokenizer_dir": "tok", "shuffle": false},
  "optimizer": {"kind": "adamw", "accumulation": "grads", "lr": 3.3e-4, "beta1": 0.85,
                "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.05, "master_weights": false,
                "m_dtype": "bf16"},
  "training": {"steps": 77, "micro_batch": 3, "seq_len": 100, "total_batch_tokens": 1200,
               "schedule": "wsd", "warmup_steps": 7, "min_lr_fraction": 0.3,
               "wsd_decay_fraction": 0.37, "grad_clip": 0.7},
  "eval": {"every": 11, "batches": 5, "sample_every": 13, "sample_tokens": 33,
           "sample_prompt": "In the beginning \"quoted\"\t"},
  "checkpoint": {"every": 17, "keep": 5},
  "logging": {"every": 2}
})";

// ---------------------------------------------------------------------------------------------

TEST(ConfigFiles, EveryShippedConfigParses) {
  const std::filesystem::path dir = std::filesystem::path(SLIMTRAIN_SOURCE_DIR) / "configs";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    EXPECT_NO_THROW(load_run_config(entry.path().string(), {}, 1));
    ++count;
  }
  EXPECT_GE(count, 5);  // tiny + the four GPT-2 sizes
}

TEST(ConfigFiles, Gpt2ConfigsMatchLlmC) {
  const std::string dir = std::string(SLIMTRAIN_SOURCE_DIR) + "/configs/";
  struct Expected {
    const char* file;
    int n_layer, n_head, n_embd, micro_batch;
    float lr, min_lr_fraction;
    int64_t total;
    int steps;
    int grad_accum_on_8;
  };
  const Expected runs[] = {
      {"gpt2_124m.json", 12, 12, 768, 64, 6e-4f, 0.0f, 524288, 18865, 1},
      {"gpt2_350m.json", 24, 16, 1024, 64, 3e-4f, 0.0f, 524288, 60000, 1},
      {"gpt2_774m.json", 36, 20, 1280, 32, 2.5e-4f, 0.0f, 524288, 286102, 2},
      {"gpt2_1558m.json", 48, 25, 1600, 16, 6e-4f, 0.1f, 1048576, 32000, 8},
  };
  for (const Expected& e : runs) {
    SCOPED_TRACE(e.file);
    const RunConfig c = load_run_config(dir + e.file, {}, 8);
    EXPECT_EQ(c.model.n_layer, e.n_layer);
    EXPECT_EQ(c.model.n_head, e.n_head);
    EXPECT_EQ(c.model.n_embd, e.n_embd);
    EXPECT_EQ(c.model.padded_vocab_size, 50304);
    EXPECT_EQ(c.model.ffn_hidden, 4 * e.n_embd);
    EXPECT_EQ(c.training.micro_batch, e.micro_batch);
    EXPECT_EQ(c.training.seq_len, 1024);
    EXPECT_EQ(c.training.total_batch_tokens, e.total);
    EXPECT_EQ(c.training.steps, e.steps);
    EXPECT_EQ(c.training.warmup_steps, 700);
    EXPECT_EQ(c.training.grad_accum, e.grad_accum_on_8);
    EXPECT_EQ(c.optimizer.lr, e.lr);
    EXPECT_EQ(c.training.min_lr_fraction, e.min_lr_fraction);
    EXPECT_EQ(c.backend, "cuda");
    EXPECT_EQ(c.precision, "bf16");
    // One GPU accumulates 8x as many micro-batches for the same tokens per step.
    EXPECT_EQ(load_run_config(dir + e.file, {}, 1).training.grad_accum, 8 * e.grad_accum_on_8);
  }
}

TEST(ConfigFiles, TinyIsTheCpuQuickstart) {
  const RunConfig c = load_run_config(std::string(SLIMTRAIN_SOURCE_DIR) + "/configs/tiny.json", {});
  EXPECT_EQ(c.model.vocab_size, 50257);
  EXPECT_EQ(c.model.padded_vocab_size, 50304);
  EXPECT_EQ(c.out_dir, "runs/tiny");
  EXPECT_EQ(c.data.train, "data/kjv/kjv_train_*.bin");
  EXPECT_EQ(c.training.grad_accum, 1);
  EXPECT_LE(c.training.seq_len, c.model.max_seq_len);
}

TEST(ConfigFiles, MissingFileNamesThePath) {
  const std::string path = std::string(SLIMTRAIN_TEST_TMP) + "/no_such_config.json";
  try {
    load_run_config(path, {});
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    expect_contains_all(e.what(), {path, "does not exist"});
  }
}

TEST(ConfigFiles, BadJsonInAFileGivesPathAndLine) {
  const std::filesystem::path dir = std::filesystem::path(SLIMTRAIN_TEST_TMP) / "test_config";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "broken.json").string();
  std::ofstream(path) << "{\n  \"seed\": 1,\n  \"out_dir\": \"x\"\n  \"backend\": \"cpu\"\n}\n";
  try {
    load_run_config(path, {});
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    expect_contains_all(e.what(), {path, "not valid JSON", "line 4"});
  }
}

// ---------------------------------------------------------------------------------------------

TEST(ConfigDefaults, EmptyObjectGivesTheStructDefaults) {
  const RunConfig parsed = parse("{}");
  RunConfig expected;  // the struct defaults are GPT-2 124M with consistent derived fields
  expect_same(parsed, expected);
  EXPECT_EQ(parsed.model.n_kv_head, 12);
  EXPECT_EQ(parsed.model.ffn_hidden, 3072);
  EXPECT_EQ(parsed.model.padded_vocab_size, 50304);
  EXPECT_EQ(parsed.training.grad_accum, 1);
}

TEST(ConfigDefaults, ModelDefaultsFollowTheGivenFields) {
  const RunConfig c = parse(R"({"model": {"n_head": 4, "n_embd": 128, "vocab_size": 1000}})");
  EXPECT_EQ(c.model.n_kv_head, 4);             // = n_head
  EXPECT_EQ(c.model.ffn_hidden, 512);          // = 4 * n_embd
  EXPECT_EQ(c.model.padded_vocab_size, 1024);  // 1000 rounded up to a multiple of 128
  EXPECT_EQ(parse(R"({"model": {"vocab_size": 1024}})").model.padded_vocab_size, 1024);
  EXPECT_EQ(parse(R"({"model": {"vocab_size": 1025}})").model.padded_vocab_size, 1152);
  // Given values are kept, not recomputed.
  const RunConfig given = parse(R"({"model": {"n_embd": 128, "n_head": 4, "ffn_hidden": 100,
                                              "vocab_size": 1000, "padded_vocab_size": 1000}})");
  EXPECT_EQ(given.model.ffn_hidden, 100);
  EXPECT_EQ(given.model.padded_vocab_size, 1000);
}

TEST(ConfigDefaults, GradAccumIsDerived) {
  const char* text =
      R"({"training": {"micro_batch": 4, "seq_len": 64, "total_batch_tokens": 4096}})";
  EXPECT_EQ(parse(text, {}, 1).training.grad_accum, 16);
  EXPECT_EQ(parse(text, {}, 4).training.grad_accum, 4);
  EXPECT_EQ(parse(text, {}, 16).training.grad_accum, 1);
  EXPECT_EQ(parse(R"({"training": {"total_batch_tokens": 0}})", {}, 8).training.grad_accum, 1);
}

TEST(ConfigDefaults, CommentIsIgnored) {
  expect_same(parse(R"({"_comment": "anything at all"})"), parse("{}"));
}

// ---------------------------------------------------------------------------------------------
// Error messages.

TEST(ConfigErrors, UnknownKeySuggestsTheClosest) {
  expect_contains_all(
      parse_error(R"({"training": {"micro_bach": 8}})"),
      {"test.json", "unknown key 'training.micro_bach'; did you mean 'training.micro_batch'?"});
  expect_contains_all(parse_error(R"({"trainig": {}})"),
                      {"unknown key 'trainig'; did you mean 'training'?"});
  expect_contains_all(parse_error(R"({"out_dr": "x"})"), {"did you mean 'out_dir'?"});
}

TEST(ConfigErrors, KeyInTheWrongSectionNamesItsHome) {
  expect_contains_all(parse_error(R"({"training": {"lr": 0.1}})"),
                      {"unknown key 'training.lr'; did you mean 'optimizer.lr'?"});
  expect_contains_all(parse_error(R"({"steps": 10})"), {"did you mean 'training.steps'?"});
}

TEST(ConfigErrors, UnknownKeyFarFromAllListsTheValidKeys) {
  const std::string message = parse_error(R"({"checkpoint": {"zzzzzzzzzz": 1}})");
  expect_contains_all(message, {"unknown key 'checkpoint.zzzzzzzzzz'", "every", "keep"});
  EXPECT_EQ(message.find("did you mean"), std::string::npos) << message;
}

TEST(ConfigErrors, UnderscoreKeysOtherThanCommentAreRejected) {
  expect_contains_all(parse_error(R"({"_note": "x"})"), {"unknown key '_note'", "_comment"});
  expect_contains_all(parse_error(R"({"_comment": 5})"), {"_comment", "expected a string"});
}

TEST(ConfigErrors, WrongTypeGivesPathValueAndExpectedType) {
  expect_contains_all(parse_error(R"({"training": {"micro_batch": "8"}})"),
                      {"training.micro_batch", "\"8\"", "expected an integer", "a string"});
  expect_contains_all(parse_error(R"({"training": {"steps": 10.5}})"),
                      {"training.steps", "10.5", "expected an integer"});
  expect_contains_all(parse_error(R"({"backend": true})"),
                      {"backend", "true", "expected a string"});
  expect_contains_all(parse_error(R"({"data": {"shuffle": "yes"}})"),
                      {"data.shuffle", "\"yes\"", "expected a boolean"});
  expect_contains_all(parse_error(R"({"optimizer": {"lr": "0.1"}})"),
                      {"optimizer.lr", "\"0.1\"", "expected a number"});
  expect_contains_all(parse_error(R"({"training": 5})"), {"'training' must be an object", "5"});
  expect_contains_all(parse_error(R"([1, 2])"), {"top level must be a JSON object"});
}

TEST(ConfigErrors, OutOfRangeGivesPathValueAndWhatIsAllowed) {
  struct Case {
    const char* text;
    std::vector<std::string> parts;
  };
  const Case cases[] = {
      {R"({"training": {"micro_batch": 0}})", {"training.micro_batch = 0", "positive"}},
      {R"({"training": {"steps": -3}})", {"training.steps = -3", "positive"}},
      {R"({"model": {"n_layer": 0}})", {"model.n_layer = 0", "positive"}},
      {R"({"model": {"n_embd": 130, "n_head": 4}})",
       {"model.n_embd = 130", "model.n_head = 4", "divisible"}},
      {R"({"model": {"n_head": 12, "n_kv_head": 5}})",
       {"model.n_kv_head = 5", "model.n_head = 12", "divide"}},
      {R"({"model": {"vocab_size": 1000, "padded_vocab_size": 999}})",
       {"model.padded_vocab_size = 999", "model.vocab_size = 1000", ">="}},
      {R"({"model": {"max_seq_len": 128}, "training": {"seq_len": 256}})",
       {"training.seq_len = 256", "model.max_seq_len = 128"}},
      {R"({"optimizer": {"beta1": 1.0}})", {"optimizer.beta1 = 1", "[0, 1)"}},
      {R"({"optimizer": {"beta2": -0.1}})", {"optimizer.beta2 = -0.1", "[0, 1)"}},
      {R"({"optimizer": {"lr": 0}})", {"optimizer.lr = 0", "> 0"}},
      {R"({"optimizer": {"eps": 0}})", {"optimizer.eps = 0", "> 0"}},
      {R"({"optimizer": {"weight_decay": -0.5}})", {"optimizer.weight_decay = -0.5", ">= 0"}},
      {R"({"optimizer": {"lr": 1e39}})", {"optimizer.lr", "1e+39", "32-bit float"}},
      {R"({"training": {"grad_clip": -1}})", {"training.grad_clip = -1", ">= 0"}},
      {R"({"training": {"min_lr_fraction": 1.5}})", {"training.min_lr_fraction = 1.5", "[0, 1]"}},
      {R"({"training": {"steps": 10, "warmup_steps": 11}})",
       {"training.warmup_steps = 11", "training.steps = 10"}},
      {R"({"training": {"total_batch_tokens": -1}})", {"training.total_batch_tokens = -1", ">= 0"}},
      {R"({"training": {"steps": 3000000000}})",
       {"training.steps", "3000000000", "at most 2147483647"}},
      {R"({"seed": -1})", {"seed", "-1", ">= 0"}},
      {R"({"checkpoint": {"keep": 0}})", {"checkpoint.keep = 0", ">= 1"}},
      {R"({"eval": {"every": -1}})", {"eval.every = -1", ">= 0"}},
      {R"({"eval": {"sample_tokens": 0}})", {"eval.sample_tokens", "0"}},
      {R"({"out_dir": ""})", {"out_dir is empty"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    expect_contains_all(parse_error(c.text), c.parts);
  }
}

TEST(ConfigErrors, EnumsListTheAllowedValues) {
  expect_contains_all(parse_error(R"({"training": {"schedule": "cosin"}})"),
                      {"training.schedule = \"cosin\"", "cosine, linear, wsd, constant",
                       "did you mean \"cosine\"?"});
  expect_contains_all(parse_error(R"({"backend": "gpu"})"),
                      {"backend = \"gpu\"", "cpu, cuda, auto"});
  expect_contains_all(parse_error(R"({"precision": "fp16"})"),
                      {"precision = \"fp16\"", "fp32, bf16, auto"});
  expect_contains_all(parse_error(R"({"optimizer": {"kind": "sgd"}})"),
                      {"optimizer.kind = \"sgd\"", "adamw", "adam_mini", "slim_adam"});
  expect_contains_all(parse_error(R"({"model": {"family": "bert"}})"),
                      {"model.family", "gpt2, llama"});
}

TEST(ConfigErrors, PlannedFeaturesSaySo) {
  expect_contains_all(parse_error(R"({"model": {"family": "llama"}})"),
                      {"model.family = \"llama\"", "Llama family is planned", "gpt2"});
  expect_contains_all(parse_error(R"({"model": {"norm": "rmsnorm"}})"),
                      {"model.norm", "Llama", "planned"});
  expect_contains_all(parse_error(R"({"model": {"position": "rope"}})"),
                      {"model.position", "planned"});
  expect_contains_all(parse_error(R"({"model": {"mlp": "swiglu"}})"), {"model.mlp", "planned"});
  expect_contains_all(parse_error(R"({"model": {"n_head": 12, "n_kv_head": 4}})"),
                      {"model.n_kv_head = 4", "grouped-query", "planned"});
  expect_contains_all(parse_error(R"({"model": {"bias": false}})"), {"model.bias", "planned"});
  expect_contains_all(parse_error(R"({"model": {"tied_embeddings": false}})"),
                      {"model.tied_embeddings", "planned"});
  // The memory-lean optimizers are available; their options must match the kind.
  EXPECT_EQ(parse_run_config(R"({"optimizer": {"kind": "adam_mini"}})", {}).optimizer.kind,
            "adam_mini");
  EXPECT_EQ(parse_run_config(R"({"optimizer": {"kind": "slim_adam", "slim_rules": "r.json"}})", {})
                .optimizer.slim_rules,
            "r.json");
  expect_contains_all(
      parse_error(R"({"optimizer": {"kind": "adamw", "adam_mini_single_block_v": true}})"),
      {"adam_mini", "adamw"});
  expect_contains_all(parse_error(R"({"optimizer": {"kind": "adam_mini", "slim_rules": "x"}})"),
                      {"optimizer.slim_rules", "slim_adam"});
  EXPECT_EQ(parse_run_config(R"({"optimizer": {"accumulation": "adama"}})", {})
                .optimizer.accumulation,
            "adama");
  expect_contains_all(parse_error(R"({"optimizer": {"accumulation": "adam_a"}})"),
                      {"optimizer.accumulation", "adam_a", "grads", "adama"});
  expect_contains_all(parse_error(R"({"optimizer": {"adama_clip": "global"}})"),
                      {"optimizer.adama_clip", "lagged", "update", "none"});
  expect_contains_all(parse_error(R"({"optimizer": {"update_clip": 0}})"),
                      {"optimizer.update_clip"});
  // The first moment's storage: fp32 (default) or bf16, on any backend.
  EXPECT_EQ(parse_run_config("{}", {}).optimizer.m_dtype, "fp32");
  EXPECT_EQ(parse_run_config(R"({"optimizer": {"m_dtype": "bf16"}, "backend": "cpu"})", {})
                .optimizer.m_dtype,
            "bf16");
  expect_contains_all(parse_error(R"({"optimizer": {"m_dtype": "fp16"}})"),
                      {"optimizer.m_dtype", "\"fp16\"", "fp32", "bf16"});
  expect_contains_all(parse_error(R"({"optimizer": {"m_dtype": "bf61"}})"),
                      {"optimizer.m_dtype", "did you mean \"bf16\"?"});
  expect_contains_all(parse_error(R"({"training": {"recompute": 3}})"),
                      {"training.recompute", "3", "GELU"});
}

TEST(ConfigErrors, IndivisibleBatchGivesTheNumbersAndNearestTotals) {
  // 4 * 64 * 2 = 512 tokens per micro-step; 500000 / 512 = 976.6.
  const std::string message = parse_error(
      R"({"training": {"micro_batch": 4, "seq_len": 64, "total_batch_tokens": 500000}})", {}, 2);
  expect_contains_all(message,
                      {"training.total_batch_tokens = 500000", "4*64*2 = 512", "499712", "500224"});
  // Below one micro-step: the only valid totals are 0 and one micro-step.
  expect_contains_all(
      parse_error(R"({"training": {"micro_batch": 4, "seq_len": 64, "total_batch_tokens": 100}})"),
      {"= 100", "256 (1 micro-step)", "0 for no accumulation"});
}

TEST(ConfigErrors, GradAccumIsNotSettable) {
  expect_contains_all(parse_error(R"({"training": {"grad_accum": 4}})"),
                      {"training.grad_accum is derived", "training.total_batch_tokens"});
  expect_contains_all(parse_error("{}", {"training.grad_accum=4"}),
                      {"--set 'training.grad_accum=4'", "derived", "training.total_batch_tokens"});
}

TEST(ConfigErrors, BadJsonGivesTheLine) {
  expect_contains_all(parse_error("{\n  \"seed\": 1,\n  \"out_dir\": ,\n}"),
                      {"test.json", "not valid JSON", "line 3"});
  expect_contains_all(parse_error(""), {"not valid JSON"});
}

TEST(ConfigErrors, DuplicateKeysAreRejected) {
  expect_contains_all(parse_error(R"({"training": {"steps": 5, "steps": 6}})"),
                      {"training.steps", "appears twice"});
}

TEST(ConfigErrors, SetWithoutEqualsShowsTheForm) {
  expect_contains_all(parse_error("{}", {"training.steps"}),
                      {"--set 'training.steps'", "KEY=VALUE", "--set training.steps=500"});
  expect_contains_all(parse_error("{}", {"=5"}), {"KEY=VALUE"});
}

TEST(ConfigErrors, SetUnknownPathSuggests) {
  expect_contains_all(parse_error("{}", {"training.micro_bach=8"}),
                      {"--set 'training.micro_bach=8'", "did you mean 'training.micro_batch'?"});
  expect_contains_all(parse_error("{}", {"trainig.steps=8"}), {"did you mean 'training.steps'?"});
  expect_contains_all(parse_error("{}", {"trainig.micro_bach=8"}),
                      {"did you mean 'training.micro_batch'?"});
  expect_contains_all(parse_error("{}", {"outdir=x"}), {"did you mean 'out_dir'?"});
  expect_contains_all(parse_error("{}", {"model.n_layer.x=1"}), {"unknown key 'model.n_layer.x'"});
  expect_contains_all(parse_error("{}", {"qqqqqqq.steps=1"}), {"not a section", "training"});
}

TEST(ConfigErrors, BadSetValueNamesTheSetArgument) {
  expect_contains_all(
      parse_error("{}", {"training.steps=many"}),
      {"training.steps", "\"many\"", "expected an integer", "--set 'training.steps=many'"});
  expect_contains_all(parse_error("{}", {"training.steps=0"}),
                      {"training.steps = 0", "--set 'training.steps=0'"});
  expect_contains_all(parse_error("{}", {"model=5"}), {"'model' is a section"});
}

// ---------------------------------------------------------------------------------------------
// --set overrides.

TEST(ConfigSet, NumbersStringsBooleansAndNestedPaths) {
  const RunConfig c =
      parse("{}", {"training.steps=500", "out_dir=runs/x", "backend=\"cpu\"", "data.shuffle=false",
                   "optimizer.lr=3e-4", "seed=42", "checkpoint.every=50", "eval.every=25",
                   "training.total_batch_tokens=2048"});
  EXPECT_EQ(c.training.steps, 500);
  EXPECT_EQ(c.out_dir, "runs/x");
  EXPECT_EQ(c.backend, "cpu");
  EXPECT_FALSE(c.data.shuffle);
  EXPECT_EQ(c.optimizer.lr, 3e-4f);
  EXPECT_EQ(c.seed, 42u);
  EXPECT_EQ(c.checkpoint.every, 50);
  EXPECT_EQ(c.eval.every, 25);
  EXPECT_EQ(c.training.grad_accum, 8);  // derived after the overrides: 2048 / (4*64)
}

TEST(ConfigSet, StringFieldsTakeTheTextAsWritten) {
  // Text that would parse as another JSON type is still the string for a string field.
  EXPECT_EQ(parse("{}", {"out_dir=123"}).out_dir, "123");
  EXPECT_EQ(parse("{}", {"data.val="}).data.val, "");
  EXPECT_EQ(parse("{}", {"eval.sample_prompt=a=b"}).eval.sample_prompt,
            "a=b");  // split at the first '='
  EXPECT_EQ(parse("{}", {"data.train=\"q.bin\""}).data.train, "q.bin");
}

TEST(ConfigSet, OverridesTheFileAndApplyInOrder) {
  const RunConfig c = parse(R"({"training": {"steps": 10, "micro_batch": 2}})",
                            {"training.steps=20", "training.steps=30"});
  EXPECT_EQ(c.training.steps, 30);
  EXPECT_EQ(c.training.micro_batch, 2);  // untouched keys of the same section stay
}

TEST(ConfigSet, WholeSectionObjectIsMerged) {
  const RunConfig c = parse(R"({"model": {"n_layer": 6, "n_head": 4, "n_embd": 128}})",
                            {R"(model={"n_layer": 2, "vocab_size": 1000})"});
  EXPECT_EQ(c.model.n_layer, 2);
  EXPECT_EQ(c.model.n_head, 4);
  EXPECT_EQ(c.model.vocab_size, 1000);
  EXPECT_EQ(c.model.padded_vocab_size, 1024);
  EXPECT_EQ(parse("{}", {"logging={}"}).logging.every, 1);
  expect_contains_all(parse_error("{}", {R"(model={"n_layr": 2})"}),
                      {"did you mean 'model.n_layer'?", "--set 'model={\"n_layr\": 2}'"});
}

// ---------------------------------------------------------------------------------------------
// Writing and reading back.

TEST(ConfigRoundTrip, ToJsonAndBackGivesTheSameConfig) {
  const RunConfig original = parse(kEveryFieldChanged);
  EXPECT_EQ(original.training.grad_accum, 4);  // 1200 / (3*100)
  const std::string text = run_config_to_json(original);
  const RunConfig reparsed = parse(text);
  expect_same(reparsed, original);
  // The derived value is written for the reader but never read back as a setting.
  expect_contains_all(text, {"\"_derived\"", "\"grad_accum\": 4"});
  // Floats are written in their shortest exact form.
  expect_contains_all(text, {"0.00033", "\"eps\": 1e-07"});
  EXPECT_EQ(text.find("0.000330000"), std::string::npos) << text;
}

TEST(ConfigRoundTrip, DefaultsRoundTrip) {
  const RunConfig defaults = parse("{}");
  expect_same(parse(run_config_to_json(defaults)), defaults);
}

TEST(ConfigRoundTrip, ResolvedConfigLoadsWithAnotherWorldSize) {
  // _derived is ignored on load, so a config saved by a 1-rank run loads for 4 ranks.
  const RunConfig one_rank =
      parse(R"({"training": {"micro_batch": 4, "seq_len": 64, "total_batch_tokens": 4096}})");
  EXPECT_EQ(one_rank.training.grad_accum, 16);
  EXPECT_EQ(parse(run_config_to_json(one_rank), {}, 4).training.grad_accum, 4);
}

TEST(ModelConfigJson, RoundTrip) {
  const ModelConfig original = parse(kEveryFieldChanged).model;
  const std::string text = model_config_to_json(original);
  expect_same_model(model_config_from_json(text), original);
  expect_same_model(model_config_from_json(model_config_to_json(ModelConfig{})), ModelConfig{});
}

TEST(ModelConfigJson, DefaultsAndErrors) {
  const ModelConfig m = model_config_from_json(R"({"n_layer": 2, "n_head": 2, "n_embd": 64})");
  EXPECT_EQ(m.n_kv_head, 2);
  EXPECT_EQ(m.ffn_hidden, 256);
  try {
    model_config_from_json(R"({"n_layer": 2, "n_lyer": 3})", "ckpt/manifest.json");
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    expect_contains_all(e.what(), {"ckpt/manifest.json", "unknown key 'model.n_lyer'",
                                   "did you mean 'model.n_layer'?"});
  }
  EXPECT_THROW(model_config_from_json(R"({"n_embd": 100, "n_head": 3})"), UsageError);
  EXPECT_THROW(model_config_from_json("[]"), UsageError);
}

}  // namespace
}  // namespace slim
