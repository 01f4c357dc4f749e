// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam
// 2018): a key sticks to its home member (warm KV/prefix cache on that GPU)
// until the home carries more than (1+epsilon) times the average load, then
// spills clockwise to the next member under the bound.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace npc_scale {

class BoundedLoadRing {
 public:
  // A member of weight `reference_weight` gets `vnodes_per_member` virtual
  // nodes; others in proportion (at least 1, at most 64 times as many).
  explicit BoundedLoadRing(int vnodes_per_member = 64, double reference_weight = 1.0);

  // Rebuilds only if the set changed. Virtual-node positions depend only on
  // the member id, so adding a member moves only ~1/n of the keys.
  void set_members(const std::vector<int>& member_ids);
  // Weighted: a member's share of the ring (its virtual nodes) and of the
  // load bound are proportional to its weight — e.g. its capacity, so a GPU
  // with five times the slots is home to five times the keys. Its virtual
  // nodes follow its own weight only, never the others': a change of one
  // member's weight moves keys to or from that member alone.
  void set_members(const std::vector<int>& member_ids, const std::vector<double>& weights);
  const std::vector<int>& members() const { return members_; }

  // Walks clockwise from hash(key); returns the first member for which
  // eligible(member) is true and load(member)+1 <= ceil((1+epsilon) *
  // (total_load+1) / n_eligible), total_load summed over eligible members.
  // Sets *home_hit (if given) when the chosen member is the first eligible one
  // on the walk. nullopt if none is eligible.
  std::optional<int> pick(uint64_t key, double epsilon, const std::function<bool(int)>& eligible,
                          const std::function<int(int)>& load, bool* home_hit) const;
  // First member clockwise, ignoring load and eligibility.
  std::optional<int> home(uint64_t key) const;

 private:
  size_t start_index(uint64_t key) const;

  int vnodes_;
  double reference_weight_;
  std::vector<double> weights_;  // parallel to members_
  std::vector<int> members_;                      // sorted, unique
  std::vector<std::pair<uint64_t, int>> ring_;   // (position, member), sorted
};

}  // namespace npc_scale
