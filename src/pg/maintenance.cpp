// The maintenance background worker: matview refresh, partitions, purges —
// separate from the dispatcher so a long REFRESH never delays a decision.
#include "guard.hpp"
#include "worker.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"

PGDLLEXPORT void npc_scale_maintenance_main(Datum main_arg);
}

namespace npc_scale {
namespace {

constexpr long kIdleWaitMs = 1000;

void run_maintenance_worker() {
  worker_startup(WorkerKind::maintenance);
  for (;;) {
    worker_set_state(WorkerState::idle);
    worker_wait(kIdleWaitMs);
  }
}

}  // namespace
}  // namespace npc_scale

void npc_scale_maintenance_main(Datum) {
  npc_scale::guarded([] { npc_scale::run_maintenance_worker(); });
}
