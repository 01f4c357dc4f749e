#include "circuit_breaker.hpp"

#include <algorithm>

namespace npc_scale {

const char* breaker_state_name(BreakerState s) {
  switch (s) {
    case BreakerState::closed: return "closed";
    case BreakerState::open: return "open";
    case BreakerState::half_open: return "half_open";
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(BreakerConfig cfg) { configure(cfg); }

void CircuitBreaker::configure(const BreakerConfig& cfg) {
  cfg_ = cfg;
  cfg_.window = std::max(cfg_.window, 1);
  // The window never holds more than `window` outcomes: a larger minimum
  // would silently switch the error-rate rule off.
  cfg_.min_requests = std::clamp(cfg_.min_requests, 1, cfg_.window);
  cfg_.consecutive_failures = std::max(cfg_.consecutive_failures, 1);
  cfg_.cooldown_ms = std::max<int64_t>(cfg_.cooldown_ms, 0);
  while (static_cast<int>(outcomes_.size()) > cfg_.window) {
    if (outcomes_.front()) failures_in_window_--;
    outcomes_.pop_front();
  }
}

BreakerState CircuitBreaker::peek_state(int64_t now_ms) const {
  if (state_ == BreakerState::open && now_ms >= open_until_) return BreakerState::half_open;
  return state_;
}

BreakerState CircuitBreaker::state(int64_t now_ms) {
  if (state_ == BreakerState::open && now_ms >= open_until_) {
    state_ = BreakerState::half_open;
    probe_in_flight_ = false;
  }
  return state_;
}

bool CircuitBreaker::probe_due(int64_t now_ms) {
  return state(now_ms) == BreakerState::half_open && !probe_in_flight_;
}

void CircuitBreaker::probe_started(int64_t now_ms) {
  if (state(now_ms) == BreakerState::half_open) probe_in_flight_ = true;
}

void CircuitBreaker::probe_finished(bool healthy, int64_t now_ms) {
  if (state(now_ms) != BreakerState::half_open) return;  // a stale probe result
  probe_in_flight_ = false;
  if (!healthy) {
    open(now_ms + cfg_.cooldown_ms);
    return;
  }
  state_ = BreakerState::closed;
  closed_at_ = now_ms;
  rate_limited_ = false;
  outcomes_.clear();
  failures_in_window_ = 0;
  consecutive_ = 0;
}

void CircuitBreaker::record(bool failed) {
  outcomes_.push_back(failed);
  if (failed) failures_in_window_++;
  if (static_cast<int>(outcomes_.size()) > cfg_.window) {
    if (outcomes_.front()) failures_in_window_--;
    outcomes_.pop_front();
  }
}

void CircuitBreaker::record_success(int64_t now_ms, std::optional<int64_t> sent_ms) {
  if (state(now_ms) != BreakerState::closed || (sent_ms && *sent_ms < closed_at_)) return;
  consecutive_ = 0;
  record(false);
  // The success that completes min_requests can reveal a rate already over the bar.
  if (static_cast<int>(outcomes_.size()) >= cfg_.min_requests && error_rate() > cfg_.error_rate)
    open(now_ms + cfg_.cooldown_ms);
}

void CircuitBreaker::record_failure(int64_t now_ms, std::optional<int64_t> sent_ms) {
  if (state(now_ms) != BreakerState::closed || (sent_ms && *sent_ms < closed_at_)) return;
  consecutive_++;
  record(true);
  const bool enough = static_cast<int>(outcomes_.size()) >= cfg_.min_requests;
  if (consecutive_ >= cfg_.consecutive_failures || (enough && error_rate() > cfg_.error_rate)) {
    open(now_ms + cfg_.cooldown_ms);
  }
}

void CircuitBreaker::record_rate_limited(int64_t now_ms, int64_t retry_after_ms) {
  const int64_t until =
      now_ms + (retry_after_ms > 0 ? std::min(retry_after_ms, kMaxRetryAfterMs) : cfg_.cooldown_ms);
  if (peek_state(now_ms) != BreakerState::closed && !rate_limited_) {
    // Failing already (perhaps this 429 answers a request sent before the
    // trip): still failing, until the later of the two.
    open(std::max(open_until_, until));
    return;
  }
  // The server told us when to come back: honour exactly that, or the
  // longest of what it said while we wait (the 429 of a request sent
  // before, with a shorter Retry-After or none, must not cut it short).
  open(rate_limited_ && peek_state(now_ms) == BreakerState::open ? std::max(open_until_, until) : until);
  rate_limited_ = true;
}

void CircuitBreaker::record_unavailable(int64_t now_ms, int64_t retry_after_ms, std::optional<int64_t> sent_ms) {
  const BreakerState s = peek_state(now_ms);
  if (s == BreakerState::closed && sent_ms && *sent_ms < closed_at_) return;
  const int64_t until = now_ms + std::min(std::max<int64_t>(retry_after_ms, 0), kMaxRetryAfterMs);
  open(s == BreakerState::open ? std::max(open_until_, until) : until);
}

int64_t CircuitBreaker::retry_after_ms(std::optional<int64_t> seconds) {
  if (!seconds || *seconds <= 0) return 0;
  return std::min(*seconds, kMaxRetryAfterMs / 1000) * 1000;  // no overflow for any header
}

void CircuitBreaker::open(int64_t until_ms) {
  state_ = BreakerState::open;
  rate_limited_ = false;
  open_until_ = until_ms;
  consecutive_ = 0;
  probe_in_flight_ = false;
}

double CircuitBreaker::error_rate() const {
  if (outcomes_.empty()) return 0.0;
  return static_cast<double>(failures_in_window_) / static_cast<double>(outcomes_.size());
}

}  // namespace npc_scale
