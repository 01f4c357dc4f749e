#include "error.hpp"

#include <cstdio>
#include <cstring>
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

void copy_text_clipped(char* dst, size_t size, const char* src) noexcept {
  if (size == 0) return;
  size_t len = 0;
  while (len < size - 1 && src[len] != '\0') len++;
  if (src[len] != '\0') {
    // Cut: back over continuation bytes (10xxxxxx) to the lead byte of the
    // character that did not fit, and drop it.
    while (len > 0 && (static_cast<unsigned char>(src[len]) & 0xC0) == 0x80) len--;
  }
  memcpy(dst, src, len);
  dst[len] = '\0';
}

}  // namespace npc_scale
