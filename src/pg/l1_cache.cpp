#include "l1_cache.hpp"

#include "core/shm_cache.hpp"
#include "core/steady_clock.hpp"
#include "guard.hpp"
#include "gucs.hpp"

extern "C" {
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
}

namespace npc_scale {

namespace {

constexpr const char* kTranche = "npc_scale_cache";
char* g_base = nullptr;
LWLockPadded* g_locks = nullptr;
// Write epochs, one per slot of keys (1024 slots, by the key's partition
// hash, so slot % 16 is its partition): bumped by every write (put, erase;
// a clear bumps all) under the partition's exclusive lock. A reader that
// missed L1 notes its key's epoch first; its promotion of what it then
// found below is dropped if a write to that slot came in between, so a
// value deleted or replaced meanwhile never comes back into L1. Slots, not
// partitions: unrelated writes seldom drop a promotion.
constexpr size_t kEpochSlots = 1024;
static_assert(kEpochSlots % kCachePartitions == 0, "a slot stays within one partition");
pg_atomic_uint64* g_epochs = nullptr;

pg_atomic_uint64* epoch_of(const std::string& key) {
  return &g_epochs[shm_cache_partition_of(key, kEpochSlots)];
}

Size partition_bytes() {
  // 8-byte aligned partitions; the layout inside each is shm_cache's business.
  Size total = static_cast<Size>(guc_cache_memory_kb) * 1024;
  return (total / kCachePartitions) & ~static_cast<Size>(7);
}

// Expiry on the monotonic clock (the same in every process): entries hold
// a TTL from their write, which a wall-clock step must not stretch or cut.
int64_t now_ms() { return steady_now_ms(); }

// Runs fn on the key's partition under its lock (exclusive: a hit sets the
// CLOCK bit). No Postgres call inside fn may throw past the lock: shm_cache
// is plain C++ and allocates only into the caller's std::string.
template <typename Fn>
auto with_partition(const std::string& key, Fn&& fn) {
  if (g_base == nullptr) {
    throw Error(sqlstate::object_not_in_prerequisite_state, "npc_scale L1 cache is not set up");
  }
  size_t p = shm_cache_partition_of(key, kCachePartitions);
  LWLock* lock = &g_locks[p].lock;
  pg_call([&] { LWLockAcquire(lock, LW_EXCLUSIVE); });
  try {
    ShmCachePartition part(g_base + p * partition_bytes());
    auto result = fn(part);
    LWLockRelease(lock);
    return result;
  } catch (...) {
    LWLockRelease(lock);
    throw;
  }
}

Size epochs_offset() { return partition_bytes() * kCachePartitions + 8; }

}  // namespace

Size l1_cache_size() { return epochs_offset() + sizeof(pg_atomic_uint64) * kEpochSlots; }

void l1_cache_request() { RequestNamedLWLockTranche(kTranche, kCachePartitions); }

void l1_cache_attach() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  char* raw = static_cast<char*>(ShmemInitStruct("npc_scale L1 cache", l1_cache_size(), &found));
  g_base = reinterpret_cast<char*>(TYPEALIGN(8, reinterpret_cast<uintptr_t>(raw)));
  g_locks = GetNamedLWLockTranche(kTranche);
  g_epochs = reinterpret_cast<pg_atomic_uint64*>(raw + epochs_offset());
  if (!found) {
    for (int p = 0; p < kCachePartitions; p++) {
      ShmCachePartition::format(g_base + p * partition_bytes(), partition_bytes());
    }
    for (size_t e = 0; e < kEpochSlots; e++) pg_atomic_init_u64(&g_epochs[e], 0);
  }
  LWLockRelease(AddinShmemInitLock);
}

bool l1_get(const std::string& key, std::string* value) {
  if (g_base == nullptr) {
    throw Error(sqlstate::object_not_in_prerequisite_state, "npc_scale L1 cache is not set up");
  }
  int64_t now = now_ms();
  // Hits, the common case, share the partition lock: a hot key read by every
  // backend at once must not serialise them.
  size_t p = shm_cache_partition_of(key, kCachePartitions);
  LWLock* lock = &g_locks[p].lock;
  pg_call([&] { LWLockAcquire(lock, LW_SHARED); });
  ShmCachePartition::ReadResult r;
  try {
    r = ShmCachePartition(g_base + p * partition_bytes()).read(key, now, value);
  } catch (...) {
    LWLockRelease(lock);
    throw;
  }
  LWLockRelease(lock);
  if (r != ShmCachePartition::ReadResult::expired) return r == ShmCachePartition::ReadResult::hit;
  // Expired: free it under the exclusive lock (get() does, and reports a miss).
  return with_partition(key, [&](ShmCachePartition& part) { return part.get(key, now, value); });
}

uint64_t l1_epoch(const std::string& key) {
  if (g_epochs == nullptr) return 0;
  return pg_atomic_read_u64(epoch_of(key));
}

void l1_bump_epoch(const std::string* key) {
  if (g_epochs == nullptr) return;
  if (key) {
    pg_atomic_fetch_add_u64(epoch_of(*key), 1);
  } else {
    for (size_t e = 0; e < kEpochSlots; e++) pg_atomic_fetch_add_u64(&g_epochs[e], 1);
  }
}

bool l1_put(const std::string& key, const std::string& value, int64_t ttl_ms) {
  int64_t now = now_ms();
  int64_t expires = ttl_ms > 0 ? now + ttl_ms : 0;
  return with_partition(key, [&](ShmCachePartition& part) {
    pg_atomic_fetch_add_u64(epoch_of(key), 1);
    return part.put(key, value, expires, now);
  });
}

bool l1_promote(const std::string& key, const std::string& value, int64_t ttl_ms, uint64_t epoch) {
  int64_t now = now_ms();
  int64_t expires = ttl_ms > 0 ? now + ttl_ms : 0;
  return with_partition(key, [&](ShmCachePartition& part) {
    if (pg_atomic_read_u64(epoch_of(key)) != epoch) return false;  // written since the miss
    return part.put(key, value, expires, now);
  });
}

bool l1_erase(const std::string& key) {
  return with_partition(key, [&](ShmCachePartition& part) {
    pg_atomic_fetch_add_u64(epoch_of(key), 1);
    return part.erase(key);
  });
}

void l1_clear() {
  for (int p = 0; p < kCachePartitions; p++) {
    LWLock* lock = &g_locks[p].lock;
    pg_call([&] { LWLockAcquire(lock, LW_EXCLUSIVE); });
    for (size_t e = static_cast<size_t>(p); e < kEpochSlots; e += kCachePartitions) {
      pg_atomic_fetch_add_u64(&g_epochs[e], 1);  // this partition's slots
    }
    ShmCachePartition(g_base + p * partition_bytes()).clear();
    LWLockRelease(lock);
  }
}

L1Stats l1_stats() {
  L1Stats out;
  if (g_base == nullptr) return out;
  for (int p = 0; p < kCachePartitions; p++) {
    LWLock* lock = &g_locks[p].lock;
    pg_call([&] { LWLockAcquire(lock, LW_SHARED); });
    auto st = ShmCachePartition(g_base + p * partition_bytes()).stats();
    LWLockRelease(lock);
    out.entries += st.entries;
    out.bytes_used += st.bytes_used;
    out.budget_bytes += st.budget_bytes;
    out.evictions += st.evictions;
  }
  return out;
}

}  // namespace npc_scale
