// Per-endpoint circuit breaker (LiteLLM/Envoy-like): trips on consecutive
// failures, on a windowed error rate, or at once on a 429; after a cooldown it
// goes half-open and a single GET /health probe decides whether it closes.
// Time is passed in (ms, any monotonic epoch) so the logic is testable.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>

namespace npc_scale {

struct BreakerConfig {
  int consecutive_failures = 3;  // open after this many failures in a row
  double error_rate = 0.5;       // ... or when the error rate over the window exceeds this
  int window = 20;               //   (last `window` outcomes, only once min_requests seen)
  int min_requests = 10;
  int64_t cooldown_ms = 5000;    // open -> half-open after this
};

enum class BreakerState { closed, open, half_open };
const char* breaker_state_name(BreakerState s);  // "closed" | "open" | "half_open"

class CircuitBreaker {
 public:
  explicit CircuitBreaker(BreakerConfig cfg = {});
  void configure(const BreakerConfig& cfg);
  const BreakerConfig& config() const { return cfg_; }

  // Moves open -> half_open when the cooldown has passed.
  BreakerState state(int64_t now_ms);
  // The state `state(now_ms)` would return, without moving it (for const callers).
  BreakerState peek_state(int64_t now_ms) const;
  bool allows_requests(int64_t now_ms) { return state(now_ms) == BreakerState::closed; }
  // Not closed because the endpoint failed (not because it asked us, with a
  // 429, to come back later).
  bool failing(int64_t now_ms) { return state(now_ms) != BreakerState::closed && !rate_limited_; }
  // Half-open with no probe in flight: the caller should send GET /health now.
  bool probe_due(int64_t now_ms);
  void probe_started(int64_t now_ms);
  // Healthy -> closed with a fresh window; otherwise open again with a new cooldown.
  void probe_finished(bool healthy, int64_t now_ms);

  // Outcomes only move a closed breaker: results arriving while open or
  // half-open belong to requests sent before it tripped, and the probe
  // decides. So do those of requests sent (`sent_ms`) before the probe
  // closed it: a timeout of the old trouble arriving after the probe must
  // not open a recovered endpoint again.
  void record_success(int64_t now_ms, std::optional<int64_t> sent_ms = std::nullopt);
  // Transport error, timeout, 5xx.
  void record_failure(int64_t now_ms, std::optional<int64_t> sent_ms = std::nullopt);
  // 429: open at once until now + retry_after_ms (cooldown_ms when <= 0),
  // at most kMaxRetryAfterMs: a hostile or broken header cannot close an
  // endpoint for days. Open for failures, it stays so (failing(), until at
  // least its cooldown's end): a 429 neither shortens nor hides the trouble.
  static constexpr int64_t kMaxRetryAfterMs = 3600 * 1000;
  void record_rate_limited(int64_t now_ms, int64_t retry_after_ms);
  // 503 with a Retry-After: failing (not merely rate-limited: a sync caller
  // is told at once), open until now + retry_after_ms, or later if it was
  // open for longer already. As record_failure, a reply to a request sent
  // before the probe closed it is the old trouble's.
  void record_unavailable(int64_t now_ms, int64_t retry_after_ms, std::optional<int64_t> sent_ms = std::nullopt);
  // A Retry-After header's seconds as record_rate_limited() takes them.
  static int64_t retry_after_ms(std::optional<int64_t> seconds);

  double error_rate() const;  // over the window; 0 when empty
  int64_t open_until_ms() const { return open_until_; }
  int consecutive_failures() const { return consecutive_; }

 private:
  void open(int64_t until_ms);
  void record(bool ok);

  BreakerConfig cfg_;
  BreakerState state_ = BreakerState::closed;
  std::deque<bool> outcomes_;  // true = failure, newest at the back
  int failures_in_window_ = 0;
  int consecutive_ = 0;
  int64_t open_until_ = 0;
  bool probe_in_flight_ = false;
  bool rate_limited_ = false;  // opened by a 429, not by failures
  int64_t closed_at_ = INT64_MIN;  // when a probe last closed it
};

}  // namespace npc_scale
