// Validation of a decision request's arguments (the SQL API's bad-input
// rules), without Postgres. Throws npc_scale::Error naming the bad value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace npc_scale {

struct RequestArgs {
  std::optional<int64_t> npc_id;
  std::optional<std::string> decision_type;
  std::optional<std::string> prompt;
  std::optional<int> priority;
  std::optional<int> position;  // 1-based, in request_decisions()' arrays
};

// A decision type is a short tag the game groups by ("build", "attack").
inline constexpr size_t kMaxDecisionTypeBytes = 64;
// Deadlines and await timeouts beyond these are mistakes, not waits: they
// would also overflow a timestamp long before "forever".
inline constexpr double kMaxDeadlineSeconds = 366.0 * 86400;
inline constexpr double kMaxAwaitSeconds = 86400;

void check_request(const RequestArgs& args, int max_prompt_bytes);
// generate()'s prompt (not null: the caller checked): not blank, within the limit.
void check_generate_prompt(const std::string& prompt, int max_prompt_bytes);
// The params' JSON text: stored with the row and sent with every attempt,
// so it is held to the prompt's limit (a long "system" is part of the prompt).
void check_params_size(size_t bytes, int max_prompt_bytes);
// A deadline interval, in seconds: positive, at most a year.
void check_deadline_seconds(double secs);
// await_decision()'s timeout, in seconds: 0 (look once) to a day.
void check_await_timeout_seconds(double secs);

}  // namespace npc_scale
