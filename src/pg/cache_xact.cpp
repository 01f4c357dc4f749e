#include "cache_xact.hpp"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "guard.hpp"
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
  SubTransactionId subxact;
  std::string key;  // not for clear
  std::string value;
  int64_t ttl_s = 0;
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

void forget_all() {
  g_ops.clear();
  g_last_write.clear();
  g_last_clear.reset();
}

// After the commit: nothing may raise here. Redis is best effort (a set
// not stored there is a later miss; a removal was confirmed when it was made).
void apply_at_commit() noexcept {
  for (size_t i = 0; i < g_ops.size(); i++) {
    // Only each key's last write and the last clear: what they supersede
    // would be undone at once.
    const Op& op = g_ops[i];
    const bool superseded =
        op.kind == Op::Kind::clear
            ? i != *g_last_clear
            : g_last_write.find(op.key)->second != i || (g_last_clear && *g_last_clear > i);
    if (superseded) continue;
    try {
      switch (op.kind) {
        case Op::Kind::set: cache_store(op.key, op.value, op.ttl_s); break;
        case Op::Kind::remove: cache_drop_upper(&op.key); break;
        case Op::Kind::clear: cache_drop_upper(nullptr); break;
      }
    } catch (...) {
    }
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
  record(Op{Op::Kind::set, 0, key, value, ttl_s});
}

void xact_cache_note_removal(const std::string* key) {
  if (key) {
    record(Op{Op::Kind::remove, 0, *key, {}, 0});
  } else {
    record(Op{Op::Kind::clear, 0, {}, {}, 0});
  }
}

std::optional<std::string> xact_cache_own_value(const std::string& key) {
  auto it = g_last_write.find(key);
  if (it == g_last_write.end() || (g_last_clear && *g_last_clear > it->second)) return std::nullopt;
  const Op& op = g_ops[it->second];
  if (op.kind != Op::Kind::set) return std::nullopt;
  return op.value;
}

}  // namespace npc_scale
