#include "router.hpp"

namespace npc_scale {

std::optional<size_t> Router::pick(const std::vector<EndpointLoad>& endpoints,
                                   std::optional<int> avoid_gpu) {
  const size_t n = endpoints.size();
  if (n == 0) return std::nullopt;
  std::optional<size_t> best, fallback;
  double best_load = 0;
  // Start the scan at a rotating offset: the first of equally loaded endpoints wins.
  const size_t start = static_cast<size_t>(rotation_++ % n);
  for (size_t k = 0; k < n; k++) {
    size_t i = (start + k) % n;
    const EndpointLoad& e = endpoints[i];
    if (!e.enabled || e.max_concurrent <= 0 || e.in_flight >= e.max_concurrent) continue;
    if (avoid_gpu && e.gpu_id == *avoid_gpu) {
      if (!fallback) fallback = i;
      continue;
    }
    double load = static_cast<double>(e.in_flight) / e.max_concurrent;
    if (!best || load < best_load) {
      best = i;
      best_load = load;
    }
  }
  return best ? best : fallback;
}

int Router::free_capacity(const std::vector<EndpointLoad>& endpoints) {
  int free = 0;
  for (const auto& e : endpoints) {
    if (e.enabled && e.in_flight < e.max_concurrent) free += e.max_concurrent - e.in_flight;
  }
  return free;
}

}  // namespace npc_scale
