// What npc_scale keeps in shared memory. Plain data only: no pointers into
// any process's memory (a crashed backend's heap is gone, its pointers with it).
#pragma once

extern "C" {
#include "postgres.h"
#include "datatype/timestamp.h"
#include "storage/spin.h"
}

namespace npc_scale {

enum class WorkerKind : int { dispatcher = 0, maintenance = 1 };
inline constexpr int kWorkerCount = 2;

enum class WorkerState : int { stopped = 0, starting, idle, busy };

const char* worker_name(WorkerKind kind);        // "npc_scale dispatcher", …
const char* worker_state_name(WorkerState state);  // "idle", …

struct WorkerSlot {
  int pid;              // 0 when not running
  WorkerState state;
  TimestampTz started_at;
  int64 starts;         // since the shared memory was (re)initialised
  int64 config_reloads;
  int pgprocno;         // to set the worker's latch; -1 when not running
};

struct SharedState {
  slock_t mutex;  // guards workers[]; held for a few instructions only
  WorkerSlot workers[kWorkerCount];
};

// Size to request and the attach step (from the shmem hooks in module.cpp).
Size shared_state_size();
void shared_state_attach();

// The attached state; throws npc_scale::Error if npc_scale was not preloaded.
SharedState& shared_state();

// Copy of one slot taken under the spinlock.
WorkerSlot worker_slot_snapshot(WorkerKind kind);

}  // namespace npc_scale
