// The memory planner (`slimtrain memory`): its prediction of every allocator tag equals, to the
// byte, what a run built the way run_training builds it holds — for every optimizer x
// accumulation mode x recompute level on the cpu backend (the emulated cuda backend's check is in
// the emulated step test) — and the CLI prints the table, the comparison and a fit verdict.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "config/config.h"
#include "train/memory_plan.h"
#include "train/trainer.h"
#include "util/error.h"

#include "test_support.h"

namespace slim {
namespace {

RunConfig small_run(const std::string& kind, const std::string& mode, int recompute,
                    const std::string& m_dtype = "fp32") {
  const std::string json = cat(R"({"model": {"n_layer": 3, "n_head": 4, "n_embd": 64,
      "vocab_size": 100, "max_seq_len": 32},
      "optimizer": {"kind": ")", kind, R"(", "accumulation": ")", mode, R"(", "m_dtype": ")",
      m_dtype, R"("},
      "training": {"micro_batch": 3, "seq_len": 24, "recompute": )", recompute, R"(},
      "backend": "cpu"})");
  return parse_run_config(json, {});
}

TEST(MemoryPlan, PredictionEqualsTheAllocatorToTheByte) {
  for (const char* kind : {"adamw", "adam_mini", "slim_adam"})
    for (const char* mode : {"grads", "adama"})
      for (int recompute : {0, 1, 2}) {
        SCOPED_TRACE(cat(kind, "/", mode, "/recompute ", recompute));
        // A bf16 m at recompute 1: every kind x mode meets both m dtypes.
        const RunConfig config = small_run(kind, mode, recompute, recompute == 1 ? "bf16" : "fp32");
        const MemoryPlan plan = plan_memory(config, "cpu");
        CpuBackend backend;
        TrainingSetup setup = build_training(config, backend);
        // One real step, so anything allocated lazily during training is counted too.
        {
          std::vector<int> tokens(size_t(3) * 24);
          for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int(i * 7 % 100);
          train_step(*setup.model, *setup.optimizer,
                     [&](int* in, int* tg) {
                       std::copy(tokens.begin(), tokens.end(), in);
                       std::copy(tokens.begin(), tokens.end(), tg);
                     },
                     3, 24, 1, 1e-3f, ClipPolicy{});
        }
        const auto predicted = plan.by_tag();
        for (int tag = 0; tag < kMemTagCount; ++tag)
          EXPECT_EQ(predicted[tag], backend.allocator().bytes(MemTag(tag))) << mem_tag_name(MemTag(tag));
        EXPECT_EQ(plan.total(), backend.allocator().total());
        EXPECT_EQ(plan.table(), backend.allocator().table(setup.model->num_params()));
      }
}

TEST(MemoryPlan, LeanModesNeedLessAndSizesParse) {
  const MemoryPlan adamw = plan_memory(small_run("adamw", "grads", 0), "cpu");
  const MemoryPlan lean = plan_memory(small_run("adam_mini", "adama", 0), "cpu");
  const auto a = adamw.by_tag(), b = lean.by_tag();
  EXPECT_EQ(a[int(MemTag::OptV)], a[int(MemTag::OptM)]) << "AdamW: one v per parameter";
  EXPECT_LT(b[int(MemTag::OptV)] * 20, b[int(MemTag::OptM)]) << "Adam-mini: v per block";
  EXPECT_LT(b[int(MemTag::Grads)], a[int(MemTag::Grads)]) << "adama: no full gradient buffer";
  const auto half_m = plan_memory(small_run("adamw", "grads", 0, "bf16"), "cpu").by_tag();
  EXPECT_EQ(2 * half_m[int(MemTag::OptM)], a[int(MemTag::OptM)]) << "a bf16 m: 2 bytes a parameter";
  EXPECT_EQ(parse_memory_size("24GiB"), size_t(24) << 30);
  EXPECT_EQ(parse_memory_size("80GB"), size_t(80'000'000'000));
  EXPECT_EQ(parse_memory_size("512 MiB"), size_t(512) << 20);
  EXPECT_EQ(parse_memory_size("1e9"), size_t(1'000'000'000));
  for (const char* bad : {"", "GiB", "-3GiB", "24 gigs", "0"})
    EXPECT_THROW(parse_memory_size(bad), UsageError) << bad;
}

using test::CommandResult;
constexpr auto run = &test::run_slimtrain;

TEST(MemoryCli, PrintsTheTableTheComparisonAndAFitVerdict) {
  const std::string config = std::string(SLIMTRAIN_SOURCE_DIR) + "/configs/gpt2_124m.json";
  const CommandResult plain =
      run("memory --config " + config + " --set backend=cuda training.micro_batch=4 --gpu-memory 1GiB");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  for (const char* text : {"params", "activations", "total", "bytes/param", "does NOT fit"})
    EXPECT_NE(plain.output.find(text), std::string::npos) << text << "\n" << plain.output;
  const CommandResult compare = run("memory --config " + config +
                                    " --set backend=cpu precision=fp32 training.micro_batch=1 --compare "
                                    "--gpu-memory 64GiB");
  ASSERT_EQ(compare.exit_code, 0) << compare.output;
  for (const char* text : {"adamw/grads", "adam_mini/adama", "slim_adam/adama", "state B/param",
                           "fits in 64.00 GiB"})
    EXPECT_NE(compare.output.find(text), std::string::npos) << text << "\n" << compare.output;
  const CommandResult bad = run("memory --config " + config + " --gpu-memory lots");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("lots"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace slim
