// npc_scale.metrics(): counters kept in shared memory, as (name, value) rows.
#include "guard.hpp"
#include "shared_state.hpp"

extern "C" {
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"
}

NPC_SQL_FUNCTION(npc_scale_metrics) {
  using namespace npc_scale;
  SharedState& s = shared_state();
  struct Metric {
    const char* name;
    int64 value;
  };
  // generate() calls in progress; of those, not served yet: being written,
  // or waiting for the dispatcher, a free GPU slot or a retry's back-off
  // (the rest are sent, share an identical request in flight, or are ending).
  int sync_busy = 0, sync_waiting = 0;
  for (int i = 0; i < s.sync_slot_count; i++) {
    SyncSlot* slot = sync_slot(i);
    SpinLockAcquire(&slot->mutex);
    if (slot->state != SyncState::free) sync_busy++;
    if (slot->state == SyncState::filling || slot->state == SyncState::pending) sync_waiting++;
    SpinLockRelease(&slot->mutex);
  }
  const Metric metrics[] = {
      {"queue_wakeups", static_cast<int64>(pg_atomic_read_u64(&s.queue_wakeups))},
      {"table_wakeups", static_cast<int64>(pg_atomic_read_u64(&s.table_wakeups))},
      {"handoff_sent", static_cast<int64>(pg_atomic_read_u64(&s.handoff_sent))},
      {"handoff_unclaimed", static_cast<int64>(pg_atomic_read_u64(&s.handoff_unclaimed))},
      {"results_deferred", static_cast<int64>(pg_atomic_read_u64(&s.results_deferred))},
      {"results_refused", static_cast<int64>(pg_atomic_read_u64(&s.results_refused))},
      {"requests_cancelled", static_cast<int64>(pg_atomic_read_u64(&s.requests_cancelled))},
      {"sync_retries_held", static_cast<int64>(pg_atomic_read_u64(&s.sync_retries_held))},
      {"endpoints_generation", static_cast<int64>(pg_atomic_read_u64(&s.endpoints_generation))},
      {"endpoints_loaded", static_cast<int64>(pg_atomic_read_u64(&s.endpoints_loaded))},
      {"sync_slots", s.sync_slot_count},
      {"sync_slots_busy", sync_busy},
      {"sync_slots_waiting", sync_waiting},
      {"affinity_hits", static_cast<int64>(pg_atomic_read_u64(&s.affinity_hits))},
      {"affinity_misses", static_cast<int64>(pg_atomic_read_u64(&s.affinity_misses))},
  };
  pg_call([&] {
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    for (const Metric& m : metrics) {
      Datum values[2] = {CStringGetTextDatum(m.name), Int64GetDatum(m.value)};
      bool nulls[2] = {false, false};
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
  });
  return (Datum)0;
}
