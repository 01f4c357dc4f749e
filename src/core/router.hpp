// Choosing a GPU endpoint for a request. Candidates are endpoints with a free
// slot (never sent past a cap) whose circuit breaker is closed; among them the
// request's priority picks the tier: latency first for urgent work, least
// loaded for background work, a weighted score in between. Keyed requests
// prefer their home GPU (warm prefix cache) through a bounded-load ring.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "circuit_breaker.hpp"
#include "consistent_hash.hpp"
#include "latency_stats.hpp"

namespace npc_scale {

struct RouterConfig {
  double w_load = 0.5, w_latency = 0.3, w_error = 0.2;  // seed weights for priorities 3..7
  bool affinity = true;
  double affinity_epsilon = 0.25;  // bounded-load epsilon
  // Slots of the fastest endpoint (lowest latency EMA) kept for priority 0-2
  // while the fleet keeps up: once the oldest waiting work has waited
  // reserve_wait_ms (saturation), work of any priority may use them, so
  // nothing idles then. 0 = no reserve.
  double urgent_reserve = 0.2;
  int64_t reserve_wait_ms = 50;
};

// The router's view of one endpoint (owned by the dispatcher).
struct Endpoint {
  int gpu_id = 0;
  int max_concurrent = 1;
  bool enabled = true;
  double weight = 1.0;  // the endpoint's share of the affinity ring; not in the tier scores
  int in_flight = 0;    // ours
  // Ours too, sent to the same server (base URL) by a row since removed
  // (renumbered, or deleted and inserted again) and still draining: they
  // count against this row's cap, so the server never sees more than it.
  int draining_in_flight = 0;
  int remote_running = -1, remote_waiting = -1;  // from /metrics; -1 unknown
  LatencyStats latency;
  CircuitBreaker breaker;
  uint64_t requests = 0, errors = 0;

  // Requests of ours the server is serving.
  int busy() const { return in_flight + draining_in_flight; }
  // Requests the server is known to hold: max(busy(), remote_running +
  // remote_waiting). The remote count includes other clients' requests
  // (databases sharing the fleet); ours it may not have seen yet.
  int seen_requests() const;
  // Load as a fraction: seen_requests() / max_concurrent.
  double load() const;
  bool has_slot() const { return enabled && busy() < max_concurrent; }
};

struct RouteRequest {
  int priority = 5;                      // 0 most urgent .. 10
  std::optional<uint64_t> affinity_key;  // e.g. npc_id hash, or a prompt-prefix hash
  std::optional<int> avoid_gpu;          // a retry should land elsewhere when it can
  int64_t waited_ms = 0;                 // age of the oldest work waiting for a slot
};

struct RouteDecision {
  size_t index;
  bool affinity_hit;
};

// Interim dispatcher's view; kept until it moves to Endpoint.
struct EndpointLoad {
  int gpu_id = 0;
  int in_flight = 0;
  int max_concurrent = 1;
  bool enabled = true;
};

class Router {
 public:
  explicit Router(RouterConfig cfg = {});
  void configure(const RouterConfig& cfg);
  const RouterConfig& config() const { return cfg_; }

  // Index of the chosen endpoint, or nullopt when no endpoint has a slot and
  // a closed breaker (the caller keeps the work waiting). avoid_gpu is
  // skipped unless it is the only candidate (the urgent reserve is left out first).
  //  0..2:  lowest latency EMA / (1 - breaker.error_rate); an unsampled endpoint
  //         first while it has nothing in flight (one trial at a time).
  //  8..10: lowest load().
  //  3..7:  lowest w_load*load + w_latency*ema_ms/100 + w_error*breaker.error_rate;
  //         unsampled latency counts as the fleet's mean EMA.
  //  Ties rotate. With an affinity key and config.affinity, 3..10 first try
  //  the bounded-load ring over the candidates (bound on seen_requests()).
  std::optional<RouteDecision> pick(std::vector<Endpoint>& endpoints, const RouteRequest& req, int64_t now_ms);
  uint64_t affinity_hits() const { return affinity_hits_; }
  uint64_t affinity_misses() const { return affinity_misses_; }

  // Benchmark baselines. The design doc's policy "as written": load never
  // counted, no breaker, no caps (0..2 min EMA; 8..10 always the first
  // enabled; 3..7 score with load 0, error = errors/requests). Ties go to the
  // first. `endpoints` must be non-empty; with none enabled, all count.
  size_t pick_seed_as_written(const std::vector<Endpoint>& endpoints, int priority);
  // Plain round robin over enabled endpoints, ignoring caps.
  size_t pick_round_robin(const std::vector<Endpoint>& endpoints);

  // Compatibility for the interim dispatcher: lowest in_flight/max_concurrent
  // with a free slot, ties rotate, avoid_gpu only as a fallback.
  std::optional<size_t> pick(const std::vector<EndpointLoad>& endpoints,
                             std::optional<int> avoid_gpu = std::nullopt);
  // Free slots across enabled endpoints.
  static int free_capacity(const std::vector<EndpointLoad>& endpoints);
  // Free slots on enabled endpoints whose breaker allows requests.
  static int free_capacity(const std::vector<Endpoint>& endpoints, int64_t now_ms);

 private:
  // Rotating argmin over `cands` (indices) by `score`.
  template <typename Score>
  size_t rotating_min(const std::vector<size_t>& cands, Score score);

  RouterConfig cfg_;
  uint64_t rotation_ = 0;  // rotates ties so equal endpoints share work
  uint64_t rr_ = 0;
  uint64_t affinity_hits_ = 0, affinity_misses_ = 0;
  // An endpoint of the default 16 slots at weight 1 gets 64 virtual nodes.
  BoundedLoadRing ring_{64, 16.0};
};

// Aging for waiting work so priority 10 is never starved: effective priority
// drops by one per aging_ms waited, floor 0 (no aging when aging_ms <= 0).
int effective_priority(int priority, int64_t waited_ms, int64_t aging_ms);

// Weight of an endpoint on the affinity ring (see router.cpp).
double ring_weight(const Endpoint& e);

}  // namespace npc_scale
