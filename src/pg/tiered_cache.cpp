#include "tiered_cache.hpp"

#include <algorithm>
#include <functional>
#include <string_view>
#include <unordered_map>

#include "core/steady_clock.hpp"
#include "guard.hpp"
#include "gucs.hpp"
#include "l1_cache.hpp"
#include "l2_doubt_table.hpp"
#include "pg_text.hpp"
#include "shared_state.hpp"
#include "spi.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "utils/timestamp.h"
}

namespace npc_scale {

namespace {

// The keys whose SETs this process lost since the last take (COMMIT's).
std::vector<std::string> g_lost_writes;

RedisCache& redis() {
  static RedisCache instance;
  static bool hooked = false;
  if (!hooked) {
    hooked = true;
    // A cache_set() whose SET may not have landed: Redis may still hold the
    // value it replaced, which readers must not serve (l2_doubt_table).
    // Doubted first, then the key's L1 epoch moves: a reader that read
    // Redis before seeing the doubt has its promotion of that value dropped.
    instance.on_set_lost = [](const std::string& key) {
      l2_doubt(key);
      l1_bump_epoch(&key);
      try {
        g_lost_writes.push_back(key);  // for cache_take_lost_writes()
      } catch (...) {
      }
    };
    // A Redis that restarted (a snapshot reloaded, writes it had
    // acknowledged lost) or another server (a failover): every key doubted
    // before any reply from it is read, until the maintenance worker has
    // emptied it. One log line, by the process that noticed first.
    instance.on_server = [](const std::string& run_id) {
      if (!l2_note_server(run_id)) return;
      l1_bump_epoch(nullptr);
      pg_call([&] {
        ereport(LOG, (errmsg("npc_scale: the Redis L2 cache is another server now (run_id %s), or restarted: "
                             "every key is doubted until the maintenance worker has emptied it",
                             run_id.c_str())));
      });
    };
    // One log line when Redis goes down and one when it is back, per process.
    instance.on_state_change = [](bool up, const std::string& why) {
      pg_atomic_write_u32(&shared_state().redis_up, up ? 1 : 0);
      std::string msg = why;
      pg_call([&] {
        if (up) {
          ereport(LOG, (errmsg("npc_scale: Redis L2 cache is reachable again")));
        } else {
          ereport(LOG, (errmsg("npc_scale: Redis L2 cache unavailable, treating it as a miss: %s",
                               msg.c_str())));
        }
      });
    };
  }
  return instance;
}

int64_t now_ms() { return steady_now_ms(); }

// Readers repair the doubted keys they look up; the maintenance worker
// sweeps Redis for the rest once the oldest doubt is this old.
constexpr int64_t kDoubtSweepAfterMs = 30000;

void count(pg_atomic_uint64& counter) { pg_atomic_fetch_add_u64(&counter, 1); }

// After each Redis call: the shared flag shows what this process just saw
// (a new session that connects fine reports "up" without a state change).
void note_redis_state(uint64_t errors_before) {
  SharedState& s = shared_state();
  uint64_t errors = redis().errors();
  if (errors != errors_before) pg_atomic_fetch_add_u64(&s.redis_errors, errors - errors_before);
  uint32 up = redis().up() ? 1 : 0;
  if (redis().enabled() && pg_atomic_read_u32(&s.redis_up) != up) pg_atomic_write_u32(&s.redis_up, up);
}

// what: the call; left: what Redis might still serve ("the key", "its values").
[[noreturn]] void redis_unreachable(const char* what, const char* left) {
  throw Error(sqlstate::connection_failure,
              std::string(what) + " could not reach Redis at " + redis().endpoint_text() + ": " +
                  left + " could still be served from L2, so nothing was changed",
              {}, "Retry once Redis is back (npc_scale.cache_stats shows redis_up).");
}

struct L3Row {
  std::string value;
  int64_t ttl_ms;  // <= 0: no expiry
};

std::optional<L3Row> l3_get(const std::string& key) {
  static SavedPlan plan(
      // clock_timestamp(), not now(): in a long transaction now() is its
      // start, and a row expired since would be served (and spread).
      "SELECT value, ceil(extract(epoch FROM expires_at - pg_catalog.clock_timestamp()) * 1000)::bigint"
      "  FROM npc_scale.cache_store"
      " WHERE key = $1 AND (expires_at IS NULL OR expires_at > pg_catalog.clock_timestamp())",
      {TEXTOID});
  std::optional<L3Row> row;
  with_spi([&] {
    // On a snapshot taken now, not the caller's: an older one (a REPEATABLE
    // READ transaction's, a long statement's) still sees rows deleted since,
    // and a hit goes up into L2 and L1, for every session.
    if (plan.execute_on_latest({text_datum(key)}) == 1) {
      const std::optional<int64_t> left_ms = spi_int(0, 2);  // NULL: no expiry
      // Under a millisecond left is 1 ms, not "no expiry".
      row = L3Row{spi_text(0, 1).value_or(""), left_ms ? std::max<int64_t>(*left_ms, 1) : 0};
    }
  });
  return row;
}

}  // namespace

void cache_put_l3(const std::string& key, const std::string& value, int64_t ttl_s) {
  static SavedPlan plan(
      "INSERT INTO npc_scale.cache_store (key, value, expires_at)"
      " VALUES ($1, $2, CASE WHEN $3 > 0 THEN pg_catalog.clock_timestamp() + make_interval(secs => $3) END)"
      " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
      {TEXTOID, TEXTOID, INT8OID});
  with_spi([&] { plan.execute({text_datum(key), text_datum(value), Int64GetDatum(ttl_s)}); });
}

bool cache_forget_l3(const std::string& key) {
  static SavedPlan plan("DELETE FROM npc_scale.cache_store WHERE key = $1", {TEXTOID});
  bool deleted = false;
  with_spi([&] { deleted = plan.execute({text_datum(key)}) > 0; });
  return deleted;
}

const char* cache_layer_name(CacheLayer layer) {
  switch (layer) {
    case CacheLayer::l1: return "l1";
    case CacheLayer::l2: return "l2";
    case CacheLayer::l3: return "l3";
    case CacheLayer::none: break;
  }
  return nullptr;
}

namespace {
bool g_connect_in_background = false;
}  // namespace

void cache_connect_redis_in_background() { g_connect_in_background = true; }

void refresh_redis_config() {
  RedisConfig c;
  c.connect_in_background = g_connect_in_background;
  c.host = guc_redis_host ? guc_redis_host : "127.0.0.1";
  c.port = guc_redis_port;
  c.db = guc_redis_db;
  c.password = guc_redis_password ? guc_redis_password : "";
  c.prefix = guc_redis_prefix ? guc_redis_prefix : "npc_scale:cache:";
  c.connect_timeout_ms = guc_redis_connect_timeout_ms;
  c.command_timeout_ms = guc_redis_command_timeout_ms;
  redis().configure(c);
}

namespace {

// One pipelined round trip to L2, with this process's Redis state noted.
std::vector<RedisCache::Lookup> l2_lookup(const std::vector<std::string>& keys) {
  refresh_redis_config();
  uint64_t errors_before = redis().errors();
  std::vector<RedisCache::Lookup> found = redis().get_many(keys, now_ms());
  note_redis_state(errors_before);
  return found;
}

// Copies an L2 hit into L1 for no longer than Redis keeps it, unless the
// key's partition was written since the L1 miss (epoch noted before it).
bool promote_to_l1(const std::string& key, const RedisCache::Lookup& hit, uint64_t epoch) {
  return l1_promote(key, hit.value, hit.ttl_ms > 0 ? hit.ttl_ms : 0, epoch);
}

// Deletes a doubted key's L2 copy; trusted again once Redis confirms,
// unless doubted anew meanwhile. Not while backing off from Redis (the key
// stays doubted: a miss, without a connect timeout). Other backends check
// before they read Redis, so none reads the copy after this trust; the
// dispatcher reads generation keys, which are never doubted one by one.
void l2_forget(const std::string& key) {
  refresh_redis_config();
  const uint64_t stamp = l2_doubt_stamp();
  uint64_t errors_before = redis().errors();
  std::optional<bool> gone = redis().del(key, now_ms(), /*even_backing_off=*/false);
  note_redis_state(errors_before);
  if (gone) l2_trust(key, stamp);
}

}  // namespace

std::optional<std::string> cache_lookup(const std::string& key, bool use_l3, CacheLayer* layer) {
  SharedState& s = shared_state();
  std::string value;
  *layer = CacheLayer::none;
  const uint64_t epoch = l1_epoch(key);  // before the miss: see promote_to_l1
  if (l1_get(key, &value)) {
    count(s.cache_l1_hits);
    *layer = CacheLayer::l1;
    return value;
  }
  RedisCache::Lookup l2;
  switch (l2_doubt_of(key)) {
    case L2Doubts::Doubt::none:
      l2 = std::move(l2_lookup({key})[0]);
      break;
    case L2Doubts::Doubt::key:
      // Redis may hold an older value than L1 and L3 were given: not read,
      // deleted there (once Redis confirms, the key is trusted again), and
      // the lookup goes on below it. Checked before the read, so a reader
      // that trusts the key again cannot race another into serving it.
      l2_forget(key);
      break;
    case L2Doubts::Doubt::all:
      break;  // until a clear empties Redis (the maintenance worker's)
  }
  // Doubted while Redis was read (a SET lost meanwhile): not served.
  if (l2.result == RedisCache::Result::hit && l2_doubt_of(key) != L2Doubts::Doubt::none) {
    l2.result = RedisCache::Result::miss;
  }
  if (l2.result == RedisCache::Result::hit) {
    count(s.cache_l2_hits);
    promote_to_l1(key, l2, epoch);
    *layer = CacheLayer::l2;
    return std::move(l2.value);
  }
  if (use_l3) {
    if (auto row = l3_get(key)) {
      count(s.cache_l3_hits);
      // Up the layers only if nothing wrote the key meanwhile (a delete in
      // flight would otherwise see its value come back).
      if (l1_epoch(key) == epoch) {
        if (row->ttl_ms <= 0 || row->ttl_ms >= 1000) {
          redis().set(key, row->value, row->ttl_ms > 0 ? row->ttl_ms / 1000 : 0, now_ms());
          // A delete whose Redis DEL came between the check above and this
          // SET bumped the epoch first (cache_drop_upper): take it back out.
          if (l1_epoch(key) != epoch && redis().enabled() && !redis().del(key, now_ms())) l2_doubt(key);
        }
        l1_promote(key, row->value, row->ttl_ms, epoch);
      }
      *layer = CacheLayer::l3;
      return row->value;
    }
  }
  count(s.cache_misses);
  return std::nullopt;
}

std::optional<std::string> cache_read_l1(const std::string& key) {
  std::string value;
  if (!l1_get(key, &value)) return std::nullopt;
  return value;
}

void cache_count(CacheLayer layer) {
  SharedState& s = shared_state();
  switch (layer) {
    case CacheLayer::l1: count(s.cache_l1_hits); return;
    case CacheLayer::l2: count(s.cache_l2_hits); return;
    case CacheLayer::l3: count(s.cache_l3_hits); return;
    case CacheLayer::none: count(s.cache_misses); return;
  }
}

namespace {
// The dispatcher's asks in flight: each key's L1 epoch when it was asked
// (after its L1 miss), for the promotion of its answer.
std::unordered_map<uint64_t, std::vector<uint64_t>> g_ask_epochs;
}  // namespace

uint64_t cache_ask_l2(const std::vector<std::string>& keys) {
  std::vector<uint64_t> epochs;
  epochs.reserve(keys.size());
  for (const std::string& k : keys) epochs.push_back(l1_epoch(k));
  refresh_redis_config();
  uint64_t errors_before = redis().errors();
  uint64_t ticket = redis().ask(keys, now_ms());
  note_redis_state(errors_before);
  g_ask_epochs[ticket] = std::move(epochs);
  return ticket;
}

std::vector<L2Reply> cache_take_l2_answers() {
  // Called on every tick of the dispatcher: Redis's state is reported only
  // when this call saw something of it, or a stale "down" from the last
  // failure would overwrite what the backends see now.
  if (!redis().awaiting() && !redis().has_answers() && redis().unread_replies() == 0) return {};
  uint64_t errors_before = redis().errors();
  std::vector<RedisCache::Answer> answers = redis().take_answers(now_ms());
  if (!answers.empty() || redis().errors() != errors_before) note_redis_state(errors_before);
  std::vector<L2Reply> out;
  SharedState& s = shared_state();
  for (RedisCache::Answer& a : answers) {
    L2Reply& o = out.emplace_back();
    o.ticket = a.ticket;
    std::vector<uint64_t> epochs;
    if (auto it = g_ask_epochs.find(a.ticket); it != g_ask_epochs.end()) {
      epochs = std::move(it->second);
      g_ask_epochs.erase(it);
    }
    for (size_t i = 0; i < a.lookups.size(); i++) {
      // A hit L1 cannot hold (bigger than an entry may be) is no use to the
      // table path: the request goes on, as for a miss. So is one whose
      // promotion failed: every answer taken must reach the caller.
      RedisCache::Lookup& l = a.lookups[i];
      // A doubted key (l2_doubt_table) is a miss here; the event loop does
      // not wait for its DEL, a backend's lookup of it does that.
      if (l.result == RedisCache::Result::hit && l2_doubt_of(a.keys[i]) != L2Doubts::Doubt::none) {
        l.result = RedisCache::Result::miss;
      }
      bool promoted = false;
      try {
        promoted = l.result == RedisCache::Result::hit && i < epochs.size() &&
                   promote_to_l1(a.keys[i], l, epochs[i]);
        if (!promoted && l.result == RedisCache::Result::hit) {
          // Dropped: the key's slot was written since the ask (often by
          // the GPU's answer to this very request, filled meanwhile). What
          // L1 holds now is the current value: answer with that.
          if (std::optional<std::string> now_in_l1 = cache_read_l1(a.keys[i])) {
            l.value = std::move(*now_in_l1);
            promoted = true;
          }
        }
      } catch (const std::exception&) {
        promoted = false;
      }
      count(promoted ? s.cache_l2_hits : s.cache_misses);
      o.hits.push_back(promoted ? std::optional<std::string>(std::move(l.value)) : std::nullopt);
    }
  }
  return out;
}

int cache_l2_wait_fd() { return redis().awaiting() ? redis().fd() : -1; }

int64_t cache_l2_next_event_ms() {
  if (redis().has_answers()) return 0;
  return redis().ask_timeout_in_ms(now_ms());
}

namespace {

// Redis as configured now, for a write. With L2 off (redis_port 0) the write
// skips Redis, whose copy goes stale: every key is doubted, until Redis,
// back on (by a reload or a restart: the doubt outlives both), has been
// emptied. Each writer says so itself, as well as the maintenance worker's
// tick: the worker may be inside a long refresh while L2 goes off and on.
bool l2_on_for_write() {
  refresh_redis_config();
  if (redis().enabled()) return true;
  l2_doubt_everything_once();
  return false;
}

}  // namespace

bool cache_store(const std::string& key, const std::string& value, int64_t ttl_s,
                 RedisCache::WhenBehind behind, bool replaces) {
  l1_put(key, value, ttl_s > 0 ? ttl_s * 1000 : 0);
  if (!l2_on_for_write()) return true;  // no connection to fail
  uint64_t errors_before = redis().errors();
  const uint64_t failures_before = redis().connection_failures();
  redis().set_nowait(key, value, ttl_s, now_ms(), behind, /*report_loss=*/replaces);
  note_redis_state(errors_before);
  // An error reply read meanwhile (a SET refused by a full Redis) leaves the
  // connection working: only a lost connection says Redis failed.
  return redis().connection_failures() == failures_before;
}

// Bottom-up, so a reader between the steps finds nothing to bring back up
// (and what it promotes is dropped: L1's epoch moves with the erase). L2
// must confirm: a value left in Redis would come back on the next L1 miss,
// so an unreachable Redis is an error, and this transaction's L3 change
// rolls back with it.
bool cache_remove(const std::string& key) {
  bool removed = cache_forget_l3(key);
  // The epoch moves before Redis's DEL too: a reader promoting the L3 row
  // checks it after its SET (cache_lookup). L1 itself changes only once
  // Redis has confirmed (a refused delete changes nothing).
  l1_bump_epoch(&key);
  if (l2_on_for_write()) {
    uint64_t errors_before = redis().errors();
    const uint64_t stamp = l2_doubt_stamp();
    std::optional<bool> in_l2 = redis().del(key, now_ms());
    note_redis_state(errors_before);
    if (!in_l2) redis_unreachable("cache_delete()", "the key");
    l2_trust(key, stamp);
    removed = *in_l2 || removed;
  }
  removed = l1_erase(key) || removed;
  return removed;
}

void cache_clear_all() {
  static SavedPlan plan("DELETE FROM npc_scale.cache_store", {});
  with_spi([&] { plan.execute({}); });
  l1_bump_epoch(nullptr);  // see cache_remove
  if (l2_on_for_write()) {
    uint64_t errors_before = redis().errors();
    const uint64_t stamp = l2_doubt_stamp();
    const int64_t sent_ms = now_ms();
    const int64_t cleared = redis().clear(sent_ms);
    note_redis_state(errors_before);
    if (cleared < 0) redis_unreachable("cache_clear()", "its values");
    l2_trust_everything(stamp, sent_ms);
  }
  l1_clear();
}

bool cache_drop_upper(const std::string* key, bool try_redis) {
  bool redis_ok = true;
  l1_bump_epoch(key);  // see cache_remove
  if (l2_on_for_write()) {
    redis_ok = false;
    const uint64_t stamp = l2_doubt_stamp();
    const int64_t sent_ms = now_ms();
    if (try_redis) {
      uint64_t errors_before = redis().errors();
      redis_ok = key ? redis().del(*key, now_ms()).has_value() : redis().clear(now_ms()) >= 0;
      note_redis_state(errors_before);
    }
    // What Redis did not confirm may still be served from it: doubted.
    if (key && redis_ok) {
      l2_trust(*key, stamp);
    } else if (key) {
      l2_doubt(*key);
    } else if (redis_ok) {
      l2_trust_everything(stamp, sent_ms);
    } else {
      l2_doubt_everything();
    }
  }
  if (key) {
    l1_erase(*key);
  } else {
    l1_clear();
  }
  return redis_ok;
}

std::optional<L2Sweep> cache_settle_l2_doubts() {
  if (!l2_on_for_write()) return std::nullopt;  // L2 off: every key doubted
  const L2DoubtStats doubts = l2_doubt_stats();
  const int64_t started = now_ms();
  const bool due = doubts.everything || (doubts.keys > 0 && started - doubts.since_ms >= kDoubtSweepAfterMs);
  if (!due) return std::nullopt;
  const uint64_t stamp = l2_doubt_stamp();
  std::function<bool(std::string_view)> doomed;  // none: every key
  if (!doubts.everything) {
    doomed = [](std::string_view key) { return l2_doubt_of(std::string(key)) != L2Doubts::Doubt::none; };
  }
  // The epochs move before and after: the dispatcher's ask answered from a
  // key before the sweep deleted it is not promoted (so not served) once
  // the doubts are lifted. Backends check doubts before they read Redis.
  l1_bump_epoch(nullptr);
  uint64_t errors_before = redis().errors();
  // Not while backing off: an unreachable Redis is tried again later.
  const int64_t deleted = redis().sweep(started, doomed, /*even_backing_off=*/false);
  note_redis_state(errors_before);
  if (deleted < 0) return std::nullopt;
  l1_bump_epoch(nullptr);
  l2_trust_everything(stamp, started);
  return L2Sweep{deleted, doubts.everything};
}

std::vector<std::string> cache_take_lost_writes() {
  std::vector<std::string> taken;
  taken.swap(g_lost_writes);
  return taken;
}

bool cache_confirm_l2_writes() {
  uint64_t errors_before = redis().errors();
  const bool ok = redis().read_outstanding(now_ms());
  note_redis_state(errors_before);
  return ok;
}

}  // namespace npc_scale
