#include "core/l2_doubts.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

namespace npc_scale {
namespace {

struct Region {
  explicit Region(uint32_t slots) : words(L2Doubts::bytes_for(slots) / 8 + 1) {
    set = L2Doubts::init(words.data(), slots);
  }
  std::vector<uint64_t> words;  // 8-byte aligned, as shared memory is
  L2Doubts* set;
};

TEST(L2Doubts, AddDoubtsRemoveTrusts) {
  Region r(64);
  L2Doubts& d = *r.set;
  uint64_t a = L2Doubts::hash("kv:a"), b = L2Doubts::hash("kv:b");
  EXPECT_NE(a, b);
  EXPECT_FALSE(d.doubted(a));
  d.add(a);
  d.add(a);  // once
  EXPECT_TRUE(d.doubted(a));
  EXPECT_FALSE(d.doubted(b));
  EXPECT_EQ(d.size(), 1u);
  EXPECT_TRUE(d.remove(b, d.stamp())) << "absent: nothing to trust";
  EXPECT_EQ(d.size(), 1u);
  EXPECT_TRUE(d.remove(a, d.stamp()));
  EXPECT_FALSE(d.doubted(a));
  EXPECT_EQ(d.size(), 0u);
}

// A DEL confirmed for a key doubted again after it was sent does not vouch
// for the newer doubt (that SET may have been lost after the DEL landed).
TEST(L2Doubts, ADelVouchesOnlyForDoubtsBeforeIt) {
  Region r(64);
  L2Doubts& d = *r.set;
  d.add(5);
  d.add(6);
  const uint64_t del_sent = d.stamp();
  d.add(5);  // doubted anew meanwhile
  EXPECT_FALSE(d.remove(5, del_sent));
  EXPECT_TRUE(d.doubted(5));
  EXPECT_TRUE(d.remove(6, del_sent)) << "another key's new doubt does not hold this one";
  EXPECT_FALSE(d.doubted(6));
  EXPECT_TRUE(d.remove(5, d.stamp()));
  EXPECT_FALSE(d.doubted(5));
}

TEST(L2Doubts, AttachSeesWhatInitStarted) {
  Region r(16);
  r.set->add(L2Doubts::hash("kv:shared"));
  L2Doubts* other = L2Doubts::attach(r.words.data());
  EXPECT_TRUE(other->doubted(L2Doubts::hash("kv:shared")));
}

// Hashes that share a home slot form one probe run; removing any of them
// must leave the others findable (the hole is filled, not left to stop a
// lookup short), including runs that wrap past the last slot.
TEST(L2Doubts, RemovalKeepsCollidingRunsFindable) {
  // Low bits pick the home: 15, 15, 0, 15, 1 wrap around the end.
  const std::vector<uint64_t> hs = {0x10f, 0x20f, 0x100, 0x30f, 0x101};
  for (size_t gone = 0; gone < hs.size(); ++gone) {
    Region fresh(16);
    for (uint64_t h : hs) fresh.set->add(h);
    fresh.set->remove(hs[gone], fresh.set->stamp());
    for (size_t i = 0; i < hs.size(); ++i) {
      EXPECT_EQ(fresh.set->doubted(hs[i]), i != gone) << "removed #" << gone << ", looked for #" << i;
    }
  }
}

// Random adds, removals and partial clears against a reference map, with
// hashes clustered on a few homes: long probe runs that wrap past the end.
TEST(L2Doubts, MatchesAReferenceUnderRandomChurn) {
  Region r(256);
  L2Doubts& d = *r.set;
  std::map<uint64_t, uint64_t> ref;  // hash -> stamp of its last doubt
  std::mt19937_64 rng(7);
  auto pick = [&] { return (rng() % 150 + 1) * 256 + rng() % 8 + 248; };
  for (int step = 0; step < 20000; ++step) {
    const uint64_t h = pick();
    const int op = static_cast<int>(rng() % 20);
    if (op < 10 && ref.size() < 150) {
      d.add(h);
      ref[h] = d.stamp();
    } else if (op < 19) {
      const uint64_t since = d.stamp() - rng() % 4;
      auto it = ref.find(h);
      const bool expect_gone = it == ref.end() || it->second <= since;
      ASSERT_EQ(d.remove(h, since), expect_gone) << "step " << step;
      if (it != ref.end() && expect_gone) ref.erase(it);
    } else {
      const uint64_t since = d.stamp() - rng() % 40;
      d.clear(since);
      for (auto it = ref.begin(); it != ref.end();) it = it->second <= since ? ref.erase(it) : std::next(it);
    }
    ASSERT_FALSE(d.all());
    ASSERT_EQ(d.size(), ref.size()) << "step " << step;
  }
  for (uint64_t v = 1; v <= 151; ++v) {
    for (uint64_t low = 248; low < 256; ++low) {
      uint64_t h = v * 256 + low;
      EXPECT_EQ(d.doubted(h), ref.count(h) == 1) << h;
    }
  }
}

TEST(L2Doubts, OverflowDoubtsEverythingUntilCleared) {
  Region r(8);
  L2Doubts& d = *r.set;
  for (uint64_t h = 1; h <= 6; ++h) d.add(h);  // 3/4 of 8
  EXPECT_FALSE(d.all());
  EXPECT_EQ(d.check(99), L2Doubts::Doubt::none);
  EXPECT_EQ(d.check(3), L2Doubts::Doubt::key);
  d.add(7);
  EXPECT_TRUE(d.all());
  EXPECT_EQ(d.check(99), L2Doubts::Doubt::all) << "a key never added is doubted too";
  EXPECT_EQ(d.check(3), L2Doubts::Doubt::key) << "one added before is still its own doubt";
  d.remove(3, d.stamp());
  EXPECT_EQ(d.check(3), L2Doubts::Doubt::all) << "one trusted key does not vouch for the rest";
  d.clear(d.stamp());
  EXPECT_FALSE(d.all());
  EXPECT_EQ(d.size(), 0u);
  EXPECT_FALSE(d.doubted(2));
  d.add_all();  // a clear Redis did not confirm
  EXPECT_EQ(d.check(2), L2Doubts::Doubt::all);
  EXPECT_EQ(d.size(), 0u);
}

// A doubt that came in while Redis was being cleared may concern a value
// written after the clear passed its key: it outlives that clear, and so
// does an "everything" doubt raised meanwhile.
TEST(L2Doubts, AClearLiftsOnlyTheDoubtsBeforeIt) {
  Region r(64);
  L2Doubts& d = *r.set;
  d.add(11);
  d.add(12);
  d.add_all();
  const uint64_t clear_sent = d.stamp();
  d.add(12);  // during the clear
  d.add(13);
  d.clear(clear_sent);
  EXPECT_FALSE(d.all());
  EXPECT_FALSE(d.doubted(11));
  EXPECT_TRUE(d.doubted(12));
  EXPECT_TRUE(d.doubted(13));
  EXPECT_EQ(d.size(), 2u);

  const uint64_t second = d.stamp();
  d.add_all();  // during the second clear
  d.clear(second);
  EXPECT_TRUE(d.all()) << "raised after the clear was sent";
  EXPECT_EQ(d.size(), 0u);
  d.clear(d.stamp());
  EXPECT_FALSE(d.all());
}

}  // namespace
}  // namespace npc_scale
