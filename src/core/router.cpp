#include "router.hpp"

#include <algorithm>
#include <unordered_map>

namespace npc_scale {

namespace {

// Scores within this are ties: float noise must not defeat rotation.
constexpr double kTie = 1e-9;
// Urgent score of an endpoint with no sample yet and a request already on
// it: after every sampled one.
constexpr double kUntriedBusy = 1e12;

}  // namespace

int Endpoint::seen_requests() const {
  if (remote_running < 0 && remote_waiting < 0) return busy();
  return std::max(busy(), std::max(remote_running, 0) + std::max(remote_waiting, 0));
}

double Endpoint::load() const {
  if (max_concurrent <= 0) return 1.0;
  return static_cast<double>(seen_requests()) / max_concurrent;
}

Router::Router(RouterConfig cfg) : cfg_(cfg) {}

void Router::configure(const RouterConfig& cfg) { cfg_ = cfg; }

template <typename Score>
size_t Router::rotating_min(const std::vector<size_t>& cands, Score score) {
  // Start the scan at a rotating offset: the first of equally scored endpoints wins.
  const size_t n = cands.size();
  const size_t start = static_cast<size_t>(rotation_++ % n);
  size_t best = cands[start];
  double best_score = score(best);
  for (size_t k = 1; k < n; k++) {
    size_t i = cands[(start + k) % n];
    double s = score(i);
    if (s < best_score - kTie) {
      best = i;
      best_score = s;
    }
  }
  return best;
}

std::optional<RouteDecision> Router::pick(std::vector<Endpoint>& endpoints, const RouteRequest& req,
                                          int64_t now_ms) {
  const int priority = std::clamp(req.priority, 0, 10);

  // The fastest sampled endpoint that takes requests keeps its last slots
  // for urgent work (not one that is down: the reserve would be nowhere).
  std::optional<size_t> reserved_full;
  if (priority >= 3 && cfg_.urgent_reserve > 0 && req.waited_ms < cfg_.reserve_wait_ms) {
    std::optional<size_t> fastest;
    for (size_t i = 0; i < endpoints.size(); i++) {
      const Endpoint& e = endpoints[i];
      if (!e.enabled || !e.latency.has_samples() || e.breaker.peek_state(now_ms) != BreakerState::closed) continue;
      if (!fastest || e.latency.ema_ms() < endpoints[*fastest].latency.ema_ms()) fastest = i;
    }
    if (fastest) {
      const Endpoint& f = endpoints[*fastest];
      // Never the whole endpoint: a one-slot GPU reserved for urgent work
      // would make all other work wait reserve_wait_ms on an idle GPU.
      int reserved = std::min(static_cast<int>(f.max_concurrent * cfg_.urgent_reserve + 0.999),
                              f.max_concurrent - 1);
      if (f.busy() >= f.max_concurrent - reserved) reserved_full = fastest;
    }
  }

  // The reserve first, then the retry's avoidance: an avoided endpoint is
  // taken only when nothing else could be.
  std::vector<size_t> cands, avoided;
  for (size_t i = 0; i < endpoints.size(); i++) {
    Endpoint& e = endpoints[i];
    if (!e.has_slot() || !e.breaker.allows_requests(now_ms) || reserved_full == i) continue;
    (req.avoid_gpu && e.gpu_id == *req.avoid_gpu ? avoided : cands).push_back(i);
  }
  if (cands.empty()) cands.swap(avoided);  // better than waiting
  if (cands.empty()) return std::nullopt;

  if (priority >= 3 && cfg_.affinity && req.affinity_key) {
    // Ring over the whole fleet (rebuilt only when it changes); candidacy is
    // eligibility, so a full GPU does not reshuffle everyone's home.
    // A gpu_id twice: a row and the old member it replaced, still draining
    // (listed after it). The row's own weight places it.
    std::vector<int> ids;
    std::vector<double> capacity;
    ids.reserve(endpoints.size());
    for (const auto& e : endpoints) {
      if (std::find(ids.begin(), ids.end(), e.gpu_id) != ids.end()) continue;
      ids.push_back(e.gpu_id);
      capacity.push_back(ring_weight(e));
    }
    ring_.set_members(ids, capacity);
    std::unordered_map<int, size_t> by_gpu;
    for (size_t i : cands) by_gpu.emplace(endpoints[i].gpu_id, i);
    bool home_hit = false;
    auto chosen = ring_.pick(
        *req.affinity_key, cfg_.affinity_epsilon, [&](int id) { return by_gpu.count(id) > 0; },
        // The bound is on what the server holds, other clients' work too:
        // a home swamped by another database is not "within the bound".
        [&](int id) { return endpoints[by_gpu.at(id)].seen_requests(); }, &home_hit);
    if (chosen) {
      (home_hit ? affinity_hits_ : affinity_misses_)++;
      return RouteDecision{by_gpu.at(*chosen), home_hit};
    }
  }

  size_t best;
  if (priority <= 2) {
    // The expected time: the EMA stretched by the recent failures' share
    // (each a retry elsewhere; failures leave no latency sample). An
    // endpoint with no sample yet is tried first, one request at a time: a
    // GPU whose /health is fine but whose completions fail costs one urgent
    // request per trial, not a whole batch.
    best = rotating_min(cands, [&](size_t i) {
      const Endpoint& e = endpoints[i];
      if (!e.latency.has_samples()) return e.busy() == 0 ? -1.0 : kUntriedBusy;
      return e.latency.ema_ms() / std::max(0.05, 1.0 - e.breaker.error_rate());
    });
  } else if (priority >= 8) {
    best = rotating_min(cands, [&](size_t i) { return endpoints[i].load(); });
  } else {
    double sum = 0;
    int sampled = 0;
    for (const auto& e : endpoints) {
      if (e.latency.has_samples()) {
        sum += e.latency.ema_ms();
        sampled++;
      }
    }
    const double mean_ema = sampled ? sum / sampled : 0.0;
    best = rotating_min(cands, [&](size_t i) {
      const Endpoint& e = endpoints[i];
      double ema = e.latency.has_samples() ? e.latency.ema_ms() : mean_ema;
      return cfg_.w_load * e.load() + cfg_.w_latency * ema / 100.0 + cfg_.w_error * e.breaker.error_rate();
    });
  }
  if (req.affinity_key && priority >= 3 && cfg_.affinity) affinity_misses_++;  // ring found nothing (defensive)
  return RouteDecision{best, false};
}

size_t Router::pick_seed_as_written(const std::vector<Endpoint>& endpoints, int priority) {
  std::vector<size_t> pool;
  for (size_t i = 0; i < endpoints.size(); i++)
    if (endpoints[i].enabled) pool.push_back(i);
  if (pool.empty())
    for (size_t i = 0; i < endpoints.size(); i++) pool.push_back(i);
  if (pool.empty()) return 0;
  auto first_min = [&](auto score) {
    size_t best = pool[0];
    double best_score = score(best);
    for (size_t i : pool) {
      double s = score(i);
      if (s < best_score) {
        best = i;
        best_score = s;
      }
    }
    return best;
  };
  if (priority <= 2) return first_min([&](size_t i) { return endpoints[i].latency.ema_ms(); });
  if (priority >= 8) return pool[0];  // in_flight as the seed sees it is always 0
  return first_min([&](size_t i) {
    const Endpoint& e = endpoints[i];
    double err = e.requests ? static_cast<double>(e.errors) / static_cast<double>(e.requests) : 0.0;
    return cfg_.w_latency * e.latency.ema_ms() / 100.0 + cfg_.w_error * err;
  });
}

size_t Router::pick_round_robin(const std::vector<Endpoint>& endpoints) {
  std::vector<size_t> pool;
  for (size_t i = 0; i < endpoints.size(); i++)
    if (endpoints[i].enabled) pool.push_back(i);
  if (pool.empty()) return endpoints.empty() ? 0 : static_cast<size_t>(rr_++ % endpoints.size());
  return pool[rr_++ % pool.size()];
}

std::optional<size_t> Router::pick(const std::vector<EndpointLoad>& endpoints, std::optional<int> avoid_gpu) {
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

int Router::free_capacity(const std::vector<Endpoint>& endpoints, int64_t now_ms) {
  int free = 0;
  for (const auto& e : endpoints) {
    if (e.has_slot() && e.breaker.peek_state(now_ms) == BreakerState::closed) free += e.max_concurrent - e.busy();
  }
  return free;
}

// An endpoint's share of NPC homes: its slots times its configured weight
// (gpu_endpoints.weight). Slots, not measured speed: vLLM's prefix cache
// grows with GPU memory, not speed, and homes that follow latency jitter
// would move NPCs off their cached prefixes. A studio that wants a fast GPU
// to own more NPCs raises its weight. (Measured in test/bench/router_bench.sh:
// speed-weighted homes cut priority 3-7 latency but lowered the cache hit
// rate from 0.73 to 0.66 and hurt urgent p99.)
double ring_weight(const Endpoint& e) {
  return std::max(1, e.max_concurrent) * (e.weight > 0 ? e.weight : 1.0);
}

int effective_priority(int priority, int64_t waited_ms, int64_t aging_ms) {
  if (aging_ms <= 0 || waited_ms <= 0) return std::max(priority, 0);
  int64_t p = static_cast<int64_t>(priority) - waited_ms / aging_ms;
  return static_cast<int>(std::max<int64_t>(p, 0));
}

}  // namespace npc_scale
