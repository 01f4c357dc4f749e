// BoundedLoadRing: stickiness while balanced, spilling past (1+eps)*avg and
// coming back, ~1/n remapping when a member joins, ineligible members skipped.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "consistent_hash.hpp"

using npc_scale::BoundedLoadRing;

namespace {
auto all_eligible = [](int) { return true; };
auto zero_load = [](int) { return 0; };
}  // namespace

TEST(ConsistentHashTest, EmptyRingAndNoneEligible) {
  BoundedLoadRing r;
  bool hit = true;
  EXPECT_FALSE(r.home(1).has_value());
  EXPECT_FALSE(r.pick(1, 0.25, all_eligible, zero_load, &hit).has_value());
  EXPECT_FALSE(hit);
  r.set_members({1, 2, 3});
  EXPECT_FALSE(r.pick(1, 0.25, [](int) { return false; }, zero_load, &hit).has_value());
}

TEST(ConsistentHashTest, SameKeySameMemberWhileBalanced) {
  BoundedLoadRing r;
  r.set_members({10, 20, 30, 40});
  std::map<int, int> load{{10, 5}, {20, 5}, {30, 5}, {40, 5}};
  for (uint64_t key : {1ull, 42ull, 0xdeadbeefull, 123456789ull}) {
    auto home = r.home(key);
    ASSERT_TRUE(home.has_value());
    for (int i = 0; i < 20; i++) {
      bool hit = false;
      auto m = r.pick(key, 0.25, all_eligible, [&](int id) { return load[id]; }, &hit);
      ASSERT_TRUE(m.has_value());
      EXPECT_EQ(*m, *home);
      EXPECT_TRUE(hit);
    }
  }
}

TEST(ConsistentHashTest, MembersOrderDoesNotMatter) {
  BoundedLoadRing a, b;
  a.set_members({1, 2, 3, 4});
  b.set_members({4, 3, 2, 1, 3});
  for (uint64_t k = 0; k < 1000; k++) EXPECT_EQ(a.home(k), b.home(k));
}

TEST(ConsistentHashTest, SpillsOffTheHomeAboveTheBoundAndComesBack) {
  BoundedLoadRing r;
  r.set_members({1, 2, 3, 4});
  const uint64_t key = 777;
  const int home = *r.home(key);
  const double eps = 0.25;
  std::map<int, int> load{{1, 10}, {2, 10}, {3, 10}, {4, 10}};
  auto ld = [&](int id) { return load[id]; };
  // Others at 10: bound = ceil(1.25 * (31 + h) / 4). h=14 -> 15 (14+1 fits), h=15 -> 15 (16 does not).
  for (int h = 10; h <= 20; h++) {
    load[home] = h;
    bool fits = h + 1 <= std::ceil((1 + eps) * (30 + h + 1) / 4.0);
    bool hit = false;
    int m = *r.pick(key, eps, all_eligible, ld, &hit);
    EXPECT_EQ(m == home, fits) << "h=" << h;
    EXPECT_EQ(hit, fits) << "h=" << h;
    if (!fits) {
      EXPECT_LE(load[m] + 1, std::ceil((1 + eps) * (30 + h + 1) / 4.0));
    }
  }
  load[home] = 14;
  EXPECT_EQ(*r.pick(key, eps, all_eligible, ld, nullptr), home);
  load[home] = 15;
  EXPECT_NE(*r.pick(key, eps, all_eligible, ld, nullptr), home);
  load[home] = 10;  // drained: the key comes back home
  bool hit = false;
  EXPECT_EQ(*r.pick(key, eps, all_eligible, ld, &hit), home);
  EXPECT_TRUE(hit);
}

TEST(ConsistentHashTest, IneligibleMembersAreSkipped) {
  BoundedLoadRing r;
  r.set_members({1, 2, 3});
  const uint64_t key = 99;
  const int home = *r.home(key);
  bool hit = false;
  auto m = r.pick(key, 0.25, [&](int id) { return id != home; }, zero_load, &hit);
  ASSERT_TRUE(m.has_value());
  EXPECT_NE(*m, home);
  EXPECT_FALSE(hit);  // the key's real home could not take it: an affinity miss
  // Only one eligible member: it takes everything regardless of key.
  for (uint64_t k = 0; k < 100; k++) EXPECT_EQ(*r.pick(k, 0.25, [](int id) { return id == 2; }, zero_load, nullptr), 2);
}

TEST(ConsistentHashTest, AddingAMemberRemapsAboutOneNth) {
  BoundedLoadRing before, after;
  before.set_members({1, 2, 3, 4});
  after.set_members({1, 2, 3, 4, 5});
  const int keys = 10000;
  int moved = 0;
  for (uint64_t k = 0; k < keys; k++) {
    int a = *before.home(k), b = *after.home(k);
    if (a != b) {
      moved++;
      EXPECT_EQ(b, 5) << "a key moved between old members";
    }
  }
  double frac = static_cast<double>(moved) / keys;
  EXPECT_NEAR(frac, 1.0 / 5, 0.08) << frac;
}

TEST(ConsistentHashTest, KeysSpreadOverMembers) {
  BoundedLoadRing r;
  r.set_members({1, 2, 3, 4});
  std::map<int, int> count;
  for (uint64_t k = 0; k < 10000; k++) count[*r.home(k)]++;
  ASSERT_EQ(count.size(), 4u);
  for (auto& [id, n] : count) EXPECT_NEAR(n, 2500, 800) << "member " << id;
}

TEST(ConsistentHashTest, AssigningWithTheBoundKeepsEveryLoadUnderIt) {
  BoundedLoadRing r;
  r.set_members({1, 2, 3, 4, 5});
  std::map<int, int> load;
  const double eps = 0.25;
  for (uint64_t k = 0; k < 5000; k++) {
    int total = 0;
    for (auto& [id, l] : load) total += l;
    double bound = std::ceil((1 + eps) * (total + 1) / 5.0);
    int m = *r.pick(k % 300, eps, all_eligible, [&](int id) { return load[id]; }, nullptr);  // hot keys repeat
    load[m]++;
    EXPECT_LE(load[m], bound);
  }
  for (auto& [id, l] : load) EXPECT_LE(l, std::ceil(1.25 * 5000 / 5.0)) << "member " << id;
}

TEST(ConsistentHashTest, WeightedMembersOwnAShareOfKeysByWeight) {
  BoundedLoadRing r(64, 10.0);
  r.set_members({1, 2, 3}, {50, 10, 10});  // one big GPU, two small ones
  const int keys = 20000;
  int on_big = 0;
  for (uint64_t k = 0; k < keys; k++) on_big += *r.home(k) == 1;
  const double share = static_cast<double>(on_big) / keys;
  EXPECT_NEAR(share, 50.0 / 70.0, 0.08) << "the big member is home to ~5/7 of the keys";
}

TEST(ConsistentHashTest, WeightedBoundLetsTheBigMemberCarryMore) {
  BoundedLoadRing r;
  r.set_members({1, 2}, {4, 1});
  // Total load 9 (8 on the big member, 1 on the small one): the big member's
  // bound is ceil(1.25 * 10 * 4/5) = 10, so it still takes a key homed on it.
  uint64_t key = 0;
  while (*r.home(key) != 1) key++;
  auto load = [](int id) { return id == 1 ? 8 : 1; };
  bool hit = false;
  EXPECT_EQ(*r.pick(key, 0.25, [](int) { return true; }, load, &hit), 1);
  EXPECT_TRUE(hit);
  // With equal weights the same loads would push it off its home (bound ceil(1.25*10/2) = 7).
  BoundedLoadRing equal;
  equal.set_members({1, 2});
  uint64_t k2 = 0;
  while (*equal.home(k2) != 1) k2++;
  EXPECT_EQ(*equal.pick(k2, 0.25, [](int) { return true; }, load, &hit), 2);
  EXPECT_FALSE(hit);
}

// A change of one member's weight (an endpoint's max_concurrent or weight)
// moves keys to or from that member only: the others keep their homes, and
// with them their GPUs' prefix caches.
TEST(ConsistentHashTest, ChangingOneMembersWeightMovesKeysOnlyToOrFromIt) {
  BoundedLoadRing before(64, 16.0), grown(64, 16.0), shrunk(64, 16.0), added(64, 16.0);
  before.set_members({1, 2, 3}, {8, 8, 16});
  grown.set_members({1, 2, 3}, {8, 8, 32});
  shrunk.set_members({1, 2, 3}, {8, 8, 4});
  added.set_members({1, 2, 3, 4}, {8, 8, 16, 16});
  int to_3 = 0, from_3 = 0, to_4 = 0;
  for (uint64_t k = 0; k < 20000; k++) {
    const int a = *before.home(k);
    if (const int b = *grown.home(k); b != a) {
      EXPECT_EQ(b, 3) << "key " << k << " moved between members whose weights did not change";
      to_3++;
    }
    if (const int b = *shrunk.home(k); b != a) {
      EXPECT_EQ(a, 3) << "key " << k << " moved between members whose weights did not change";
      from_3++;
    }
    if (const int b = *added.home(k); b != a) {
      EXPECT_EQ(b, 4) << "key " << k << " moved between old members";
      to_4++;
    }
  }
  EXPECT_GT(to_3, 2000);   // grown from half the ring to two thirds
  EXPECT_GT(from_3, 4000);  // shrunk from half to a fifth
  EXPECT_GT(to_4, 5000);   // a third of the ring
}

TEST(ConsistentHashTest, AHugeWeightIsCappedNotUnbounded) {
  BoundedLoadRing r(64, 1.0);
  r.set_members({1, 2}, {1e9, 1});
  int on_1 = 0;
  for (uint64_t k = 0; k < 10000; k++) on_1 += *r.home(k) == 1;
  EXPECT_GT(on_1, 9800);  // 4096 virtual nodes against 64
  EXPECT_LT(on_1, 10000);
}
