#include "request_check.hpp"

#include "error.hpp"

namespace npc_scale {

namespace {
bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }
}  // namespace

void check_request(const RequestArgs& a, int max_prompt_bytes) {
  if (!a.npc_id) throw Error(sqlstate::null_value_not_allowed, "npc_id must not be null");
  const std::string npc = std::to_string(*a.npc_id);
  if (!a.decision_type || blank(*a.decision_type)) {
    throw Error(sqlstate::invalid_parameter_value,
                "decision_type must not be null or empty (got " +
                    (a.decision_type ? "'" + *a.decision_type + "'" : std::string("NULL")) + ")");
  }
  if (!a.prompt || a.prompt->empty()) {
    throw Error(sqlstate::invalid_parameter_value,
                "prompt for npc " + npc + " must not be null or empty");
  }
  if (a.prompt->size() > static_cast<size_t>(max_prompt_bytes)) {
    throw Error("54000", "prompt for npc " + npc + " is " + std::to_string(a.prompt->size()) +
                             " bytes, more than npc_scale.max_prompt_bytes (" +
                             std::to_string(max_prompt_bytes) + ")");
  }
  if (!a.priority || *a.priority < 0 || *a.priority > 10) {
    throw Error(sqlstate::numeric_value_out_of_range,
                "priority " + (a.priority ? std::to_string(*a.priority) : std::string("NULL")) +
                    " is out of range",
                {}, "Use 0 (most urgent) to 10.");
  }
}

}  // namespace npc_scale
