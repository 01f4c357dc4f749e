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

  f.release(old, 0);
  EXPECT_EQ(f.endpoints()[renumbered].busy(), 1);
  EXPECT_TRUE(f.endpoints()[renumbered].has_slot());
  f.release(old, 0);
  f.prune_drained();
  EXPECT_FALSE(f.index_of(1));
  EXPECT_EQ(f.endpoints()[*f.index_of(7)].busy(), 0);
  EXPECT_EQ(Router::free_capacity(f.endpoints(), 0), 4);
}

TEST(FleetTest, ReleaseNeverGoesBelowZero) {
  Fleet f;
  f.reload({ep(1, "http://a")}, {}, 0.2);
  f.release(0, 0);
  EXPECT_EQ(f.endpoints()[0].in_flight, 0);
}

// A row pointed at another server while requests are in flight (or its
// gpu_id swapped with another row's): those requests are the old server's.
// They drain on the old member, count against any row still for the old
// server, and free their slot on that member when they end, never on the
// row's new member.
TEST(FleetTest, ARowsNewUrlLeavesItsRequestsInFlightWithTheOldServer) {
  Fleet f;
  f.reload({ep(1, "http://a", 2), ep(2, "http://b", 2)}, {}, 0.2);
  const uint64_t old_serial = f.info(*f.index_of(1)).serial;
  f.endpoints()[*f.index_of(1)].in_flight = 2;
  // The two rows swap servers: row 2 is now a's, and a still has our 2.
  EXPECT_TRUE(f.reload({ep(1, "http://b", 2), ep(2, "http://a", 2)}, {}, 0.2));
  ASSERT_EQ(f.size(), 3u);
  size_t row1 = *f.index_of(1), row2 = *f.index_of(2);
  auto old = f.index_of_member(old_serial);
  ASSERT_TRUE(old);
  EXPECT_TRUE(f.info(*old).removed);
  EXPECT_EQ(f.info(*old).config.base_url, "http://a");
  EXPECT_FALSE(f.info(row1).removed) << "a row's gpu_id finds its live member, not the draining one";
  EXPECT_NE(f.info(row1).serial, old_serial) << "another server, another member";
  EXPECT_EQ(f.endpoints()[row1].in_flight, 0) << "b has none of ours";
  EXPECT_TRUE(f.endpoints()[row1].has_slot());
  EXPECT_EQ(f.endpoints()[row2].busy(), 2) << "a still has 2 of ours";
  EXPECT_FALSE(f.endpoints()[row2].has_slot());
  EXPECT_EQ(Router::free_capacity(f.endpoints(), 0), 2);

  // Row 1 takes a request on b; one of a's ends: each frees its own slot.
  f.endpoints()[row1].in_flight = 1;
  f.release(*f.index_of_member(old_serial), 0);
  EXPECT_EQ(f.endpoints()[row1].in_flight, 1) << "an answer from a does not free b's slot";
  EXPECT_EQ(f.endpoints()[row2].busy(), 1);
  // A reload while it drains keeps both as they are.
  EXPECT_FALSE(f.reload({ep(1, "http://b", 2), ep(2, "http://a", 2)}, {}, 0.2));
  ASSERT_TRUE(f.index_of_member(old_serial));
  EXPECT_EQ(f.info(*f.index_of(1)).config.base_url, "http://b");
  EXPECT_EQ(f.endpoints()[*f.index_of(1)].in_flight, 1);
  f.release(*f.index_of_member(old_serial), 0);
  f.prune_drained();
  EXPECT_FALSE(f.index_of_member(old_serial));
  EXPECT_EQ(f.size(), 2u);
  EXPECT_EQ(f.endpoints()[*f.index_of(2)].busy(), 0);
}

// A member keeps its serial while its row keeps its server, whatever else
// changes; a probe in flight alone keeps a replaced member until it ends.
TEST(FleetTest, AMemberKeepsItsSerialUntilItsServerChanges) {
  Fleet f;
  f.reload({ep(1, "http://a", 2)}, {}, 0.2);
  const uint64_t serial = f.info(0).serial;
  f.reload({ep(1, "http://a", 5, false)}, {}, 0.2);
  EXPECT_EQ(f.info(0).serial, serial);
  f.info(0).probe_in_flight = true;
  f.reload({ep(1, "http://c", 5)}, {}, 0.2);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_NE(f.info(*f.index_of(1)).serial, serial);
  ASSERT_TRUE(f.index_of_member(serial));
  f.info(*f.index_of_member(serial)).probe_in_flight = false;
  f.prune_drained();
  EXPECT_FALSE(f.index_of_member(serial));
  EXPECT_EQ(f.size(), 1u);
}

// Silence (what lets a short-timeout request's timeout count against its
// endpoint) adds up over the stretches with requests in flight since the
// last reply: timeouts and cancels do not end it, idle time does not add.
TEST(FleetTest, SilenceAddsUpOverRequestsInFlightUntilAReply) {
  Fleet f;
  f.reload({ep(1, "http://a")}, {}, 0.2);
  auto send = [&](int64_t t) {
    f.note_send(0, t);
    f.endpoints()[0].in_flight++;
  };
  EXPECT_EQ(f.silent_ms(0, 0), 0);
  send(1000);
  EXPECT_EQ(f.silent_ms(0, 1150), 150);
  f.release(0, 1200);  // timed out: no reply
  EXPECT_EQ(f.silent_ms(0, 9000), 200) << "idle time does not count";
  send(9000);
  send(9100);  // a second one while the first is in flight: one stretch
  f.release(0, 9300);
  EXPECT_EQ(f.silent_ms(0, 9400), 600);
  f.release(0, 9500);
  EXPECT_EQ(f.silent_ms(0, 20000), 700);
  send(20000);
  f.note_reply(0, 20050);  // any HTTP answer to an inference request
  f.release(0, 20050);
  EXPECT_EQ(f.silent_ms(0, 30000), 0);
  send(30000);
  EXPECT_EQ(f.silent_ms(0, 30010), 10) << "a new stretch starts from zero";
}
