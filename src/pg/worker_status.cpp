// npc_scale.worker_status(): one row per background worker, read from
// shared memory (not pg_stat_activity, so it also shows a worker that is down).
#include "guard.hpp"
#include "shared_state.hpp"

extern "C" {
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

NPC_SQL_FUNCTION(npc_scale_worker_status) {
  using namespace npc_scale;
  WorkerSlot slots[kWorkerCount];
  for (int i = 0; i < kWorkerCount; i++) slots[i] = worker_slot_snapshot(static_cast<WorkerKind>(i));

  pg_call([&] {
    InitMaterializedSRF(fcinfo, 0);
    auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
    for (int i = 0; i < kWorkerCount; i++) {
      const WorkerSlot& slot = slots[i];
      bool running = slot.pid != 0;
      Datum values[8];
      bool nulls[8] = {false, !running, false, slot.started_at == 0, false, false, false, false};
      values[0] = CStringGetTextDatum(worker_name(static_cast<WorkerKind>(i)));
      values[1] = Int32GetDatum(slot.pid);
      values[2] = CStringGetTextDatum(worker_state_name(running ? slot.state : WorkerState::stopped));
      values[3] = TimestampTzGetDatum(slot.started_at);
      values[4] = Int64GetDatum(slot.starts);
      values[5] = Int64GetDatum(slot.config_reloads);
      values[6] = Int64GetDatum(slot.wakeups);
      values[7] = Int64GetDatum(slot.errors);
      tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
  });
  return (Datum)0;
}
