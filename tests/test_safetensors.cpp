// safetensors: round trips of every dtype we write, the header checks a corrupt file must fail,
// and the Hugging Face GPT-2 export checked tensor by tensor against our parameters.
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/hf_export.h"
#include "io/safetensors.h"
#include "model/model_config.h"
#include "model/param_table.h"
#include "util/error.h"

#include "test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using slim::StDType;

namespace {

std::string fresh_test_dir() { return slim::test::fresh_test_dir("safetensors"); }

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A file made by hand: 8-byte length, the header text as given (no padding added), the data.
void write_raw_safetensors(const std::string& path, const std::string& header, size_t data_bytes,
                           uint64_t declared_length) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&declared_length), 8);
  out << header << std::string(data_bytes, '\0');
}
void write_raw_safetensors(const std::string& path, const std::string& header, size_t data_bytes) {
  write_raw_safetensors(path, header, data_bytes, header.size());
}

template <typename Fn>
std::string error_message(Fn&& fn) {
  try {
    fn();
  } catch (const slim::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a slim::Error";
  return "";
}

uint16_t bf16_bits(float value) { return uint16_t(std::bit_cast<uint32_t>(value) >> 16); }

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeWithMetadata) {
  const std::string path = fresh_test_dir() + "/t.safetensors";
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0e-8f, 4.0f, 1e30f, -0.0f};
  const std::vector<int32_t> i32 = {7, -8, 2147483647, -2147483647 - 1};
  // Values exactly representable in bf16, so the conversion back is exact.
  const std::vector<uint16_t> bf16 = {bf16_bits(1.0f), bf16_bits(-2.5f), bf16_bits(0.15625f)};
  // fp16: 1.0, -2.0, 0.5, the smallest subnormal (2^-24), +inf.
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3800, 0x0001, 0x7C00};
  const std::vector<uint16_t> u16 = {0, 65535, 50256};
  const std::vector<int64_t> i64 = {-5, 123456789};

  slim::write_safetensors(path,
                          {{"zeta.f32", StDType::F32, {2, 3}, f32.data()},
                           {"alpha.i32", StDType::I32, {4}, i32.data()},
                           {"mid.bf16", StDType::BF16, {3, 1}, bf16.data()},
                           {"mid.f16", StDType::F16, {5}, f16.data()},
                           {"tok.u16", StDType::U16, {3}, u16.data()},
                           {"big.i64", StDType::I64, {2}, i64.data()},
                           {"empty", StDType::F32, {0, 4}, nullptr}},
                          {{"format", "pt"}, {"note", "made by a test"}});

  const slim::SafetensorsFile file = slim::read_safetensors(path);
  EXPECT_EQ(file.entries.size(), 7u);
  EXPECT_EQ(file.metadata, (std::map<std::string, std::string>{{"format", "pt"},
                                                               {"note", "made by a test"}}));
  EXPECT_EQ(file.read_f32("zeta.f32"), f32);
  EXPECT_EQ(file.entries.at("zeta.f32").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(file.entries.at("zeta.f32").dtype, StDType::F32);
  EXPECT_EQ(file.read_i32("alpha.i32"), i32);
  EXPECT_EQ(file.read_f32("mid.bf16"), (std::vector<float>{1.0f, -2.5f, 0.15625f}));
  EXPECT_EQ(file.entries.at("mid.bf16").shape, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(file.read_f32("mid.f16"),
            (std::vector<float>{1.0f, -2.0f, 0.5f, std::ldexp(1.0f, -24), INFINITY}));
  EXPECT_EQ(file.read_i32("tok.u16"), (std::vector<int32_t>{0, 65535, 50256}));
  EXPECT_EQ(file.read_i32("big.i64"), (std::vector<int32_t>{-5, 123456789}));
  EXPECT_TRUE(file.read_f32("empty").empty());
  EXPECT_TRUE(file.has("alpha.i32"));
  EXPECT_FALSE(file.has("nothing"));

  // Layout: header length a multiple of 8, space padding, tensors back to back in name order.
  const std::string raw = read_text(path);
  uint64_t header_length = 0;
  std::memcpy(&header_length, raw.data(), 8);
  EXPECT_EQ(header_length % 8, 0u);
  const std::string header = raw.substr(8, header_length);
  const size_t json_end = header.find_last_not_of(' ') + 1;
  EXPECT_EQ(header[json_end - 1], '}');
  EXPECT_LT(header.size() - json_end, 8u) << "padding is at most 7 spaces";
  EXPECT_EQ(json::parse(header)["zeta.f32"]["dtype"], "F32");
  EXPECT_EQ(raw.size(), 8 + header_length + file.bytes.size());
  size_t expected_begin = 0;
  for (const auto& [name, entry] : file.entries) {  // std::map iterates in sorted-name order
    EXPECT_EQ(entry.begin, expected_begin) << name;
    expected_begin = entry.end;
  }
  EXPECT_EQ(expected_begin, file.bytes.size());
}

TEST(Safetensors, WrongDtypeOrMissingTensorIsAnError) {
  const std::string path = fresh_test_dir() + "/t.safetensors";
  const std::vector<int32_t> ids = {1, 2};
  const std::vector<int64_t> wide = {int64_t(1) << 40};
  slim::write_safetensors(path, {{"ids", StDType::I32, {2}, ids.data()},
                                 {"wide", StDType::I64, {1}, wide.data()}}, {});
  const slim::SafetensorsFile file = slim::read_safetensors(path);
  EXPECT_TRUE(file.metadata.empty());
  std::string message = error_message([&] { file.read_f32("ids"); });
  EXPECT_NE(message.find("I32"), std::string::npos) << message;
  message = error_message([&] { file.read_f32("wte"); });
  EXPECT_NE(message.find("wte"), std::string::npos) << message;
  EXPECT_NE(message.find(path), std::string::npos) << message;
  message = error_message([&] { file.read_i32("wide"); });
  EXPECT_NE(message.find("int32"), std::string::npos) << message;
}

TEST(Safetensors, WriterRejectsBadTensors) {
  const std::string path = fresh_test_dir() + "/t.safetensors";
  const float x = 1.0f;
  EXPECT_THROW(slim::write_safetensors(path, {{"a", StDType::F32, {1}, &x},
                                              {"a", StDType::F32, {1}, &x}}, {}),
               slim::Error);
  EXPECT_THROW(slim::write_safetensors(path, {{"__metadata__", StDType::F32, {1}, &x}}, {}),
               slim::Error);
  EXPECT_THROW(slim::write_safetensors(path, {{"neg", StDType::F32, {-1}, &x}}, {}), slim::Error);
  EXPECT_THROW(slim::write_safetensors(path, {{"null", StDType::F32, {1}, nullptr}}, {}),
               slim::Error);
  EXPECT_FALSE(fs::exists(path));
}

TEST(Safetensors, HeaderValidationNamesTheProblem) {
  const std::string dir = fresh_test_dir();
  const std::string path = dir + "/bad.safetensors";
  const auto expect_error = [&](const std::string& must_contain) {
    const std::string message = error_message([&] { slim::read_safetensors(path); });
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find(must_contain), std::string::npos) << message;
  };
  const std::string good_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

  write_raw_safetensors(path, good_header, 8);
  EXPECT_EQ(slim::read_safetensors(path).read_f32("w"), (std::vector<float>{0.0f, 0.0f}))
      << "the hand-made control file must be valid";

  std::ofstream(path, std::ios::binary) << "abc";
  expect_error("fewer than the 8-byte header length");
  write_raw_safetensors(path, good_header, 8, /*declared_length=*/100000);
  expect_error("header length");
  write_raw_safetensors(path, good_header, 8, /*declared_length=*/0);
  expect_error("header length");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[2],)", 8);
  expect_error("does not parse");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}})", 8);
  expect_error("do not lie within");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  expect_error("needs 12 bytes");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8);
  expect_error("do not lie within");
  write_raw_safetensors(path, R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8);
  expect_error("'Q4'");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8);
  expect_error("negative");
  write_raw_safetensors(path, R"({"w":{"dtype":"F32","shape":[2]}})", 8);
  expect_error("data_offsets");
  write_raw_safetensors(  // two tensors overlapping on bytes 4..8
      path,
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      12);
  expect_error("gap or overlap");
  write_raw_safetensors(path, good_header, 16);  // 8 stray bytes after the last tensor
  expect_error("data section has 16 bytes");
  write_raw_safetensors(path, R"({"__metadata__":{"n":3}})", 0);
  expect_error("metadata 'n'");
  expect_error("not a string");
  EXPECT_THROW(slim::read_safetensors(dir + "/missing.safetensors"), slim::Error);
}

// ---- Hugging Face GPT-2 export ----

namespace {

slim::ModelConfig tiny_gpt2() {
  slim::ModelConfig config;
  config.n_layer = 2;
  config.n_head = config.n_kv_head = 2;
  config.n_embd = 8;
  config.vocab_size = 10;
  config.padded_vocab_size = 16;
  config.max_seq_len = 8;
  config.ffn_hidden = 32;
  return config;
}

// params[i] = i: every element distinct and exact in fp32, so any misplaced value is caught.
std::vector<float> distinct_params(const slim::ParamTable& table) {
  std::vector<float> params(table.total_numel);
  for (size_t i = 0; i < params.size(); ++i) params[i] = float(i);
  return params;
}

}  // namespace

TEST(HfExport, Gpt2TensorsHaveHfNamesShapesAndValues) {
  const std::string dir = fresh_test_dir();
  const slim::ModelConfig config = tiny_gpt2();
  const slim::ParamTable table = slim::build_param_table(config);
  const std::vector<float> params = distinct_params(table);
  slim::export_gpt2_hf(dir + "/model.safetensors", config, table, params.data());

  const slim::SafetensorsFile file = slim::read_safetensors(dir + "/model.safetensors");
  EXPECT_EQ(file.metadata.at("format"), "pt");
  const int64_t C = 8, V = 10, T = 8, F = 32;

  // Ours used as is (optionally only its first `rows` rows).
  size_t checked = 0;
  const auto expect_copy = [&](const std::string& theirs, const std::string& ours,
                               std::vector<int64_t> shape) {
    SCOPED_TRACE(theirs);
    ASSERT_TRUE(file.has(theirs));
    EXPECT_EQ(file.entries.at(theirs).dtype, StDType::F32);
    EXPECT_EQ(file.entries.at(theirs).shape, shape);
    const std::vector<float> values = file.read_f32(theirs);
    const slim::ParamInfo& info = table.find(ours);
    for (size_t i = 0; i < values.size(); ++i)
      ASSERT_EQ(values[i], params[info.offset + i]) << "element " << i;
    ++checked;
  };
  // Ours [out, in] stored by HF as [in, out].
  const auto expect_transposed = [&](const std::string& theirs, const std::string& ours,
                                     int64_t out_features, int64_t in_features) {
    SCOPED_TRACE(theirs);
    ASSERT_TRUE(file.has(theirs));
    EXPECT_EQ(file.entries.at(theirs).shape, (std::vector<int64_t>{in_features, out_features}));
    const std::vector<float> values = file.read_f32(theirs);
    const slim::ParamInfo& info = table.find(ours);
    ASSERT_EQ(info.shape, (std::vector<int64_t>{out_features, in_features}));
    for (int64_t i = 0; i < in_features; ++i)
      for (int64_t o = 0; o < out_features; ++o)
        ASSERT_EQ(values[i * out_features + o], params[info.offset + o * in_features + i])
            << "[in " << i << ", out " << o << "]";
    ++checked;
  };

  expect_copy("transformer.wte.weight", "wte", {V, C});  // unpadded: 10 of 16 rows
  expect_copy("transformer.wpe.weight", "wpe", {T, C});
  for (int l = 0; l < 2; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    const std::string ours = "h." + std::to_string(l) + ".";
    expect_copy(h + "ln_1.weight", ours + "ln1.weight", {C});
    expect_copy(h + "ln_1.bias", ours + "ln1.bias", {C});
    expect_transposed(h + "attn.c_attn.weight", ours + "attn.qkv.weight", 3 * C, C);
    expect_copy(h + "attn.c_attn.bias", ours + "attn.qkv.bias", {3 * C});
    expect_transposed(h + "attn.c_proj.weight", ours + "attn.proj.weight", C, C);
    expect_copy(h + "attn.c_proj.bias", ours + "attn.proj.bias", {C});
    expect_copy(h + "ln_2.weight", ours + "ln2.weight", {C});
    expect_copy(h + "ln_2.bias", ours + "ln2.bias", {C});
    expect_transposed(h + "mlp.c_fc.weight", ours + "mlp.fc.weight", F, C);
    expect_copy(h + "mlp.c_fc.bias", ours + "mlp.fc.bias", {F});
    expect_transposed(h + "mlp.c_proj.weight", ours + "mlp.proj.weight", C, F);
    expect_copy(h + "mlp.c_proj.bias", ours + "mlp.proj.bias", {C});
  }
  expect_copy("transformer.ln_f.weight", "lnf.weight", {C});
  expect_copy("transformer.ln_f.bias", "lnf.bias", {C});
  EXPECT_EQ(checked, 28u);
  EXPECT_EQ(file.entries.size(), checked) << "no extra tensors (lm_head is tied, so absent)";
  EXPECT_FALSE(file.has("lm_head.weight"));

  const json hf = json::parse(read_text(dir + "/config.json"));
  EXPECT_EQ(hf["model_type"], "gpt2");
  EXPECT_EQ(hf["architectures"], json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(hf["vocab_size"], V);
  EXPECT_EQ(hf["n_positions"], T);
  EXPECT_EQ(hf["n_ctx"], T);
  EXPECT_EQ(hf["n_embd"], C);
  EXPECT_EQ(hf["n_layer"], 2);
  EXPECT_EQ(hf["n_head"], 2);
  EXPECT_TRUE(hf["n_inner"].is_null()) << "ffn_hidden == 4C is HF's default";
  EXPECT_EQ(hf["activation_function"], "gelu_new");
  EXPECT_EQ(hf["layer_norm_epsilon"].get<double>(), 1e-5);
  EXPECT_EQ(hf["tie_word_embeddings"], true);
  // A 10-token test vocabulary has no id 50256; its last id stands in for <|endoftext|>.
  EXPECT_EQ(hf["bos_token_id"], V - 1);
  EXPECT_EQ(hf["eos_token_id"], V - 1);
}

TEST(HfExport, FullVocabularyUsesGpt2EndOfTextAndOtherHiddenSizesAreSpelledOut) {
  const std::string dir = fresh_test_dir();
  slim::ModelConfig config = tiny_gpt2();
  config.n_layer = 1;
  config.vocab_size = 50257;
  config.padded_vocab_size = 50304;
  config.ffn_hidden = 24;  // not 4C
  const slim::ParamTable table = slim::build_param_table(config);
  const std::vector<float> params = distinct_params(table);
  slim::export_gpt2_hf(dir + "/", config, table, params.data());  // a directory

  const json hf = json::parse(read_text(dir + "/config.json"));
  EXPECT_EQ(hf["bos_token_id"], 50256);
  EXPECT_EQ(hf["eos_token_id"], 50256);
  EXPECT_EQ(hf["n_inner"], 24);
  const slim::SafetensorsFile file = slim::read_safetensors(dir + "/model.safetensors");
  EXPECT_EQ(file.entries.at("transformer.wte.weight").shape, (std::vector<int64_t>{50257, 8}));
  EXPECT_EQ(file.entries.at("transformer.h.0.mlp.c_fc.weight").shape,
            (std::vector<int64_t>{8, 24}));
}

TEST(HfExport, WritesIntoANewDirectoryWithConfigBeside) {
  const std::string dir = fresh_test_dir() + "/export/nested";
  const slim::ModelConfig config = tiny_gpt2();
  const slim::ParamTable table = slim::build_param_table(config);
  const std::vector<float> params = distinct_params(table);
  slim::export_gpt2_hf(dir + "/weights.safetensors", config, table, params.data());
  EXPECT_TRUE(fs::exists(dir + "/weights.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
}

TEST(HfExport, RejectsModelsGpt2CannotHold) {
  const std::string dir = fresh_test_dir();
  const slim::ModelConfig config = tiny_gpt2();
  const slim::ParamTable table = slim::build_param_table(config);
  const std::vector<float> params = distinct_params(table);
  const std::string path = dir + "/model.safetensors";

  slim::ModelConfig llama = config;
  llama.family = "llama";
  EXPECT_THROW(slim::export_gpt2_hf(path, llama, table, params.data()), slim::UsageError);
  slim::ModelConfig untied = config;
  untied.tied_embeddings = false;
  EXPECT_THROW(slim::export_gpt2_hf(path, untied, table, params.data()), slim::UsageError);
  slim::ModelConfig rms = config;
  rms.norm = "rmsnorm";
  EXPECT_THROW(slim::export_gpt2_hf(path, rms, table, params.data()), slim::UsageError);
  EXPECT_THROW(slim::export_gpt2_hf(dir + "/model.bin", config, table, params.data()),
               slim::UsageError);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(dir + "/config.json"));
}
