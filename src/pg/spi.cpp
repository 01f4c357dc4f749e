#include "spi.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "utils/lsyscache.h"
#include "pgstat.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
}

namespace npc_scale {

namespace spi_detail {

void begin(const char* activity) {
  try {
    pg_call([&] {
      SetCurrentStatementStartTimestamp();
      StartTransactionCommand();
      if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "npc_scale: SPI_connect failed");
      PushActiveSnapshot(GetTransactionSnapshot());
      pgstat_report_activity(STATE_RUNNING, activity);
    });
  } catch (...) {
    // Failed after the transaction started (the snapshot, memory): not left
    // open for the caller's next in_transaction() to trip over.
    spi_detail::abort();
    throw;
  }
}

void commit() {
  // SPI_finish() deletes the context it was called in; a failing COMMIT
  // (a game's deferred constraint, a full NOTIFY queue) must copy its error
  // into one that still exists: the transaction's, current once SPI is done.
  pg_call([] { SPI_finish(); });
  pg_call([] {
    PopActiveSnapshot();
    // The workers' statements wait only briefly for locks (lock_timeout),
    // but the COMMIT of one that notified takes the database's NOTIFY lock,
    // held by each committing transaction that notified, only while it
    // commits. Failing the commit on a short wait for it would redo work (a
    // batch of answers) for nothing. Not only when we notified: a game's
    // trigger on our tables may have (pg_notify), unknown to us.
    (void)set_config_option("lock_timeout", "0", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
                            false);
    CommitTransactionCommand();
    // Without this, autovacuum never learns of the worker's writes.
    pgstat_report_stat(false);
    pgstat_report_activity(STATE_IDLE, nullptr);
  });
}

void abort() noexcept {
  try {
    pg_call([] {
      AbortCurrentTransaction();  // also releases SPI, snapshots and locks
      pgstat_report_activity(STATE_IDLE, nullptr);
    });
  } catch (...) {
    // Nothing sensible is left to do; the next begin() starts afresh.
  }
}

}  // namespace spi_detail

uint64_t SavedPlan::execute(const std::vector<Datum>& args, const char* nulls, bool read_only) {
  return pg_call([&]() -> uint64_t {
    prepare();
    int rc = SPI_execute_plan(plan_, const_cast<Datum*>(args.data()), nulls, read_only, 0);
    if (rc < 0) elog(ERROR, "npc_scale: SPI_execute_plan failed: %s", SPI_result_code_string(rc));
    return SPI_processed;
  });
}

uint64_t SavedPlan::execute_on_latest(const std::vector<Datum>& args, const char* nulls) {
  return pg_call([&]() -> uint64_t {
    prepare();
    int rc = SPI_execute_snapshot(plan_, const_cast<Datum*>(args.data()), nulls, GetLatestSnapshot(),
                                  InvalidSnapshot, true, false, 0);
    if (rc < 0) elog(ERROR, "npc_scale: SPI_execute_snapshot failed: %s", SPI_result_code_string(rc));
    return SPI_processed;
  });
}

// Inside pg_call only.
void SavedPlan::prepare() {
  if (plan_ != nullptr) return;
  SPIPlanPtr p = SPI_prepare_cursor(sql_, static_cast<int>(arg_types_.size()),
                                    const_cast<Oid*>(arg_types_.data()), CURSOR_OPT_GENERIC_PLAN);
  if (p == nullptr) elog(ERROR, "npc_scale: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
  SPI_keepplan(p);
  plan_ = p;
}

namespace {
// A row the last statement did not return (a game's trigger skipped it, a
// rule did instead) is an error, not a read of memory never filled.
void check_row(uint64_t row) {
  if (SPI_tuptable == nullptr || row >= SPI_processed) {
    throw std::logic_error("npc_scale: row " + std::to_string(row) + " of a result of " +
                           std::to_string(SPI_tuptable ? SPI_processed : 0) + " rows read");
  }
}
}  // namespace

std::optional<std::string> spi_text(uint64_t row, int col) {
  check_row(row);
  char* v = pg_call([&] { return SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col); });
  if (v == nullptr) return std::nullopt;
  std::string s(v);  // outside pg_call: no C++ object lives across a Postgres call there
  pg_call([&] { pfree(v); });
  return s;
}

std::optional<int64_t> spi_int(uint64_t row, int col) {
  check_row(row);
  return pg_call([&]() -> std::optional<int64_t> {
    bool isnull = false;
    Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
    if (isnull) return std::nullopt;
    switch (SPI_gettypeid(SPI_tuptable->tupdesc, col)) {
      case INT2OID: return DatumGetInt16(d);
      case INT4OID: return DatumGetInt32(d);
      case INT8OID: return DatumGetInt64(d);
      default: elog(ERROR, "npc_scale: column %d is not an integer", col);
    }
    return std::nullopt;
  });
}

std::optional<double> spi_float(uint64_t row, int col) {
  auto text = spi_text(row, col);
  if (!text) return std::nullopt;
  return std::stod(*text);
}

bool spi_bool(uint64_t row, int col) {
  check_row(row);
  return pg_call([&] {
    bool isnull = false;
    Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
    return !isnull && DatumGetBool(d);
  });
}

bool extension_present() {
  // Its queue table, looked up in the syscache: a scan of pg_extension by
  // name cost ~12 µs on every answer's write. The table is a member of the
  // extension (it goes with DROP EXTENSION) and is visible only once
  // CREATE EXTENSION has committed.
  return pg_call([] {
    Oid schema = get_namespace_oid("npc_scale", true);
    return OidIsValid(schema) && OidIsValid(get_relname_relid("decision_queue", schema));
  });
}

}  // namespace npc_scale

namespace npc_scale {

bool extension_ready() {
  bool ready = false;
  in_transaction("npc_scale: check extension", [&] { ready = extension_present(); });
  return ready;
}

}  // namespace npc_scale
