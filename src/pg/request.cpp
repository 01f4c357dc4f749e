// npc_scale.request_decision(): the hot path of the game. One validated
// INSERT through a prepared plan, and a wake-up of the dispatcher registered
// for COMMIT. (Written in C++ rather than PL/pgSQL: it is called once per NPC
// decision, and each PL/pgSQL statement costs an executor round trip.)
#include <optional>
#include <string>

#include "core/generation.hpp"
#include "core/request_check.hpp"
#include "guard.hpp"
#include "gucs.hpp"
#include "pg_text.hpp"
#include "spi.hpp"
#include "wake.hpp"

extern "C" {
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
      " VALUES ($1, $2, $3, $4, $5::jsonb, $6, now() + $7) RETURNING id",
      {INT8OID, INT8OID, TEXTOID, TEXTOID, TEXTOID, INT2OID, INTERVALOID});
  Datum values[7] = {
      Int64GetDatum(*args.npc_id),
      PG_ARGISNULL(6) ? Datum(0) : PG_GETARG_DATUM(6),
      PG_GETARG_DATUM(1),
      PG_GETARG_DATUM(2),
      text_datum(params),
      Int16GetDatum(static_cast<int16>(*args.priority)),
      has_deadline ? PG_GETARG_DATUM(5) : Datum(0),
  };
  char nulls[8] = "       ";
  if (PG_ARGISNULL(6)) nulls[1] = 'n';
  if (!has_deadline) nulls[6] = 'n';

  int64 id = 0;
  with_spi([&] {
    insert.execute(std::vector<Datum>(values, values + 7), nulls);
    id = spi_int(0, 1).value_or(0);
  });
  wake_dispatcher_at_commit();
  PG_RETURN_INT64(id);
}
