#include "train/generate.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/rng.h"

namespace slim {

std::vector<int> generate(GptModel& model, std::vector<int> context, const SampleOptions& opts,
                          int window, const std::function<void(int)>& on_token) {
  if (context.empty()) throw UsageError("sampling needs a prompt of at least one token");
  if (opts.temperature < 0.0f)
    throw UsageError(cat("temperature ", opts.temperature, " is negative; use 0 (greedy) or more"));
  const int V = model.config().vocab_size, Vp = model.config().padded_vocab_size;
  std::vector<float> logits(Vp);
  std::vector<double> probs(V);
  std::vector<int> order(V);
  Rng rng(opts.seed);
  for (int i = 0; i < opts.tokens; ++i) {
    const int T = std::min<int>(window, int(context.size()));
    const int* window_tokens = context.data() + context.size() - T;
    model.forward(window_tokens, nullptr, 1, T, 0.0f);
    model.logits_row_to_host(0, T - 1, logits.data());
    int next = 0;
    if (opts.temperature == 0.0f) {
      next = int(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
    } else {
      // Softmax over the real vocabulary at the given temperature, restricted to the top k.
      for (int j = 0; j < V; ++j) order[j] = j;
      int keep = V;
      if (opts.top_k > 0 && opts.top_k < V) {
        keep = opts.top_k;
        std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                          [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
      }
      double max_logit = -INFINITY;
      for (int j = 0; j < keep; ++j) max_logit = std::max(max_logit, double(logits[order[j]]));
      double sum = 0.0;
      for (int j = 0; j < keep; ++j) {
        probs[j] = std::exp((logits[order[j]] - max_logit) / opts.temperature);
        sum += probs[j];
      }
      double r = rng.uniform() * sum, acc = 0.0;
      next = order[keep - 1];
      for (int j = 0; j < keep; ++j) {
        acc += probs[j];
        if (r < acc) {
          next = order[j];
          break;
        }
      }
    }
    context.push_back(next);
    if (on_token) on_token(next);
  }
  return context;
}

}  // namespace slim
