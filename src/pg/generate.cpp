// npc_scale.generate(prompt, priority, params): synchronous generation for
// game code that wants an answer now. The request goes to the dispatcher
// through a shared-memory slot (no queue-table round trip) and so uses the
// same endpoints, limits and statistics as queued work. The wait is on a
// condition variable: query cancel and statement_timeout interrupt it, and
// the slot is handed back so the dispatcher drops the request.
#include <string>

#include "core/cache_policy.hpp"
#include "core/generation.hpp"
#include "core/request_check.hpp"
#include "guard.hpp"
#include "gucs.hpp"
#include "pg_text.hpp"
#include "shared_state.hpp"
#include "tiered_cache.hpp"
#include "worker.hpp"

extern "C" {
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "utils/wait_event.h"
}

namespace npc_scale {
namespace {

int g_held_slot = -1;  // the slot this backend owns, for cleanup at exit
bool g_exit_hook_registered = false;

// Hands a slot back: freed if the dispatcher is not serving it, otherwise
// marked abandoned so the dispatcher cancels the request and frees it.
void release_slot(int index) {
  SyncSlot* slot = sync_slot(index);
  bool freed = false;
  SpinLockAcquire(&slot->mutex);
  if (slot->state == SyncState::running) {
    slot->state = SyncState::abandoned;
  } else {
    slot->state = SyncState::free;
    slot->owner_procno = -1;
    freed = true;
  }
  SpinLockRelease(&slot->mutex);
  if (freed) {
    pg_call([] { ConditionVariableBroadcast(&shared_state().slot_freed_cv); });
  } else {
    wake_worker(WorkerKind::dispatcher);
  }
  g_held_slot = -1;
}

// A backend that exits (FATAL, terminate) mid-wait must not leak its slot.
void release_at_exit(int, Datum) {
  try {
    if (g_held_slot >= 0) release_slot(g_held_slot);
  } catch (...) {
  }
}

int acquire_slot() {
  SharedState& s = shared_state();
  if (!g_exit_hook_registered) {
    pg_call([] { before_shmem_exit(release_at_exit, 0); });
    g_exit_hook_registered = true;
  }
  // Prepared before looking, so a slot freed between the look and the sleep
  // still wakes us.
  pg_call([&] { ConditionVariablePrepareToSleep(&s.slot_freed_cv); });
  for (;;) {
    for (int i = 0; i < s.sync_slot_count; i++) {
      SyncSlot* slot = sync_slot(i);
      if (slot->state != SyncState::free) continue;  // unlocked peek; confirmed below
      SpinLockAcquire(&slot->mutex);
      if (slot->state == SyncState::free) {
        slot->state = SyncState::filling;
        slot->ticket++;
        slot->owner_procno = MyProc->pgprocno;
        slot->attempts = 0;
        slot->gpu_id = 0;
        slot->error[0] = '\0';
        slot->rejected = false;
        SpinLockRelease(&slot->mutex);
        g_held_slot = i;
        pg_call([] { ConditionVariableCancelSleep(); });
        return i;
      }
      SpinLockRelease(&slot->mutex);
    }
    // All slots busy: sleep until one is freed (interruptible). Slots a
    // dispatcher that is gone was serving are freed only by the next one:
    // say so rather than wait for it.
    if (worker_slot_snapshot(WorkerKind::dispatcher).pid == 0) {
      pg_call([] { ConditionVariableCancelSleep(); });
      throw Error("55000", "the npc_scale dispatcher is not running", {},
                  "Check npc_scale.worker_status() and the server log.");
    }
    pg_call([&] { ConditionVariableTimedSleep(&s.slot_freed_cv, 1000, PG_WAIT_EXTENSION); });
  }
}

std::string generate_impl(const std::string& prompt, int priority, const std::string& params_json) {
  check_generate_prompt(prompt, guc_max_prompt_bytes);
  if (priority < 0 || priority > 10) {
    throw Error(sqlstate::numeric_value_out_of_range,
                "priority " + std::to_string(priority) + " is out of range", {},
                "Use 0 (most urgent) to 10.");
  }
  GenerationParams params = parse_params(params_json);  // bad input is the caller's error, now
  check_params_size(params_json.size(), guc_max_prompt_bytes);  // as request_decision()
  check_served_database("a generate() call here would wait for ever");
  if (worker_slot_snapshot(WorkerKind::dispatcher).pid == 0) {
    throw Error("55000", "the npc_scale dispatcher is not running", {},
                "Check npc_scale.worker_status() and the server log.");
  }
  // In the dispatcher it would stop it for good.
  refuse_wait_in_dispatcher("generate()", "Queue the follow-up with npc_scale.request_decision() instead.");

  // The cache first: a hit never involves the dispatcher.
  CachePolicy policy = cache_policy(params, guc_cache_default_ttl_s);
  std::string key;
  if (policy.use) {
    char signature[sizeof(SharedState::fleet_signature)];
    SharedState& s = shared_state();
    SpinLockAcquire(&s.stats_mutex);
    memcpy(signature, s.fleet_signature, sizeof(signature));
    SpinLockRelease(&s.stats_mutex);
    signature[sizeof(signature) - 1] = '\0';
    key = generation_key(generation_cache_key(signature, prompt, params));
    CacheLayer layer;
    if (auto hit = cache_lookup(key, true, &layer)) {
      // The same limit as for an answer from a GPU (a queued decision with
      // the same key may have cached a longer one).
      if (hit->size() > static_cast<size_t>(guc_max_response_bytes)) {
        throw Error("58000", "generate() failed: answer of " + std::to_string(hit->size()) +
                                 " bytes exceeds npc_scale.max_response_bytes (" +
                                 std::to_string(guc_max_response_bytes) + ")");
      }
      return *hit;
    }
  }

  int index = acquire_slot();
  SyncSlot* slot = sync_slot(index);
  memcpy(sync_slot_prompt(slot), prompt.data(), prompt.size());
  memcpy(sync_slot_params(slot), params_json.data(), params_json.size());
  SpinLockAcquire(&slot->mutex);
  slot->prompt_len = static_cast<int>(prompt.size());
  slot->params_len = static_cast<int>(params_json.size());
  slot->priority = priority;
  strlcpy(slot->cache_key, key.c_str(), sizeof(slot->cache_key));
  slot->cache_ttl_s = policy.ttl_s;
  slot->state = SyncState::pending;
  SpinLockRelease(&slot->mutex);
  wake_worker(WorkerKind::dispatcher);

  try {
    pg_call([&] { ConditionVariablePrepareToSleep(&slot->done_cv); });
    for (;;) {
      // Whether the dispatcher is gone, before the state is read: an answer
      // it left on its way out is still taken.
      const bool dispatcher_gone = worker_slot_snapshot(WorkerKind::dispatcher).pid == 0;
      SpinLockAcquire(&slot->mutex);
      SyncState state = slot->state;
      SpinLockRelease(&slot->mutex);
      if (state == SyncState::done) {
        std::string answer(sync_slot_response(slot), slot->response_len);
        pg_call([] { ConditionVariableCancelSleep(); });
        release_slot(index);
        return answer;
      }
      if (state == SyncState::failed) {
        std::string error(slot->error);
        const bool rejected = slot->rejected;
        pg_call([] { ConditionVariableCancelSleep(); });
        release_slot(index);
        if (rejected) {
          // The same request fails on every GPU: it is the caller's to fix.
          throw Error(sqlstate::invalid_parameter_value,
                      "generate() request was rejected by the GPU server: " + error, {},
                      "Check prompt and params, e.g. max_tokens against the model's context length.");
        }
        throw Error("58000", "generate() failed: " + error);
      }
      if (dispatcher_gone) throw Error("55000", "the npc_scale dispatcher stopped while serving generate()");
      // Cancel and statement_timeout raise here, as a PgError.
      pg_call([&] { ConditionVariableTimedSleep(&slot->done_cv, 1000, PG_WAIT_EXTENSION); });
    }
  } catch (...) {
    pg_call([] { ConditionVariableCancelSleep(); });
    if (g_held_slot == index) release_slot(index);
    throw;
  }
}

}  // namespace
}  // namespace npc_scale

NPC_SQL_FUNCTION(npc_scale_generate) {
  if (PG_ARGISNULL(0)) {
    throw npc_scale::Error(npc_scale::sqlstate::null_value_not_allowed, "prompt must not be null");
  }
  if (PG_ARGISNULL(1)) {
    throw npc_scale::Error(npc_scale::sqlstate::null_value_not_allowed, "priority must not be null");
  }
  std::string prompt = npc_scale::text_arg(PG_GETARG_DATUM(0));
  int priority = PG_GETARG_INT32(1);
  std::string params = PG_ARGISNULL(2) ? "{}" : npc_scale::jsonb_arg(PG_GETARG_DATUM(2));
  std::string answer = npc_scale::generate_impl(prompt, priority, params);
  return npc_scale::text_datum(answer);
}
