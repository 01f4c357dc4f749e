// L1 of the three-tier cache (L1 shared memory, L2 Redis, L3 table): a
// key/value cache laid out inside one partition of a fixed shared-memory
// block. The block holds no pointers, only indices and offsets from the
// partition base, because backends may map it at different addresses and a
// crashed backend's pointers must never be followed.
//
// Locking is the caller's job (one lock per partition); nothing here locks.
//
// Partition layout (all offsets from base, 8-byte aligned):
//   Header | entry table (n_entries) | hash index (n_index uint32, linear
//   probing, backward-shift deletion) | arena (n_chunks fixed-size chunks).
// An entry's key then value live in a chain of chunks linked by index.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace npc_scale {

class ShmCachePartition {
 public:
  // Bytes per arena chunk (4 of them hold the next-chunk index).
  static constexpr uint32_t kChunkSize = 128;
  // One entry slot per this many bytes of partition.
  static constexpr uint32_t kBytesPerEntry = 256;

  // Lays out a partition in `bytes` bytes at `base` (zeroed or not); call
  // once, at server start. `base` must be 8-byte aligned. Too small a block
  // yields a partition that refuses every put.
  static void format(void* base, size_t bytes);

  // Attach: cheap, holds only `base`. The partition must have been formatted.
  explicit ShmCachePartition(void* base);

  // Lookup. Expired entries are misses (and are freed). A hit sets the CLOCK
  // reference bit. `value_out` may be null.
  bool get(std::string_view key, int64_t now_ms, std::string* value_out);

  // Insert or replace; evicts by CLOCK until it fits. expires_at_ms <= 0
  // means "never expires"; otherwise the entry is a miss once now_ms >=
  // expires_at_ms. Returns false and stores nothing if the entry can never
  // fit; an older value under the same key is then dropped too, so a stale
  // value is never served after a failed replace.
  bool put(std::string_view key, std::string_view value, int64_t expires_at_ms, int64_t now_ms);

  // Like get(), but safe under a lock shared with other readers: it changes
  // nothing but the entry's CLOCK bit (atomically). An expired entry is
  // reported, not freed — the caller retries get() under the exclusive lock.
  enum class ReadResult { hit, miss, expired };
  ReadResult read(std::string_view key, int64_t now_ms, std::string* value_out) const;

  bool erase(std::string_view key);

  // Drops every entry; the lifetime counters (evictions, expired) survive.
  void clear();

  struct Stats {
    uint64_t entries;
    // Header + per live entry (its entry slot + its pro-rata share of the
    // hash index) + every arena chunk in use × kChunkSize (so the unused
    // tail of an entry's last chunk counts). Always <= budget_bytes.
    uint64_t bytes_used;
    uint64_t budget_bytes;  // the partition size given to format()
    uint64_t evictions;     // entries dropped by CLOCK to make room
    uint64_t expired;       // entries dropped because their TTL passed
  };
  Stats stats() const;

  // Capacity of the formatted layout, for sizing decisions and tests.
  uint32_t entry_capacity() const;
  uint32_t chunk_capacity() const;
  // Largest key+value size put() can ever accept.
  size_t max_entry_bytes() const;

 private:
  void* base_;
};

// Which partition a key belongs to (stable across processes and restarts).
size_t shm_cache_partition_of(std::string_view key, size_t partitions);

// Test hook: replaces the key hash used by the index (null restores xxHash),
// so tests can force full 64-bit collisions. Process-local, never in shm.
void shm_cache_set_hash_for_testing(uint64_t (*fn)(std::string_view key));

}  // namespace npc_scale
