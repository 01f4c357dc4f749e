// L1 of the cache: npc_scale.cache_memory bytes of shared memory, split into
// partitions each behind its own LWLock, so readers in many backends do not
// serialise on one lock. The data structure itself (CLOCK eviction, honest
// byte accounting, offsets only) is src/core/shm_cache.
#pragma once

#include <cstdint>
#include <string>

extern "C" {
#include "postgres.h"
}

namespace npc_scale {

inline constexpr int kCachePartitions = 16;

Size l1_cache_size();
void l1_cache_request();  // shmem_request_hook: locks
void l1_cache_attach();   // shmem_startup_hook

bool l1_get(const std::string& key, std::string* value);
// ttl_s <= 0: no expiry. False if the entry can never fit.
// ttl_ms <= 0: no expiry. A write: moves the key's partition epoch on.
bool l1_put(const std::string& key, const std::string& value, int64_t ttl_ms);
// The key's partition epoch, to note before a lookup that may promote.
uint64_t l1_epoch(const std::string& key);
// Moves the key's epoch on (every epoch, key null) without changing L1: a
// delete about to reach Redis, so that a promotion racing it is dropped.
void l1_bump_epoch(const std::string* key);
// A promotion from a lower layer: stored only if no write reached the key's
// partition since `epoch` was noted (false otherwise, or if it did not fit).
bool l1_promote(const std::string& key, const std::string& value, int64_t ttl_ms, uint64_t epoch);
bool l1_erase(const std::string& key);
void l1_clear();

struct L1Stats {
  uint64_t entries = 0, bytes_used = 0, budget_bytes = 0, evictions = 0;
};
L1Stats l1_stats();

}  // namespace npc_scale
