// The CPU backend's GPT-2 against a committed PyTorch (fp64) dump: logits, loss, every parameter
// gradient, and the losses, gradient norms and weights of 10 AdamW steps with clipping.
// Regenerate the dump with scripts/make_reference.py (see tests/data/README.md).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/gpt.h"
#include "optim/optimizer.h"
#include "train/trainer.h"

#include "reference_model.h"

namespace slim {
namespace {

constexpr int kB = test::kRefB, kT = test::kRefT;

class Gpt2Reference : public test::ReferenceModelTest {};

// |a - b| <= abs_tol + rel_tol * max|ref| over the tensor: the scale-aware fp32 tolerance.
void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double rel_tol,
                  double abs_tol, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double scale = 0.0, worst = 0.0;
  for (float r : ref) scale = std::max(scale, double(std::fabs(r)));
  size_t worst_index = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << what << "[" << i << "] = " << got[i];
    double err = std::fabs(double(got[i]) - ref[i]);
    if (err > worst) worst = err, worst_index = i;
  }
  EXPECT_LE(worst, abs_tol + rel_tol * scale)
      << what << ": worst error " << worst << " at " << worst_index << " (got " << got[worst_index]
      << ", ref " << ref[worst_index] << ", tensor max |ref| " << scale << ")";
}

TEST_F(Gpt2Reference, LogitsLossAndGradientsMatchPyTorch) {
  std::vector<int> inputs(kB * kT), targets(kB * kT);
  batch(0, inputs.data(), targets.data());
  const float loss_no_grad = model_->forward(inputs.data(), targets.data(), kB, kT, 0.0f);
  const int Vp = 64;
  std::vector<float> logits(size_t(kB) * kT * Vp);
  for (int b = 0; b < kB; ++b)
    for (int t = 0; t < kT; ++t) model_->logits_row_to_host(b, t, logits.data() + (b * kT + t) * Vp);
  expect_close(logits, gpt2_.read_f32("logits"), 1e-5, 1e-6, "logits");
  const float ref_loss = gpt2_.read_f32("loss")[0];
  EXPECT_NEAR(loss_no_grad, ref_loss, 2e-6);

  const float loss = model_->forward(inputs.data(), targets.data(), kB, kT, 1.0f / (kB * kT));
  EXPECT_EQ(loss, loss_no_grad);
  model_->zero_grads();
  model_->backward();
  std::vector<float> grads(model_->num_params());
  backend_->download_x_as_f32(grads.data(), model_->grads(), grads.size());
  for (const ParamInfo& p : model_->table().params) {
    std::vector<float> got(grads.begin() + p.offset, grads.begin() + p.offset + p.numel);
    expect_close(got, gpt2_.read_f32("grad." + p.name), 2e-5, 1e-7, "grad." + p.name);
  }
}

TEST_F(Gpt2Reference, TenAdamWStepsWithClippingMatchPyTorch) {
  OptimizerSettings settings;  // betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on 2-D tensors
  settings.weight_decay = 0.1f;
  Optimizer optimizer(settings, *model_);
  const std::vector<float> ref_losses = gpt2_.read_f32("adamw_losses");
  const std::vector<float> ref_norms = gpt2_.read_f32("adamw_grad_norms");
  ASSERT_EQ(ref_losses.size(), 10u);
  int clipped = 0;
  for (int k = 0; k < 10; ++k) {
    GradientResult result = compute_gradients(
        *model_, [&](int* in, int* tg) { batch(k, in, tg); }, kB, kT, 1);
    EXPECT_NEAR(result.loss, ref_losses[k], 1e-5) << "step " << k + 1;
    EXPECT_NEAR(result.grad_norm, ref_norms[k], 1e-5 * ref_norms[k]) << "step " << k + 1;
    clipped += apply_update(optimizer, result.grad_norm, 1e-3f, 1.0f) < 1.0f;
  }
  EXPECT_GT(clipped, 0) << "the dump is meant to exercise clipping";
  EXPECT_LT(clipped, 10) << "the dump is meant to exercise unclipped steps too";
  const std::vector<float> params = model_->params_to_host();
  for (const ParamInfo& p : model_->table().params) {
    std::vector<float> got(params.begin() + p.offset, params.begin() + p.offset + p.numel);
    // Adam's step is ~lr whatever the gradient's size, so fp32 noise in a near-zero gradient can
    // flip one entry's step: an absolute tolerance of ~0.1 lr (weights move ~1e-2 in 10 steps).
    expect_close(got, gpt2_.read_f32("adamw_final." + p.name), 0.0, 1e-4, "final " + p.name);
  }
}

}  // namespace
}  // namespace slim
