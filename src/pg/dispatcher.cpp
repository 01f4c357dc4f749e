// The dispatcher background worker: takes queued NPC decisions to the GPU
// fleet. (The foundation only runs its loop; the pipeline lands on top.)
#include "guard.hpp"
#include "worker.hpp"

extern "C" {
#include "postgres.h"
#include "fmgr.h"

PGDLLEXPORT void npc_scale_dispatcher_main(Datum main_arg);
}

namespace npc_scale {
namespace {

// Idle wake-up for periodic work; a latch set by a backend ends it early.
constexpr long kIdleWaitMs = 1000;

void run_dispatcher() {
  worker_startup(WorkerKind::dispatcher);
  for (;;) {
    worker_set_state(WorkerState::idle);
    worker_wait(kIdleWaitMs);
  }
}

}  // namespace
}  // namespace npc_scale

void npc_scale_dispatcher_main(Datum) { npc_scale::guarded([] { npc_scale::run_dispatcher(); }); }
