// npc_scale.request_decision(): the hot path of the game. One validated
// INSERT through a prepared plan, and a wake-up of the dispatcher registered
// for COMMIT. (Written in C++ rather than PL/pgSQL: it is called once per NPC
// decision, and each PL/pgSQL statement costs an executor round trip.)
#include <cmath>
#include <optional>
#include <string>

#include "core/generation.hpp"
#include "core/request_check.hpp"
#include "guard.hpp"
#include "handoff.hpp"
#include "gucs.hpp"
#include "pg_text.hpp"
#include "spi.hpp"
#include "wake.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
}

namespace {

// A deadline must land in the future, and within a year, as now() + deadline
// does on the calendar ('1 mon -30 days' is a day on 1 March and none at all
// under 30-day months). Far out of range (|30-day estimate| over two years),
// it is refused on the estimate: the calendar sum could overflow.
void check_deadline(FunctionCallInfo fcinfo, int arg) {
  using namespace npc_scale;
  const double estimate = interval_arg_seconds(fcinfo, arg);
  if (std::abs(estimate) > 2 * kMaxDeadlineSeconds) check_deadline_seconds(estimate);
  check_deadline_seconds(interval_arg_seconds_from_now(fcinfo, arg));
}

// A queued decision's attempt ends inside its lease: a longer timeout_ms
// would be cut short there, every attempt, and the decision fail as a
// timeout it never asked for. (generate() has no lease: it honours it.)
void check_timeout_within_lease(const npc_scale::GenerationParams& p) {
  using namespace npc_scale;
  if (!p.timeout_ms || *p.timeout_ms <= attempt_limit_ms()) return;
  throw Error(sqlstate::invalid_parameter_value,
              "params.timeout_ms " + std::to_string(*p.timeout_ms) + " is longer than a queued decision's attempt may take (" +
                  std::to_string(attempt_limit_ms()) + " ms: npc_scale.lease_timeout less 5 s)",
              {}, "Raise npc_scale.lease_timeout, or call generate(), which honours it.");
}

}  // namespace

NPC_SQL_FUNCTION(npc_scale_request_decision) {
  using namespace npc_scale;
  npc_scale::check_served_database("a decision queued here would never be sent");
  RequestArgs args;
  if (!PG_ARGISNULL(0)) args.npc_id = PG_GETARG_INT64(0);
  if (!PG_ARGISNULL(1)) args.decision_type = text_arg(PG_GETARG_DATUM(1));
  if (!PG_ARGISNULL(2)) args.prompt = text_arg(PG_GETARG_DATUM(2));
  if (!PG_ARGISNULL(3)) args.priority = PG_GETARG_INT32(3);
  check_request(args, guc_max_prompt_bytes);
  std::string params = PG_ARGISNULL(4) ? "{}" : jsonb_arg(PG_GETARG_DATUM(4));
  check_timeout_within_lease(parse_params(params));
  check_params_size(params.size(), guc_max_prompt_bytes);
  bool has_deadline = !PG_ARGISNULL(5);
  if (has_deadline) check_deadline(fcinfo, 5);

  static SavedPlan insert(
      "INSERT INTO npc_scale.decision_queue"
      " (npc_id, world_id, decision_type, prompt, params, priority, deadline)"
      // Every function and operator qualified: this runs as the extension's
      // owner (SECURITY DEFINER) under the caller's search_path.
      " VALUES ($1, $2, $3, $4, coalesce($5, '{}'), $6, pg_catalog.now() OPERATOR(pg_catalog.+) $7)"
      // The row as stored, not the call's arguments: a game's BEFORE INSERT
      // trigger may have rewritten it, and the hand-off sends what it reads.
      " RETURNING id, (pg_catalog.extract('epoch', deadline OPERATOR(pg_catalog.-) pg_catalog.now())"
      "               OPERATOR(pg_catalog.*) 1000000)::bigint,"
      "           npc_id, priority, decision_type, prompt, params::pg_catalog.text",
      {INT8OID, INT8OID, TEXTOID, TEXTOID, JSONBOID, INT2OID, INTERVALOID});
  Datum values[7] = {
      Int64GetDatum(*args.npc_id),
      PG_ARGISNULL(6) ? Datum(0) : PG_GETARG_DATUM(6),
      PG_GETARG_DATUM(1),
      PG_GETARG_DATUM(2),
      PG_ARGISNULL(4) ? Datum(0) : PG_GETARG_DATUM(4),  // the jsonb as given: no re-parse
      Int16GetDatum(static_cast<int16>(*args.priority)),
      has_deadline ? PG_GETARG_DATUM(5) : Datum(0),
  };
  char nulls[8] = "       ";
  if (PG_ARGISNULL(6)) nulls[1] = 'n';
  if (PG_ARGISNULL(4)) nulls[4] = 'n';
  if (!has_deadline) nulls[6] = 'n';

  HandoffEntry entry;
  bool inserted = false;
  // A game's AFTER INSERT trigger may UPDATE the row within the INSERT: what
  // RETURNING read is then not what will be committed.
  const uint64_t changes_before = handoff_changes();
  with_spi([&] {
    // No row: a game's BEFORE INSERT trigger skipped it (a dedupe, a throttle).
    if (insert.execute(std::vector<Datum>(values, values + 7), nulls) != 1) return;
    inserted = true;
    entry.id = spi_int(0, 1).value_or(0);
    if (auto left_us = spi_int(0, 2)) {
      entry.deadline_us = pg_call([] { return GetCurrentTransactionStartTimestamp(); }) + *left_us;
    }
    entry.npc_id = spi_int(0, 3).value_or(0);
    entry.priority = static_cast<int>(spi_int(0, 4).value_or(5));
    entry.decision_type = spi_text(0, 5).value_or("");
    entry.prompt = spi_text(0, 6).value_or("");
    entry.params = spi_text(0, 7).value_or("{}");
  });
  if (!inserted) PG_RETURN_NULL();
  const int64 id = entry.id;
  handoff_at_commit(std::move(entry), handoff_changes() != changes_before);
  wake_dispatcher_at_commit(/*handed_off=*/true);
  PG_RETURN_INT64(id);
}

// request_decisions()' checks, all before its INSERT (nothing half-inserted),
// by the same rules as request_decision(): the arrays' shape, then each
// element by position, then the arguments they share (checked even for an
// empty batch, so a bad call fails the same way whatever its size).
NPC_SQL_FUNCTION(npc_scale_check_batch) {
  using namespace npc_scale;
  npc_scale::check_served_database("a decision queued here would never be sent");
  if (PG_ARGISNULL(0) || PG_ARGISNULL(2)) {
    throw Error(sqlstate::null_value_not_allowed, "npc_ids and prompts must not be null");
  }
  struct Elements {
    int ndim = 0;
    int count = 0;
    Datum* values = nullptr;
    bool* nulls = nullptr;
  };
  auto elements = [&](int arg, Oid type, int16 len, bool byval, char align) {
    return pg_call([&] {
      ArrayType* a = PG_GETARG_ARRAYTYPE_P(arg);
      Elements e;
      e.ndim = ARR_NDIM(a);
      if (e.ndim <= 1) deconstruct_array(a, type, len, byval, align, &e.values, &e.nulls, &e.count);
      return e;
    });
  };
  Elements ids = elements(0, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
  Elements prompts = elements(2, TEXTOID, -1, false, TYPALIGN_INT);
  if (ids.ndim > 1 || prompts.ndim > 1) {
    throw Error("2202E", "npc_ids and prompts must be one-dimensional arrays, got " +
                             std::to_string(ids.ndim) + " and " + std::to_string(prompts.ndim) +
                             " dimensions");
  }
  if (ids.count != prompts.count) {
    throw Error("2202E", "npc_ids has " + std::to_string(ids.count) + " elements but prompts has " +
                             std::to_string(prompts.count));
  }
  // One call is one transaction of inserts: a bound keeps one caller from
  // holding the queue (and its WAL) with millions of rows at once.
  constexpr int kMaxBatch = 10000;
  if (ids.count > kMaxBatch) {
    throw Error("54000", "request_decisions() takes at most " + std::to_string(kMaxBatch) +
                             " decisions per call, got " + std::to_string(ids.count),
                {}, "Split the batch over several calls.");
  }
  RequestArgs args;
  if (!PG_ARGISNULL(1)) args.decision_type = text_arg(PG_GETARG_DATUM(1));
  if (!PG_ARGISNULL(3)) args.priority = PG_GETARG_INT32(3);
  for (int i = 0; i < ids.count; i++) {
    args.position = i + 1;
    args.npc_id.reset();
    args.prompt.reset();
    if (!ids.nulls[i]) args.npc_id = DatumGetInt64(ids.values[i]);
    if (!prompts.nulls[i]) args.prompt = text_arg(prompts.values[i]);
    check_request(args, guc_max_prompt_bytes);
  }
  if (ids.count == 0) {
    args.npc_id = 0;  // only the shared arguments are left to check
    args.prompt = "-";
    check_request(args, guc_max_prompt_bytes);
  }
  std::string params = PG_ARGISNULL(4) ? "{}" : jsonb_arg(PG_GETARG_DATUM(4));
  check_timeout_within_lease(parse_params(params));
  check_params_size(params.size(), guc_max_prompt_bytes);
  if (!PG_ARGISNULL(5)) check_deadline(fcinfo, 5);
  PG_RETURN_VOID();
}
