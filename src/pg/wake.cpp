#include "wake.hpp"

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

bool g_callback_registered = false;
bool g_wake_pending = false;
bool g_table_pending = false;  // queued work the handoff does not carry
bool g_endpoints_pending = false;

void on_transaction_end(XactEvent event) {
  switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT: {
      SharedState& s = shared_state();
      // Handed-off decisions are in shared memory before the latch is set.
      if (!handoff_publish_pending()) g_table_pending = true;
      if (g_endpoints_pending) pg_atomic_fetch_add_u64(&s.endpoints_generation, 1);
      if (g_table_pending) pg_atomic_write_u32(&s.queue_dirty, 1);
      if (g_wake_pending) pg_atomic_fetch_add_u64(&s.queue_wakeups, 1);
      if (g_wake_pending || g_endpoints_pending) wake_worker(WorkerKind::dispatcher);
      g_wake_pending = g_table_pending = g_endpoints_pending = false;
      break;
    }
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE:  // COMMIT PREPARED runs elsewhere; the 1 s look finds it
      handoff_forget_pending();
      g_wake_pending = g_table_pending = g_endpoints_pending = false;
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
    g_wake_pending = g_table_pending = g_endpoints_pending = false;
  }
}

void ensure_callback() {
  if (!g_callback_registered) {
    pg_call([] { RegisterXactCallback(at_transaction_end, nullptr); });
    g_callback_registered = true;
  }
}

}  // namespace

void wake_dispatcher_at_commit(bool handed_off) {
  ensure_callback();
  g_wake_pending = true;
  if (!handed_off) g_table_pending = true;
}

void endpoints_changed_at_commit() {
  ensure_callback();
  g_endpoints_pending = true;
}

}  // namespace npc_scale

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
