#include "fleet.hpp"

#include <map>

namespace npc_scale {

bool Fleet::reload(const std::vector<EndpointConfig>& configs, const BreakerConfig& breaker,
                   double ema_alpha) {
  std::map<int, size_t> old_index;
  for (size_t i = 0; i < endpoints_.size(); i++) old_index[endpoints_[i].gpu_id] = i;

  std::vector<Endpoint> endpoints;
  std::vector<MemberInfo> info;
  bool changed = configs.size() != endpoints_.size();
  std::map<int, bool> present;
  for (const EndpointConfig& c : configs) {
    present[c.gpu_id] = true;
    Endpoint e;
    MemberInfo m;
    auto it = old_index.find(c.gpu_id);
    if (it != old_index.end()) {
      e = endpoints_[it->second];  // keeps latency, breaker, counters, in_flight
      m = info_[it->second];
      if (m.config.base_url != c.base_url || m.config.max_concurrent != c.max_concurrent ||
          m.config.enabled != c.enabled || m.config.model != c.model || m.config.api != c.api ||
          m.removed) {
        changed = true;
      }
      if (m.config.base_url != c.base_url) {
        // Another server: what we learnt about the old one does not apply.
        e.latency = LatencyStats(ema_alpha);
        e.breaker = CircuitBreaker(breaker);
        e.remote_running = e.remote_waiting = -1;
      }
    } else {
      changed = true;
      e.latency = LatencyStats(ema_alpha);
    }
    e.gpu_id = c.gpu_id;
    e.max_concurrent = c.max_concurrent;
    e.enabled = c.enabled;
    e.weight = c.weight;
    e.breaker.configure(breaker);
    e.latency.set_alpha(ema_alpha);
    m.config = c;
    m.removed = false;
    endpoints.push_back(std::move(e));
    info.push_back(std::move(m));
  }
  // Removed endpoints with requests in flight drain as disabled members.
  for (size_t i = 0; i < endpoints_.size(); i++) {
    if (present.count(endpoints_[i].gpu_id)) continue;
    changed = true;
    if (endpoints_[i].in_flight > 0) {
      Endpoint e = endpoints_[i];
      e.enabled = false;
      MemberInfo m = info_[i];
      m.removed = true;
      endpoints.push_back(std::move(e));
      info.push_back(std::move(m));
    }
  }
  endpoints_ = std::move(endpoints);
  info_ = std::move(info);
  count_draining();
  return changed;
}

void Fleet::count_draining() {
  std::map<std::string, int> draining;  // base URL → in flight from removed rows
  for (size_t i = 0; i < endpoints_.size(); i++) {
    if (info_[i].removed) draining[info_[i].config.base_url] += endpoints_[i].in_flight;
  }
  for (size_t i = 0; i < endpoints_.size(); i++) {
    auto it = info_[i].removed ? draining.end() : draining.find(info_[i].config.base_url);
    endpoints_[i].draining_in_flight = it == draining.end() ? 0 : it->second;
  }
}

void Fleet::release(size_t i) {
  if (--endpoints_[i].in_flight < 0) endpoints_[i].in_flight = 0;
  if (info_[i].removed) count_draining();
}

void Fleet::prune_drained() {
  for (size_t i = endpoints_.size(); i-- > 0;) {
    if (info_[i].removed && endpoints_[i].in_flight <= 0 && !info_[i].probe_in_flight &&
        !info_[i].scrape_in_flight) {
      endpoints_.erase(endpoints_.begin() + static_cast<long>(i));
      info_.erase(info_.begin() + static_cast<long>(i));
    }
  }
  count_draining();
}

std::optional<size_t> Fleet::index_of(int gpu_id) const {
  for (size_t i = 0; i < endpoints_.size(); i++) {
    if (endpoints_[i].gpu_id == gpu_id) return i;
  }
  return std::nullopt;
}

bool Fleet::any_enabled() const {
  for (const auto& e : endpoints_) {
    if (e.enabled) return true;
  }
  return false;
}

FleetAvailability Fleet::availability(int64_t now_ms) {
  bool enabled = false;
  for (Endpoint& e : endpoints_) {
    if (!e.enabled) continue;
    enabled = true;
    if (!e.breaker.failing(now_ms)) return FleetAvailability::available;
  }
  return enabled ? FleetAvailability::all_failing : FleetAvailability::none_enabled;
}

std::string Fleet::last_failure() const {
  const MemberInfo* latest = nullptr;
  for (size_t i = 0; i < info_.size(); i++) {
    if (!endpoints_[i].enabled || info_[i].last_error.empty()) continue;
    if (!latest || info_[i].last_error_at_ms > latest->last_error_at_ms) latest = &info_[i];
  }
  return latest ? "GPU " + std::to_string(latest->config.gpu_id) + ": " + latest->last_error : "";
}

}  // namespace npc_scale
