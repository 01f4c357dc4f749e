#include "latency_stats.hpp"

#include <algorithm>
#include <cmath>

namespace npc_scale {

LatencyStats::LatencyStats(double ema_alpha, size_t window) : ring_(std::max<size_t>(window, 1)) {
  set_alpha(ema_alpha);
}

void LatencyStats::set_alpha(double a) {
  // Outside (0,1] the EMA either never moves or diverges.
  alpha_ = (a > 0.0 && a <= 1.0) ? a : 0.2;
}

void LatencyStats::add(double ms) {
  if (!std::isfinite(ms)) return;
  ema_ = count_ == 0 ? ms : alpha_ * ms + (1.0 - alpha_) * ema_;
  ring_[next_] = ms;
  next_ = (next_ + 1) % ring_.size();
  if (count_ < ring_.size()) count_++;
}

double LatencyStats::percentile(double p) const {
  if (count_ == 0) return 0.0;
  std::vector<double> v(ring_.begin(), ring_.begin() + count_);
  std::sort(v.begin(), v.end());
  p = std::clamp(p, 0.0, 100.0);
  // Nearest rank: the smallest value with at least p% of samples at or below it.
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(count_)));
  rank = std::clamp<size_t>(rank, 1, count_);
  return v[rank - 1];
}

}  // namespace npc_scale
