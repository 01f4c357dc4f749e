#include "consistent_hash.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

// Header-only xxHash: the extension's .so is linked without -lxxhash, so
// inlining keeps it free of an unresolved symbol at load time.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace npc_scale {

namespace {

uint64_t hash_u64(uint64_t v, uint64_t seed) { return XXH3_64bits_withSeed(&v, sizeof v, seed); }

// Distinct seeds so a key's position is independent of vnode positions.
constexpr uint64_t kKeySeed = 0x6e70635f6b6579ULL;   // "npc_key"
constexpr uint64_t kNodeSeed = 0x6e70635f6e6f6465ULL;  // "npc_node"

}  // namespace

BoundedLoadRing::BoundedLoadRing(int vnodes_per_member, double reference_weight)
    : vnodes_(std::max(vnodes_per_member, 1)), reference_weight_(reference_weight > 0 ? reference_weight : 1.0) {}

void BoundedLoadRing::set_members(const std::vector<int>& member_ids) {
  set_members(member_ids, std::vector<double>(member_ids.size(), reference_weight_));
}

void BoundedLoadRing::set_members(const std::vector<int>& member_ids,
                                  const std::vector<double>& weights) {
  std::vector<std::pair<int, double>> m;
  for (size_t i = 0; i < member_ids.size(); i++) {
    m.emplace_back(member_ids[i], i < weights.size() && weights[i] > 0 ? weights[i] : 1.0);
  }
  std::sort(m.begin(), m.end());
  m.erase(std::unique(m.begin(), m.end(),
                      [](const auto& a, const auto& b) { return a.first == b.first; }),
          m.end());
  std::vector<int> ids;
  std::vector<double> w;
  for (const auto& [id, weight] : m) {
    ids.push_back(id);
    w.push_back(weight);
  }
  if (ids == members_ && w == weights_ && !(ring_.empty() && !ids.empty())) return;
  members_ = std::move(ids);
  weights_ = std::move(w);
  ring_.clear();
  for (size_t i = 0; i < members_.size(); i++) {
    const int id = members_[i];
    // By its own weight (not relative to the fleet's mean: then one
    // member's change would resize every member's share of the ring).
    const double scaled = std::min(static_cast<double>(vnodes_) * 64, vnodes_ * weights_[i] / reference_weight_);
    const int vnodes = std::max(1, static_cast<int>(std::lround(scaled)));
    for (int v = 0; v < vnodes; v++) {
      uint64_t node = (static_cast<uint64_t>(static_cast<uint32_t>(id)) << 32) | static_cast<uint32_t>(v);
      ring_.emplace_back(hash_u64(node, kNodeSeed), id);
    }
  }
  std::sort(ring_.begin(), ring_.end());
}

size_t BoundedLoadRing::start_index(uint64_t key) const {
  // Keys such as npc ids are often sequential: hash them onto the ring.
  uint64_t pos = hash_u64(key, kKeySeed);
  auto it = std::lower_bound(ring_.begin(), ring_.end(), std::make_pair(pos, std::numeric_limits<int>::min()));
  return it == ring_.end() ? 0 : static_cast<size_t>(it - ring_.begin());
}

std::optional<int> BoundedLoadRing::home(uint64_t key) const {
  if (ring_.empty()) return std::nullopt;
  return ring_[start_index(key)].second;
}

std::optional<int> BoundedLoadRing::pick(uint64_t key, double epsilon, const std::function<bool(int)>& eligible,
                                         const std::function<int(int)>& load, bool* home_hit) const {
  if (home_hit) *home_hit = false;
  if (ring_.empty()) return std::nullopt;
  int64_t total = 0;
  double eligible_weight = 0;
  for (size_t i = 0; i < members_.size(); i++) {
    if (!eligible(members_[i])) continue;
    eligible_weight += weights_[i];
    total += std::max(load(members_[i]), 0);
  }
  if (eligible_weight <= 0) return std::nullopt;
  // A member may take load up to its weighted share of (1+epsilon) x the
  // total (bounded loads, Mirrokni et al. 2018; equal weights = the paper's bound).
  auto bound = [&](int id) {
    size_t i = static_cast<size_t>(std::lower_bound(members_.begin(), members_.end(), id) - members_.begin());
    return std::ceil((1.0 + std::max(epsilon, 0.0)) * static_cast<double>(total + 1) * weights_[i] /
                     eligible_weight);
  };
  const std::optional<int> true_home = ring_[start_index(key)].second;

  // Visit each member once, in clockwise order of its first virtual node.
  std::vector<int> seen;
  seen.reserve(members_.size());
  std::optional<int> first_eligible;
  const size_t start = start_index(key);
  for (size_t k = 0; k < ring_.size() && seen.size() < members_.size(); k++) {
    int id = ring_[(start + k) % ring_.size()].second;
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
    seen.push_back(id);
    if (!eligible(id)) continue;
    if (!first_eligible) first_eligible = id;
    if (static_cast<double>(load(id)) + 1.0 <= bound(id)) {
      // A hit only when the key's real home took it, not merely the first member with room.
      if (home_hit) *home_hit = (id == *true_home);
      return id;
    }
  }
  return std::nullopt;  // unreachable: the least-loaded eligible member always fits the bound
}

}  // namespace npc_scale
