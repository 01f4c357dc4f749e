// The cache as a general service for game code: cache_get / cache_set /
// cache_delete / cache_clear, and the counters behind npc_scale.cache_stats.
#include <string>

#include "cache_xact.hpp"
#include "core/cache_policy.hpp"
#include "guard.hpp"
#include "l1_cache.hpp"
#include "l2_doubt_table.hpp"
#include "pg_text.hpp"
#include "shared_state.hpp"
#include "tiered_cache.hpp"

#include <xxhash.h>

extern "C" {
#include "access/detoast.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/timestamp.h"
}

namespace {

// Advisory locks of this kind (pg_locks.objsubid) are npc_scale's per-key
// cache write locks; Postgres's own use 1 and 2, so a game's advisory locks
// never collide with them.
constexpr uint16 kCacheKeyLockSpace = 0x4E53;

// Writers of one key apply their L1 and L2 writes at COMMIT, after the
// commit is visible, in whatever order their sessions get there: a second
// writer could apply first and the older value land last (and live on in
// L1 until its TTL), e.g. while a stalled Redis holds the first. So a
// writer holds the key until its transaction ends, which Postgres makes
// after the commit callbacks have applied its writes: the next one waits,
// as for a row lock (lock_timeout and deadlock detection apply).
void lock_key_for_write(const std::string& key) {
  const uint64_t h = XXH3_64bits(key.data(), key.size());
  npc_scale::pg_call([&] {
    LOCKTAG tag;
    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, static_cast<uint32>(h >> 32), static_cast<uint32>(h),
                         kCacheKeyLockSpace);
    (void)LockAcquire(&tag, ExclusiveLock, false, false);
  });
}

std::string checked_key(Datum d) {
  std::string key = npc_scale::text_arg(d);
  if (key.empty()) {
    throw npc_scale::Error(npc_scale::sqlstate::invalid_parameter_value, "cache key must not be empty");
  }
  if (key.size() > 1024) {
    throw npc_scale::Error("54000", "cache key of " + std::to_string(key.size()) +
                                        " bytes is longer than 1024 bytes");
  }
  return key;
}

}  // namespace

NPC_SQL_FUNCTION(npc_scale_cache_get) {
  using namespace npc_scale;
  const std::string key = user_key(checked_key(PG_GETARG_DATUM(0)));
  if (std::optional<std::string> own; xact_cache_own(key, &own)) {  // written here, not committed yet
    if (!own) PG_RETURN_NULL();
    return text_datum(*own);
  }
  CacheLayer layer;
  auto value = cache_lookup(key, true, &layer);
  if (!value) PG_RETURN_NULL();
  return text_datum(*value);
}

NPC_SQL_FUNCTION(npc_scale_cache_set) {
  using namespace npc_scale;
  if (PG_ARGISNULL(0)) throw Error(sqlstate::null_value_not_allowed, "cache key must not be null");
  if (PG_ARGISNULL(1)) throw Error(sqlstate::null_value_not_allowed, "cache value must not be null");
  const std::string key = user_key(checked_key(PG_GETARG_DATUM(0)));
  // Measured before it is detoasted: a 1 GB value is refused, not copied.
  constexpr size_t kMaxValueBytes = 1 << 20;
  const size_t value_bytes =
      pg_call([&] { return toast_raw_datum_size(PG_GETARG_DATUM(1)) - VARHDRSZ; });
  if (value_bytes > kMaxValueBytes) {
    throw Error("54000", "cache value of " + std::to_string(value_bytes) + " bytes is longer than " +
                             std::to_string(kMaxValueBytes) + " bytes");
  }
  std::string value = text_arg(PG_GETARG_DATUM(1));
  int64_t ttl_s = 0;
  if (!PG_ARGISNULL(2)) {
    ttl_s = cache_ttl_seconds(interval_arg_seconds(fcinfo, 2));
  }
  if (PG_ARGISNULL(3)) {
    throw Error(sqlstate::null_value_not_allowed, "persist must not be null", {},
                "Use true to keep the value in the cache_store table too, false (the default) not to.");
  }
  const bool persist = PG_GETARG_BOOL(3);
  lock_key_for_write(key);
  if (persist) {
    cache_put_l3(key, value, ttl_s);
  } else {
    cache_forget_l3(key);
  }
  xact_cache_note_set(key, value, ttl_s);  // L1 and L2 at COMMIT
  PG_RETURN_VOID();
}

NPC_SQL_FUNCTION(npc_scale_cache_delete) {
  using namespace npc_scale;
  // Not STRICT: a write that silently did nothing would hide a bug in the
  // caller (cache_get(NULL) may well be NULL: nothing is cached under it).
  if (PG_ARGISNULL(0)) throw Error(sqlstate::null_value_not_allowed, "cache key must not be null");
  const std::string key = user_key(checked_key(PG_GETARG_DATUM(0)));
  lock_key_for_write(key);
  std::optional<std::string> own_value;
  const bool decided = xact_cache_own(key, &own_value);  // by this transaction's own last write
  const bool removed_now = cache_remove(key);
  const bool removed = decided ? own_value.has_value() : removed_now;
  xact_cache_note_removal(&key);  // L2 and L1 again at COMMIT
  PG_RETURN_BOOL(removed);
}

NPC_SQL_FUNCTION(npc_scale_cache_clear) {
  (void)fcinfo;
  npc_scale::cache_clear_all();
  npc_scale::xact_cache_note_removal(nullptr);  // L2 and L1 again at COMMIT
  PG_RETURN_VOID();
}

NPC_SQL_FUNCTION(npc_scale_cache_stats) {
  using namespace npc_scale;
  SharedState& s = shared_state();
  L1Stats l1 = l1_stats();
  int64 h1 = static_cast<int64>(pg_atomic_read_u64(&s.cache_l1_hits));
  int64 h2 = static_cast<int64>(pg_atomic_read_u64(&s.cache_l2_hits));
  int64 h3 = static_cast<int64>(pg_atomic_read_u64(&s.cache_l3_hits));
  int64 miss = static_cast<int64>(pg_atomic_read_u64(&s.cache_misses));
  int64 total = h1 + h2 + h3 + miss;
  L2DoubtStats doubts = l2_doubt_stats();
  return pg_call([&] {
    TupleDesc desc;
    if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE) {
      elog(ERROR, "npc_scale: cache_stats must return a record");
    }
    desc = BlessTupleDesc(desc);
    Datum v[13];
    bool nulls[13] = {false};
    v[0] = Int64GetDatum(h1);
    v[1] = Int64GetDatum(h2);
    v[2] = Int64GetDatum(h3);
    v[3] = Int64GetDatum(miss);
    v[4] = Float8GetDatum(total > 0 ? static_cast<double>(h1 + h2 + h3) / total : 0.0);
    nulls[4] = total == 0;
    v[5] = Int64GetDatum(static_cast<int64>(l1.entries));
    v[6] = Int64GetDatum(static_cast<int64>(l1.bytes_used));
    v[7] = Int64GetDatum(static_cast<int64>(l1.budget_bytes));
    v[8] = Int64GetDatum(static_cast<int64>(l1.evictions));
    v[9] = BoolGetDatum(pg_atomic_read_u32(&s.redis_up) != 0);
    v[10] = Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&s.redis_errors)));
    v[11] = Int64GetDatum(doubts.keys);
    v[12] = BoolGetDatum(doubts.everything);
    return HeapTupleGetDatum(heap_form_tuple(desc, v, nulls));
  });
}
