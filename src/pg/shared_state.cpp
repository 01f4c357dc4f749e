#include "shared_state.hpp"

#include <string>
#include <unordered_set>

#include "core/error.hpp"
#include "guard.hpp"
#include "gucs.hpp"

extern "C" {
#include "access/twophase.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
}

namespace npc_scale {

namespace {
SharedState* g_state = nullptr;
pg_atomic_uint64* g_waiters = nullptr;
char* g_sync_slots = nullptr;

// Every PGPROC (backends, auxiliary processes, prepared transactions) has a
// pgprocno below this.
int total_procs() { return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts; }

Size sync_slot_stride() {
  return MAXALIGN(sizeof(SyncSlot) + 2 * static_cast<Size>(guc_max_prompt_bytes) +
                  guc_max_response_bytes);
}
}  // namespace

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

Size shared_state_size() {
  Size size = MAXALIGN(sizeof(SharedState));
  size = add_size(size, MAXALIGN(mul_size(sizeof(pg_atomic_uint64), total_procs())));
  size = add_size(size, mul_size(sync_slot_stride(), guc_sync_slots));
  return size;
}

void shared_state_attach() {
  bool found = false;
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  char* base = static_cast<char*>(ShmemInitStruct("npc_scale", shared_state_size(), &found));
  g_state = reinterpret_cast<SharedState*>(base);
  g_waiters = reinterpret_cast<pg_atomic_uint64*>(base + MAXALIGN(sizeof(SharedState)));
  g_sync_slots = reinterpret_cast<char*>(g_waiters) +
                 MAXALIGN(sizeof(pg_atomic_uint64) * total_procs());
  if (!found) {
    memset(g_state, 0, sizeof(SharedState));
    SpinLockInit(&g_state->mutex);
    for (auto& slot : g_state->workers) slot.pgprocno = -1;
    pg_atomic_init_u64(&g_state->queue_wakeups, 0);
    pg_atomic_init_u64(&g_state->table_wakeups, 0);
    pg_atomic_init_u32(&g_state->queue_dirty, 1);
    pg_atomic_init_u64(&g_state->handoff_sent, 0);
    pg_atomic_init_u64(&g_state->handoff_unclaimed, 0);
    pg_atomic_init_u64(&g_state->results_deferred, 0);
    pg_atomic_init_u64(&g_state->results_refused, 0);
    pg_atomic_init_u64(&g_state->cancels_generation, 0);
    pg_atomic_init_u64(&g_state->requests_cancelled, 0);
    pg_atomic_init_u64(&g_state->sync_retries_held, 0);
    pg_atomic_init_u64(&g_state->endpoints_generation, 1);
    pg_atomic_init_u64(&g_state->endpoints_loaded, 0);
    ConditionVariableInit(&g_state->slot_freed_cv);
    SpinLockInit(&g_state->stats_mutex);
    pg_atomic_init_u64(&g_state->affinity_hits, 0);
    pg_atomic_init_u64(&g_state->affinity_misses, 0);
    pg_atomic_init_u64(&g_state->cache_l1_hits, 0);
    pg_atomic_init_u64(&g_state->cache_l2_hits, 0);
    pg_atomic_init_u64(&g_state->cache_l3_hits, 0);
    pg_atomic_init_u64(&g_state->cache_misses, 0);
    pg_atomic_init_u64(&g_state->redis_errors, 0);
    pg_atomic_init_u32(&g_state->redis_up, 1);
    g_state->waiter_count = total_procs();
    for (int i = 0; i < g_state->waiter_count; i++) pg_atomic_init_u64(&g_waiters[i], 0);
    g_state->sync_slot_count = guc_sync_slots;
    g_state->sync_slot_stride = sync_slot_stride();
    for (int i = 0; i < guc_sync_slots; i++) {
      auto* slot = reinterpret_cast<SyncSlot*>(g_sync_slots + i * g_state->sync_slot_stride);
      memset(slot, 0, sizeof(SyncSlot));
      SpinLockInit(&slot->mutex);
      ConditionVariableInit(&slot->done_cv);
      slot->owner_procno = -1;
    }
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

void refuse_wait_in_dispatcher(const char* function, const char* hint) {
  if (worker_slot_snapshot(WorkerKind::dispatcher).pid != MyProcPid) return;
  throw Error("09000",
              std::string(function) + " cannot be called by the npc_scale dispatcher itself (from a trigger on "
                                      "npc_scale.decision_queue?): it would wait for itself",
              {}, hint);
}

pg_atomic_uint64* waiters() {
  shared_state();
  return g_waiters;
}

void wake_awaiting(const std::vector<int64_t>& finished) {
  if (finished.empty()) return;
  std::unordered_set<int64_t> ids(finished.begin(), finished.end());
  SharedState& s = shared_state();
  for (int i = 0; i < s.waiter_count; i++) {
    uint64 id = pg_atomic_read_u64(&g_waiters[i]);
    if (id != 0 && ids.count(static_cast<int64_t>(id))) {
      pg_call([&] { SetLatch(&ProcGlobal->allProcs[i].procLatch); });
    }
  }
}

SyncSlot* sync_slot(int index) {
  SharedState& s = shared_state();
  return reinterpret_cast<SyncSlot*>(g_sync_slots + index * s.sync_slot_stride);
}

char* sync_slot_prompt(SyncSlot* slot) { return reinterpret_cast<char*>(slot) + sizeof(SyncSlot); }
char* sync_slot_params(SyncSlot* slot) { return sync_slot_prompt(slot) + guc_max_prompt_bytes; }
char* sync_slot_response(SyncSlot* slot) { return sync_slot_params(slot) + guc_max_prompt_bytes; }

}  // namespace npc_scale
