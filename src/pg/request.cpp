// npc_scale.request_decision(): the hot path of the game. One validated
// INSERT through a prepared plan, and a wake-up of the dispatcher registered
// for COMMIT. (Written in C++ rather than PL/pgSQL: it is called once per NPC
// decision, and each PL/pgSQL statement costs an executor round trip.)
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
#include "utils/timestamp.h"
}

NPC_SQL_FUNCTION(npc_scale_request_decision) {
  using namespace npc_scale;
  RequestArgs args;
  if (!PG_ARGISNULL(0)) args.npc_id = PG_GETARG_INT64(0);
  if (!PG_ARGISNULL(1)) args.decision_type = text_arg(PG_GETARG_DATUM(1));
  if (!PG_ARGISNULL(2)) args.prompt = text_arg(PG_GETARG_DATUM(2));
  if (!PG_ARGISNULL(3)) args.priority = PG_GETARG_INT32(3);
  check_request(args, guc_max_prompt_bytes);
  std::string params = PG_ARGISNULL(4) ? "{}" : jsonb_arg(PG_GETARG_DATUM(4));
  parse_params(params);
  bool has_deadline = !PG_ARGISNULL(5);
  if (has_deadline) {
    double secs = interval_arg_seconds(fcinfo, 5);
    if (secs <= 0) {
      throw Error(sqlstate::invalid_parameter_value,
                  "deadline of " + seconds_text(secs) + " s must be a positive interval");
    }
  }

  static SavedPlan insert(
      "INSERT INTO npc_scale.decision_queue"
      " (npc_id, world_id, decision_type, prompt, params, priority, deadline)"
      " VALUES ($1, $2, $3, $4, coalesce($5, '{}'), $6, now() + $7)"
      " RETURNING id, (extract(epoch FROM deadline - now()) * 1000000)::bigint",
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
  with_spi([&] {
    insert.execute(std::vector<Datum>(values, values + 7), nulls);
    entry.id = spi_int(0, 1).value_or(0);
    if (auto left_us = spi_int(0, 2)) {
      entry.deadline_us = pg_call([] { return GetCurrentTransactionStartTimestamp(); }) + *left_us;
    }
  });
  const int64 id = entry.id;
  entry.npc_id = *args.npc_id;
  entry.priority = *args.priority;
  entry.decision_type = std::move(*args.decision_type);
  entry.prompt = std::move(*args.prompt);
  entry.params = std::move(params);
  handoff_at_commit(std::move(entry));
  wake_dispatcher_at_commit(/*handed_off=*/true);
  PG_RETURN_INT64(id);
}
