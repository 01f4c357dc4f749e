// npc_scale._check_params(jsonb): validates a decision's generation params at
// request time, so bad input is an ERROR for the caller, not a failed
// decision later.
#include "core/generation.hpp"
#include "guard.hpp"
#include "pg_text.hpp"

NPC_SQL_FUNCTION(npc_scale_check_params) {
  npc_scale::parse_params(npc_scale::jsonb_arg(PG_GETARG_DATUM(0)));
  PG_RETURN_VOID();
}
