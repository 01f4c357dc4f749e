#include "error.hpp"

#include <cstdio>
#include <utility>

namespace npc_scale {

bool is_valid_sqlstate(const std::string& code) {
  if (code.size() != 5) return false;
  for (char c : code) {
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

Error::Error(std::string sqlstate, const std::string& message, std::string detail,
             std::string hint)
    : std::runtime_error(message),
      // A malformed code would become garbage in Postgres: degrade to XX000.
      sqlstate_(is_valid_sqlstate(sqlstate) ? std::move(sqlstate) : sqlstate::internal_error),
      detail_(std::move(detail)),
      hint_(std::move(hint)) {}

std::string seconds_text(double secs) {
  char shown[64];
  snprintf(shown, sizeof(shown), "%g", secs);
  return shown;
}

}  // namespace npc_scale
