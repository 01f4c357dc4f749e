#include "prometheus_text.hpp"

#include <charconv>
#include <cmath>
#include <string_view>

namespace npc_scale {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == ':';
}

// Index just past the label set's closing '}', honouring quoted values (which
// may contain '}' and escaped quotes); npos when unterminated.
size_t skip_labels(std::string_view s, size_t open) {
  bool quoted = false;
  for (size_t i = open + 1; i < s.size(); i++) {
    char c = s[i];
    if (quoted) {
      if (c == '\\') i++;
      else if (c == '"') quoted = false;
    } else if (c == '"') {
      quoted = true;
    } else if (c == '}') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Parses "name{labels} value [timestamp]". False for anything malformed.
bool parse_sample(std::string_view line, std::string_view* name, double* value) {
  size_t i = 0;
  while (i < line.size() && is_name_char(line[i])) i++;
  if (i == 0) return false;
  *name = line.substr(0, i);
  if (i < line.size() && line[i] == '{') {
    i = skip_labels(line, i);
    if (i == std::string_view::npos) return false;
  }
  if (i >= line.size() || !is_space(line[i])) return false;
  std::string_view rest = trim(line.substr(i));
  std::string_view tok = rest.substr(0, rest.find_first_of(" \t"));
  std::string_view after = trim(rest.substr(tok.size()));
  // Optional timestamp: an integer, nothing else.
  if (!after.empty() && after.find_first_not_of("-0123456789") != std::string_view::npos) return false;
  if (!tok.empty() && tok.front() == '+') tok.remove_prefix(1);  // "+Inf"; from_chars rejects '+'
  if (tok.empty()) return false;
  double v = 0;
  auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);  // locale-independent
  if (ec != std::errc() || end != tok.data() + tok.size()) return false;
  *value = v;
  return true;
}

}  // namespace

VllmLoad parse_vllm_load(const std::string& text) {
  VllmLoad out;
  std::string_view all(text);
  size_t pos = 0;
  while (pos <= all.size()) {
    size_t nl = all.find('\n', pos);
    if (nl == std::string_view::npos) nl = all.size();
    std::string_view line = trim(all.substr(pos, nl - pos));
    pos = nl + 1;
    if (line.empty() || line.front() == '#') continue;
    std::string_view name;
    double v = 0;
    if (!parse_sample(line, &name, &v) || !std::isfinite(v)) continue;
    std::optional<double>* slot = nullptr;
    if (name == "vllm:num_requests_running") slot = &out.running;
    else if (name == "vllm:num_requests_waiting") slot = &out.waiting;
    if (!slot) continue;
    *slot = slot->value_or(0.0) + v;
  }
  return out;
}

}  // namespace npc_scale
