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

BoundedLoadRing::BoundedLoadRing(int vnodes_per_member) : vnodes_(std::max(vnodes_per_member, 1)) {}

void BoundedLoadRing::set_members(const std::vector<int>& member_ids) {
  std::vector<int> m = member_ids;
  std::sort(m.begin(), m.end());
  m.erase(std::unique(m.begin(), m.end()), m.end());
  if (m == members_ && !(ring_.empty() && !m.empty())) return;
  members_ = std::move(m);
  ring_.clear();
  ring_.reserve(members_.size() * static_cast<size_t>(vnodes_));
  for (int id : members_) {
    for (int v = 0; v < vnodes_; v++) {
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
  int n_eligible = 0;
  for (int id : members_) {
    if (!eligible(id)) continue;
    n_eligible++;
    total += std::max(load(id), 0);
  }
  if (n_eligible == 0) return std::nullopt;
  const double bound = std::ceil((1.0 + std::max(epsilon, 0.0)) * static_cast<double>(total + 1) / n_eligible);

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
    if (static_cast<double>(load(id)) + 1.0 <= bound) {
      if (home_hit) *home_hit = (id == *first_eligible);
      return id;
    }
  }
  return std::nullopt;  // unreachable: the least-loaded eligible member always fits the bound
}

}  // namespace npc_scale
