#include "request_check.hpp"

#include <string_view>

#include "error.hpp"

namespace npc_scale {

namespace {
// Blank = only Unicode White_Space (UTF-8), so a prompt of no-break or
// ideographic spaces, which a model sees as nothing, is refused too.
bool blank(const std::string& s) {
  static constexpr std::string_view kAscii = " \t\r\n\v\f";
  static constexpr std::string_view kWide[] = {
      "\u0085", "\u00A0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006",
      "\u2007", "\u2008", "\u2009", "\u200A", "\u2028", "\u2029", "\u202F", "\u205F", "\u3000"};
  std::string_view rest(s);
  while (!rest.empty()) {
    size_t n = kAscii.find(rest.front()) != std::string_view::npos ? 1 : 0;
    for (std::string_view w : kWide) {
      if (rest.substr(0, w.size()) == w) n = w.size();
    }
    if (n == 0) return false;
    rest.remove_prefix(n);
  }
  return true;
}

// A value in a message: quoted, and cut short when long (at a character
// boundary: half a UTF-8 character would make the message itself invalid).
std::string quoted(const std::string& s) {
  size_t cut = 40;
  if (s.size() <= cut) return "'" + s + "'";
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) cut--;
  return "'" + s.substr(0, cut) + "…'";
}
}  // namespace

void check_request(const RequestArgs& a, int max_prompt_bytes) {
  if (!a.npc_id) {
    throw Error(sqlstate::null_value_not_allowed,
                a.position ? "npc_ids[" + std::to_string(*a.position) + "] must not be null"
                           : std::string("npc_id must not be null"));
  }
  const std::string npc = std::to_string(*a.npc_id);
  // In a batch the element's place too: the same NPC may come twice.
  const std::string prompt_label = a.position
                                       ? "prompts[" + std::to_string(*a.position) + "] (npc " + npc + ")"
                                       : "prompt for npc " + npc;
  if (!a.decision_type) throw Error(sqlstate::null_value_not_allowed, "decision_type must not be null");
  if (blank(*a.decision_type)) {
    throw Error(sqlstate::invalid_parameter_value,
                "decision_type must not be empty or blank (got '" + *a.decision_type + "')");
  }
  if (a.decision_type->size() > kMaxDecisionTypeBytes) {
    throw Error(sqlstate::string_data_right_truncation,
                "decision_type " + quoted(*a.decision_type) + " is " +
                    std::to_string(a.decision_type->size()) + " bytes, more than " +
                    std::to_string(kMaxDecisionTypeBytes),
                {}, "Use a short tag such as 'build' or 'attack'; the prompt carries the text.");
  }
  if (!a.prompt) throw Error(sqlstate::null_value_not_allowed, prompt_label + " must not be null");
  if (blank(*a.prompt)) {
    throw Error(sqlstate::invalid_parameter_value, prompt_label + " must not be empty or blank");
  }
  if (a.prompt->size() > static_cast<size_t>(max_prompt_bytes)) {
    throw Error("54000", prompt_label + " is " + std::to_string(a.prompt->size()) +
                             " bytes, more than npc_scale.max_prompt_bytes (" +
                             std::to_string(max_prompt_bytes) + ")");
  }
  if (!a.priority) {
    throw Error(sqlstate::null_value_not_allowed, "priority must not be null", {},
                "Use 0 (most urgent) to 10; 5 is the default.");
  }
  if (*a.priority < 0 || *a.priority > 10) {
    throw Error(sqlstate::numeric_value_out_of_range,
                "priority " + std::to_string(*a.priority) + " is out of range", {},
                "Use 0 (most urgent) to 10.");
  }
}

void check_generate_prompt(const std::string& prompt, int max_prompt_bytes) {
  if (blank(prompt)) throw Error(sqlstate::invalid_parameter_value, "prompt must not be empty or blank");
  if (prompt.size() > static_cast<size_t>(max_prompt_bytes)) {
    throw Error("54000", "prompt is " + std::to_string(prompt.size()) +
                             " bytes, more than npc_scale.max_prompt_bytes (" +
                             std::to_string(max_prompt_bytes) + ")");
  }
}

void check_params_size(size_t bytes, int max_prompt_bytes) {
  if (bytes > static_cast<size_t>(max_prompt_bytes)) {
    throw Error("54000", "params are " + std::to_string(bytes) +
                             " bytes, more than npc_scale.max_prompt_bytes (" +
                             std::to_string(max_prompt_bytes) + ")");
  }
}

void check_deadline_seconds(double secs) {
  if (!(secs > 0)) {
    throw Error(sqlstate::invalid_parameter_value,
                "deadline of " + seconds_text(secs) + " s must be a positive interval");
  }
  if (secs > kMaxDeadlineSeconds) {
    throw Error(sqlstate::invalid_parameter_value,
                "deadline of " + seconds_text(secs) + " s is more than a year", {},
                "Leave deadline null for a decision that may wait indefinitely.");
  }
}

void check_await_timeout_seconds(double secs) {
  if (!(secs >= 0)) {
    throw Error(sqlstate::invalid_parameter_value,
                "timeout " + seconds_text(secs) + " s must not be negative");
  }
  if (secs > kMaxAwaitSeconds) {
    throw Error(sqlstate::invalid_parameter_value,
                "timeout " + seconds_text(secs) + " s is more than a day", {},
                "Call await_decision() again, or LISTEN npc_scale_decisions for its id.");
  }
}

}  // namespace npc_scale
