// npc_scale.await_decision(id, timeout): returns the decision's row once it
// reached a final status. It registers the id in shared memory and sleeps on
// its latch; the dispatcher sets that latch right after the commit that
// finished the decision, and cancel_decision() sets it when its transaction
// commits. The row is re-read on each wake-up, and every
// npc_scale.await_recheck (1 s) as a safety net.
// A decision requested in the caller's own open transaction is an error at
// once: it cannot be answered before that transaction commits.
#include <optional>
#include <string>

#include "core/request_check.hpp"
#include "guard.hpp"
#include "gucs.hpp"
#include "pg_text.hpp"
#include "shared_state.hpp"
#include "spi.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

namespace npc_scale {
namespace {

struct Row {
  Datum tuple;  // only once final: copied out of SPI, in the caller's memory context
  bool final;
  bool ours;    // inserted by this (still open) transaction
};

// The whole row (prompt included) is selected and copied out only once it is
// final: a copy per re-read would live until the call returns, and a wait of
// hours re-reads thousands of times.
std::optional<Row> read_row(int64 id) {
  static SavedPlan plan(
      "SELECT CASE WHEN q.status NOT IN ('queued', 'running') THEN q END, "
      "q.status NOT IN ('queued', 'running'), q.xmin FROM npc_scale.decision_queue q "
      "WHERE q.id = $1",
      {INT8OID});
  std::optional<Row> row;
  with_spi([&] {
    if (plan.execute({Int64GetDatum(id)}) == 1) {
      row = pg_call([] {
        bool isnull = false;
        bool final = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
        TransactionId xmin =
            DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
        Datum tuple = 0;
        if (final) {
          Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
          tuple = SPI_datumTransfer(d, false, -1);
        }
        return Row{tuple, final, TransactionIdIsCurrentTransactionId(xmin)};
      });
    }
  });
  return row;
}

// A backend ended by a FATAL (pg_terminate_backend, postmaster death) in
// its wait unwinds no C++ frame: its entry is cleared as it exits, or the
// next backend in its PGPROC would be woken for a decision it never awaited.
void clear_waiter_at_exit(int, Datum) {
  try {
    pg_atomic_write_u64(&waiters()[MyProc->pgprocno], 0);
  } catch (...) {
    // No waiter array, so no entry to clear; nothing may throw into Postgres.
  }
}

struct WaiterRegistration {
  explicit WaiterRegistration(int64 id) : slot_(&waiters()[MyProc->pgprocno]) {
    static bool exit_hook = false;
    if (!exit_hook) {
      pg_call([] { before_shmem_exit(clear_waiter_at_exit, 0); });
      exit_hook = true;
    }
    pg_atomic_write_u64(slot_, static_cast<uint64>(id));
  }
  ~WaiterRegistration() { pg_atomic_write_u64(slot_, 0); }
  pg_atomic_uint64* slot_;
};

}  // namespace
}  // namespace npc_scale

NPC_SQL_FUNCTION(npc_scale_await_decision) {
  using namespace npc_scale;
  if (PG_ARGISNULL(0)) throw Error(sqlstate::null_value_not_allowed, "decision id must not be null");
  int64 id = PG_GETARG_INT64(0);
  if (PG_ARGISNULL(1)) {
    throw Error(sqlstate::null_value_not_allowed, "timeout must not be null", {},
                "Leave it out for the default of 30 s.");
  }
  double secs = interval_arg_seconds(fcinfo, 1);
  check_await_timeout_seconds(secs);
  const int64 timeout_ms = static_cast<int64>(secs * 1000);
  if (pg_call([] { return IsolationUsesXactSnapshot(); })) {
    throw Error(sqlstate::feature_not_supported,
                "await_decision() needs READ COMMITTED isolation", {},
                "Under REPEATABLE READ or SERIALIZABLE the transaction could never see the answer.");
  }
  // In the dispatcher it would stall every decision for the whole timeout.
  refuse_wait_in_dispatcher("await_decision()", "Read the row's status instead, or wait from the game's own session.");

  WaiterRegistration registration(id);  // before the first read: no missed wake-up
  const TimestampTz deadline = GetCurrentTimestamp() + timeout_ms * 1000;
  for (;;) {
    std::optional<Row> row = read_row(id);
    if (!row) {
      throw Error("P0002", "decision " + std::to_string(id) + " does not exist");
    }
    if (row->final) return row->tuple;
    if (row->ours) {
      // The dispatcher cannot see it before this transaction commits.
      throw Error(sqlstate::object_not_in_prerequisite_state,
                  "decision " + std::to_string(id) + " was requested in this transaction, "
                  "which must commit before it can be answered", {},
                  "Commit after request_decision(), then call await_decision().");
    }
    long left_ms = static_cast<long>((deadline - GetCurrentTimestamp()) / 1000);
    if (left_ms <= 0) {
      throw Error(sqlstate::query_canceled,
                  "await_decision timed out after " + std::to_string(timeout_ms) +
                      " ms: decision " + std::to_string(id) + " is not finished",
                  {}, "Wait longer, or LISTEN npc_scale_decisions for its id.");
    }
    pg_call([&] {
      (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                      std::min(left_ms, static_cast<long>(guc_await_recheck_ms)), PG_WAIT_EXTENSION);
      ResetLatch(MyLatch);
      CHECK_FOR_INTERRUPTS();
    });
  }
}
