// npc_scale::Error — the one exception type Postgres-free code throws for a
// user-facing failure. It carries a SQLSTATE as five characters so src/core
// never needs Postgres headers; the bridge (src/pg/guard.hpp) turns it into an
// ereport(ERROR) with that code once every C++ frame is gone.
#pragma once

#include <stdexcept>
#include <string>

namespace npc_scale {

// SQLSTATEs we raise, by name (see PostgreSQL's errcodes.txt).
namespace sqlstate {
inline constexpr const char* invalid_parameter_value = "22023";
inline constexpr const char* null_value_not_allowed = "22004";
inline constexpr const char* numeric_value_out_of_range = "22003";
inline constexpr const char* string_data_right_truncation = "22001";
inline constexpr const char* invalid_text_representation = "22P02";
inline constexpr const char* object_not_in_prerequisite_state = "55000";
inline constexpr const char* feature_not_supported = "0A000";
inline constexpr const char* query_canceled = "57014";
inline constexpr const char* connection_failure = "08006";
inline constexpr const char* internal_error = "XX000";
inline constexpr const char* out_of_memory = "53200";
inline constexpr const char* insufficient_privilege = "42501";
inline constexpr const char* undefined_table = "42P01";
}  // namespace sqlstate

// True when `code` is five characters of [0-9A-Z], the SQLSTATE alphabet.
bool is_valid_sqlstate(const std::string& code);

// A number of seconds as it reads best in a message ("-1", "0.5", "3.1e+13").
std::string seconds_text(double secs);

// Copies text into a fixed buffer of `size` bytes (NUL included), cut at a
// UTF-8 character boundary: half a character would make the message invalid
// in the server's encoding (the log, a client converting to its own).
void copy_text_clipped(char* dst, size_t size, const char* src) noexcept;

class Error : public std::runtime_error {
 public:
  Error(std::string sqlstate, const std::string& message, std::string detail = {},
        std::string hint = {});

  const std::string& sqlstate() const noexcept { return sqlstate_; }
  const std::string& detail() const noexcept { return detail_; }
  const std::string& hint() const noexcept { return hint_; }

 private:
  std::string sqlstate_;
  std::string detail_;
  std::string hint_;
};

}  // namespace npc_scale
