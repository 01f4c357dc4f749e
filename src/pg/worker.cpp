#include "worker.hpp"

#include <cstdarg>
#include <cstring>
#include <utility>

#include "gucs.hpp"
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/memutils.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

namespace npc_scale {

namespace {

WorkerKind g_kind = WorkerKind::dispatcher;
char g_connected_database[NAMEDATALEN];

WorkerSlot& my_slot() { return shared_state().workers[static_cast<int>(g_kind)]; }

// on_shmem_exit: the slot says "stopped" once this process is gone. Called
// from Postgres's C code: nothing may be thrown out of it.
void clear_slot(int, Datum) noexcept {
  SharedState* state = nullptr;
  try {
    state = &shared_state();
  } catch (...) {
    return;
  }
  SharedState& s = *state;
  SpinLockAcquire(&s.mutex);
  WorkerSlot& slot = s.workers[static_cast<int>(g_kind)];
  if (slot.pid == MyProcPid) {
    slot.pid = 0;
    slot.state = WorkerState::stopped;
    slot.pgprocno = -1;
  }
  SpinLockRelease(&s.mutex);
}

void count_wakeup() {
  SharedState& s = shared_state();
  SpinLockAcquire(&s.mutex);
  my_slot().wakeups++;
  SpinLockRelease(&s.mutex);
}

bool g_config_reloaded = false;

void reload_config() {
  ConfigReloadPending = false;
  ProcessConfigFile(PGC_SIGHUP);
  g_config_reloaded = true;
  {
    SharedState& s = shared_state();
    SpinLockAcquire(&s.mutex);
    my_slot().config_reloads++;
    SpinLockRelease(&s.mutex);
  }
  if (strcmp(g_connected_database, guc_database) != 0) {
    // A worker cannot switch databases: exit non-zero so the postmaster
    // restarts it, connected to the new one.
    ereport(LOG, (errmsg("%s: npc_scale.database changed from \"%s\" to \"%s\", restarting",
                         worker_name(g_kind), g_connected_database, guc_database)));
    proc_exit(1);
  }
}

}  // namespace

void worker_startup(WorkerKind kind) {
  g_kind = kind;
  pg_call([&] {
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();

    strlcpy(g_connected_database, guc_database, sizeof(g_connected_database));
    BackgroundWorkerInitializeConnection(g_connected_database, nullptr, 0);
    // The workers are superusers: no name they resolve may come from a
    // schema a game role can create objects in ("$user", public, a
    // database's own search_path), or a function there named like one
    // they call would run as superuser. As autovacuum does: the override
    // is also what RESET goes back to (a superuser's trigger cannot undo
    // it), and a configuration reload does not replace it; a function's
    // own SET search_path still applies.
    SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
    pgstat_report_appname(worker_name(kind));

    SharedState& s = shared_state();
    SpinLockAcquire(&s.mutex);
    WorkerSlot& slot = my_slot();
    slot.pid = MyProcPid;
    slot.state = WorkerState::starting;
    slot.started_at = GetCurrentTimestamp();
    slot.starts++;
    slot.pgprocno = MyProc->pgprocno;
    SpinLockRelease(&s.mutex);
    on_shmem_exit(clear_slot, 0);

    ereport(LOG, (errmsg("%s started, connected to database \"%s\"", worker_name(kind),
                         g_connected_database)));
  });
}

void worker_set_state(WorkerState state, const char* activity) {
  SharedState& s = shared_state();
  SpinLockAcquire(&s.mutex);
  my_slot().state = state;
  SpinLockRelease(&s.mutex);
  pg_call([&] {
    pgstat_report_activity(state == WorkerState::busy ? STATE_RUNNING : STATE_IDLE, activity);
  });
}

int worker_wait(long timeout_ms, pgsocket sock, int socket_events) {
  return pg_call([&] {
    int rc = 0;
    if (sock != PGINVALID_SOCKET) {
      // One wait set for the life of the process: WaitLatchOrSocket would
      // build (epoll_create, three epoll_ctl) and close one per call.
      static WaitEventSet* set = nullptr;
      static pgsocket set_sock = PGINVALID_SOCKET;
      static int set_events = 0;
      if (set == nullptr || set_sock != sock || set_events != socket_events) {
        if (set != nullptr) {
          FreeWaitEventSet(set);
          set = nullptr;  // not freed twice if the next line fails (no file descriptors)
        }
        set = CreateWaitEventSet(TopMemoryContext, 3);
        AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, nullptr);
        AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, nullptr, nullptr);
        AddWaitEventToSet(set, socket_events, sock, nullptr, nullptr);
        set_sock = sock;
        set_events = socket_events;
      }
      WaitEvent events[3];
      int n = WaitEventSetWait(set, timeout_ms, events, 3, PG_WAIT_EXTENSION);
      if (n == 0) rc |= WL_TIMEOUT;
      for (int i = 0; i < n; i++) rc |= events[i].events;
    } else {
      int events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
      if (timeout_ms >= 0) events |= WL_TIMEOUT;
      rc = WaitLatch(MyLatch, events, timeout_ms, PG_WAIT_EXTENSION);
    }
    // A socket event can come without the latch event although the latch is
    // set too. ResetLatch clears it either way, so say it was set — or a
    // wake-up (new work committed) would be lost until the next timer.
    if (MyLatch->is_set) rc |= WL_LATCH_SET;
    ResetLatch(MyLatch);
    count_wakeup();
    CHECK_FOR_INTERRUPTS();
    if (ConfigReloadPending) reload_config();
    return rc;
  });
}

bool worker_config_reloaded() {
  return std::exchange(g_config_reloaded, false);
}

void worker_recover_after_error() noexcept {
  try {
    SharedState& s = shared_state();
    WorkerSlot& slot = my_slot();
    SpinLockAcquire(&s.mutex);
    slot.errors++;
    SpinLockRelease(&s.mutex);
    pg_call([] {
      AbortCurrentTransaction();  // nothing to do when idle
      LWLockReleaseAll();
      ConditionVariableCancelSleep();
      pgstat_report_wait_end();
      QueryCancelPending = false;  // handled: the error was the cancel's
    });
  } catch (...) {
    // Nothing sensible is left to do; the loop goes on.
  }
}

void worker_recover_and_warn(const char* format, ...) noexcept {
  char message[2048];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  worker_recover_after_error();
  try {
    pg_call([&] { ereport(WARNING, (errmsg("%s", message))); });
  } catch (...) {
    worker_recover_after_error();
  }
}

void wake_worker(WorkerKind kind) {
  WorkerSlot slot = worker_slot_snapshot(kind);
  if (slot.pid != 0 && slot.pgprocno >= 0) {
    SetLatch(&ProcGlobal->allProcs[slot.pgprocno].procLatch);
  }
}

}  // namespace npc_scale
