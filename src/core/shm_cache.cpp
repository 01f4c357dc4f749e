#include "shm_cache.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <limits>

// Header-only xxHash: the extension's .so is linked without -lxxhash.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace npc_scale {

namespace {

constexpr uint64_t kMagic = 0x6e70635f4c314331ULL;  // "npc_L1C1"; bump on layout change
constexpr uint32_t kNil = std::numeric_limits<uint32_t>::max();
constexpr uint32_t kPayload = ShmCachePartition::kChunkSize - sizeof(uint32_t);
constexpr uint64_t kPartitionSeed = 0x6e70635f70617274ULL;  // "npc_part"

struct Header {
  uint64_t magic;
  uint64_t budget_bytes;
  uint64_t entries_off, index_off, chunks_off;
  uint32_t n_entries, n_index, n_chunks;
  uint32_t free_chunk_head, free_chunk_count;
  uint32_t free_entry_head, entries_in_use;
  uint32_t clock_hand;
  uint64_t evictions, expired;
};

struct Entry {
  uint64_t hash;
  int64_t expires_at_ms;  // <= 0: never
  uint32_t key_len, value_len;
  uint32_t first_chunk;  // when free: next free entry
  uint32_t chunk_count;
  uint8_t referenced, in_use;
  uint8_t pad[6];
};
static_assert(sizeof(Entry) == 40, "Entry layout is part of the shm format");

constexpr uint64_t round8(uint64_t v) { return (v + 7) & ~uint64_t{7}; }

uint64_t (*g_hash_override)(std::string_view) = nullptr;

uint64_t key_hash(std::string_view key) {
  if (g_hash_override) return g_hash_override(key);
  return XXH3_64bits(key.data(), key.size());
}

// Local view computing addresses from base + offsets; lives on the stack only.
struct View {
  char* base;
  Header* h;

  explicit View(void* b) : base(static_cast<char*>(b)), h(static_cast<Header*>(b)) {}

  Entry& entry(uint32_t i) const { return reinterpret_cast<Entry*>(base + h->entries_off)[i]; }
  uint32_t& slot(uint32_t i) const { return reinterpret_cast<uint32_t*>(base + h->index_off)[i]; }
  char* chunk(uint32_t i) const {
    return base + h->chunks_off + uint64_t{i} * ShmCachePartition::kChunkSize;
  }
  uint32_t& next_of(uint32_t c) const { return *reinterpret_cast<uint32_t*>(chunk(c)); }
  char* data_of(uint32_t c) const { return chunk(c) + sizeof(uint32_t); }

  uint32_t mask() const { return h->n_index - 1; }

  // Rebuilds free lists and empties the index; counters untouched.
  void reset() const {
    for (uint32_t i = 0; i < h->n_entries; ++i) {
      Entry& e = entry(i);
      std::memset(&e, 0, sizeof e);
      e.first_chunk = i + 1 < h->n_entries ? i + 1 : kNil;
    }
    h->free_entry_head = h->n_entries ? 0 : kNil;
    h->entries_in_use = 0;
    for (uint32_t i = 0; i < h->n_index; ++i) slot(i) = 0;
    for (uint32_t c = 0; c < h->n_chunks; ++c) next_of(c) = c + 1 < h->n_chunks ? c + 1 : kNil;
    h->free_chunk_head = h->n_chunks ? 0 : kNil;
    h->free_chunk_count = h->n_chunks;
    h->clock_hand = 0;
  }

  // Calls fn(char* ptr, len) over bytes [off, off+len) of the entry's key+value
  // stream; fn returns false to stop. Indices are range-checked so a torn
  // chain can't send us outside the arena. Returns false if cut short.
  template <class Fn>
  bool walk(const Entry& e, uint64_t off, uint64_t len, Fn fn) const {
    uint32_t c = e.first_chunk;
    for (uint32_t n = 0; len > 0; ++n) {
      if (n >= e.chunk_count || c >= h->n_chunks) return false;
      if (off >= kPayload) {
        off -= kPayload;
      } else {
        uint64_t take = std::min<uint64_t>(kPayload - off, len);
        if (!fn(data_of(c) + off, take)) return false;
        len -= take;
        off = 0;
      }
      c = next_of(c);
    }
    return true;
  }

  bool key_equals(const Entry& e, std::string_view key) const {
    if (e.key_len != key.size()) return false;
    size_t pos = 0;
    return walk(e, 0, key.size(), [&](const char* p, uint64_t n) {
      bool eq = std::memcmp(p, key.data() + pos, n) == 0;
      pos += n;
      return eq;
    });
  }

  // Index slot holding a matching key, or kNil.
  uint32_t find_slot(std::string_view key, uint64_t hash) const {
    if (h->n_index == 0) return kNil;
    for (uint32_t s = hash & mask();; s = (s + 1) & mask()) {
      uint32_t v = slot(s);
      if (v == 0) return kNil;  // load factor <= 1/2 guarantees an empty slot
      const Entry& e = entry(v - 1);
      if (e.hash == hash && key_equals(e, key)) return s;
    }
  }

  uint32_t slot_of_entry(uint32_t ei) const {
    for (uint32_t s = entry(ei).hash & mask();; s = (s + 1) & mask()) {
      uint32_t v = slot(s);
      assert(v != 0 && "live entry missing from index");
      if (v == 0 || v == ei + 1) return v ? s : kNil;
    }
  }

  // Backward-shift deletion: keeps every probe run contiguous, no tombstones.
  void unlink_slot(uint32_t i) const {
    uint32_t j = i;
    for (;;) {
      j = (j + 1) & mask();
      uint32_t v = slot(j);
      if (v == 0) break;
      uint32_t home = entry(v - 1).hash & mask();
      // Move v back to i unless its home lies cyclically in (i, j].
      bool home_in_between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (!home_in_between) {
        slot(i) = v;
        i = j;
      }
    }
    slot(i) = 0;
  }

  void free_entry(uint32_t ei) const {
    Entry& e = entry(ei);
    uint32_t c = e.first_chunk;
    for (uint32_t n = 0; n < e.chunk_count && c < h->n_chunks; ++n) {
      uint32_t next = next_of(c);
      next_of(c) = h->free_chunk_head;
      h->free_chunk_head = c;
      ++h->free_chunk_count;
      c = next;
    }
    std::memset(&e, 0, sizeof e);
    e.first_chunk = h->free_entry_head;
    h->free_entry_head = ei;
    --h->entries_in_use;
  }

  void remove(uint32_t ei) const {
    uint32_t s = slot_of_entry(ei);
    if (s != kNil) unlink_slot(s);
    free_entry(ei);
  }

  static bool expired(const Entry& e, int64_t now_ms) {
    return e.expires_at_ms > 0 && now_ms >= e.expires_at_ms;
  }

  // One CLOCK step to free an entry; expired entries go first for free.
  // Two sweeps always suffice: the first clears every reference bit.
  bool evict_one(int64_t now_ms) const {
    if (h->entries_in_use == 0) return false;
    for (uint64_t steps = 0; steps <= 2ull * h->n_entries; ++steps) {
      uint32_t i = h->clock_hand;
      h->clock_hand = i + 1 < h->n_entries ? i + 1 : 0;
      Entry& e = entry(i);
      if (!e.in_use) continue;
      if (expired(e, now_ms)) {
        remove(i);
        ++h->expired;
        return true;
      }
      if (e.referenced) {
        e.referenced = 0;
        continue;
      }
      remove(i);
      ++h->evictions;
      return true;
    }
    return false;
  }
};

}  // namespace

void ShmCachePartition::format(void* base, size_t bytes) {
  assert(reinterpret_cast<uintptr_t>(base) % 8 == 0);
  const uint64_t hdr = round8(sizeof(Header));
  assert(bytes >= hdr);
  Header* h = static_cast<Header*>(base);
  std::memset(h, 0, sizeof *h);

  // Halve the entry count until tables plus at least one chunk fit.
  uint64_t n_entries = std::min<uint64_t>(bytes / kBytesPerEntry, uint64_t{1} << 30);
  uint64_t n_index = 0, fixed = hdr;
  while (n_entries > 0) {
    n_index = 2;
    while (n_index < 2 * n_entries) n_index <<= 1;  // load factor <= 1/2
    fixed = hdr + round8(n_entries * sizeof(Entry)) + round8(n_index * sizeof(uint32_t));
    if (fixed + kChunkSize <= bytes) break;
    n_entries /= 2;
  }
  if (n_entries == 0) n_index = 0, fixed = hdr;
  uint64_t n_chunks = n_entries ? std::min<uint64_t>((bytes - fixed) / kChunkSize, kNil - 1) : 0;

  h->magic = kMagic;
  h->budget_bytes = bytes;
  h->entries_off = hdr;
  h->index_off = hdr + round8(n_entries * sizeof(Entry));
  h->chunks_off = fixed;
  h->n_entries = static_cast<uint32_t>(n_entries);
  h->n_index = static_cast<uint32_t>(n_index);
  h->n_chunks = static_cast<uint32_t>(n_chunks);
  View(base).reset();
}

ShmCachePartition::ShmCachePartition(void* base) : base_(base) {
  assert(static_cast<Header*>(base)->magic == kMagic && "partition not formatted");
}

bool ShmCachePartition::get(std::string_view key, int64_t now_ms, std::string* value_out) {
  ReadResult r = read(key, now_ms, value_out);
  if (r != ReadResult::expired) return r == ReadResult::hit;
  // Expired: a miss, and its space is freed now (the caller holds the lock exclusively).
  View v(base_);
  uint32_t s = v.find_slot(key, key_hash(key));
  uint32_t ei = v.slot(s) - 1;
  v.unlink_slot(s);
  v.free_entry(ei);
  ++v.h->expired;
  return false;
}

ShmCachePartition::ReadResult ShmCachePartition::read(std::string_view key, int64_t now_ms,
                                                       std::string* value_out) const {
  View v(base_);
  uint64_t hash = key_hash(key);
  uint32_t s = v.find_slot(key, hash);
  if (s == kNil) return ReadResult::miss;
  Entry& e = v.entry(v.slot(s) - 1);
  if (View::expired(e, now_ms)) return ReadResult::expired;
  // Readers share the partition lock; the only thing they write is this
  // byte, always to 1, and the CLOCK hand clears it only under the exclusive lock.
  __atomic_store_n(&e.referenced, static_cast<uint8_t>(1), __ATOMIC_RELAXED);
  if (value_out) {
    value_out->clear();
    value_out->reserve(e.value_len);
    v.walk(e, e.key_len, e.value_len, [&](const char* p, uint64_t n) {
      value_out->append(p, n);
      return true;
    });
  }
  return ReadResult::hit;
}

bool ShmCachePartition::put(std::string_view key, std::string_view value, int64_t expires_at_ms,
                            int64_t now_ms) {
  View v(base_);
  Header* h = v.h;
  uint64_t hash = key_hash(key);
  // Drop any old value first: its chunks become reusable for the new one, and
  // a refused replace must not leave a stale value behind.
  uint32_t s = v.find_slot(key, hash);
  if (s != kNil) {
    uint32_t ei = v.slot(s) - 1;
    v.unlink_slot(s);
    v.free_entry(ei);
  }

  const uint64_t total = uint64_t{key.size()} + value.size();
  if (total > max_entry_bytes() || key.size() > kNil || value.size() > kNil) return false;
  const uint32_t need = static_cast<uint32_t>((total + kPayload - 1) / kPayload);

  while (h->free_chunk_count < need || h->free_entry_head == kNil) {
    if (!v.evict_one(now_ms)) return false;  // unreachable while need <= n_chunks
  }

  uint32_t ei = h->free_entry_head;
  Entry& e = v.entry(ei);
  h->free_entry_head = e.first_chunk;
  ++h->entries_in_use;

  // Pop `need` chunks; the free list's order becomes the chain's order.
  uint32_t first = need ? h->free_chunk_head : kNil, c = h->free_chunk_head, last = kNil;
  for (uint32_t n = 0; n < need; ++n) {
    last = c;
    c = v.next_of(c);
  }
  if (need) v.next_of(last) = kNil;
  h->free_chunk_head = c;
  h->free_chunk_count -= need;

  std::memset(&e, 0, sizeof e);
  e.hash = hash;
  e.expires_at_ms = expires_at_ms;
  e.key_len = static_cast<uint32_t>(key.size());
  e.value_len = static_cast<uint32_t>(value.size());
  e.first_chunk = first;
  e.chunk_count = need;
  e.referenced = 0;  // new entries earn their second chance by being read
  e.in_use = 1;

  auto write = [&](uint64_t off, std::string_view src) {
    size_t pos = 0;
    v.walk(e, off, src.size(), [&](char* p, uint64_t n) {
      std::memcpy(p, src.data() + pos, n);
      pos += n;
      return true;
    });
  };
  write(0, key);
  write(key.size(), value);

  for (uint32_t t = hash & v.mask();; t = (t + 1) & v.mask()) {
    if (v.slot(t) == 0) {
      v.slot(t) = ei + 1;
      break;
    }
  }
  return true;
}

bool ShmCachePartition::erase(std::string_view key) {
  View v(base_);
  uint32_t s = v.find_slot(key, key_hash(key));
  if (s == kNil) return false;
  uint32_t ei = v.slot(s) - 1;
  v.unlink_slot(s);
  v.free_entry(ei);
  return true;
}

void ShmCachePartition::clear() { View(base_).reset(); }

ShmCachePartition::Stats ShmCachePartition::stats() const {
  const Header* h = static_cast<const Header*>(base_);
  uint64_t used = round8(sizeof(Header));
  if (h->n_entries) {
    uint64_t live = h->entries_in_use;
    used += live * sizeof(Entry) + live * h->n_index * sizeof(uint32_t) / h->n_entries;
    used += uint64_t{h->n_chunks - h->free_chunk_count} * kChunkSize;
  }
  return Stats{h->entries_in_use, used, h->budget_bytes, h->evictions, h->expired};
}

uint32_t ShmCachePartition::entry_capacity() const { return static_cast<const Header*>(base_)->n_entries; }
uint32_t ShmCachePartition::chunk_capacity() const { return static_cast<const Header*>(base_)->n_chunks; }
size_t ShmCachePartition::max_entry_bytes() const {
  return size_t{chunk_capacity()} * kPayload;
}

size_t shm_cache_partition_of(std::string_view key, size_t partitions) {
  if (partitions <= 1) return 0;
  // Own seed so the partition choice is independent of the in-partition index slot.
  return XXH3_64bits_withSeed(key.data(), key.size(), kPartitionSeed) % partitions;
}

void shm_cache_set_hash_for_testing(uint64_t (*fn)(std::string_view key)) { g_hash_override = fn; }

}  // namespace npc_scale
