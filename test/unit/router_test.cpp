// Router: priority tiers, caps, rotation, avoid_gpu, remote load, breakers,
// affinity via the bounded-load ring, seed baselines, aging, and the
// EndpointLoad compatibility layer used by the interim dispatcher.
#include <gtest/gtest.h>

#include <map>

#include "router.hpp"

using npc_scale::Endpoint;
using npc_scale::EndpointLoad;
using npc_scale::RouteRequest;
using npc_scale::Router;
using npc_scale::RouterConfig;

namespace {

Endpoint ep(int gpu, int cap, int in_flight = 0, double ema = -1) {
  Endpoint e;
  e.gpu_id = gpu;
  e.max_concurrent = cap;
  e.in_flight = in_flight;
  if (ema >= 0) e.latency.add(ema);
  return e;
}

// The urgent reserve alone: affinity off, so the tier rules decide.
RouterConfig reserve_config(double reserve) {
  RouterConfig c;
  c.urgent_reserve = reserve;
  c.affinity = false;
  return c;
}

RouteRequest prio(int p) {
  RouteRequest r;
  r.priority = p;
  return r;
}

size_t pick_index(Router& r, std::vector<Endpoint>& eps, const RouteRequest& req, int64_t now = 0) {
  auto d = r.pick(eps, req, now);
  EXPECT_TRUE(d.has_value());
  return d ? d->index : SIZE_MAX;
}

}  // namespace

TEST(RouterTest, UrgentPicksTheFastestWithASlot) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 0, 50), ep(2, 10, 10, 20), ep(3, 10, 9, 30)};
  // gpu 2 is fastest but full; gpu 3 is nearly full but fastest with room.
  for (int p : {0, 1, 2}) EXPECT_EQ(pick_index(r, eps, prio(p)), 2u) << p;
}

// An endpoint with no sample yet is tried, one urgent request at a time:
// one whose completions only fail (its /health fine, so its breaker closes
// again) must not take a whole batch of urgent work before it trips.
TEST(RouterTest, UrgentTriesAnUnsampledEndpointOneRequestAtATime) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 0, 5), ep(2, 10)};  // gpu 2 has no samples yet
  EXPECT_EQ(pick_index(r, eps, prio(0)), 1u);
  eps[1].in_flight = 1;  // the trial is on its way
  for (int i = 0; i < 5; i++) EXPECT_EQ(pick_index(r, eps, prio(0)), 0u) << i;
  eps[0].in_flight = 10;  // the sampled one is full: the untried one still serves
  EXPECT_EQ(pick_index(r, eps, prio(0)), 1u);
  eps[0].in_flight = 0;
  eps[1].latency.add(80);
  EXPECT_EQ(pick_index(r, eps, prio(0)), 0u);
}

// Failures leave no latency sample: an endpoint failing half its requests
// is as slow as twice its EMA for urgent work (each failure a retry).
TEST(RouterTest, UrgentCountsRecentFailuresAgainstAFastEndpoint) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 0, 30), ep(2, 10, 0, 40)};
  EXPECT_EQ(pick_index(r, eps, prio(0)), 0u);
  npc_scale::BreakerConfig cfg;
  cfg.min_requests = 100;  // keep it closed: the rate alone must tell
  cfg.window = 100;
  cfg.consecutive_failures = 100;
  eps[0].breaker.configure(cfg);
  for (int i = 0; i < 10; i++) {
    eps[0].breaker.record_success(0);
    eps[0].breaker.record_failure(0);
  }
  ASSERT_TRUE(eps[0].breaker.allows_requests(0));
  EXPECT_EQ(pick_index(r, eps, prio(0)), 1u) << "30 ms at 50% errors is worse than 40 ms";
}

// The urgent reserve is left out before a retry's avoidance falls back:
// the avoided endpoint with free slots serves, not nothing.
TEST(RouterTest, ReserveBeforeAvoidance) {
  Router r(reserve_config(0.2));
  // gpu 1 fastest, 4 of 5 busy: its last slot is urgent work's; gpu 2 slower, idle.
  std::vector<Endpoint> eps{ep(1, 5, 4, 20), ep(2, 5, 0, 90)};
  RouteRequest retry = prio(5);
  retry.avoid_gpu = 2;
  EXPECT_EQ(pick_index(r, eps, retry), 1u) << "the avoided one, rather than waiting";
}

// The reserve sits on the fastest endpoint that takes requests: not on one
// whose breaker is open, which would leave urgent work no reserve at all.
TEST(RouterTest, ReserveIsNotOnAnEndpointThatIsDown) {
  Router r(reserve_config(0.2));
  std::vector<Endpoint> eps{ep(1, 10, 0, 30), ep(2, 10, 9, 50), ep(3, 10, 0, 500)};
  eps[0].breaker.record_rate_limited(0, 60000);  // gpu 1 is out for a minute
  // gpu 2 is now the fastest up: its last slot stays free for urgent work.
  for (int i = 0; i < 4; i++) EXPECT_EQ(pick_index(r, eps, prio(5)), 2u) << i;
  EXPECT_EQ(pick_index(r, eps, prio(0)), 1u);
}

TEST(RouterTest, BackgroundPicksTheLeastLoaded) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 5, 1), ep(2, 10, 2, 500), ep(3, 20, 8, 1)};
  // loads 0.5, 0.2, 0.4: latency does not matter here.
  for (int p : {8, 9, 10}) EXPECT_EQ(pick_index(r, eps, prio(p)), 1u) << p;
}

TEST(RouterTest, RemoteLoadFromMetricsChangesTheChoice) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 5), ep(2, 10, 2)};
  EXPECT_EQ(pick_index(r, eps, prio(9)), 1u);
  eps[1].remote_running = 6;  // other clients keep gpu 2 busy: load 0.7 > 0.5
  eps[1].remote_waiting = 1;
  EXPECT_DOUBLE_EQ(eps[1].load(), 0.7);
  EXPECT_EQ(pick_index(r, eps, prio(9)), 0u);
  // Remote below our own count: ours wins (vLLM has not seen them yet).
  eps[1].remote_running = 0;
  eps[1].remote_waiting = 0;
  EXPECT_DOUBLE_EQ(eps[1].load(), 0.2);
  EXPECT_EQ(pick_index(r, eps, prio(9)), 1u);
}

TEST(RouterTest, MiddleTierSeedScoreHandComputed) {
  Router r;  // 0.5 load + 0.3 ema/100 + 0.2 error_rate
  std::vector<Endpoint> eps{ep(1, 10, 2, 100), ep(2, 10, 6, 20), ep(3, 10, 0, 50)};
  // gpu 3: error rate 0.5 without tripping (never 3 in a row).
  for (int i = 0; i < 2; i++) {
    eps[2].breaker.record_success(0);
    eps[2].breaker.record_failure(0);
  }
  // gpu1: 0.1 + 0.3 + 0 = 0.40; gpu2: 0.3 + 0.06 + 0 = 0.36; gpu3: 0 + 0.15 + 0.1 = 0.25
  EXPECT_EQ(pick_index(r, eps, prio(5)), 2u);
  // More load tips gpu 3 over gpu 2:
  eps[2].in_flight = 3;  // 0.15 + 0.15 + 0.1 = 0.40 > 0.36
  EXPECT_EQ(pick_index(r, eps, prio(5)), 1u);
}

TEST(RouterTest, MiddleTierUnsampledCountsAsFleetMeanEma) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 0, 100), ep(2, 10, 5), ep(3, 10, 6, 20)};
  // mean EMA 60. gpu1: 0.30; gpu2: 0.25 + 0.18 = 0.43 (would be 0.25 if counted as 0); gpu3: 0.30 + 0.06 = 0.36
  EXPECT_EQ(pick_index(r, eps, prio(4)), 0u);
  // With no samples anywhere the latency term is 0 for all.
  std::vector<Endpoint> fresh{ep(1, 10, 4), ep(2, 10, 3)};
  EXPECT_EQ(pick_index(r, fresh, prio(4)), 1u);
}

TEST(RouterTest, WeightsAreConfigurable) {
  RouterConfig c;
  c.urgent_reserve = 0;  // the fastest endpoint is nearly full here
  c.w_load = 0;
  c.w_latency = 1;
  c.w_error = 0;
  Router r(c);
  std::vector<Endpoint> eps{ep(1, 10, 9, 10), ep(2, 10, 0, 90)};
  EXPECT_EQ(pick_index(r, eps, prio(5)), 0u);
  c.w_load = 1;
  c.w_latency = 0;
  r.configure(c);
  EXPECT_EQ(pick_index(r, eps, prio(5)), 1u);
}

TEST(RouterTest, FillingByPickNeverExceedsCapsAtAnyPriority) {
  for (int p : {0, 5, 10}) {
    Router r;
    std::vector<Endpoint> eps{ep(1, 50, 0, 30), ep(2, 40), ep(3, 40, 0, 10)};
    eps[1].remote_running = 100;  // remote load far over the cap must not bend our cap
    eps[2].remote_waiting = 5;
    int sent = 0;
    RouteRequest req = prio(p);
    req.waited_ms = 1000;  // saturated: the urgent reserve is open to all
    while (auto d = r.pick(eps, req, 0)) {
      eps[d->index].in_flight++;
      ASSERT_LE(++sent, 130);
    }
    EXPECT_EQ(sent, 130) << p;
    for (const auto& e : eps) EXPECT_EQ(e.in_flight, e.max_concurrent) << p;
    EXPECT_EQ(Router::free_capacity(eps, 0), 0);
  }
}

TEST(RouterTest, UrgentReserveKeepsTheFastestEndpointsLastSlotsWhileTheFleetKeepsUp) {
  RouterConfig c;
  c.urgent_reserve = 0.2;  // 2 of 10 slots
  c.reserve_wait_ms = 50;
  c.affinity = false;
  Router r(c);
  // Endpoint 0 is the fastest (EMA 10 ms) with 8 of 10 slots busy; endpoint 1 is full.
  std::vector<Endpoint> eps{ep(1, 10, 8, 10), ep(2, 10, 10, 50)};
  EXPECT_FALSE(r.pick(eps, prio(5), 0)) << "priority 5 may not take a reserved slot";
  EXPECT_FALSE(r.pick(eps, prio(10), 0));
  EXPECT_EQ(pick_index(r, eps, prio(2)), 0u) << "priority 0-2 may";
  EXPECT_EQ(pick_index(r, eps, prio(0)), 0u);
  RouteRequest waited = prio(5);
  waited.waited_ms = 49;
  EXPECT_FALSE(r.pick(eps, waited, 0));
  waited.waited_ms = 50;
  EXPECT_EQ(pick_index(r, eps, waited), 0u) << "once work has waited reserve_wait_ms, anyone may";
  // Below the reserve, and on other endpoints, nothing changes.
  eps[0].in_flight = 7;
  EXPECT_EQ(pick_index(r, eps, prio(5)), 0u);
  c.urgent_reserve = 0;
  r.configure(c);
  eps[0].in_flight = 9;
  EXPECT_EQ(pick_index(r, eps, prio(5)), 0u) << "reserve 0: off";
}

// A reserve never takes the whole endpoint: on a fleet of one single-slot
// GPU (reserve 0.2 rounds up to 1 slot), other work would otherwise wait
// reserve_wait_ms for an idle GPU on every request.
TEST(RouterTest, UrgentReserveLeavesAtLeastOneSlotToEveryone) {
  RouterConfig c = reserve_config(0.9);
  Router r(c);
  std::vector<Endpoint> eps{ep(1, 1, 0, 40)};
  EXPECT_EQ(pick_index(r, eps, prio(5)), 0u) << "idle, one slot: not reserved";
  eps = {ep(1, 2, 0, 40)};
  EXPECT_EQ(pick_index(r, eps, prio(9)), 0u) << "two slots: one of them is for everyone";
  eps[0].in_flight = 1;
  EXPECT_FALSE(r.pick(eps, prio(9), 0)) << "and the other is reserved";
  EXPECT_EQ(pick_index(r, eps, prio(1)), 0u);
}

TEST(RouterTest, UrgentReserveIsOnTheLowestLatencyEndpointOnly) {
  RouterConfig c;
  c.urgent_reserve = 0.2;
  c.affinity = false;
  Router r(c);
  // The slow endpoint (EMA 50) nearly full is not reserved: priority 5 goes there.
  std::vector<Endpoint> eps{ep(1, 10, 10, 10), ep(2, 10, 9, 50)};
  EXPECT_EQ(pick_index(r, eps, prio(5)), 1u);
}

TEST(RouterTest, FillingWithAffinityNeverExceedsCaps) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 5), ep(2, 7), ep(3, 3)};
  int sent = 0;
  for (uint64_t k = 0;; k++) {
    RouteRequest req = prio(6);
    req.affinity_key = k % 4;
    auto d = r.pick(eps, req, 0);
    if (!d) break;
    eps[d->index].in_flight++;
    ASSERT_LE(++sent, 15);
  }
  EXPECT_EQ(sent, 15);
  for (const auto& e : eps) EXPECT_EQ(e.in_flight, e.max_concurrent);
}

TEST(RouterTest, TiesRotateEvenly) {
  for (int p : {1, 5, 9}) {
    Router r;
    std::vector<Endpoint> eps{ep(1, 10, 0, 40), ep(2, 10, 0, 40), ep(3, 10, 0, 40)};
    std::map<size_t, int> seen;
    for (int i = 0; i < 30; i++) seen[pick_index(r, eps, prio(p))]++;
    EXPECT_EQ(seen.size(), 3u) << p;
    for (auto& [idx, count] : seen) EXPECT_EQ(count, 10) << "priority " << p << " endpoint " << idx;
  }
}

TEST(RouterTest, UnsampledEndpointsShareUrgentWork) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10), ep(2, 10)};
  std::map<size_t, int> seen;
  for (int i = 0; i < 10; i++) seen[pick_index(r, eps, prio(0))]++;
  EXPECT_EQ(seen[0], 5);
  EXPECT_EQ(seen[1], 5);
}

TEST(RouterTest, AvoidGpuUnlessItIsTheOnlyCandidate) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 0, 5), ep(2, 10, 5, 50)};
  RouteRequest req = prio(1);
  req.avoid_gpu = 1;
  EXPECT_EQ(pick_index(r, eps, req), 1u);  // gpu 1 is fastest but just failed
  req.priority = 9;
  EXPECT_EQ(pick_index(r, eps, req), 1u);
  eps[1].in_flight = 10;
  EXPECT_EQ(pick_index(r, eps, req), 0u);  // only gpu 1 has room: better than waiting
  eps[0].in_flight = 10;
  EXPECT_FALSE(r.pick(eps, req, 0).has_value());
}

TEST(RouterTest, AvoidGpuAppliesToAffinity) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10), ep(2, 10), ep(3, 10)};
  RouteRequest req = prio(5);
  req.affinity_key = 12345;
  size_t home = pick_index(r, eps, req);
  req.avoid_gpu = eps[home].gpu_id;
  EXPECT_NE(pick_index(r, eps, req), home);
}

TEST(RouterTest, OpenOrHalfOpenBreakersAreNotCandidates) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 0, 5), ep(2, 10, 5, 50)};
  for (int i = 0; i < 3; i++) eps[0].breaker.record_failure(1000);  // open until 6000
  EXPECT_EQ(pick_index(r, eps, prio(0), 2000), 1u);
  EXPECT_EQ(Router::free_capacity(eps, 2000), 5);
  EXPECT_EQ(pick_index(r, eps, prio(0), 6000), 1u);  // half-open: only the probe goes
  EXPECT_EQ(Router::free_capacity(eps, 6000), 5);
  eps[0].breaker.probe_started(6000);
  eps[0].breaker.probe_finished(true, 6010);
  EXPECT_EQ(pick_index(r, eps, prio(0), 6010), 0u);
  EXPECT_EQ(Router::free_capacity(eps, 6010), 15);
  eps[1].breaker.record_rate_limited(6010, 1000);
  eps[0].enabled = false;
  EXPECT_FALSE(r.pick(eps, prio(5), 6500).has_value());
  EXPECT_EQ(Router::free_capacity(eps, 6500), 0);
}

// A row's old member, draining after the row moved to another server, has
// the row's gpu_id and is listed after it: the row's own weight places it on
// the ring, so homes do not move while the old member drains.
TEST(RouterTest, ADrainingMemberDoesNotMoveItsRowsHomes) {
  Router with, without;
  std::vector<Endpoint> eps{ep(1, 100), ep(2, 100), ep(3, 100)};
  std::vector<Endpoint> draining = eps;
  draining.push_back(ep(1, 5, 5));
  draining.back().enabled = false;
  int moved = 0;
  for (uint64_t k = 0; k < 200; k++) {
    RouteRequest req = prio(5);
    req.affinity_key = k;
    if (pick_index(with, draining, req) != pick_index(without, eps, req)) moved++;
  }
  EXPECT_EQ(moved, 0);
}

TEST(RouterTest, AffinityKeepsAKeyHomeAndCountsHits) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 100, 10), ep(2, 100, 10), ep(3, 100, 10)};
  RouteRequest req = prio(9);
  req.affinity_key = 42;
  auto first = r.pick(eps, req, 0);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->affinity_hit);
  for (int i = 0; i < 9; i++) {
    auto d = r.pick(eps, req, 0);
    EXPECT_EQ(d->index, first->index);
    EXPECT_TRUE(d->affinity_hit);
  }
  EXPECT_EQ(r.affinity_hits(), 10u);
  EXPECT_EQ(r.affinity_misses(), 0u);
  // Home well above (1+0.25) * avg in_flight: spills, counted as a miss.
  eps[first->index].in_flight = 40;  // bound ceil(1.25 * 61 / 3) = 26
  auto spill = r.pick(eps, req, 0);
  EXPECT_NE(spill->index, first->index);
  EXPECT_FALSE(spill->affinity_hit);
  EXPECT_EQ(r.affinity_misses(), 1u);
  eps[first->index].in_flight = 10;  // drained: back home
  EXPECT_EQ(r.pick(eps, req, 0)->index, first->index);
  EXPECT_EQ(r.affinity_hits(), 11u);
}

// The bounded-load check counts what the server holds, other clients'
// requests included (vLLM's /metrics): a home another database swamped is
// spilled from, not kept.
TEST(RouterTest, AffinitySpillsFromAHomeOtherClientsSwamped) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 16), ep(2, 16)};
  eps[0].remote_running = 16;
  eps[0].remote_waiting = 200;
  eps[1].remote_running = 0;
  eps[1].remote_waiting = 0;
  int to_swamped = 0;
  RouteRequest req = prio(9);
  for (uint64_t k = 0; k < 200; k++) {
    req.affinity_key = k;
    auto d = r.pick(eps, req, 0);
    ASSERT_TRUE(d.has_value());
    if (d->index == 0) to_swamped++;
  }
  EXPECT_EQ(to_swamped, 0);
}

TEST(RouterTest, AffinityBeatsTheTierWhileWithinTheBound) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 100, 10), ep(2, 100, 10), ep(3, 100, 10)};
  RouteRequest req = prio(9);
  req.affinity_key = 7;
  size_t home = r.pick(eps, req, 0)->index;
  eps[home].in_flight = 12;  // most loaded, but under ceil(1.25 * 33 / 3) = 14
  EXPECT_EQ(r.pick(eps, req, 0)->index, home);
}

TEST(RouterTest, UrgentIgnoresAffinityAndAffinityCanBeOff) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 0, 100), ep(2, 10, 0, 10)};
  RouteRequest req = prio(1);
  for (uint64_t k = 0; k < 20; k++) {
    req.affinity_key = k;
    auto d = r.pick(eps, req, 0);
    EXPECT_EQ(d->index, 1u);
    EXPECT_FALSE(d->affinity_hit);
  }
  EXPECT_EQ(r.affinity_hits() + r.affinity_misses(), 0u);

  RouterConfig c;
  c.affinity = false;
  Router off(c);
  req.priority = 9;
  eps[1].in_flight = 3;
  for (uint64_t k = 0; k < 20; k++) {
    req.affinity_key = k;
    EXPECT_EQ(off.pick(eps, req, 0)->index, 0u);  // plain least loaded
  }
  EXPECT_EQ(off.affinity_hits() + off.affinity_misses(), 0u);
}

TEST(RouterTest, SeedAsWrittenIgnoresLoadCapsAndBreakers) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 10, 10, 80), ep(2, 10, 10, 30), ep(3, 10, 0, 60)};
  for (int i = 0; i < 3; i++) eps[1].breaker.record_failure(0);
  EXPECT_EQ(r.pick_seed_as_written(eps, 0), 1u);   // min EMA, though full and open
  EXPECT_EQ(r.pick_seed_as_written(eps, 10), 0u);  // always the first
  EXPECT_EQ(r.pick_seed_as_written(eps, 10), 0u);
  // 3..7 with load 0: gpu1 0.24 + 0.2*0.5 = 0.34; gpu2 0.09 + 0.2*1.0 = 0.29; gpu3 0.18
  eps[0].requests = 10;
  eps[0].errors = 5;
  eps[1].requests = 4;
  eps[1].errors = 4;
  EXPECT_EQ(r.pick_seed_as_written(eps, 5), 2u);
  eps[2].latency = npc_scale::LatencyStats();
  eps[2].latency.add(200);  // gpu3 0.6
  EXPECT_EQ(r.pick_seed_as_written(eps, 5), 1u);
  eps[0].enabled = false;
  EXPECT_EQ(r.pick_seed_as_written(eps, 9), 1u);
}

TEST(RouterTest, RoundRobinSkipsDisabledAndIgnoresCaps) {
  Router r;
  std::vector<Endpoint> eps{ep(1, 1, 1), ep(2, 1), ep(3, 1, 5)};
  eps[1].enabled = false;
  std::vector<size_t> got;
  for (int i = 0; i < 4; i++) got.push_back(r.pick_round_robin(eps));
  EXPECT_EQ(got, (std::vector<size_t>{0, 2, 0, 2}));
}

TEST(RouterTest, EffectivePriorityAges) {
  using npc_scale::effective_priority;
  EXPECT_EQ(effective_priority(10, 0, 1000), 10);
  EXPECT_EQ(effective_priority(10, 999, 1000), 10);
  EXPECT_EQ(effective_priority(10, 1000, 1000), 9);
  EXPECT_EQ(effective_priority(10, 3500, 1000), 7);
  EXPECT_EQ(effective_priority(10, 60000, 1000), 0);  // floor 0
  EXPECT_EQ(effective_priority(2, 5000, 1000), 0);
  EXPECT_EQ(effective_priority(5, 5000, 0), 5);  // aging off
}

TEST(RouterTest, EndpointLoadFraction) {
  Endpoint e = ep(1, 8, 2);
  EXPECT_DOUBLE_EQ(e.load(), 0.25);
  e.remote_running = 4;  // waiting unknown
  EXPECT_DOUBLE_EQ(e.load(), 0.5);
  e.remote_waiting = 8;
  EXPECT_DOUBLE_EQ(e.load(), 1.5);  // the server's queue counts past our cap
  EXPECT_TRUE(e.has_slot());
  e.enabled = false;
  EXPECT_FALSE(e.has_slot());
}

TEST(RouterTest, EmptyFleet) {
  Router r;
  std::vector<Endpoint> none;
  EXPECT_FALSE(r.pick(none, prio(5), 0).has_value());
  EXPECT_EQ(Router::free_capacity(none, 0), 0);
}

// ---- compatibility layer (interim dispatcher) ----

TEST(RouterCompatTest, PicksTheLowestRelativeLoad) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 25, 50, true}, {2, 10, 40, true}, {3, 30, 40, true}};
  EXPECT_EQ(r.pick(eps), 1u);  // loads 0.5, 0.25, 0.75
}

TEST(RouterCompatTest, NeverPicksAFullOrDisabledEndpoint) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 50, 50, true}, {2, 0, 40, false}, {3, 39, 40, true}};
  for (int i = 0; i < 10; i++) EXPECT_EQ(r.pick(eps), 2u);
  eps[2].in_flight = 40;
  EXPECT_FALSE(r.pick(eps).has_value());
  EXPECT_EQ(Router::free_capacity(eps), 0);
}

TEST(RouterCompatTest, FillingByPickNeverExceedsCaps) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 0, 50, true}, {2, 0, 40, true}, {3, 0, 40, true}};
  int sent = 0;
  while (auto i = r.pick(eps)) {
    eps[*i].in_flight++;
    ASSERT_LE(++sent, 130);
  }
  EXPECT_EQ(sent, 130);
  for (const auto& e : eps) EXPECT_EQ(e.in_flight, e.max_concurrent);
}

TEST(RouterCompatTest, TiesRotate) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 0, 10, true}, {2, 0, 10, true}, {3, 0, 10, true}};
  std::map<size_t, int> seen;
  for (int i = 0; i < 30; i++) seen[*r.pick(eps)]++;
  EXPECT_EQ(seen.size(), 3u);
  for (auto& [idx, count] : seen) EXPECT_EQ(count, 10) << "endpoint " << idx;
}

TEST(RouterCompatTest, RetryAvoidsTheFailedEndpointWhenItCan) {
  Router r;
  std::vector<EndpointLoad> eps{{1, 0, 10, true}, {2, 5, 10, true}};
  EXPECT_EQ(r.pick(eps, 1), 1u);
  eps[1].in_flight = 10;
  EXPECT_EQ(r.pick(eps, 1), 0u);
}

TEST(RouterCompatTest, EmptyFleet) {
  Router r;
  EXPECT_FALSE(r.pick(std::vector<EndpointLoad>{}).has_value());
  EXPECT_EQ(Router::free_capacity(std::vector<EndpointLoad>{}), 0);
}

TEST(RingWeightTest, HomesFollowSlotsTimesWeightNotLatency) {
  Endpoint big, small;
  big.max_concurrent = 50;
  small.max_concurrent = 40;
  EXPECT_DOUBLE_EQ(ring_weight(big) / ring_weight(small), 50.0 / 40.0);
  for (int i = 0; i < 20; i++) {
    big.latency.add(35);
    small.latency.add(95);
  }
  EXPECT_DOUBLE_EQ(ring_weight(big) / ring_weight(small), 50.0 / 40.0)
      << "latency does not move homes (it would move NPCs off cached prefixes)";
  big.weight = 3;
  EXPECT_DOUBLE_EQ(ring_weight(big) / ring_weight(small), 150.0 / 40.0) << "the weight column does";
}
