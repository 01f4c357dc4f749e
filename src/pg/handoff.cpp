#include "handoff.hpp"

#include <algorithm>
#include <cstring>

#include "guard.hpp"

extern "C" {
#include "access/transam.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "storage/procarray.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
}

namespace npc_scale {

namespace {

// 512 slots of 4 kB (2 MB): a burst of 512 commits between two dispatcher rounds.
// Bigger decisions, and commits that find no free slot, take the table path.
constexpr int kSlots = 512;
constexpr int kTextBytes = 4096;

enum SlotState : uint32 { kFree = 0, kFilling = 1, kReady = 2 };

struct Slot {
  Oid db;
  TransactionId xid;
  int64 id, npc_id;
  int priority;
  bool has_deadline;
  int64 deadline_us;
  int type_len, prompt_len, params_len;
  char text[kTextBytes];  // decision_type, prompt, params back to back
};

struct Area {
  pg_atomic_uint32 next;  // where producers start looking for a free slot
  // Apart from the slots, so the dispatcher's look for ready ones reads 2 kB,
  // not one line of each of 512 pages.
  pg_atomic_uint32 state[kSlots];
  Slot slots[kSlots];
};

Area* g_area = nullptr;

struct Pending {
  HandoffEntry entry;
  SubTransactionId subxact;
  // cancel_decision() in the same transaction: not published (unless the
  // savepoint it was called in rolls back).
  SubTransactionId cancelled_in = InvalidSubTransactionId;
  // Changed by an UPDATE since: the table path sends the row as committed.
  SubTransactionId changed_in = InvalidSubTransactionId;
};
std::vector<Pending> g_pending;  // this backend's, until its transaction ends
uint64_t g_changes = 0;          // statements that fired the queue's UPDATE trigger
bool g_callbacks_registered = false;

enum class Published { yes, unfit, area_full };

Published publish(const HandoffEntry& e, TransactionId xid) {
  const size_t bytes = e.decision_type.size() + e.prompt.size() + e.params.size();
  if (g_area == nullptr || bytes > static_cast<size_t>(kTextBytes) || !TransactionIdIsValid(xid)) {
    return Published::unfit;
  }
  const uint32 start = pg_atomic_fetch_add_u32(&g_area->next, 1);
  for (int k = 0; k < kSlots; k++) {
    const uint32 i = (start + k) % kSlots;
    Slot& s = g_area->slots[i];
    uint32 expected = kFree;
    if (!pg_atomic_compare_exchange_u32(&g_area->state[i], &expected, kFilling)) continue;
    s.db = MyDatabaseId;
    s.xid = xid;
    s.id = e.id;
    s.npc_id = e.npc_id;
    s.priority = e.priority;
    s.has_deadline = e.deadline_us.has_value();
    s.deadline_us = e.deadline_us.value_or(0);
    s.type_len = static_cast<int>(e.decision_type.size());
    s.prompt_len = static_cast<int>(e.prompt.size());
    s.params_len = static_cast<int>(e.params.size());
    char* p = s.text;
    memcpy(p, e.decision_type.data(), e.decision_type.size());
    memcpy(p + s.type_len, e.prompt.data(), e.prompt.size());
    memcpy(p + s.type_len + s.prompt_len, e.params.data(), e.params.size());
    pg_write_barrier();  // contents before the state that says they are there
    pg_atomic_write_u32(&g_area->state[i], kReady);
    return Published::yes;
  }
  return Published::area_full;  // the dispatcher claims this one from the table
}

void at_subxact_end(SubXactEvent event, SubTransactionId sub, SubTransactionId, void*) noexcept {
  if (event != SUBXACT_EVENT_ABORT_SUB) return;
  g_pending.erase(std::remove_if(g_pending.begin(), g_pending.end(),
                                 [&](const Pending& p) { return undone_by_abort(p.subxact, sub); }),
                  g_pending.end());
  for (Pending& p : g_pending) {
    if (undone_by_abort(p.cancelled_in, sub)) p.cancelled_in = InvalidSubTransactionId;
    if (undone_by_abort(p.changed_in, sub)) p.changed_in = InvalidSubTransactionId;
  }
}

}  // namespace

Size handoff_size() { return MAXALIGN(sizeof(Area)); }

void handoff_attach() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  g_area = static_cast<Area*>(ShmemInitStruct("npc_scale handoff", handoff_size(), &found));
  if (!found) {
    pg_atomic_init_u32(&g_area->next, 0);
    for (pg_atomic_uint32& state : g_area->state) pg_atomic_init_u32(&state, kFree);
  }
  LWLockRelease(AddinShmemInitLock);
}

void handoff_at_commit(HandoffEntry e, bool changed) {
  if (!g_callbacks_registered) {
    pg_call([] { RegisterSubXactCallback(at_subxact_end, nullptr); });
    g_callbacks_registered = true;
  }
  SubTransactionId sub = pg_call([] { return GetCurrentSubTransactionId(); });
  g_pending.push_back({std::move(e), sub});
  if (changed) g_pending.back().changed_in = sub;
}

bool handoff_has_pending() { return !g_pending.empty(); }

void handoff_cancel_pending(int64_t id) {
  for (Pending& p : g_pending) {
    if (p.entry.id == id && p.cancelled_in == InvalidSubTransactionId) p.cancelled_in = GetCurrentSubTransactionId();
  }
}

uint64_t handoff_changes() { return g_changes; }

void handoff_rows_changed() {
  ++g_changes;
  for (Pending& p : g_pending) {
    if (p.changed_in == InvalidSubTransactionId) p.changed_in = GetCurrentSubTransactionId();
  }
}

bool handoff_publish_pending(TransactionId xid) {
  // One transaction's rows take at most a quarter of the slots: one that
  // queues thousands must not push every other backend onto the table path
  // (nor, the area full, look through every slot for each of its rows).
  constexpr int kMaxPerTransaction = kSlots / 4;
  bool all = true;
  bool full = false;
  int published = 0;
  for (const Pending& p : g_pending) {
    if (p.cancelled_in != InvalidSubTransactionId) continue;
    // A changed row is left to the table path, as are those past the
    // share: the caller wakes the dispatcher for them at commit.
    if (p.changed_in != InvalidSubTransactionId || full || published >= kMaxPerTransaction) {
      all = false;
      continue;
    }
    switch (publish(p.entry, xid)) {
      case Published::yes:
        ++published;
        break;
      case Published::unfit:
        all = false;
        break;
      case Published::area_full:
        all = false;
        full = true;
        break;
    }
  }
  g_pending.clear();
  return all;
}

void handoff_forget_pending() { g_pending.clear(); }

std::vector<HandoffEntry> handoff_take(Oid db) {
  std::vector<HandoffEntry> out;
  if (g_area == nullptr) return out;
  for (int i = 0; i < kSlots; i++) {
    if (pg_atomic_read_u32(&g_area->state[i]) != kReady) continue;
    const Slot& s = g_area->slots[i];
    pg_read_barrier();  // state before contents
    if (s.db == db) {
      HandoffEntry e;
      e.xid = s.xid;
      e.id = s.id;
      e.npc_id = s.npc_id;
      e.priority = s.priority;
      if (s.has_deadline) e.deadline_us = s.deadline_us;
      e.decision_type.assign(s.text, s.type_len);
      e.prompt.assign(s.text + s.type_len, s.prompt_len);
      e.params.assign(s.text + s.type_len + s.prompt_len, s.params_len);
      out.push_back(std::move(e));
    }
    pg_memory_barrier();  // done reading before the slot is reused
    pg_atomic_write_u32(&g_area->state[i], kFree);
  }
  std::sort(out.begin(), out.end(), [](const HandoffEntry& a, const HandoffEntry& b) { return a.id < b.id; });
  return out;
}

TxnOutcome handoff_commit_state(TransactionId xid) {
  try {
    return pg_call([&] {
      // In this order, as heapam does: a transaction leaves the proc array
      // only after its commit is recorded in the commit log.
      if (TransactionIdIsInProgress(xid)) return TxnOutcome::in_progress;
      return TransactionIdDidCommit(xid) ? TxnOutcome::committed : TxnOutcome::aborted;
    });
  } catch (const std::exception&) {
    // The error left the commit log's LWLock held (SLRU read errors are
    // raised under it): release it, or every backend checking a commit
    // would block. The dispatcher holds no LWLock of its own here.
    pg_call([] { LWLockReleaseAll(); });
    // The commit log could not be read for it (an xid so old its page is
    // gone: it ended long ago). "Committed" is the safe answer: every step
    // that follows is fenced by the table itself (a claim or a write from
    // queued finds no row if it aborted), whereas an error here would stop
    // the callers' loops over their other entries.
    return TxnOutcome::committed;
  }
}

}  // namespace npc_scale

// Statement trigger on the queue: AFTER UPDATE OF the columns a hand-off
// carries, which none of the dispatcher's statements set. Per statement, not
// per row: a row trigger would make PostgreSQL fetch the old row for every
// row the dispatcher updates. So it cannot tell which rows changed, and takes
// the whole transaction's decisions to the table path (rare: a game that
// edits a decision it has just requested). A no-op unless this transaction
// requested decisions.
NPC_SQL_FUNCTION(npc_scale_handoff_rows_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo)) {
    throw npc_scale::Error(npc_scale::sqlstate::object_not_in_prerequisite_state,
                           "npc_scale._handoff_rows_changed() must be called as a trigger");
  }
  npc_scale::handoff_rows_changed();
  return PointerGetDatum(nullptr);
}
