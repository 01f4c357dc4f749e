// Fleet reloads keep what was learnt about endpoints that stay, and never
// lose an endpoint that still has requests in flight.
#include <gtest/gtest.h>

#include "fleet.hpp"

using namespace npc_scale;

namespace {
EndpointConfig ep(int id, const std::string& url, int cap = 10, bool enabled = true) {
  EndpointConfig c;
  c.gpu_id = id;
  c.base_url = url;
  c.max_concurrent = cap;
  c.enabled = enabled;
  return c;
}
}  // namespace

TEST(FleetTest, ReloadKeepsLiveStateOfUnchangedEndpoints) {
  Fleet f;
  EXPECT_TRUE(f.reload({ep(1, "http://a"), ep(2, "http://b")}, {}, 0.2));
  f.endpoints()[0].latency.add(40);
  f.endpoints()[0].in_flight = 3;
  f.endpoints()[0].requests = 7;
  EXPECT_TRUE(f.reload({ep(1, "http://a", 20), ep(2, "http://b")}, {}, 0.2));
  auto i = f.index_of(1);
  ASSERT_TRUE(i);
  EXPECT_EQ(f.endpoints()[*i].max_concurrent, 20);
  EXPECT_EQ(f.endpoints()[*i].in_flight, 3);
  EXPECT_EQ(f.endpoints()[*i].requests, 7u);
  EXPECT_DOUBLE_EQ(f.endpoints()[*i].latency.ema_ms(), 40);
  EXPECT_FALSE(f.reload({ep(1, "http://a", 20), ep(2, "http://b")}, {}, 0.2)) << "no change";
}

TEST(FleetTest, ANewUrlForgetsTheOldServer) {
  Fleet f;
  f.reload({ep(1, "http://a")}, {}, 0.2);
  f.endpoints()[0].latency.add(40);
  f.reload({ep(1, "http://other")}, {}, 0.2);
  EXPECT_FALSE(f.endpoints()[0].latency.has_samples());
}

TEST(FleetTest, RemovedEndpointDrainsItsInFlightRequests) {
  Fleet f;
  f.reload({ep(1, "http://a"), ep(2, "http://b")}, {}, 0.2);
  f.endpoints()[*f.index_of(2)].in_flight = 2;
  f.reload({ep(1, "http://a")}, {}, 0.2);
  auto i = f.index_of(2);
  ASSERT_TRUE(i) << "still there while requests are in flight";
  EXPECT_TRUE(f.info(*i).removed);
  EXPECT_FALSE(f.endpoints()[*i].enabled) << "no new work goes to it";
  f.prune_drained();
  EXPECT_TRUE(f.index_of(2));
  f.endpoints()[*f.index_of(2)].in_flight = 0;
  f.prune_drained();
  EXPECT_FALSE(f.index_of(2));
  EXPECT_EQ(f.size(), 1u);
}

TEST(FleetTest, RemovedAndIdleEndpointGoesAtOnce) {
  Fleet f;
  f.reload({ep(1, "http://a"), ep(2, "http://b")}, {}, 0.2);
  f.reload({ep(2, "http://b")}, {}, 0.2);
  EXPECT_FALSE(f.index_of(1));
  EXPECT_TRUE(f.any_enabled());
  f.reload({ep(2, "http://b", 10, false)}, {}, 0.2);
  EXPECT_FALSE(f.any_enabled());
}

TEST(FleetTest, ComingBackKeepsItsStateWhileDraining) {
  Fleet f;
  f.reload({ep(1, "http://a")}, {}, 0.2);
  f.endpoints()[0].in_flight = 1;
  f.reload({}, {}, 0.2);
  f.reload({ep(1, "http://a")}, {}, 0.2);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_FALSE(f.info(0).removed);
  EXPECT_TRUE(f.endpoints()[0].enabled);
  EXPECT_EQ(f.endpoints()[0].in_flight, 1);
}
