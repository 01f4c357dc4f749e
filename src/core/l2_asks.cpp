#include "l2_asks.hpp"

#include <algorithm>
#include <utility>

namespace npc_scale {

void L2Asks::asked(uint64_t ticket, std::vector<L2Check> checks, int64_t now_ms) {
  for (const L2Check& c : checks) waiting_.insert(c.tag);
  asks_[ticket] = Ask{std::move(checks), now_ms};
}

std::vector<L2Outcome> L2Asks::take(std::vector<L2Reply> replies, int64_t now_ms, int64_t timeout_ms) {
  std::vector<L2Outcome> out;
  for (L2Reply& r : replies) {
    auto ask = asks_.find(r.ticket);
    if (ask == asks_.end()) continue;  // given up already: its checks had their outcome
    std::vector<L2Check>& checks = ask->second.checks;
    for (size_t i = 0; i < checks.size(); i++) {
      std::optional<std::string> hit;
      if (i < r.hits.size()) hit = std::move(r.hits[i]);
      out.push_back({std::move(checks[i]), std::move(hit)});
    }
    asks_.erase(ask);
  }
  const int64_t give_up_before = now_ms - timeout_ms - grace_ms_;
  for (auto it = asks_.begin(); it != asks_.end();) {
    if (it->second.asked_ms > give_up_before) {
      ++it;
      continue;
    }
    for (L2Check& c : it->second.checks) out.push_back({std::move(c), std::nullopt});
    it = asks_.erase(it);
  }
  for (const L2Outcome& o : out) waiting_.erase(o.check.tag);
  return out;
}

int64_t L2Asks::ms_until_give_up(int64_t now_ms, int64_t timeout_ms) const {
  int64_t t = -1;
  for (const auto& [ticket, ask] : asks_) {
    const int64_t due = std::max<int64_t>(0, ask.asked_ms + timeout_ms + grace_ms_ - now_ms);
    t = t < 0 ? due : std::min(t, due);
  }
  return t;
}

}  // namespace npc_scale
