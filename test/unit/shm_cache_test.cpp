// ShmCachePartition over a std::vector<char> standing in for shared memory:
// basic ops, TTL, multi-chunk and empty values, budget under random fill,
// CLOCK second chance, oversize refusal, forced hash collisions, relocation
// to another address, and a differential test against std::unordered_map.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "shm_cache.hpp"

using npc_scale::shm_cache_partition_of;
using npc_scale::shm_cache_set_hash_for_testing;
using npc_scale::ShmCachePartition;

namespace {

constexpr int64_t kNever = 0;

std::vector<char> make_block(size_t bytes, char fill = 0) {
  std::vector<char> mem(bytes, fill);
  ShmCachePartition::format(mem.data(), mem.size());
  return mem;
}

std::string get_or(ShmCachePartition& c, std::string_view k, int64_t now = 0) {
  std::string v;
  return c.get(k, now, &v) ? v : std::string("<miss>");
}

std::string random_bytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& ch : s) ch = static_cast<char>(rng());
  return s;
}

// Restores the real hash even if an assertion bails out of the test.
struct HashOverride {
  explicit HashOverride(uint64_t (*fn)(std::string_view)) { shm_cache_set_hash_for_testing(fn); }
  ~HashOverride() { shm_cache_set_hash_for_testing(nullptr); }
};

}  // namespace

TEST(ShmCacheTest, PutGetReplaceEraseClear) {
  auto mem = make_block(64 * 1024, '\xff');  // format must not rely on zeroed memory
  ShmCachePartition c(mem.data());
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_FALSE(c.get("a", 0, nullptr));

  EXPECT_TRUE(c.put("a", "one", kNever, 0));
  EXPECT_TRUE(c.put("b", "two", kNever, 0));
  EXPECT_EQ(get_or(c, "a"), "one");
  EXPECT_EQ(get_or(c, "b"), "two");
  EXPECT_TRUE(c.get("a", 0, nullptr));  // null value_out is fine
  EXPECT_EQ(get_or(c, "c"), "<miss>");

  EXPECT_TRUE(c.put("a", "uno-replaced", kNever, 0));
  EXPECT_EQ(get_or(c, "a"), "uno-replaced");
  EXPECT_EQ(c.stats().entries, 2u);

  EXPECT_TRUE(c.erase("a"));
  EXPECT_FALSE(c.erase("a"));
  EXPECT_EQ(get_or(c, "a"), "<miss>");
  EXPECT_EQ(get_or(c, "b"), "two");
  EXPECT_EQ(c.stats().entries, 1u);

  c.clear();
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_EQ(get_or(c, "b"), "<miss>");
  EXPECT_TRUE(c.put("b", "again", kNever, 0));
  EXPECT_EQ(get_or(c, "b"), "again");
}

TEST(ShmCacheTest, KeysComparedByBytesNotPrefix) {
  auto mem = make_block(64 * 1024);
  ShmCachePartition c(mem.data());
  std::string with_nul("k\0x", 3);
  EXPECT_TRUE(c.put("k", "1", kNever, 0));
  EXPECT_TRUE(c.put("kk", "2", kNever, 0));
  EXPECT_TRUE(c.put(with_nul, "3", kNever, 0));
  EXPECT_EQ(get_or(c, "k"), "1");
  EXPECT_EQ(get_or(c, "kk"), "2");
  EXPECT_EQ(get_or(c, with_nul), "3");
  EXPECT_EQ(get_or(c, std::string("k\0y", 3)), "<miss>");
}

TEST(ShmCacheTest, TtlExpiryIsAMissAndFreesTheEntry) {
  auto mem = make_block(64 * 1024);
  ShmCachePartition c(mem.data());
  EXPECT_TRUE(c.put("t", "v", /*expires_at_ms=*/1000, /*now_ms=*/0));
  EXPECT_TRUE(c.put("forever", "v", kNever, 0));
  EXPECT_EQ(get_or(c, "t", 999), "v");
  EXPECT_EQ(get_or(c, "t", 1000), "<miss>");  // expires_at is exclusive
  EXPECT_EQ(c.stats().entries, 1u);
  EXPECT_EQ(c.stats().expired, 1u);
  EXPECT_EQ(get_or(c, "t", 0), "<miss>");  // freed, not resurrected by an earlier clock
  EXPECT_EQ(get_or(c, "forever", INT64_MAX), "v");
  // Re-put after expiry works and resets the TTL.
  EXPECT_TRUE(c.put("t", "w", 5000, 2000));
  EXPECT_EQ(get_or(c, "t", 4999), "w");
}

TEST(ShmCacheTest, ValuesSpanningManyChunksAndEmptyValues) {
  auto mem = make_block(256 * 1024);
  ShmCachePartition c(mem.data());
  std::mt19937_64 rng(1);
  std::string big = random_bytes(rng, 50000);  // ~400 chunks
  std::string big_key = random_bytes(rng, 1000);
  EXPECT_TRUE(c.put("big", big, kNever, 0));
  EXPECT_TRUE(c.put(big_key, "small", kNever, 0));
  EXPECT_TRUE(c.put("empty", "", kNever, 0));
  EXPECT_TRUE(c.put("", "empty key", kNever, 0));
  // Exactly one chunk's payload and one byte more.
  std::string edge(ShmCachePartition::kChunkSize - 4 - 4, 'e');
  EXPECT_TRUE(c.put("edge", edge, kNever, 0));
  EXPECT_TRUE(c.put("edg+", edge + "+", kNever, 0));

  EXPECT_EQ(get_or(c, "big"), big);
  EXPECT_EQ(get_or(c, big_key), "small");
  std::string v = "junk";
  EXPECT_TRUE(c.get("empty", 0, &v));
  EXPECT_EQ(v, "");
  EXPECT_EQ(get_or(c, ""), "empty key");
  EXPECT_EQ(get_or(c, "edge"), edge);
  EXPECT_EQ(get_or(c, "edg+"), edge + "+");

  // Shrinking and growing replacements return and take chunks correctly.
  EXPECT_TRUE(c.put("big", "tiny", kNever, 0));
  EXPECT_EQ(get_or(c, "big"), "tiny");
  EXPECT_TRUE(c.put("empty", big, kNever, 0));
  EXPECT_EQ(get_or(c, "empty"), big);
  EXPECT_EQ(c.stats().evictions, 0u);
}

TEST(ShmCacheTest, BytesUsedCountsOverheadKeysAndValues) {
  auto mem = make_block(256 * 1024);
  ShmCachePartition c(mem.data());
  const auto empty = c.stats();
  EXPECT_EQ(empty.budget_bytes, mem.size());
  EXPECT_GT(empty.bytes_used, 0u);  // the header is always in use

  EXPECT_TRUE(c.put("k", "", kNever, 0));
  const auto one = c.stats();
  // A 1-byte entry still costs its entry slot, index share and one chunk.
  EXPECT_GE(one.bytes_used - empty.bytes_used, 40u + ShmCachePartition::kChunkSize);

  EXPECT_TRUE(c.put(std::string(5000, 'k'), "", kNever, 0));
  const auto big_key = c.stats();
  EXPECT_GE(big_key.bytes_used - one.bytes_used, 5000u);

  EXPECT_TRUE(c.put("v", std::string(20000, 'v'), kNever, 0));
  EXPECT_GE(c.stats().bytes_used - big_key.bytes_used, 20000u);

  c.clear();
  EXPECT_EQ(c.stats().bytes_used, empty.bytes_used);
}

TEST(ShmCacheTest, BudgetNeverExceededUnderRandomFill) {
  for (size_t bytes : {size_t{4096}, size_t{64 * 1024}, size_t{1000 * 1000 + 3}}) {
    auto mem = make_block(bytes);
    ShmCachePartition c(mem.data());
    std::mt19937_64 rng(bytes);
    int64_t now = 0;
    for (int i = 0; i < 20000; ++i) {
      // Mostly small entries, sometimes large ones, so both the entry table and
      // the arena become the bottleneck at different times.
      size_t vlen = rng() % 8 == 0 ? rng() % 3000 : rng() % 200;
      std::string key = "k" + std::to_string(rng() % 5000);
      std::string value = random_bytes(rng, vlen);
      int64_t exp = rng() % 4 == 0 ? now + 1 + static_cast<int64_t>(rng() % 100) : kNever;
      bool ok = c.put(key, value, exp, now);
      auto s = c.stats();
      ASSERT_LE(s.bytes_used, s.budget_bytes) << "bytes=" << bytes << " i=" << i;
      ASSERT_LE(s.entries, c.entry_capacity());
      if (ok) {
        ASSERT_EQ(get_or(c, key, now), value) << "a just-put entry must be readable";
      } else {
        ASSERT_GT(key.size() + value.size(), c.max_entry_bytes());
        ASSERT_EQ(get_or(c, key, now), "<miss>");
      }
      ++now;
    }
    auto s = c.stats();
    EXPECT_GT(s.evictions, 0u) << bytes;
    EXPECT_GT(s.expired, 0u) << bytes;
  }
}

TEST(ShmCacheTest, ClockGivesFrequentlyReadKeyASecondChance) {
  auto mem = make_block(32 * 1024);
  ShmCachePartition c(mem.data());
  const std::string value(100, 'x');  // one chunk each
  EXPECT_TRUE(c.put("hot", value, kNever, 0));
  EXPECT_TRUE(c.put("cold", value, kNever, 0));
  const int scan = 20 * static_cast<int>(c.entry_capacity());
  for (int i = 0; i < scan; ++i) {
    ASSERT_TRUE(c.get("hot", 0, nullptr)) << "hot key evicted at scan step " << i;
    ASSERT_TRUE(c.put("scan" + std::to_string(i), value, kNever, 0));
  }
  EXPECT_EQ(get_or(c, "hot"), value);
  EXPECT_EQ(get_or(c, "cold"), "<miss>");  // never read: no second chance
  EXPECT_GT(c.stats().evictions, static_cast<uint64_t>(scan / 2));
}

TEST(ShmCacheTest, EntryLargerThanArenaIsRefused) {
  auto mem = make_block(16 * 1024);
  ShmCachePartition c(mem.data());
  EXPECT_TRUE(c.put("keep", "me", kNever, 0));
  const size_t max = c.max_entry_bytes();
  EXPECT_LT(max, mem.size());
  EXPECT_FALSE(c.put("k", std::string(max, 'v'), kNever, 0));  // 1 byte too many with the key
  EXPECT_EQ(get_or(c, "k"), "<miss>");
  EXPECT_EQ(get_or(c, "keep"), "me");  // a refusal evicts nothing
  EXPECT_EQ(c.stats().evictions, 0u);

  // Exactly the arena fits, evicting everything else.
  EXPECT_TRUE(c.put("k", std::string(max - 1, 'v'), kNever, 0));
  EXPECT_EQ(get_or(c, "k"), std::string(max - 1, 'v'));
  EXPECT_EQ(get_or(c, "keep"), "<miss>");
  EXPECT_LE(c.stats().bytes_used, c.stats().budget_bytes);

  // A refused replace drops the old value rather than leaving it stale.
  EXPECT_FALSE(c.put("k", std::string(max + 1, 'w'), kNever, 0));
  EXPECT_EQ(get_or(c, "k"), "<miss>");
}

TEST(ShmCacheTest, TooSmallPartitionRefusesEverything) {
  auto mem = make_block(160);
  ShmCachePartition c(mem.data());
  EXPECT_EQ(c.entry_capacity(), 0u);
  EXPECT_FALSE(c.put("a", "", kNever, 0));
  EXPECT_FALSE(c.get("a", 0, nullptr));
  EXPECT_FALSE(c.erase("a"));
  EXPECT_LE(c.stats().bytes_used, c.stats().budget_bytes);
}

TEST(ShmCacheTest, FullHashCollisionsStillCorrect) {
  HashOverride all_same([](std::string_view) -> uint64_t { return 42; });
  auto mem = make_block(256 * 1024);
  ShmCachePartition c(mem.data());
  for (int i = 0; i < 300; ++i) ASSERT_TRUE(c.put("k" + std::to_string(i), "v" + std::to_string(i), kNever, 0));
  for (int i = 0; i < 300; i += 3) ASSERT_TRUE(c.erase("k" + std::to_string(i)));
  for (int i = 0; i < 300; ++i) {
    std::string want = i % 3 == 0 ? "<miss>" : "v" + std::to_string(i);
    ASSERT_EQ(get_or(c, "k" + std::to_string(i)), want) << i;
  }
  EXPECT_EQ(get_or(c, "k300"), "<miss>");
  EXPECT_EQ(c.stats().entries, 200u);
}

// Few home slots, all at the top of the index, so probe runs wrap around
// slot 0 and backward-shift deletion has to handle the wrap.
TEST(ShmCacheTest, WrappingCollisionsAgainstModel) {
  HashOverride top_slots([](std::string_view k) -> uint64_t {
    return ~uint64_t{0} - std::hash<std::string_view>{}(k) % 6;
  });
  auto mem = make_block(512 * 1024);
  ShmCachePartition c(mem.data());
  std::unordered_map<std::string, std::string> model;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string k = "k" + std::to_string(rng() % 400);
    switch (rng() % 3) {
      case 0: {
        std::string v = std::to_string(rng());
        ASSERT_TRUE(c.put(k, v, kNever, 0));
        model[k] = v;
        break;
      }
      case 1:
        ASSERT_EQ(c.erase(k), model.erase(k) == 1);
        break;
      default: {
        auto it = model.find(k);
        ASSERT_EQ(get_or(c, k), it == model.end() ? "<miss>" : it->second);
      }
    }
  }
  EXPECT_EQ(c.stats().entries, model.size());
  EXPECT_EQ(c.stats().evictions, 0u);
}

TEST(ShmCacheTest, RelocatedCopyIsFullyReadable) {
  std::vector<char> mem = make_block(128 * 1024);
  std::unordered_map<std::string, std::string> want;
  std::mt19937_64 rng(3);
  {
    ShmCachePartition c(mem.data());
    for (int i = 0; i < 200; ++i) {
      std::string k = "key" + std::to_string(i), v = random_bytes(rng, rng() % 600);
      ASSERT_TRUE(c.put(k, v, kNever, 0));
      want[k] = v;
    }
    for (int i = 0; i < 200; i += 4) {
      ASSERT_TRUE(c.erase("key" + std::to_string(i)));
      want.erase("key" + std::to_string(i));
    }
  }
  std::vector<char> moved(mem.size());
  std::memcpy(moved.data(), mem.data(), mem.size());
  std::memset(mem.data(), 0xAB, mem.size());  // any pointer into the old block now reads garbage

  ShmCachePartition c(moved.data());
  EXPECT_EQ(c.stats().entries, want.size());
  for (const auto& [k, v] : want) ASSERT_EQ(get_or(c, k), v) << k;
  // And it stays fully usable at the new address.
  EXPECT_TRUE(c.put("new", "value", kNever, 0));
  EXPECT_TRUE(c.erase("key1"));
  EXPECT_EQ(get_or(c, "new"), "value");
  EXPECT_EQ(get_or(c, "key1"), "<miss>");
}

TEST(ShmCacheTest, DifferentialAgainstUnorderedMap) {
  // Large enough that nothing is ever evicted, so the model is exact.
  auto mem = make_block(8 * 1024 * 1024);
  ShmCachePartition c(mem.data());
  struct Item {
    std::string value;
    int64_t expires;
  };
  std::unordered_map<std::string, Item> model;
  std::mt19937_64 rng(11);
  int64_t now = 1;
  uint64_t expired_seen = 0;
  for (int i = 0; i < 50000; ++i) {
    now += static_cast<int64_t>(rng() % 3);
    std::string k = "npc:" + std::to_string(rng() % 700);
    int op = static_cast<int>(rng() % 100);
    if (op < 45) {
      std::string v = random_bytes(rng, rng() % 10 == 0 ? rng() % 2000 : rng() % 150);
      int64_t exp = rng() % 3 == 0 ? now + 1 + static_cast<int64_t>(rng() % 200) : kNever;
      ASSERT_TRUE(c.put(k, v, exp, now));
      model[k] = {v, exp};
    } else if (op < 85) {
      auto it = model.find(k);
      bool live = it != model.end() && (it->second.expires <= 0 || now < it->second.expires);
      if (it != model.end() && !live) {
        model.erase(it);
        ++expired_seen;
      }
      std::string v;
      ASSERT_EQ(c.get(k, now, &v), live) << "op " << i;
      if (live) {
        ASSERT_EQ(v, it->second.value);
      }
    } else if (op < 99) {
      auto it = model.find(k);
      bool present = it != model.end();
      // Erase frees expired-but-unread entries too.
      ASSERT_EQ(c.erase(k), present) << "op " << i;
      if (present) model.erase(it);
    } else if (rng() % 20 == 0) {
      c.clear();
      model.clear();
    }
    auto s = c.stats();
    ASSERT_EQ(s.entries, model.size()) << "op " << i;
    ASSERT_LE(s.bytes_used, s.budget_bytes);
  }
  EXPECT_EQ(c.stats().evictions, 0u);
  EXPECT_EQ(c.stats().expired, expired_seen);
  EXPECT_GT(expired_seen, 0u);
}

TEST(ShmCacheTest, PartitionOfIsStableAndSpreads) {
  EXPECT_EQ(shm_cache_partition_of("anything", 0), 0u);
  EXPECT_EQ(shm_cache_partition_of("anything", 1), 0u);
  // Pinned so a change of hash or seed is noticed: every backend must agree.
  EXPECT_EQ(shm_cache_partition_of("npc:42", 1024), 857u);
  EXPECT_EQ(shm_cache_partition_of("npc:7", 16), 14u);
  const size_t P = 16, N = 160000;
  std::vector<size_t> count(P);
  for (size_t i = 0; i < N; ++i) {
    std::string k = "npc:" + std::to_string(i);
    size_t p = shm_cache_partition_of(k, P);
    ASSERT_LT(p, P);
    ASSERT_EQ(p, shm_cache_partition_of(k, P));
    ++count[p];
  }
  for (size_t p = 0; p < P; ++p) {
    EXPECT_GT(count[p], N / P * 9 / 10) << p;
    EXPECT_LT(count[p], N / P * 11 / 10) << p;
  }
}

TEST(ShmCacheReadTest, ReadSharesTheLockAndLeavesExpiredEntriesToGet) {
  std::vector<char> mem(64 * 1024);
  ShmCachePartition::format(mem.data(), mem.size());
  ShmCachePartition part(mem.data());
  ASSERT_TRUE(part.put("k", "v", 1000, 0));
  std::string v;
  EXPECT_EQ(part.read("k", 10, &v), ShmCachePartition::ReadResult::hit);
  EXPECT_EQ(v, "v");
  EXPECT_EQ(part.read("nope", 10, &v), ShmCachePartition::ReadResult::miss);
  EXPECT_EQ(part.read("k", 1000, &v), ShmCachePartition::ReadResult::expired);
  EXPECT_EQ(part.stats().entries, 1u) << "read() frees nothing";
  EXPECT_FALSE(part.get("k", 1000, &v));
  EXPECT_EQ(part.stats().entries, 0u) << "get() under the exclusive lock does";
}

TEST(ShmCacheReadTest, AReadGivesTheEntryItsSecondChance) {
  std::vector<char> mem(16 * 1024);
  ShmCachePartition::format(mem.data(), mem.size());
  ShmCachePartition part(mem.data());
  ASSERT_TRUE(part.put("hot", "x", 0, 0));
  for (int i = 0; i < 2000; i++) {
    std::string v;
    ASSERT_EQ(part.read("hot", 0, &v), ShmCachePartition::ReadResult::hit) << "after " << i << " new keys";
    part.put("cold" + std::to_string(i), std::string(100, 'c'), 0, 0);
  }
}
