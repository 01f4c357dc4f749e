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

TEST(FleetTest, AvailabilityTellsAnEmptyFleetFromAFailingOne) {
  Fleet f;
  EXPECT_EQ(f.availability(0), FleetAvailability::none_enabled);
  BreakerConfig breaker;
  breaker.consecutive_failures = 2;
  breaker.cooldown_ms = 1000;
  f.reload({ep(1, "http://a"), ep(2, "http://b"), ep(3, "http://c", 10, false)}, breaker, 0.2);
  EXPECT_EQ(f.availability(0), FleetAvailability::available);
  // One endpoint failing: the other still serves.
  f.endpoints()[0].breaker.record_failure(0);
  f.endpoints()[0].breaker.record_failure(0);
  f.info(0).last_error = "connect failed";
  f.info(0).last_error_at_ms = 100;
  EXPECT_EQ(f.availability(0), FleetAvailability::available);
  // Both enabled ones failing (the disabled one does not count).
  f.endpoints()[1].breaker.record_failure(0);
  f.endpoints()[1].breaker.record_failure(0);
  f.info(1).last_error = "HTTP 503";
  f.info(1).last_error_at_ms = 200;
  EXPECT_EQ(f.availability(10), FleetAvailability::all_failing);
  EXPECT_EQ(f.last_failure(), "GPU 2: HTTP 503");
  // Half-open after the cooldown: still failing until a probe succeeds.
  EXPECT_EQ(f.availability(1500), FleetAvailability::all_failing);
  f.endpoints()[0].breaker.probe_started(1500);
  f.endpoints()[0].breaker.probe_finished(true, 1500);
  EXPECT_EQ(f.availability(1500), FleetAvailability::available);
  // An endpoint that answered 429 is not failing: it asked us to come back.
  f.endpoints()[0].breaker.record_rate_limited(1600, 500);
  EXPECT_EQ(f.availability(1600), FleetAvailability::available);
  EXPECT_EQ(f.availability(2200), FleetAvailability::available);  // half-open: a probe decides
  f.endpoints()[0].breaker.probe_started(2200);
  f.endpoints()[0].breaker.probe_finished(false, 2200);  // and it found the endpoint down
  EXPECT_EQ(f.availability(2200), FleetAvailability::all_failing);
  // Disabling every endpoint is not a failure but an empty fleet.
  f.reload({ep(1, "http://a", 10, false)}, breaker, 0.2);
  EXPECT_EQ(f.availability(2300), FleetAvailability::none_enabled);
}

// A row renumbered (or deleted and inserted again) while its requests are in
// flight: the server's cap holds across the two rows until they drain.
TEST(FleetTest, ARenumberedEndpointCountsTheOldRowsRequestsAgainstItsCap) {
  Fleet f;
  f.reload({ep(1, "http://a", 2), ep(2, "http://b", 2)}, {}, 0.2);
  f.endpoints()[*f.index_of(1)].in_flight = 2;
  f.reload({ep(7, "http://a", 2), ep(2, "http://b", 2)}, {}, 0.2);
  size_t renumbered = *f.index_of(7), old = *f.index_of(1), other = *f.index_of(2);
  EXPECT_EQ(f.endpoints()[renumbered].in_flight, 0) << "its own count starts afresh";
  EXPECT_EQ(f.endpoints()[renumbered].busy(), 2);
  EXPECT_FALSE(f.endpoints()[renumbered].has_slot()) << "the server is full";
  EXPECT_DOUBLE_EQ(f.endpoints()[renumbered].load(), 1.0);
  EXPECT_EQ(f.endpoints()[other].busy(), 0) << "another server is not affected";
  EXPECT_EQ(Router::free_capacity(f.endpoints(), 0), 2);

  f.release(old);
  EXPECT_EQ(f.endpoints()[renumbered].busy(), 1);
  EXPECT_TRUE(f.endpoints()[renumbered].has_slot());
  f.release(old);
  f.prune_drained();
  EXPECT_FALSE(f.index_of(1));
  EXPECT_EQ(f.endpoints()[*f.index_of(7)].busy(), 0);
  EXPECT_EQ(Router::free_capacity(f.endpoints(), 0), 4);
}

TEST(FleetTest, ReleaseNeverGoesBelowZero) {
  Fleet f;
  f.reload({ep(1, "http://a")}, {}, 0.2);
  f.release(0);
  EXPECT_EQ(f.endpoints()[0].in_flight, 0);
}
