// What npc_scale keeps in shared memory. Plain data only: no pointers into
// any process's memory (a crashed backend's heap is gone, its pointers with it).
#pragma once

#include <cstdint>
#include <vector>

extern "C" {
#include "postgres.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
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
  int64 wakeups;        // returns from the worker's wait: an idle worker must not spin
  int64 errors;         // errors its loop caught and logged, and went on from
  int pgprocno;         // to set the worker's latch; -1 when not running
};

// A generate() call handed to the dispatcher without touching the queue table.
enum class SyncState : uint32 {
  free = 0,
  filling,    // a backend is writing the request
  pending,    // ready for the dispatcher
  running,    // the dispatcher is serving it
  done,       // response[] holds the answer
  failed,     // error[] says why
  abandoned,  // the caller gave up (cancel, timeout); the dispatcher frees it
};

struct SyncSlot {
  slock_t mutex;              // guards every field but the buffers' contents
  ConditionVariable done_cv;  // broadcast when state becomes done/failed
  SyncState state;
  uint64 ticket;              // bumped per use: a late answer for an old use is dropped
  int owner_procno;
  int priority;
  int attempts;               // attempts made so far (the dispatcher retries transient errors)
  int gpu_id;                 // who answered last (a retry avoids it)
  int prompt_len;
  int params_len;
  int response_len;
  char cache_key[48];         // "gen:<32 hex>" when cacheable: identical requests coalesce
  int64 cache_ttl_s;
  char error[512];
  bool rejected;              // failed: the server refused the request as invalid (caller's input)
  // Followed in shared memory by: prompt[max_prompt_bytes], params[max_prompt_bytes]
  // (the limit request_decision() has too),
  // response[max_response_bytes]; see sync_slot_prompt() & co.
};

// One GPU endpoint as the dispatcher last saw it, for npc_scale.endpoint_stats.
inline constexpr int kMaxEndpointStats = 128;
struct EndpointStat {
  int gpu_id;
  bool enabled;
  bool draining;      // removed from gpu_endpoints, requests still in flight
  int breaker;        // 0 closed, 1 open, 2 half_open
  int in_flight;
  int max_concurrent;
  int64 requests;
  int64 errors;
  double error_rate;  // over the breaker window
  double ema_ms;
  double p50_ms;
  double p99_ms;
  int remote_running;  // -1 unknown
  int remote_waiting;
  char last_error[200];
  TimestampTz last_error_at;  // 0 = never
  // hashtext() of the URL these counters are of: the view names a
  // gpu_endpoints row's URL only while it is still this server's (a row
  // pointed elsewhere is loaded up to 100 ms after its commit).
  int32 endpoint_hash;
};

struct SharedState {
  slock_t mutex;  // guards workers[]; held for a few instructions only
  WorkerSlot workers[kWorkerCount];
  pg_atomic_uint64 queue_wakeups;         // commits that woke the dispatcher for new work
  pg_atomic_uint64 table_wakeups;         // … for queued rows the hand-off does not carry
  pg_atomic_uint32 queue_dirty;           // 1: queued rows the dispatcher has not been handed
  pg_atomic_uint64 handoff_sent;          // decisions sent straight from the commit handoff
  pg_atomic_uint64 handoff_unclaimed;     // … whose claim then found them taken or cancelled
  pg_atomic_uint64 results_deferred;      // answers whose row another session held locked
  pg_atomic_uint64 results_refused;       // result writes a row refused (a game's trigger or constraint)
  pg_atomic_uint64 cancels_generation;    // bumped at commit of a cancel_decision()
  pg_atomic_uint64 requests_cancelled;    // GPU requests aborted because their decision was cancelled
  pg_atomic_uint64 sync_retries_held;     // generate() retries held back for their back-off
  pg_atomic_uint64 endpoints_generation;  // bumped at commit of a gpu_endpoints change
  pg_atomic_uint64 endpoints_loaded;      // the generation the dispatcher has loaded
  ConditionVariable slot_freed_cv;        // broadcast when a generate() slot becomes free
  int waiter_count;                       // entries in waiters[]
  slock_t stats_mutex;                    // guards the endpoint stats below
  int endpoint_stat_count;
  EndpointStat endpoint_stats[kMaxEndpointStats];
  pg_atomic_uint64 affinity_hits;         // requests that went to their NPC's home endpoint
  pg_atomic_uint64 affinity_misses;       // … or elsewhere, because the home was too loaded
  // cache counters (all processes)
  pg_atomic_uint64 cache_l1_hits, cache_l2_hits, cache_l3_hits, cache_misses;
  pg_atomic_uint64 redis_errors;
  pg_atomic_uint32 redis_up;              // as last seen by any process
  char fleet_signature[256];              // digest of enabled endpoints' models/APIs: part of cache keys
  int sync_slot_count;
  Size sync_slot_stride;
};

// Size to request and the attach step (from the shmem hooks in module.cpp).
Size shared_state_size();
void shared_state_attach();

// The attached state; throws npc_scale::Error if npc_scale was not preloaded.
SharedState& shared_state();

// Copy of one slot taken under the spinlock.
WorkerSlot worker_slot_snapshot(WorkerKind kind);

// Throws 09000 when the caller is the dispatcher itself: a game trigger on
// decision_queue runs inside its writes, and `function` (which waits for the
// dispatcher) would wait there for itself. As a triggered action's error the
// write is refused, so the decision is failed saying why.
void refuse_wait_in_dispatcher(const char* function, const char* hint);

// await_decision(): waiters[pgprocno] is the decision id a backend waits for
// (0 = none). Whoever finishes decisions calls wake_awaiting() after its commit.
pg_atomic_uint64* waiters();
void wake_awaiting(const std::vector<int64_t>& finished);

SyncSlot* sync_slot(int index);
char* sync_slot_prompt(SyncSlot* slot);
char* sync_slot_params(SyncSlot* slot);
char* sync_slot_response(SyncSlot* slot);

}  // namespace npc_scale
