// LatencyStats: EMA with alpha 0.2 (first sample initialises it) and
// nearest-rank percentiles over the last `window` samples only.
#include <gtest/gtest.h>

#include "latency_stats.hpp"

using npc_scale::LatencyStats;

TEST(LatencyStatsTest, EmptyIsZero) {
  LatencyStats s;
  EXPECT_FALSE(s.has_samples());
  EXPECT_EQ(s.ema_ms(), 0.0);
  EXPECT_EQ(s.percentile(50), 0.0);
  EXPECT_EQ(s.count(), 0u);
}

TEST(LatencyStatsTest, EmaAlphaPointTwoExactValues) {
  LatencyStats s;  // alpha 0.2
  s.add(100);
  EXPECT_DOUBLE_EQ(s.ema_ms(), 100.0);  // first sample initialises
  s.add(200);
  EXPECT_DOUBLE_EQ(s.ema_ms(), 0.2 * 200 + 0.8 * 100);  // 120
  s.add(50);
  EXPECT_DOUBLE_EQ(s.ema_ms(), 0.2 * 50 + 0.8 * 120);  // 106
  EXPECT_NEAR(s.ema_ms(), 106.0, 1e-9);
}

TEST(LatencyStatsTest, SetAlphaChangesTheWeightOfNewSamples) {
  LatencyStats s;
  s.set_alpha(0.5);
  s.add(10);
  s.add(30);
  EXPECT_DOUBLE_EQ(s.ema_ms(), 20.0);
}

TEST(LatencyStatsTest, PercentilesCoverOnlyTheLastHundred) {
  LatencyStats s;
  for (int i = 1; i <= 150; i++) s.add(i);  // window keeps 51..150
  EXPECT_EQ(s.count(), 100u);
  EXPECT_DOUBLE_EQ(s.percentile(0), 51);
  EXPECT_DOUBLE_EQ(s.percentile(50), 100);   // rank ceil(0.5*100) = 50th of 51..150
  EXPECT_DOUBLE_EQ(s.percentile(90), 140);
  EXPECT_DOUBLE_EQ(s.percentile(99), 149);
  EXPECT_DOUBLE_EQ(s.percentile(100), 150);
}

TEST(LatencyStatsTest, NearestRankOnASmallWindow) {
  LatencyStats s(0.2, 100);
  for (double v : {40.0, 10.0, 30.0, 20.0}) s.add(v);
  EXPECT_EQ(s.count(), 4u);
  EXPECT_DOUBLE_EQ(s.percentile(25), 10);  // rank 1
  EXPECT_DOUBLE_EQ(s.percentile(26), 20);  // rank ceil(1.04) = 2
  EXPECT_DOUBLE_EQ(s.percentile(50), 20);
  EXPECT_DOUBLE_EQ(s.percentile(75), 30);
  EXPECT_DOUBLE_EQ(s.percentile(100), 40);
}

TEST(LatencyStatsTest, ResetForgetsEverySample) {
  LatencyStats l(0.5, 4);
  for (double ms : {10.0, 20.0, 30.0}) l.add(ms);
  ASSERT_TRUE(l.has_samples());
  l.reset();
  EXPECT_FALSE(l.has_samples());
  EXPECT_EQ(l.count(), 0u);
  EXPECT_DOUBLE_EQ(l.percentile(50), 0.0);
  l.add(100);
  EXPECT_DOUBLE_EQ(l.ema_ms(), 100.0) << "the first sample after a reset starts the EMA again";
}
