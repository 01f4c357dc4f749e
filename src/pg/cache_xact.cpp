#include "cache_xact.hpp"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "core/steady_clock.hpp"
#include "guard.hpp"
#include "l1_cache.hpp"
#include "l2_doubt_table.hpp"
#include "tiered_cache.hpp"

extern "C" {
#include "access/xact.h"
}

namespace npc_scale {

namespace {

// One write, in the order made; the subtransaction that made it (or, once
// that committed, its parent's) decides whether a savepoint rollback drops it.
struct Op {
  enum class Kind { set, remove, clear } kind;
  SubTransactionId subxact = InvalidSubTransactionId;
  std::string key;  // not for clear
  std::string value;
  // A set's expiry on the steady clock, 0: none. Counted from cache_set(),
  // as its L3 row's is: a long transaction does not lengthen it.
  int64_t expires_ms = 0;
};

std::vector<Op> g_ops;
// Per key, the index in g_ops of its last set or remove; a clear later than
// it (g_last_clear) wins. Rebuilt after a savepoint rollback.
std::unordered_map<std::string, size_t> g_last_write;
std::optional<size_t> g_last_clear;

void reindex() {
  g_last_write.clear();
  g_last_clear.reset();
  for (size_t i = 0; i < g_ops.size(); i++) {
    if (g_ops[i].kind == Op::Kind::clear) {
      g_last_clear = i;
    } else {
      g_last_write[g_ops[i].key] = i;
    }
  }
}

void forget_all() noexcept {
  g_ops.clear();
  g_last_write.clear();
  g_last_clear.reset();
}

// The index of the key's last write if nothing (a clear) came after it.
std::optional<size_t> last_write(const std::string& key) {
  auto it = g_last_write.find(key);
  if (it == g_last_write.end() || (g_last_clear && *g_last_clear > it->second)) return std::nullopt;
  return it->second;
}

// After the commit: nothing may raise here, and little may wait (the session
// cannot be cancelled now, and still holds its locks). Sets are pipelined
// (waiting only when 64 replies are unread) and their replies read at the
// end; deletes and a clear wait for theirs: each bounded by the command
// timeout, and once Redis fails the rest skip it (L1 still changes). What
// Redis may not have got is doubted (l2_doubt_table), so its older copy is
// never served. Only each key's last write and the last clear are applied:
// what they supersede would be undone at once.
void apply_at_commit() noexcept {
  bool redis_ok = true;
  bool sets_sent = false;
  const int64_t now = steady_now_ms();
  try {
    cache_take_lost_writes();  // earlier ones are not this COMMIT's
  } catch (...) {
  }
  for (size_t i = 0; i < g_ops.size(); i++) {
    const Op& op = g_ops[i];
    const bool last = op.kind == Op::Kind::clear ? i == *g_last_clear : last_write(op.key) == i;
    if (!last) continue;
    try {
      if (op.kind == Op::Kind::clear) {
        redis_ok = cache_drop_upper(nullptr, redis_ok) && redis_ok;
      } else if (op.kind == Op::Kind::remove || (op.expires_ms > 0 && op.expires_ms <= now)) {
        // A set that expired before its COMMIT: the key ends as after a delete.
        redis_ok = cache_drop_upper(&op.key, redis_ok) && redis_ok;
      } else {
        const int64_t ttl_s = op.expires_ms > 0 ? (op.expires_ms - now + 999) / 1000 : 0;
        // Waiting when 64 replies are unread: else a transaction of many
        // sets would leave most of them out of Redis.
        sets_sent = true;
        redis_ok = cache_store(op.key, op.value, ttl_s,
                               redis_ok ? RedisCache::WhenBehind::wait : RedisCache::WhenBehind::skip,
                               /*replaces=*/true) &&
                   redis_ok;
      }
    } catch (...) {
      // Whatever failed, Redis may not have this change.
      if (op.kind == Op::Kind::clear) {
        l2_doubt_everything();
      } else {
        l2_doubt(op.key);
      }
    }
  }
  if (!sets_sent) return;
  // A refused SET, or one whose reply the connection's loss takes along, is
  // doubted by the Redis client as the reply (or its absence) is read. Its
  // value then goes into L1 again: a reader that missed L1 before the doubt
  // landed may have promoted Redis's older copy meanwhile.
  try {
    cache_confirm_l2_writes();
    const std::vector<std::string> lost = cache_take_lost_writes();
    for (const std::string& key : lost) {
      std::optional<size_t> i = last_write(key);
      if (!i || g_ops[*i].kind != Op::Kind::set) continue;
      const Op& op = g_ops[*i];
      if (op.expires_ms > 0 && op.expires_ms <= now) continue;  // applied as a delete
      l1_put(key, op.value, op.expires_ms > 0 ? op.expires_ms - now : 0);
    }
  } catch (...) {
  }
}

void on_xact(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_PRE_PREPARE:
      // As for NOTIFY: writes that would only be applied by this session's
      // COMMIT cannot wait in a prepared transaction. No C++ object lives in
      // this frame: raising here is safe.
      if (!g_ops.empty()) {
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot PREPARE a transaction that has changed the npc_scale cache"),
                        errhint("Call cache_set(), cache_delete() and cache_clear() outside "
                                "two-phase transactions.")));
      }
      return;
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
      apply_at_commit();
      forget_all();
      return;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE:
      forget_all();
      return;
    default:
      return;
  }
}

void on_subxact(SubXactEvent event, SubTransactionId mine, SubTransactionId parent, void*) {
  // Called from Postgres's C code: nothing may be thrown out of here.
  try {
    if (event == SUBXACT_EVENT_COMMIT_SUB) {
      for (Op& op : g_ops) {
        if (op.subxact == mine) op.subxact = parent;
      }
    } else if (event == SUBXACT_EVENT_ABORT_SUB) {
      auto dropped = std::remove_if(g_ops.begin(), g_ops.end(),
                                    [&](const Op& op) { return op.subxact == mine; });
      if (dropped == g_ops.end()) return;
      g_ops.erase(dropped, g_ops.end());
      reindex();
    }
  } catch (...) {
    forget_all();  // out of memory: the writes are not applied (later misses)
  }
}

void record(Op op) {
  static bool registered = false;
  if (!registered) {
    pg_call([] {
      RegisterXactCallback(on_xact, nullptr);
      RegisterSubXactCallback(on_subxact, nullptr);
    });
    registered = true;
  }
  op.subxact = GetCurrentSubTransactionId();
  if (op.kind != Op::Kind::clear) {
    // Rewritten in the same subtransaction: in place, so a loop of writes
    // to one key holds one value (a savepoint rollback drops both alike).
    if (std::optional<size_t> prev = last_write(op.key); prev && g_ops[*prev].subxact == op.subxact) {
      g_ops[*prev] = std::move(op);
      return;
    }
  }
  g_ops.push_back(std::move(op));
  const size_t index = g_ops.size() - 1;
  if (g_ops.back().kind == Op::Kind::clear) {
    g_last_clear = index;
  } else {
    g_last_write[g_ops.back().key] = index;
  }
}

}  // namespace

void xact_cache_note_set(const std::string& key, const std::string& value, int64_t ttl_s) {
  record(Op{Op::Kind::set, InvalidSubTransactionId, key, value,
            ttl_s > 0 ? steady_now_ms() + ttl_s * 1000 : 0});
}

void xact_cache_note_removal(const std::string* key) {
  if (key) {
    record(Op{Op::Kind::remove, InvalidSubTransactionId, *key, {}, 0});
  } else {
    record(Op{Op::Kind::clear, InvalidSubTransactionId, {}, {}, 0});
  }
}

bool xact_cache_own(const std::string& key, std::optional<std::string>* value) {
  auto it = g_last_write.find(key);
  // Deleted or cleared here: gone for this transaction, whatever another
  // session may have put back into L1 or L2 meanwhile.
  if (g_last_clear && (it == g_last_write.end() || *g_last_clear > it->second)) {
    value->reset();
    return true;
  }
  if (it == g_last_write.end()) return false;
  const Op& op = g_ops[it->second];
  if (op.kind == Op::Kind::remove) {
    value->reset();
    return true;
  }
  if (op.expires_ms > 0 && op.expires_ms <= steady_now_ms()) {
    value->reset();
  } else {
    *value = op.value;
  }
  return true;
}

}  // namespace npc_scale
