// The maintenance background worker: purges finished decisions (and, as the
// project grows, refreshes materialized views and manages partitions) —
// separate from the dispatcher so a long REFRESH never delays a decision.
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/steady_clock.hpp"
#include "guard.hpp"
#include "pg_text.hpp"
#include "gucs.hpp"
#include "spi.hpp"
#include "tiered_cache.hpp"
#include "worker.hpp"

extern "C" {
#include "postgres.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

PGDLLEXPORT void npc_scale_maintenance_main(Datum main_arg);
}

namespace npc_scale {
namespace {

constexpr long kTickMs = 1000;
constexpr int kPurgeBatch = 1000;  // rows per transaction: short locks, steady vacuum
constexpr int64_t kPartitionRetryMs = 60000;
constexpr int64_t kRunsPurgeMs = 10000;

// Runs a batched DELETE (its last argument is the batch size, the others
// come from `args` before each batch) until a batch comes back short: each
// batch its own transaction, so no transaction holds many row locks or
// writes much WAL at once, and vacuum keeps up. A batch one of its rows
// refuses (see is_row_error) is handed to `one_at_a_time`, if given, which
// returns the rows it dealt with; else the error ends the purge.
int64_t delete_in_batches(SavedPlan& plan, const std::function<std::vector<Datum>()>& args, const char* activity,
                          const std::function<uint64_t()>& one_at_a_time = nullptr) {
  int64_t total = 0;
  for (;;) {
    uint64_t n = 0;
    try {
      in_transaction(activity, [&] {
        if (!extension_present()) return;
        std::vector<Datum> a = args();
        a.push_back(Int32GetDatum(kPurgeBatch));
        n = plan.execute(a);
      });
    } catch (const PgError& e) {
      if (!one_at_a_time || !is_row_error(e)) throw;
      worker_recover_after_error();
      n = one_at_a_time();
    }
    total += static_cast<int64_t>(n);
    if (n < static_cast<uint64_t>(kPurgeBatch)) return total;
  }
}

// Where the purge of finished decisions goes on from: rows up to here
// refused their delete (a foreign key of the game's without ON DELETE
// CASCADE, a trigger forbidding it) and are passed over, instead of
// stopping the purge for good (every batch would start with them, and
// fail). After another result_ttl the purge starts from the beginning
// again: the game may have let go of them meanwhile, and rows that were
// locked when the cursor moved past them are due too.
struct PurgeSkip {
  TimestampTz finished_at = DT_NOBEGIN;
  int64_t id = 0;
};
PurgeSkip g_purge_skip;
int64_t g_purge_skip_since_ms = 0;  // steady clock; 0: the cursor is at the beginning

std::vector<Datum> purge_args() {
  return {Int32GetDatum(guc_result_ttl_s), TimestampTzGetDatum(g_purge_skip.finished_at),
          Int64GetDatum(g_purge_skip.id)};
}

#define NPC_PURGE_CANDIDATES                                                                    \
  " FROM npc_scale.decision_queue"                                                              \
  " WHERE finished_at < now() - make_interval(secs => $1) AND (finished_at, id) > ($2, $3)"   \
  "   AND status NOT IN ('queued', 'running')"                                                  \
  " ORDER BY finished_at, id LIMIT $4"

// A batch refused by one of its rows: each row alone, in its own
// transaction; the refusing ones are passed over. Returns the rows deleted
// or passed over: 0 when every candidate is locked by another session (the
// purge tries again next tick, instead of looping on them).
uint64_t purge_one_at_a_time() {
  static SavedPlan candidates("SELECT finished_at, id" NPC_PURGE_CANDIDATES, {INT4OID, TIMESTAMPTZOID, INT8OID, INT4OID});
  // The row as listed: one set back to queued and finished again since (its
  // finished_at moved) is not old enough any more.
  static SavedPlan one(
      "DELETE FROM npc_scale.decision_queue WHERE id IN ("
      "  SELECT id FROM npc_scale.decision_queue WHERE id = $1 AND finished_at = $2"
      "     AND status NOT IN ('queued', 'running')"
      "  FOR UPDATE SKIP LOCKED)",
      {INT8OID, TIMESTAMPTZOID});
  std::vector<PurgeSkip> rows;
  in_transaction("npc_scale: purge finished decisions", [&] {
    if (!extension_present()) return;
    std::vector<Datum> args = purge_args();
    args.push_back(Int32GetDatum(kPurgeBatch));
    uint64_t n = candidates.execute(args, nullptr, true);
    for (uint64_t i = 0; i < n; i++) {
      rows.push_back(pg_call([&] {
        bool isnull;
        PurgeSkip r;
        r.finished_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
        r.id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
        return r;
      }));
    }
  });
  int skipped = 0;
  uint64_t deleted = 0;
  std::string why;
  for (const PurgeSkip& r : rows) {
    try {
      in_transaction("npc_scale: purge a finished decision", [&] {
        if (extension_present()) deleted += one.execute({Int64GetDatum(r.id), TimestampTzGetDatum(r.finished_at)});
      });
    } catch (const PgError& e) {
      if (!is_row_error(e)) throw;
      worker_recover_after_error();
      if (g_purge_skip_since_ms == 0) g_purge_skip_since_ms = steady_now_ms();
      g_purge_skip = r;
      if (skipped++ == 0) why = "decision " + std::to_string(r.id) + ": " + e.what();
    }
  }
  if (skipped > 0) {
    pg_call([&] {
      ereport(WARNING, (errmsg("npc_scale maintenance: %d finished decision(s) could not be purged and are passed "
                               "over for npc_scale.result_ttl; the first, %s",
                               skipped, why.c_str())));
    });
  }
  return deleted + static_cast<uint64_t>(skipped);
}

// Finished decisions older than npc_scale.result_ttl.
int64_t purge_finished() {
  if (g_purge_skip_since_ms != 0 &&
      steady_now_ms() - g_purge_skip_since_ms >= static_cast<int64_t>(guc_result_ttl_s) * 1000) {
    g_purge_skip = PurgeSkip{};
    g_purge_skip_since_ms = 0;
  }
  static SavedPlan batch(
      "DELETE FROM npc_scale.decision_queue WHERE id IN (SELECT id" NPC_PURGE_CANDIDATES " FOR UPDATE SKIP LOCKED)",
      {INT4OID, TIMESTAMPTZOID, INT8OID, INT4OID});
  return delete_in_batches(batch, purge_args, "npc_scale: purge finished decisions", purge_one_at_a_time);
}
#undef NPC_PURGE_CANDIDATES

// Finished runs older than npc_scale.maintenance_run_ttl: a job every
// second would add 86,400 rows a day.
int64_t purge_runs() {
  static SavedPlan plan(
      "DELETE FROM npc_scale.maintenance_runs WHERE run IN ("
      "  SELECT run FROM npc_scale.maintenance_runs"
      "   WHERE finished_at < now() - make_interval(secs => $1)"
      "   LIMIT $2 FOR UPDATE SKIP LOCKED)",
      {INT4OID, INT4OID});
  return delete_in_batches(plan, [] { return std::vector<Datum>{Int32GetDatum(guc_maintenance_run_ttl_s)}; },
                           "npc_scale: purge old maintenance runs");
}

// Expired rows of the L3 cache table.
int64_t purge_cache_store() {
  static SavedPlan plan(
      "DELETE FROM npc_scale.cache_store WHERE key IN ("
      "  SELECT key FROM npc_scale.cache_store WHERE expires_at < now()"
      "   LIMIT $1 FOR UPDATE SKIP LOCKED)",
      {INT4OID});
  return delete_in_batches(plan, [] { return std::vector<Datum>{}; }, "npc_scale: purge expired cache rows");
}

// ---- scheduled refreshes -------------------------------------------------


struct DueJob {
  int64_t job = 0;
  int64_t run = 0;
  std::string target;  // regclass as text: already quoted
  int64_t oid = 0;     // the view's
  bool concurrently = true;
};

// pg_cron marks runs that were in progress at a restart as failed; so do we.
void fail_orphaned_runs() {
  static SavedPlan plan(
      "UPDATE npc_scale.maintenance_runs SET status = 'failed', finished_at = now(),"
      "  duration = now() - started_at, error = 'the maintenance worker restarted during this run' "
      "WHERE status = 'running'",
      {});
  in_transaction("npc_scale: recover maintenance runs", [&] {
    if (extension_present()) plan.execute({});
  });
}

// Claims the next due job, records a 'running' run for it and moves its
// next run on, in one transaction: a job starts once per due time. One at a
// time, so a crash during one job leaves no other marked as started, and a
// run's started_at is when it really started. Only jobs due by
// `round_start`: one due again at once (its run took longer than its
// period) waits for the next round instead of starving the rest.
// After the wall clock was stepped back (NTP, a restored VM), a job's next
// run lies further ahead than its schedule puts it from now: an hour back
// meant an hour without refreshes. Such a job is due at its next time from
// now again, as cron's are. (Only next_run_at changes: no trigger wakes us.)
// Runs inside start_next_due_job()'s transaction: no extra one per tick.
void reschedule_after_clock_step() {
  static SavedPlan plan(
      "UPDATE npc_scale.maintenance_jobs j SET next_run_at = npc_scale._cron_next(j.schedule, now()) "
      "WHERE j.job = ANY (ARRAY(SELECT job FROM npc_scale.maintenance_jobs"
      "                         WHERE active AND next_run_at > npc_scale._cron_next(schedule, now())"
      "                         FOR UPDATE SKIP LOCKED))",
      {});
  plan.execute({});
}

std::optional<DueJob> start_next_due_job(TimestampTz round_start) {
  static SavedPlan advance(
      "UPDATE npc_scale.maintenance_jobs j SET next_run_at = npc_scale._cron_next(j.schedule, now()) "
      "WHERE j.job = (SELECT job FROM npc_scale.maintenance_jobs"
      "                WHERE active AND next_run_at <= $1"
      "                ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
      "RETURNING j.job, j.target::text, j.concurrent_refresh, j.target::oid::int8",
      {TIMESTAMPTZOID});
  static SavedPlan insert_run(
      "INSERT INTO npc_scale.maintenance_runs (job, started_at, status)"
      " VALUES ($1, clock_timestamp(), 'running') RETURNING run",
      {INT8OID});
  std::optional<DueJob> due;
  in_transaction("npc_scale: start a due maintenance job", [&] {
    if (!extension_present()) return;
    reschedule_after_clock_step();
    if (advance.execute({TimestampTzGetDatum(round_start)}) != 1) return;
    DueJob d;
    d.job = spi_int(0, 1).value_or(0);
    d.target = spi_text(0, 2).value_or("");
    d.concurrently = spi_bool(0, 3);
    d.oid = spi_int(0, 4).value_or(0);
    insert_run.execute({Int64GetDatum(d.job)});
    d.run = spi_int(0, 1).value_or(0);
    due = std::move(d);
  });
  return due;
}

void finish_run(int64_t run, bool ok, const std::string& error, std::optional<int64_t> rows) {
  static SavedPlan plan(
      "UPDATE npc_scale.maintenance_runs SET finished_at = clock_timestamp(),"
      "  duration = clock_timestamp() - started_at,"
      "  status = CASE WHEN $2 THEN 'succeeded' ELSE 'failed' END, error = $3, rows = $4 "
      "WHERE run = $1",
      {INT8OID, BOOLOID, TEXTOID, INT8OID});
  char nulls[5] = "    ";
  if (ok) nulls[2] = 'n';
  if (!rows) nulls[3] = 'n';
  in_transaction("npc_scale: record maintenance run", [&] {
    if (!extension_present()) return;
    Datum err = ok ? Datum(0) : text_datum(error);
    plan.execute({Int64GetDatum(run), BoolGetDatum(ok), err, Int64GetDatum(rows.value_or(0))}, nulls);
  });
}

// finish_run(), and if that fails, an error saying what the run's outcome
// was as well as why it could not be recorded (run_due_jobs records that).
void record_run(int64_t run, bool ok, const std::string& error, std::optional<int64_t> rows) {
  try {
    finish_run(run, ok, error, rows);
  } catch (const std::exception& e) {
    throw std::runtime_error("could not record this run's outcome (" +
                             (ok ? std::string("succeeded") : "failed: " + error) + "): " + e.what());
  }
}

// A time bound over one job of the maintenance worker (npc_scale.refresh_timeout
// over a refresh, npc_scale.partition_timeout over a partition maintenance
// call): a view whose query never ends, or a game trigger that never returns
// while rows move, would hold every other job, the purges and partition
// maintenance (one worker runs them all in turn). statement_timeout is
// armed by the client-statement loop only, which a background worker's SPI
// never goes through: the timer is armed here, and always disarmed (an
// exception unwinds this frame), so that it cannot fire into a later
// statement. 0 seconds: no bound.
class StatementBound {
 public:
  explicit StatementBound(int seconds) {
    if (seconds > 0) pg_call([&] { enable_timeout_after(STATEMENT_TIMEOUT, seconds * 1000); });
  }
  // On success, still in the transaction: a timeout that fired after the
  // job's last interrupt check fails the job here, as a timeout (the
  // destructor would clear its indicator, and a later check report it as a
  // cancel).
  void end() {
    pg_call([] {
      disable_timeout(STATEMENT_TIMEOUT, true);
      CHECK_FOR_INTERRUPTS();
    });
  }
  ~StatementBound() { disable_timeout(STATEMENT_TIMEOUT, false); }
  StatementBound(const StatementBound&) = delete;
  StatementBound& operator=(const StatementBound&) = delete;
};

// One refresh in its own transaction. A failure is recorded with its error and
// the worker goes on; a run never overlaps itself (one worker, one at a time,
// and the next due time is computed when a run starts).
void run_job(const DueJob& d) {
  std::string activity = "npc_scale: REFRESH MATERIALIZED VIEW " + d.target;
  worker_set_state(WorkerState::busy, activity.c_str());
  std::optional<int64_t> rows;
  try {
    in_transaction(activity.c_str(), [&] {
      // A refresh waiting behind a long query would hold the game's
      // statements on the view behind its own lock: it fails instead.
      const std::string lock_timeout =
          "SET LOCAL lock_timeout = " + std::to_string(guc_maintenance_lock_timeout_ms);

      // CONCURRENTLY needs a populated view: one created WITH NO DATA gets
      // a plain first refresh.
      const std::string populated = "SELECT relispopulated FROM pg_class WHERE oid = " + std::to_string(d.oid);
      bool concurrently = d.concurrently;
      pg_call([&] {
        if (SPI_execute(lock_timeout.c_str(), false, 0) < 0) elog(ERROR, "SET lock_timeout failed");
      });
      if (concurrently) {
        pg_call([&] {
          if (SPI_execute(populated.c_str(), true, 0) < 0) elog(ERROR, "reading relispopulated failed");
        });
        concurrently = SPI_processed == 1 && spi_bool(0, 1);
      }
      std::string sql = std::string("REFRESH MATERIALIZED VIEW ") + (concurrently ? "CONCURRENTLY " : "") + d.target;
      StatementBound bound(guc_refresh_timeout_s);
      pg_call([&] {
        if (SPI_execute(sql.c_str(), false, 0) < 0) elog(ERROR, "REFRESH failed");
      });
      bound.end();
    });
  } catch (const std::exception& e) {
    record_run(d.run, false, e.what(), std::nullopt);
    return;
  }
  // Counted after the refresh's COMMIT: a plain refresh holds ACCESS
  // EXCLUSIVE on the view until then, and the game's reads would wait out
  // the scan too. A count that fails (the view dropped meanwhile) leaves
  // the run's row count unknown; the refresh itself succeeded.
  try {
    in_transaction("npc_scale: count the refreshed view's rows", [&] {
      const std::string lock_timeout =
          "SET LOCAL lock_timeout = " + std::to_string(guc_maintenance_lock_timeout_ms);
      const std::string count = "SELECT count(*) FROM " + d.target;
      StatementBound bound(guc_refresh_timeout_s);
      pg_call([&] {
        if (SPI_execute(lock_timeout.c_str(), false, 0) < 0) elog(ERROR, "SET lock_timeout failed");
        if (SPI_execute(count.c_str(), true, 0) < 0) elog(ERROR, "count failed");
      });
      rows = spi_int(0, 1);
      bound.end();
    });
  } catch (const std::exception&) {
    rows.reset();
  }
  record_run(d.run, true, "", rows);
}

// The due jobs, one after another. A run whose outcome could not be
// recorded (an error, a cancel, while writing it) is recorded as failed
// with that reason, and the jobs after it still run: no run is left
// 'running' until the next restart.
// `between` runs after each job: a round of many long refreshes must not
// hold the purges and partition maintenance back for all of them.
template <typename Between>
void run_due_jobs(TimestampTz round_start, Between&& between) {
  while (std::optional<DueJob> next = start_next_due_job(round_start)) {
    const DueJob& d = *next;
    try {
      run_job(d);
    } catch (const std::exception& e) {
      const std::string why = e.what();  // record_run() says what the outcome was
      worker_recover_after_error();
      try {
        finish_run(d.run, false, why, std::nullopt);
      } catch (const std::exception&) {
        worker_recover_after_error();
      }
    }
    between();
  }
}

// Until the next active job is due (negative: overdue); nullopt when no
// job is active. (Not greatest(0, ...) in SQL: greatest
// skips NULLs, so "no job" came back as 0 and the worker spun.)
std::optional<int64_t> ms_until_next_job() {
  static SavedPlan plan(
      "SELECT (extract(epoch FROM min(next_run_at) - now()) * 1000)::bigint"
      "  FROM npc_scale.maintenance_jobs WHERE active",
      {});
  std::optional<int64_t> out;
  in_transaction("npc_scale: next maintenance job", [&] {
    if (!extension_present()) return;
    if (plan.execute({}, nullptr, true) == 1) out = spi_int(0, 1);
  });
  return out;
}

// Partition maintenance of every managed parent, each in its own
// transaction so one failure does not undo the others. False if any failed.
bool maintain_partitions() {
  static SavedPlan parents("SELECT parent::oid FROM npc_scale.partition_configs ORDER BY parent::text", {});
  static SavedPlan run("SELECT npc_scale.run_maintenance($1::oid::regclass)", {OIDOID});
  std::vector<Oid> oids;
  in_transaction("npc_scale: list partitioned parents", [&] {
    if (!extension_present()) return;
    uint64_t n = parents.execute({}, nullptr, true);
    for (uint64_t i = 0; i < n; i++) {
      oids.push_back(static_cast<Oid>(pg_call([&] {
        bool isnull;
        return DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
      })));
    }
  });
  bool all_ok = true;
  for (Oid oid : oids) {
    try {
      // Again while a call makes partitions (one of a long history per
      // call, each call its own transaction), within a bound: the rest
      // within a minute (as after a failure).
      bool done = false;
      for (int round = 0; round < 50 && !done; round++) {
        std::optional<int64_t> made;
        in_transaction("npc_scale: partition maintenance", [&] {
          StatementBound bound(guc_partition_timeout_s);
          // Nothing of the game's is left to run at COMMIT, after the bound:
          // rows move in a security-restricted operation, where Postgres
          // refuses to queue a deferred trigger.
          if (run.execute({ObjectIdGetDatum(oid)}) == 1) made = spi_int(0, 1);
          bound.end();
        });
        done = made.value_or(0) == 0;
      }
      if (!done) all_ok = false;
    } catch (const std::exception& e) {
      all_ok = false;
      worker_recover_and_warn("npc_scale maintenance: partitions of relation %u: %s", oid, e.what());
    }
  }
  return all_ok;
}

// One part of a tick. A failure is logged and counted, and the parts after
// it still run: a job that cannot start must not stop the purges.
template <typename Fn>
void tick_step(const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    worker_recover_and_warn("npc_scale maintenance: %s: %s", what, e.what());
  }
}

// The tick's parts other than the refreshes, each when it is due: run once a
// tick and between refreshes. Timed on the steady clock: a wall clock stepped
// back hours must not hold them back as long.
class Housekeeping {
 public:
  void run_due() {
    const int64_t now = steady_now_ms();
    if (now >= next_purge_ms_) {
      worker_set_state(WorkerState::busy, "purging finished decisions");
      tick_step("purge of finished decisions", [] { purge_finished(); });
      tick_step("purge of expired cache rows", [] { purge_cache_store(); });
      tick_step("sweep of doubted Redis keys", [] { sweep_l2_doubts(); });
      next_purge_ms_ = now + kTickMs;
    }
    if (now >= next_runs_purge_ms_) {
      tick_step("purge of old maintenance runs", [] { purge_runs(); });
      next_runs_purge_ms_ = now + kRunsPurgeMs;
    }
    // From the interval as it is now: one lowered by a reload applies at
    // once, not after the run the old one scheduled. A parent that failed
    // (a lock not granted in time, say) is tried again within a minute,
    // not a whole interval later.
    const int64_t every_ms = static_cast<int64_t>(guc_partition_interval_s) * 1000;
    if (partitions_run_ms_ < 0 ||
        now >= partitions_run_ms_ + (partitions_ok_ ? every_ms : std::min<int64_t>(every_ms, kPartitionRetryMs))) {
      worker_set_state(WorkerState::busy, "partition maintenance");
      partitions_ok_ = false;
      tick_step("partition maintenance", [&] { partitions_ok_ = maintain_partitions(); });
      partitions_run_ms_ = now;
    }
  }

 private:
  static void sweep_l2_doubts() {
    const std::optional<L2Sweep> swept = cache_settle_l2_doubts();
    if (!swept) return;
    const long long deleted = swept->deleted;
    pg_call([&] {
      if (swept->everything) {
        ereport(LOG, (errmsg("npc_scale: emptied the Redis L2 cache (%lld keys): every key was doubted "
                             "(too many writes, or a clear, had not reached it)",
                             deleted)));
      } else {
        ereport(LOG, (errmsg("npc_scale: deleted %lld doubted keys from the Redis L2 cache (values it "
                             "may have held older than L1 and L3)",
                             deleted)));
      }
    });
  }

  int64_t next_purge_ms_ = 0;
  int64_t partitions_run_ms_ = -1;  // last partition maintenance (steady clock); -1: none yet
  bool partitions_ok_ = false;
  int64_t next_runs_purge_ms_ = 0;
};

void run_maintenance_worker() {
  worker_startup(WorkerKind::maintenance);
  bool recovered = false;
  Housekeeping housekeeping;
  long wait_ms = 0;
  for (;;) {
    try {
      worker_set_state(WorkerState::idle);
      worker_wait(wait_ms);
      wait_ms = kTickMs;
      if (!recovered && extension_ready()) {
        fail_orphaned_runs();
        recovered = true;
      }
      const TimestampTz round_start = GetCurrentTimestamp();
      tick_step("scheduled refreshes", [&] { run_due_jobs(round_start, [&] { housekeeping.run_due(); }); });
      housekeeping.run_due();
      if (auto next = ms_until_next_job()) {
        // A job due at this round's start that did not start is locked (a
        // migration dropping its view, an UPDATE of it left open) or could
        // not be claimed: looked at again next tick, not at once in a loop.
        const bool passed_over = GetCurrentTimestamp() / 1000 + *next <= round_start / 1000;
        wait_ms = std::min<long>(wait_ms, passed_over ? kTickMs : static_cast<long>(std::max<int64_t>(*next, 0)));
      }
    } catch (const std::exception& e) {
      worker_recover_and_warn("npc_scale maintenance: %s", e.what());
      wait_ms = kTickMs;
    }
  }
}

}  // namespace
}  // namespace npc_scale

void npc_scale_maintenance_main(Datum) {
  npc_scale::guarded([] { npc_scale::run_maintenance_worker(); });
}
