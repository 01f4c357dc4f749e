// Self-test entry points for the C++/Postgres bridge (guard.hpp), used by the
// tests: they prove that a C++ exception becomes a clean ERROR with its
// SQLSTATE, and that a Postgres ERROR inside guarded C++ unwinds C++ frames
// (destructors run) before it reaches Postgres. Superuser-only in SQL.
#include <stdexcept>
#include <string>

#include "guard.hpp"

extern "C" {
#include "utils/builtins.h"
}

namespace {

// Counts destructor runs in this backend; read by _bridge_destructor_count().
int64 g_destructor_runs = 0;

struct CountsDestruction {
  ~CountsDestruction() { g_destructor_runs++; }
};

void divide_by_zero_in_postgres() {
  CountsDestruction owner;  // a C++ frame owning something, below the error
  npc_scale::pg_call([] { return DirectFunctionCall2(int4div, Int32GetDatum(1), Int32GetDatum(0)); });
}

}  // namespace

NPC_SQL_FUNCTION(npc_scale_bridge_selftest) {
  std::string mode = npc_scale::pg_call([&] { return text_to_cstring(PG_GETARG_TEXT_PP(0)); });
  CountsDestruction owner;
  if (mode == "npc_error") {
    throw npc_scale::Error(npc_scale::sqlstate::invalid_parameter_value,
                           "bridge self-test: npc_scale::Error thrown in C++",
                           "thrown on purpose", "this is only a test");
  }
  if (mode == "std_error") throw std::runtime_error("bridge self-test: std::runtime_error");
  if (mode == "pg_error") divide_by_zero_in_postgres();
  if (mode == "pg_error_caught") {
    try {
      divide_by_zero_in_postgres();
    } catch (const npc_scale::PgError& e) {
      // Going on after a caught ERROR is sound here only because int4div
      // changed nothing; anything else must rethrow it or roll back.
      std::string seen = std::string("caught ") + unpack_sql_state(e.sqlerrcode()) + ": " + e.what();
      return npc_scale::pg_call([&] { return CStringGetTextDatum(seen.c_str()); });
    }
  }
  if (mode == "pg_error_held") {
    // Caught inside HOLD_INTERRUPTS() (as in a commit callback): the ERROR
    // zeroed the holdoff count before it jumped; the bridge puts it back.
    const uint32 before = InterruptHoldoffCount;
    HOLD_INTERRUPTS();
    std::string seen;
    try {
      divide_by_zero_in_postgres();
    } catch (const npc_scale::PgError& e) {
      seen = std::string("caught ") + unpack_sql_state(e.sqlerrcode());
    }
    const bool held = InterruptHoldoffCount == before + 1;
    if (InterruptHoldoffCount > 0) RESUME_INTERRUPTS();  // never wrap it around
    seen += held ? ", interrupts still held" : ", interrupts no longer held";
    return npc_scale::pg_call([&] { return CStringGetTextDatum(seen.c_str()); });
  }
  if (mode == "ok") return npc_scale::pg_call([] { return CStringGetTextDatum("ok"); });
  throw npc_scale::Error(npc_scale::sqlstate::invalid_parameter_value,
                         "unknown bridge self-test mode \"" + mode + "\"", {},
                         "Use one of: ok, npc_error, std_error, pg_error, pg_error_caught, pg_error_held.");
}

NPC_SQL_FUNCTION(npc_scale_bridge_destructor_count) {
  (void)fcinfo;
  return Int64GetDatum(g_destructor_runs);
}
