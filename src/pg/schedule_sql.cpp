// SQL helpers for the maintenance scheduler: pg_cron's schedule syntax,
// parsed and evaluated by src/core/cron (UTC, like pg_cron's default).
#include <string>

#include "core/cron.hpp"
#include "guard.hpp"
#include "gucs.hpp"
#include "pg_text.hpp"
#include "shared_state.hpp"
#include "worker.hpp"

extern "C" {
#include "access/xact.h"
#include "utils/timestamp.h"
}

namespace {

bool g_wake_registered = false;
bool g_wake_pending = false;

void at_end(XactEvent event, void*) noexcept {
  try {
    if ((event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) && g_wake_pending) {
      npc_scale::wake_worker(npc_scale::WorkerKind::maintenance);
    }
  } catch (...) {
  }
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
      event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) {
    g_wake_pending = false;
  }
}

}  // namespace

// _warn_unless_served(what): a job or partition set-up stored in a database
// the maintenance worker does not serve would never run, silently. Not an
// error: a studio may prepare a database before pointing npc_scale.database
// at it (or restore a dump into it).
NPC_SQL_FUNCTION(npc_scale_warn_unless_served) {
  const std::string what = npc_scale::text_arg(PG_GETARG_DATUM(0));
  const std::string here = npc_scale::unserved_database_name();
  if (here.empty()) PG_RETURN_VOID();
  const std::string served = npc_scale::guc_database ? npc_scale::guc_database : "";
  npc_scale::pg_call([&] {
    ereport(WARNING, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                      errmsg("no npc_scale maintenance worker serves database \"%s\" (npc_scale.database is \"%s\"): %s",
                             here.c_str(), served.c_str(), what.c_str()),
                      errhint("It runs once npc_scale.database names this database.")));
  });
  PG_RETURN_VOID();
}

// _cron_canonical(schedule) → canonical text; ERROR naming the schedule if invalid.
NPC_SQL_FUNCTION(npc_scale_cron_canonical) {
  std::string text = npc_scale::text_arg(PG_GETARG_DATUM(0));
  return npc_scale::text_datum(npc_scale::describe(npc_scale::parse_cron(text)));
}

// _cron_next(schedule, after) → the next run strictly after `after`.
NPC_SQL_FUNCTION(npc_scale_cron_next) {
  std::string text = npc_scale::text_arg(PG_GETARG_DATUM(0));
  TimestampTz after = PG_GETARG_TIMESTAMPTZ(1);
  // TimestampTz counts microseconds from 2000-01-01; cron works in Unix seconds.
  constexpr int64_t kPgEpochOffsetS = 946684800;
  int64_t after_s = after / USECS_PER_SEC + kPgEpochOffsetS;
  if (after < 0 && after % USECS_PER_SEC != 0) after_s -= 1;  // floor for times before 2000
  int64_t next_s = npc_scale::next_run(npc_scale::parse_cron(text), after_s);
  PG_RETURN_TIMESTAMPTZ(static_cast<TimestampTz>(next_s - kPgEpochOffsetS) * USECS_PER_SEC);
}

// Wakes the maintenance worker when the transaction commits (a new job).
NPC_SQL_FUNCTION(npc_scale_wake_maintenance_at_commit) {
  (void)fcinfo;
  if (!g_wake_registered) {
    npc_scale::pg_call([] { RegisterXactCallback(at_end, nullptr); });
    g_wake_registered = true;
  }
  g_wake_pending = true;
  PG_RETURN_VOID();
}
