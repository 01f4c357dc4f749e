#include "guard.hpp"

namespace npc_scale::bridge_detail {

void capture(PendingError& out, int sqlerrcode, const char* message, const char* detail,
             const char* hint) noexcept {
  out.sqlerrcode = sqlerrcode;
  copy_text_clipped(out.message, sizeof(out.message), message ? message : "");
  copy_text_clipped(out.detail, sizeof(out.detail), detail ? detail : "");
  copy_text_clipped(out.hint, sizeof(out.hint), hint ? hint : "");
}

int sqlstate_to_code(const std::string& s) noexcept {
  if (!is_valid_sqlstate(s)) return ERRCODE_INTERNAL_ERROR;
  return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

void raise(const PendingError& pending) {
  ereport(ERROR, (errcode(pending.sqlerrcode), errmsg_internal("%s", pending.message),
                  pending.detail[0] ? errdetail_internal("%s", pending.detail) : 0,
                  pending.hint[0] ? errhint("%s", pending.hint) : 0));
  pg_unreachable();
}

}  // namespace npc_scale::bridge_detail

namespace npc_scale {

bool is_row_error(const PgError& e) {
  if (e.sqlerrcode() == ERRCODE_UNIQUE_VIOLATION || e.sqlerrcode() == ERRCODE_EXCLUSION_VIOLATION) return false;
  switch (ERRCODE_TO_CATEGORY(e.sqlerrcode())) {
    case ERRCODE_DATA_EXCEPTION:
    case ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION:
    case ERRCODE_TRIGGERED_ACTION_EXCEPTION:
    case ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION:
    case ERRCODE_EXTERNAL_ROUTINE_EXCEPTION:
    case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION:
    case ERRCODE_PLPGSQL_ERROR:
      return true;
    default:
      return false;
  }
}

}  // namespace npc_scale
