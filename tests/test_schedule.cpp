// The learning-rate schedules, checked against values computed from their definitions.
#include <gtest/gtest.h>

#include <cmath>

#include "train/schedule.h"
#include "util/error.h"

namespace slim {
namespace {

LrSchedule make(const std::string& kind, int warmup) {
  LrSchedule s;
  s.kind = kind;
  s.peak_lr = 1.0f;
  s.total_steps = 110;
  s.warmup_steps = warmup;
  s.min_lr_fraction = 0.1f;
  s.wsd_decay_fraction = 0.2f;
  return s;
}

TEST(Schedule, WarmupIsLinearAndReachesThePeak) {
  for (const char* kind : {"cosine", "linear", "wsd", "constant"}) {
    LrSchedule s = make(kind, 10);
    EXPECT_FLOAT_EQ(s.lr_at(0), 0.1f) << kind;
    EXPECT_FLOAT_EQ(s.lr_at(4), 0.5f) << kind;
    EXPECT_FLOAT_EQ(s.lr_at(9), 1.0f) << kind;
  }
}

TEST(Schedule, CosineGoesFromPeakToTheFloor) {
  LrSchedule s = make("cosine", 10);
  EXPECT_FLOAT_EQ(s.lr_at(10), 1.0f);
  EXPECT_NEAR(s.lr_at(60), 0.1 + 0.9 * 0.5, 1e-6);  // halfway: cos(pi/2) = 0
  EXPECT_NEAR(s.lr_at(35), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.25)), 1e-6);
  EXPECT_NEAR(s.lr_at(110), 0.1, 1e-6);
  for (int step = 11; step < 110; ++step) EXPECT_LE(s.lr_at(step), s.lr_at(step - 1));
}

TEST(Schedule, LinearDecaysInAStraightLine) {
  LrSchedule s = make("linear", 10);
  EXPECT_NEAR(s.lr_at(60), 0.55, 1e-6);
  EXPECT_NEAR(s.lr_at(110), 0.1, 1e-6);
}

TEST(Schedule, WsdHoldsThenDecaysAsOneMinusSqrt) {
  LrSchedule s = make("wsd", 10);
  // 110 steps, the last 22 decay: steps 88..109.
  EXPECT_FLOAT_EQ(s.lr_at(87), 1.0f);
  EXPECT_NEAR(s.lr_at(88), 0.1 + 0.9 * (1 - std::sqrt(1.0 / 22)), 1e-6);
  EXPECT_NEAR(s.lr_at(98), 0.1 + 0.9 * (1 - std::sqrt(11.0 / 22)), 1e-6);
  EXPECT_NEAR(s.lr_at(109), 0.1, 1e-6);
}

TEST(Schedule, ConstantStaysAtThePeak) {
  LrSchedule s = make("constant", 0);
  EXPECT_FLOAT_EQ(s.lr_at(0), 1.0f);
  EXPECT_FLOAT_EQ(s.lr_at(109), 1.0f);
}

TEST(Schedule, UnknownKindIsAUsageError) {
  LrSchedule s = make("exponential", 0);
  EXPECT_THROW(s.lr_at(5), UsageError);
}

}  // namespace
}  // namespace slim
