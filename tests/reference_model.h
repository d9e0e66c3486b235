// The tiny GPT-2 of the committed PyTorch dumps (scripts/make_reference.py writes it into
// tests/data/gpt2_tiny_reference.safetensors; scripts/make_optim_reference.py starts from the same
// weights and batches): a fixture that builds it on the CPU backend with the dump's weights, and
// hands out the dump's token batches.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/gpt.h"

#ifndef SLIMTRAIN_SOURCE_DIR
#define SLIMTRAIN_SOURCE_DIR "."
#endif

namespace slim::test {

constexpr int kRefB = 4, kRefT = 32;

inline ModelConfig reference_model_config() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.n_embd = 64;
  c.vocab_size = 61;
  c.padded_vocab_size = 64;
  c.max_seq_len = 32;
  c.ffn_hidden = 256;
  return c;
}

inline std::string reference_data_path(const std::string& file) {
  return std::string(SLIMTRAIN_SOURCE_DIR) + "/tests/data/" + file;
}

class ReferenceModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gpt2_ = read_safetensors(reference_data_path("gpt2_tiny_reference.safetensors"));
    backend_ = make_backend("cpu", "fp32");
    model_ = std::make_unique<GptModel>(reference_model_config(), *backend_);
    model_->allocate_grads();
    model_->allocate_activations(kRefB, kRefT);
    std::vector<float> params(model_->num_params());
    for (const ParamInfo& p : model_->table().params) {
      std::vector<float> values = gpt2_.read_f32("param." + p.name);
      ASSERT_EQ(values.size(), p.numel) << p.name;
      std::copy(values.begin(), values.end(), params.begin() + p.offset);
    }
    model_->params_from_host(params);
    tokens_ = gpt2_.read_i32("tokens");  // [11, B, T+1]
  }
  // Batch k's inputs/targets from the [11, B, T+1] token array.
  void batch(int k, int* inputs, int* targets) const {
    for (int b = 0; b < kRefB; ++b)
      for (int t = 0; t < kRefT; ++t) {
        const int* row = tokens_.data() + (size_t(k) * kRefB + b) * (kRefT + 1);
        inputs[b * kRefT + t] = row[t];
        targets[b * kRefT + t] = row[t + 1];
      }
  }

  SafetensorsFile gpt2_;  // the model dump: weights, tokens, logits, gradients, AdamW steps
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<GptModel> model_;
  std::vector<int> tokens_;
};

}  // namespace slim::test
