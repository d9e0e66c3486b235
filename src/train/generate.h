// Autoregressive sampling from a model: temperature, top-k, seeded and reproducible. No KV cache:
// each new token re-runs the forward over the (sliding) context window, which is fine for the
// sample lines of a training run and the `sample` subcommand.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/gpt.h"

namespace slim {

struct SampleOptions {
  int tokens = 64;
  float temperature = 1.0f;  // 0 = greedy (argmax)
  int top_k = 0;             // 0 = all tokens
  uint64_t seed = 1337;
};

// Extends `context` (at least one token) by opts.tokens tokens; on_token is called with each new
// token as it is drawn. The model's activations must be allocated with B >= 1 and some T >= 1;
// the context window is the last T tokens.
std::vector<int> generate(GptModel& model, std::vector<int> context, const SampleOptions& opts,
                          int window, const std::function<void(int)>& on_token = {});

}  // namespace slim
