// What both background workers share: start-up (signals, connection,
// registration in shared memory), the latch wait that is their only way to
// idle, and waking a worker from a backend.
#pragma once

#include <string>

#include "shared_state.hpp"

extern "C" {
#include "postgres.h"
#include "storage/latch.h"
}

namespace npc_scale {

inline constexpr int kWorkerRestartSeconds = 1;

// Signals, database connection and the shared-memory slot of this worker.
void worker_startup(WorkerKind kind);

// Publishes the state in worker_status() and pg_stat_activity.
void worker_set_state(WorkerState state, const char* activity = nullptr);

// Waits for the latch, a socket event (when sock is valid) or the timeout;
// then handles interrupts (SIGTERM exits) and a pending config reload.
// Returns WaitLatch's event bits.
int worker_wait(long timeout_ms, pgsocket sock = PGINVALID_SOCKET, int socket_events = 0);
// Whether worker_wait() reloaded the configuration since the last call.
bool worker_config_reloaded();

// After an error the worker's loop caught and logged: releases what Postgres's
// own error recovery would. An error inside in_transaction() was cleaned up by
// its abort; one outside a transaction (a commit-status lookup, a cancel
// during the wait) may have left an LWLock or a wait event behind.
void worker_recover_after_error() noexcept;

// The same, for an error the loop goes on after, with a WARNING saying what
// it was. Recovers first, then logs; the WARNING's own interrupt check may
// raise a cancel that came meanwhile, which is recovered from here too: out
// of the loop it would end the worker and drop its requests in flight.
// printf-style; the message is cut at 2 kB.
void worker_recover_and_warn(const char* format, ...) noexcept pg_attribute_printf(1, 2);

// From any backend: set the latch of a running worker (no-op if not running).
void wake_worker(WorkerKind kind);

}  // namespace npc_scale
