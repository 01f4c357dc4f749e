// The dispatcher's GPU fleet: each endpoint's configuration (from
// npc_scale.gpu_endpoints) beside the router's live view of it (load,
// latency, breaker). Reloading keeps the live state of endpoints that stay,
// and keeps a removed endpoint that still has requests in flight as a
// draining, disabled member until they finish — none is lost. Those requests
// count against the cap of any live row for the same server. A row whose URL
// changes is a new member: the old one drains the old server's requests.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "router.hpp"

namespace npc_scale {

struct EndpointConfig {
  int gpu_id = 0;
  std::string base_url;
  std::string model;
  std::string api = "completions";
  int max_concurrent = 1;
  bool enabled = true;
  double weight = 1.0;
  std::string api_key;
  bool send_priority = false;  // the server runs --scheduling-policy priority
};

struct MemberInfo {
  // Names this member for as long as it lives, unlike gpu_id: a request
  // records it, so its answer finds the member that sent it even after its
  // row is renumbered, or its gpu_id is given to a row for another server.
  uint64_t serial = 0;
  EndpointConfig config;
  bool removed = false;          // gone from the table; draining its in-flight requests
  std::string last_error;
  int64_t last_error_at_ms = 0;  // wall clock, for the stats view
  bool probe_in_flight = false;
  bool scrape_in_flight = false;
  int64_t next_scrape_ms = 0;    // steady clock
  // Its silence (see Fleet::silent_ms): time with requests in flight and no
  // reply, added up over the stretches in flight since the last reply.
  int64_t silent_before_ms = 0;      // the stretches that ended with none in flight
  int64_t in_flight_since_ms = 0;    // steady clock: the current stretch's start
};

// Whether the fleet can serve a request that must not wait in a queue
// (generate()): no endpoint enabled; every enabled one failing (its circuit
// breaker open, or half-open while a probe decides); or one that accepts
// requests, now or once a slot frees (or, after a 429, once its Retry-After
// has passed).
enum class FleetAvailability { none_enabled, all_failing, available };

class Fleet {
 public:
  // Applies a new configuration; returns true if anything changed.
  bool reload(const std::vector<EndpointConfig>& configs, const BreakerConfig& breaker,
              double ema_alpha);
  // New breaker settings and latency average for every member (a reload
  // of the configuration: no row changed).
  void configure(const BreakerConfig& breaker, double ema_alpha);
  // Drops removed members whose requests have all finished.
  void prune_drained();
  // One request of member i ended (answered, failed or aborted): its slot is
  // free, for its row and for the rows that share its server.
  void release(size_t i, int64_t now_ms);
  // Member i is sent a request (before its in_flight counts it).
  void note_send(size_t i, int64_t now_ms);
  // Member i answered an inference request (any HTTP status): not silent.
  void note_reply(size_t i, int64_t now_ms);
  // How long member i has had requests in flight without answering any,
  // added up across requests (a timeout or cancel does not end it; idle
  // time between them does not count). Replies to the /health and /metrics
  // probes do not end it either: an API server answers those around a hung
  // engine.
  int64_t silent_ms(size_t i, int64_t now_ms) const;

  size_t size() const { return endpoints_.size(); }
  std::vector<Endpoint>& endpoints() { return endpoints_; }
  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  MemberInfo& info(size_t i) { return info_[i]; }
  const MemberInfo& info(size_t i) const { return info_[i]; }
  // The member serving row gpu_id (a draining one only if the row is gone).
  std::optional<size_t> index_of(int gpu_id) const;
  std::optional<size_t> index_of_member(uint64_t serial) const;
  bool any_enabled() const;
  FleetAvailability availability(int64_t now_ms);
  // "GPU <id>: <last error>" of the failing endpoint that failed last ("" if none has).
  std::string last_failure() const;

 private:
  // Sets every live member's draining_in_flight from the removed ones.
  void count_draining();

  // Parallel to info_: the router's input. Live members (one per row, in
  // the table's order) come before draining ones.
  std::vector<Endpoint> endpoints_;
  std::vector<MemberInfo> info_;
  uint64_t next_serial_ = 1;
};

}  // namespace npc_scale
