// Per-endpoint response-time statistics: an EMA for routing (cheap, reacts
// quickly) and a ring of the last `window` samples for percentiles (metrics).
#pragma once

#include <cstddef>
#include <vector>

namespace npc_scale {

class LatencyStats {
 public:
  explicit LatencyStats(double ema_alpha = 0.2, size_t window = 100);

  // EMA (the first sample initialises it) + ring buffer of the last `window`.
  void add(double ms);
  bool has_samples() const { return count_ > 0; }
  double ema_ms() const { return has_samples() ? ema_ : 0.0; }
  // Nearest-rank percentile, p in [0,100], over the window; 0 when empty.
  double percentile(double p) const;
  size_t count() const { return count_; }
  void set_alpha(double a);
  // Forgets every sample: an endpoint whose breaker tripped is judged
  // afresh, not by how fast it was before.
  void reset() {
    ema_ = 0.0;
    next_ = 0;
    count_ = 0;
  }

 private:
  double alpha_;
  double ema_ = 0.0;
  std::vector<double> ring_;
  size_t next_ = 0;   // slot the next sample overwrites
  size_t count_ = 0;  // samples in the ring (<= ring_.size())
};

}  // namespace npc_scale
