// CircuitBreaker: consecutive failures, windowed error rate (after
// min_requests), cooldown -> half-open -> probe, and 429 Retry-After.
#include <gtest/gtest.h>

#include "circuit_breaker.hpp"

using npc_scale::BreakerConfig;
using npc_scale::BreakerState;
using npc_scale::CircuitBreaker;

namespace {
BreakerConfig with_cooldown(int64_t ms) {
  BreakerConfig c;
  c.cooldown_ms = ms;
  return c;
}
}  // namespace

TEST(CircuitBreakerTest, StartsClosed) {
  CircuitBreaker b;
  EXPECT_EQ(b.state(0), BreakerState::closed);
  EXPECT_TRUE(b.allows_requests(0));
  EXPECT_FALSE(b.probe_due(0));
  EXPECT_EQ(b.error_rate(), 0.0);
  EXPECT_STREQ(npc_scale::breaker_state_name(BreakerState::closed), "closed");
  EXPECT_STREQ(npc_scale::breaker_state_name(BreakerState::open), "open");
  EXPECT_STREQ(npc_scale::breaker_state_name(BreakerState::half_open), "half_open");
}

TEST(CircuitBreakerTest, ConsecutiveFailuresOpenIt) {
  CircuitBreaker b;  // 3 in a row
  b.record_failure(100);
  b.record_failure(101);
  b.record_success(102);  // resets the run
  b.record_failure(103);
  b.record_failure(104);
  EXPECT_EQ(b.state(104), BreakerState::closed);
  b.record_failure(105);
  EXPECT_EQ(b.state(105), BreakerState::open);
  EXPECT_FALSE(b.allows_requests(105));
  EXPECT_EQ(b.open_until_ms(), 105 + 5000);
}

TEST(CircuitBreakerTest, ErrorRateOpensOnlyAfterMinRequests) {
  BreakerConfig c;
  c.consecutive_failures = 100;  // isolate the rate rule
  c.error_rate = 0.5;
  c.window = 20;
  c.min_requests = 10;
  CircuitBreaker b(c);
  // F,F,S repeated: rate 2/3 > 0.5 from the start, but not enough requests yet.
  int64_t t = 0;
  for (int i = 0; i < 3; i++) {
    b.record_failure(++t);
    b.record_failure(++t);
    b.record_success(++t);
  }
  EXPECT_EQ(b.state(t), BreakerState::closed);  // 9 outcomes < min_requests
  EXPECT_NEAR(b.error_rate(), 6.0 / 9.0, 1e-12);
  b.record_failure(++t);  // 10th outcome, rate 7/10
  EXPECT_EQ(b.state(t), BreakerState::open);
}

TEST(CircuitBreakerTest, MinRequestsAboveTheWindowStillLetsTheRateTrip) {
  BreakerConfig c;
  c.consecutive_failures = 100;
  c.error_rate = 0.5;
  c.window = 4;
  c.min_requests = 10;  // more than the window can ever hold: read as 4
  CircuitBreaker b(c);
  int64_t t = 0;
  for (int i = 0; i < 3; i++) {
    b.record_failure(++t);
    b.record_success(++t);
  }
  b.record_failure(++t);
  b.record_failure(++t);  // window F,S,F,F: 3/4
  EXPECT_EQ(b.state(t), BreakerState::open);
}

TEST(CircuitBreakerTest, ErrorRateAtTheThresholdDoesNotOpen) {
  BreakerConfig c;
  c.consecutive_failures = 100;
  CircuitBreaker b(c);
  for (int i = 0; i < 10; i++) {
    b.record_success(i);
    b.record_failure(i);
  }
  EXPECT_DOUBLE_EQ(b.error_rate(), 0.5);  // must exceed, not equal
  EXPECT_EQ(b.state(20), BreakerState::closed);
}

TEST(CircuitBreakerTest, WindowForgetsOldOutcomes) {
  BreakerConfig c;
  c.consecutive_failures = 100;
  c.window = 20;
  CircuitBreaker b(c);
  for (int i = 0; i < 4; i++) b.record_failure(i);
  for (int i = 0; i < 16; i++) b.record_success(10 + i);
  EXPECT_DOUBLE_EQ(b.error_rate(), 4.0 / 20.0);
  for (int i = 0; i < 4; i++) b.record_success(30 + i);  // pushes the failures out
  EXPECT_EQ(b.error_rate(), 0.0);
  EXPECT_EQ(b.state(40), BreakerState::closed);
}

TEST(CircuitBreakerTest, SuccessReachingMinRequestsStillTripsOnRate) {
  BreakerConfig c;
  c.consecutive_failures = 100;
  CircuitBreaker b(c);
  for (int i = 0; i < 9; i++) b.record_failure(i);  // 9 < min_requests
  EXPECT_EQ(b.state(9), BreakerState::closed);
  b.record_success(10);  // 10 outcomes, rate 0.9
  EXPECT_EQ(b.state(10), BreakerState::open);
}

TEST(CircuitBreakerTest, CooldownHalfOpenProbeSuccessCloses) {
  CircuitBreaker b;
  for (int i = 0; i < 3; i++) b.record_failure(1000);
  EXPECT_EQ(b.state(5999), BreakerState::open);
  EXPECT_FALSE(b.probe_due(5999));
  EXPECT_EQ(b.state(6000), BreakerState::half_open);
  EXPECT_FALSE(b.allows_requests(6000));  // half-open: only the probe goes
  EXPECT_TRUE(b.probe_due(6000));
  b.probe_started(6000);
  EXPECT_FALSE(b.probe_due(6001));  // one probe at a time
  b.probe_finished(true, 6050);
  EXPECT_EQ(b.state(6050), BreakerState::closed);
  EXPECT_TRUE(b.allows_requests(6050));
  EXPECT_EQ(b.error_rate(), 0.0);  // window reset
  // A fresh run is needed to trip it again.
  b.record_failure(6100);
  b.record_failure(6101);
  EXPECT_TRUE(b.allows_requests(6101));
}

TEST(CircuitBreakerTest, ProbeFailureReopensWithANewCooldown) {
  CircuitBreaker b;
  for (int i = 0; i < 3; i++) b.record_failure(0);
  ASSERT_TRUE(b.probe_due(5000));
  b.probe_started(5000);
  b.probe_finished(false, 5200);
  EXPECT_EQ(b.state(5200), BreakerState::open);
  EXPECT_EQ(b.open_until_ms(), 5200 + 5000);
  EXPECT_EQ(b.state(10199), BreakerState::open);
  EXPECT_TRUE(b.probe_due(10200));
}

TEST(CircuitBreakerTest, RateLimitedOpensExactlyUntilRetryAfter) {
  CircuitBreaker b;
  b.record_rate_limited(1000, 1500);
  EXPECT_EQ(b.open_until_ms(), 2500);
  EXPECT_FALSE(b.allows_requests(2499));
  EXPECT_EQ(b.state(2499), BreakerState::open);
  EXPECT_EQ(b.state(2500), BreakerState::half_open);
  EXPECT_FALSE(b.allows_requests(2500));
  b.probe_started(2500);
  b.probe_finished(true, 2510);
  EXPECT_TRUE(b.allows_requests(2510));
}

// Requests sent before the probe closed it belong to the old trouble: their
// failures (a 30 s timeout arriving late) do not open it again; those sent
// since do.
TEST(CircuitBreakerTest, OutcomesOfRequestsSentBeforeItClosedAreIgnored) {
  const BreakerConfig c = with_cooldown(5000);
  CircuitBreaker b(c);
  for (int i = 0; i < 3; i++) b.record_failure(1000 + i, 900);
  ASSERT_EQ(b.state(1010), BreakerState::open);
  b.probe_started(6100);
  b.probe_finished(true, 6200);
  for (int i = 0; i < 5; i++) b.record_failure(6300 + i, 950);  // sent at 950
  EXPECT_TRUE(b.allows_requests(6400));
  EXPECT_EQ(b.consecutive_failures(), 0);
  for (int i = 0; i < 3; i++) b.record_failure(6500 + i, 6250);  // sent after it closed
  EXPECT_EQ(b.state(6510), BreakerState::open);
}

// A 429 arriving while the breaker is open for failures (a request sent
// before the trip) neither shortens the cooldown nor makes it look merely
// rate-limited: the fleet is still failing there.
TEST(CircuitBreakerTest, A429DoesNotHideFailures) {
  const BreakerConfig c = with_cooldown(5000);
  CircuitBreaker b(c);
  for (int i = 0; i < 3; i++) b.record_failure(0);
  ASSERT_TRUE(b.failing(10));
  b.record_rate_limited(100, 1000);
  EXPECT_EQ(b.open_until_ms(), 5000);
  EXPECT_TRUE(b.failing(200));
  b.record_rate_limited(200, 9000);  // asks for longer: the later of the two
  EXPECT_EQ(b.open_until_ms(), 9200);
  EXPECT_TRUE(b.failing(300));
  CircuitBreaker limited(c);  // a plain 429 still means "come back later"
  limited.record_rate_limited(0, 1000);
  EXPECT_FALSE(limited.failing(10));
  EXPECT_EQ(limited.open_until_ms(), 1000);
}

// A 429 with Retry-After 60 s, then the 429 of a request already in flight
// with no header (the cooldown, 5 s): the breaker stays open the full
// minute, the probe does not reopen it after 5 s.
TEST(CircuitBreakerTest, ALaterShorter429DoesNotCutALongerRetryAfterShort) {
  CircuitBreaker b(with_cooldown(5000));
  b.record_rate_limited(0, 60000);
  b.record_rate_limited(200, 0);
  EXPECT_EQ(b.open_until_ms(), 60000);
  EXPECT_EQ(b.state(10000), BreakerState::open);
  b.record_rate_limited(300, 2000);
  EXPECT_EQ(b.open_until_ms(), 60000);
  EXPECT_EQ(b.state(60000), BreakerState::half_open);
  // Once it has reopened, a new 429 sets the time anew.
  b.probe_started(60000);
  b.probe_finished(true, 60010);
  b.record_rate_limited(61000, 1000);
  EXPECT_EQ(b.open_until_ms(), 62000);
}

TEST(CircuitBreakerTest, RateLimitedWithoutRetryAfterUsesCooldown) {
  const BreakerConfig c = with_cooldown(700);
  CircuitBreaker b(c);
  b.record_rate_limited(100, 0);
  EXPECT_EQ(b.open_until_ms(), 800);
  // Retry-After longer than the cooldown is honoured exactly too.
  b.record_rate_limited(100, 30000);
  EXPECT_EQ(b.open_until_ms(), 30100);
  EXPECT_EQ(b.state(29000), BreakerState::open);
  // ... up to an hour: a day-long (or absurd) header is cut there.
  b.record_rate_limited(100, CircuitBreaker::retry_after_ms(86400));
  EXPECT_EQ(b.open_until_ms(), 100 + 3600 * 1000);
  b.record_rate_limited(100, CircuitBreaker::retry_after_ms(INT64_MAX / 10));
  EXPECT_EQ(b.open_until_ms(), 100 + 3600 * 1000);
  EXPECT_EQ(CircuitBreaker::retry_after_ms(std::nullopt), 0);
  EXPECT_EQ(CircuitBreaker::retry_after_ms(-5), 0);
  EXPECT_EQ(CircuitBreaker::retry_after_ms(2), 2000);
}

// 503 with a Retry-After: the server says it is down for that long. Open at
// once for exactly that, and failing (a sync caller is told at once), never
// shortening a longer opening; a reply to a request sent before the probe
// closed it is the old trouble's.
TEST(CircuitBreakerTest, UnavailableOpensForItsRetryAfterAsAFailure) {
  const BreakerConfig c = with_cooldown(5000);
  CircuitBreaker b(c);
  b.record_unavailable(1000, 30000);
  EXPECT_EQ(b.open_until_ms(), 31000);
  EXPECT_TRUE(b.failing(1001));
  EXPECT_EQ(b.state(30999), BreakerState::open);
  b.record_unavailable(2000, 1000);  // shorter: the longer opening stands
  EXPECT_EQ(b.open_until_ms(), 31000);
  b.record_unavailable(3000, CircuitBreaker::retry_after_ms(86400));  // at most an hour
  EXPECT_EQ(b.open_until_ms(), 3000 + 3600 * 1000);

  CircuitBreaker limited(c);  // rate-limited, then told it is down: failing
  limited.record_rate_limited(0, 1000);
  ASSERT_FALSE(limited.failing(10));
  limited.record_unavailable(10, 2000);
  EXPECT_TRUE(limited.failing(20));
  EXPECT_EQ(limited.open_until_ms(), 2010);

  CircuitBreaker recovered(c);
  for (int i = 0; i < 3; i++) recovered.record_failure(0);
  recovered.probe_started(5000);
  recovered.probe_finished(true, 5100);
  recovered.record_unavailable(5200, 30000, 4000);  // sent before it closed
  EXPECT_TRUE(recovered.allows_requests(5200));
  recovered.record_unavailable(5300, 30000, 5150);  // sent since
  EXPECT_EQ(recovered.open_until_ms(), 35300);
}

TEST(CircuitBreakerTest, LateOutcomesWhileOpenDoNotMoveIt) {
  CircuitBreaker b;
  for (int i = 0; i < 3; i++) b.record_failure(0);
  b.record_success(100);  // a request sent before it tripped
  EXPECT_EQ(b.state(100), BreakerState::open);
  b.record_failure(200);
  EXPECT_EQ(b.open_until_ms(), 5000);  // cooldown not extended
}

TEST(CircuitBreakerTest, PeekStateDoesNotMutate) {
  CircuitBreaker b;
  b.record_rate_limited(0, 100);
  EXPECT_EQ(b.peek_state(100), BreakerState::half_open);
  EXPECT_EQ(b.peek_state(50), BreakerState::open);
  EXPECT_EQ(b.state(50), BreakerState::open);
}
