// What a decoder-only transformer is made of. GPT-2 today; the fields for the Llama family
// (RMSNorm, RoPE, SwiGLU, GQA, untied head, no biases) are here so that it is a new value of
// these fields, not a rewrite.
#pragma once
#include <string>

namespace slim {

struct ModelConfig {
  std::string family = "gpt2";      // gpt2 | llama
  int n_layer = 12;
  int n_head = 12;
  int n_kv_head = 12;               // == n_head for GPT-2 (no GQA)
  int n_embd = 768;                 // C
  int vocab_size = 50257;           // V: real tokens
  int padded_vocab_size = 50304;    // Vp >= V, rows of wte beyond V are never a target
  int max_seq_len = 1024;           // rows of wpe
  int ffn_hidden = 3072;            // 4*C for GPT-2
  bool tied_embeddings = true;      // lm_head shares wte
  bool bias = true;                 // linear and norm biases
  std::string norm = "layernorm";   // layernorm | rmsnorm
  std::string position = "learned"; // learned | rope
  std::string mlp = "gelu";         // gelu | swiglu
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  float init_std = 0.02f;

  int head_dim() const { return n_embd / n_head; }
};

}  // namespace slim
