#include "fleet.hpp"

#include <map>

namespace npc_scale {

bool Fleet::reload(const std::vector<EndpointConfig>& configs, const BreakerConfig& breaker,
                   double ema_alpha) {
  // Each row's member so far: its live one if it has one (live members are
  // listed first), else a draining one (a row deleted and inserted again
  // before its requests finished).
  std::map<int, size_t> old_index;
  for (size_t i = 0; i < endpoints_.size(); i++) old_index.emplace(endpoints_[i].gpu_id, i);
  std::vector<bool> carried(endpoints_.size(), false);  // its state went on in a live member

  std::vector<Endpoint> endpoints;
  std::vector<MemberInfo> info;
  bool changed = false;
  for (const EndpointConfig& c : configs) {
    Endpoint e;
    MemberInfo m;
    auto it = old_index.find(c.gpu_id);
    if (it != old_index.end() && info_[it->second].config.base_url == c.base_url) {
      e = endpoints_[it->second];  // keeps latency, breaker, counters, in_flight
      m = info_[it->second];
      carried[it->second] = true;
      if (m.config.max_concurrent != c.max_concurrent || m.config.enabled != c.enabled ||
          m.config.model != c.model || m.config.api != c.api || m.removed) {
        changed = true;
      }
    } else {
      // A new row, or a row that now names another server: a new member, as
      // nothing learnt about the old server applies. The old server's
      // requests still in flight drain on the old member (below) and count
      // against that server, not this one.
      changed = true;
      e.latency = LatencyStats(ema_alpha);
      m.serial = next_serial_++;
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
  // Members no live row carries on, with requests in flight, drain as
  // disabled members: their answers are still taken, and no new work goes
  // to them. Their serial stays theirs, so those answers find them.
  for (size_t i = 0; i < endpoints_.size(); i++) {
    if (carried[i]) continue;
    if (!info_[i].removed) changed = true;
    if (endpoints_[i].in_flight > 0 || info_[i].probe_in_flight || info_[i].scrape_in_flight) {
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

void Fleet::release(size_t i, int64_t now_ms) {
  if (endpoints_[i].in_flight > 0 && --endpoints_[i].in_flight == 0) {
    info_[i].silent_before_ms += now_ms - info_[i].in_flight_since_ms;
  }
  if (info_[i].removed) count_draining();
}

void Fleet::note_send(size_t i, int64_t now_ms) {
  if (endpoints_[i].in_flight == 0) info_[i].in_flight_since_ms = now_ms;
}

void Fleet::note_reply(size_t i, int64_t now_ms) {
  info_[i].silent_before_ms = 0;
  info_[i].in_flight_since_ms = now_ms;
}

int64_t Fleet::silent_ms(size_t i, int64_t now_ms) const {
  return info_[i].silent_before_ms + (endpoints_[i].in_flight > 0 ? now_ms - info_[i].in_flight_since_ms : 0);
}

void Fleet::configure(const BreakerConfig& breaker, double ema_alpha) {
  for (Endpoint& e : endpoints_) {
    e.breaker.configure(breaker);
    e.latency.set_alpha(ema_alpha);
  }
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
    if (endpoints_[i].gpu_id == gpu_id) return i;  // live members come first
  }
  return std::nullopt;
}

std::optional<size_t> Fleet::index_of_member(uint64_t serial) const {
  for (size_t i = 0; i < info_.size(); i++) {
    if (info_[i].serial == serial) return i;
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
