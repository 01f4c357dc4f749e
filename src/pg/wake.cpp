#include "wake.hpp"

#include <algorithm>

#include "guard.hpp"
#include "handoff.hpp"
#include "shared_state.hpp"
#include "worker.hpp"

extern "C" {
#include "access/xact.h"
#include "commands/trigger.h"
}

namespace npc_scale {

namespace {

// Something the transaction asks for at its commit, with the earliest
// subtransaction that asked: a savepoint rolled back takes back what was asked
// inside it (undone_by_abort).
struct Asked {
  SubTransactionId since = InvalidSubTransactionId;  // not asked
  void ask() {
    const SubTransactionId sub = GetCurrentSubTransactionId();
    if (since == InvalidSubTransactionId || sub < since) since = sub;
  }
  void ask_for_whole_transaction() { since = TopSubTransactionId; }
  void undo_from(SubTransactionId sub) {
    if (undone_by_abort(since, sub)) since = InvalidSubTransactionId;
  }
  explicit operator bool() const { return since != InvalidSubTransactionId; }
};

bool g_callback_registered = false;
Asked g_wake_pending;
Asked g_table_pending;  // queued work the handoff does not carry
Asked g_endpoints_pending;
Asked g_cancel_pending;  // cancel_decision(): the dispatcher aborts what it still sends
struct Cancelled {
  int64_t id;
  SubTransactionId sub;
};
std::vector<Cancelled> g_cancelled;  // … and these ids' await_decision() callers wake up
bool g_published = false;  // handed off at PRE_COMMIT: the dispatcher waits for our outcome

// The transaction ended: nothing of it is pending any more.
void forget_all() {
  g_wake_pending = g_table_pending = g_endpoints_pending = g_cancel_pending = Asked{};
  g_published = false;
  g_cancelled.clear();
}

void at_subxact_end(SubXactEvent event, SubTransactionId sub, SubTransactionId, void*) noexcept {
  if (event != SUBXACT_EVENT_ABORT_SUB) return;
  for (Asked* a : {&g_wake_pending, &g_table_pending, &g_endpoints_pending, &g_cancel_pending}) a->undo_from(sub);
  g_cancelled.erase(std::remove_if(g_cancelled.begin(), g_cancelled.end(),
                                   [&](const Cancelled& c) { return undone_by_abort(c.sub, sub); }),
                    g_cancelled.end());
}

void on_transaction_end(XactEvent event) {
  switch (event) {
    case XACT_EVENT_PRE_COMMIT:
      // Handed off now, so the dispatcher sends while this backend flushes
      // its commit record; it claims the rows once the commit is visible.
      if (handoff_has_pending()) {
        if (!handoff_publish_pending(GetTopTransactionIdIfAny())) g_table_pending.ask_for_whole_transaction();
        g_published = true;
        wake_worker(WorkerKind::dispatcher);
      }
      break;
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT: {
      SharedState& s = shared_state();
      // Anything remembered after PRE_COMMIT (not expected) takes the table.
      if (handoff_has_pending()) {
        handoff_forget_pending();
        g_table_pending.ask_for_whole_transaction();
      }
      if (g_endpoints_pending) pg_atomic_fetch_add_u64(&s.endpoints_generation, 1);
      if (g_cancel_pending) pg_atomic_fetch_add_u64(&s.cancels_generation, 1);
      if (g_table_pending) {
        pg_atomic_write_u32(&s.queue_dirty, 1);
        pg_atomic_fetch_add_u64(&s.table_wakeups, 1);
      }
      if (g_wake_pending) pg_atomic_fetch_add_u64(&s.queue_wakeups, 1);
      // Rows handed off at PRE_COMMIT need no second wake-up: the
      // dispatcher looks at their transaction's outcome on its own timer.
      if (g_table_pending || g_endpoints_pending || g_cancel_pending || (g_wake_pending && !g_published)) {
        wake_worker(WorkerKind::dispatcher);
      }
      std::vector<int64_t> ids;
      for (const Cancelled& c : g_cancelled) ids.push_back(c.id);
      wake_awaiting(ids);
      forget_all();
      break;
    }
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE:  // COMMIT PREPARED runs elsewhere; the 1 s look finds it
      handoff_forget_pending();
      // A commit that failed after PRE_COMMIT: the dispatcher drops what it sent.
      if (g_published) wake_worker(WorkerKind::dispatcher);
      forget_all();
      break;
    default:
      break;
  }
}

// Called by Postgres: nothing may escape it. A failed wake only delays the
// dispatcher until its next periodic look at the queue.
void at_transaction_end(XactEvent event, void*) noexcept {
  try {
    on_transaction_end(event);
  } catch (...) {
    handoff_forget_pending();
    if (event == XACT_EVENT_PRE_COMMIT) {
      g_table_pending.ask_for_whole_transaction();  // the commit still wakes the dispatcher for the table
    } else {
      forget_all();
    }
  }
}

void ensure_callback() {
  if (!g_callback_registered) {
    pg_call([] {
      RegisterXactCallback(at_transaction_end, nullptr);
      RegisterSubXactCallback(at_subxact_end, nullptr);
    });
    g_callback_registered = true;
  }
}

}  // namespace

void wake_dispatcher_at_commit(bool handed_off) {
  ensure_callback();
  g_wake_pending.ask();
  if (!handed_off) g_table_pending.ask();
}

void endpoints_changed_at_commit() {
  ensure_callback();
  g_endpoints_pending.ask();
}

void cancelled_at_commit(int64_t id) {
  ensure_callback();
  g_cancelled.push_back({id, GetCurrentSubTransactionId()});
  g_cancel_pending.ask();
  handoff_cancel_pending(id);  // requested in this transaction: not sent at all
}

}  // namespace npc_scale

NPC_SQL_FUNCTION(npc_scale_cancelled_at_commit) {
  if (PG_ARGISNULL(0)) {
    throw npc_scale::Error(npc_scale::sqlstate::null_value_not_allowed, "decision id must not be null");
  }
  npc_scale::cancelled_at_commit(PG_GETARG_INT64(0));
  PG_RETURN_VOID();
}

NPC_SQL_FUNCTION(npc_scale_wake_dispatcher_at_commit) {
  (void)fcinfo;
  npc_scale::wake_dispatcher_at_commit();
  PG_RETURN_VOID();
}

// Statement trigger on gpu_endpoints.
NPC_SQL_FUNCTION(npc_scale_endpoints_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo)) {
    throw npc_scale::Error(npc_scale::sqlstate::object_not_in_prerequisite_state,
                           "npc_scale._endpoints_changed() must be called as a trigger");
  }
  npc_scale::endpoints_changed_at_commit();
  return PointerGetDatum(nullptr);
}
