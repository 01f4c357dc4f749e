#include "shared_state.hpp"

#include "core/error.hpp"

extern "C" {
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
}

namespace npc_scale {

namespace {
SharedState* g_state = nullptr;
}

const char* worker_name(WorkerKind kind) {
  return kind == WorkerKind::dispatcher ? "npc_scale dispatcher" : "npc_scale maintenance";
}

const char* worker_state_name(WorkerState state) {
  switch (state) {
    case WorkerState::starting: return "starting";
    case WorkerState::idle: return "idle";
    case WorkerState::busy: return "busy";
    case WorkerState::stopped: break;
  }
  return "stopped";
}

Size shared_state_size() { return MAXALIGN(sizeof(SharedState)); }

void shared_state_attach() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  g_state = static_cast<SharedState*>(ShmemInitStruct("npc_scale", shared_state_size(), &found));
  if (!found) {
    memset(g_state, 0, shared_state_size());
    SpinLockInit(&g_state->mutex);
    for (auto& slot : g_state->workers) slot.pgprocno = -1;
  }
  LWLockRelease(AddinShmemInitLock);
}

SharedState& shared_state() {
  if (g_state == nullptr) {
    throw Error(sqlstate::object_not_in_prerequisite_state,
                "npc_scale shared memory is not initialised", {},
                "Add npc_scale to shared_preload_libraries and restart the server.");
  }
  return *g_state;
}

WorkerSlot worker_slot_snapshot(WorkerKind kind) {
  SharedState& s = shared_state();
  SpinLockAcquire(&s.mutex);
  WorkerSlot copy = s.workers[static_cast<int>(kind)];
  SpinLockRelease(&s.mutex);
  return copy;
}

}  // namespace npc_scale
