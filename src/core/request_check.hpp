// Validation of a decision request's arguments (the SQL API's bad-input
// rules), without Postgres. Throws npc_scale::Error naming the bad value.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace npc_scale {

struct RequestArgs {
  std::optional<int64_t> npc_id;
  std::optional<std::string> decision_type;
  std::optional<std::string> prompt;
  std::optional<int> priority;
};

void check_request(const RequestArgs& args, int max_prompt_bytes);

}  // namespace npc_scale
