#include "generation.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include "error.hpp"

namespace npc_scale {

using nlohmann::json;

namespace {

constexpr int kDefaultMaxTokens = 64;
constexpr size_t kMaxChoices = 64;
constexpr size_t kValueShown = 80;        // bytes of an offending value quoted in a message
constexpr size_t kRawBodyShown = 200;     // bytes of a non-JSON error body kept
constexpr size_t kBodyMessageShown = 1000;
constexpr size_t kFinishReasonKept = 32;

// Sorted, so the hint reads well and stays stable.
constexpr const char* kParamKeys[] = {"cache",  "cache_ttl",   "choices",    "max_tokens",
                                      "seed",   "stop",        "system",     "temperature",
                                      "timeout_ms", "top_k",   "top_p"};

// Cuts `s` to at most `n` bytes without splitting a UTF-8 sequence: the text
// ends up in Postgres, which rejects invalid UTF-8.
std::string utf8_prefix(const std::string& s, size_t n) {
  if (s.size() <= n) return s;
  size_t end = n;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

// Text from an endpoint made safe for a text column: invalid UTF-8 bytes
// become '?', control characters (NUL included, which text cannot hold)
// become spaces.
std::string sanitize(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(c < 0x20 || c == 0x7F ? ' ' : static_cast<char>(c));
      ++i;
      continue;
    }
    size_t len = 0;  // 0: not a valid lead byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3;
    else if (c >= 0xF0 && c <= 0xF4) len = 4;
    bool valid = len != 0 && i + len <= s.size();
    for (size_t k = 1; valid && k < len; ++k) {
      valid = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    }
    if (valid && len >= 3) {
      // Reject overlongs, surrogates and code points above U+10FFFF.
      unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
      if (c == 0xE0 && c1 < 0xA0) valid = false;
      if (c == 0xED && c1 >= 0xA0) valid = false;
      if (c == 0xF0 && c1 < 0x90) valid = false;
      if (c == 0xF4 && c1 >= 0x90) valid = false;
    }
    if (valid) {
      out.append(s, i, len);
      i += len;
    } else {
      out.push_back('?');
      ++i;
    }
  }
  return out;
}

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return {};
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// A value as JSON text, shortened, for "got ..." in a message.
std::string shown(const json& v) {
  std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() <= kValueShown) return text;
  return utf8_prefix(text, kValueShown) + "...";
}

// nlohmann's what() starts with "[json.exception.parse_error.101] ": noise
// for a user.
std::string short_parse_error(const std::exception& e) {
  std::string msg = e.what();
  if (!msg.empty() && msg[0] == '[') {
    size_t close = msg.find("] ");
    if (close != std::string::npos) msg.erase(0, close + 2);
  }
  return utf8_prefix(msg, 160);
}

// The top-level key whose value a parse stopped in (for its error message).
std::string key_at_parse_failure(const std::string& json_text) {
  std::string key;
  auto remember = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) key = parsed.get<std::string>();
    return true;
  };
  try {
    json partial = json::parse(json_text, remember);
  } catch (const json::exception&) {
  }
  return key.empty() ? std::string("?") : utf8_prefix(key, 64);
}

[[noreturn]] void bad(const std::string& message, const std::string& hint = {}) {
  throw Error(sqlstate::invalid_parameter_value, message, {}, hint);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string unknown_key_hint(const std::string& key) {
  std::string hint;
  size_t best = 3;  // only suggest near misses
  for (const char* k : kParamKeys) {
    size_t d = edit_distance(key, k);
    if (d < best) {
      best = d;
      hint = std::string("did you mean \"") + k + "\"? ";
    }
  }
  hint += "allowed keys:";
  bool first = true;
  for (const char* k : kParamKeys) {
    hint += first ? " " : ", ";
    hint += k;
    first = false;
  }
  return hint;
}

// An integer-valued JSON number in [lo, hi]. Floats with an integral value
// are accepted (jsonb may have turned 64 into 64.0); booleans are not numbers
// here, unlike in some JSON libraries.
int64_t read_int(const std::string& key, const json& v, int64_t lo, int64_t hi,
                 const char* range_text) {
  std::string name = "params." + key;
  auto out_of_range = [&]() -> int64_t {
    bad(name + " must be " + range_text + ", got " + shown(v));
  };
  int64_t x = 0;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return out_of_range();
    x = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else if (v.is_number_float()) {
    double d = v.get<double>();
    // [-2^63, 2^63) is exactly the doubles that convert to int64 safely.
    if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0)) return out_of_range();
    // Beyond 2^53 a double is not the number written (12345678901234567.5
    // reads as ...568): only integers written as such, which are read
    // exactly, may be that large.
    if (std::fabs(d) > 9007199254740992.0) {
      bad(name + " must be an integer written without a fraction or exponent when beyond 2^53, got " + shown(v));
    }
    if (d != std::floor(d)) bad(name + " must be an integer, got " + shown(v));
    x = static_cast<int64_t>(d);
  } else {
    bad(name + " must be an integer, got " + shown(v));
  }
  if (x < lo || x > hi) return out_of_range();
  return x;
}

double read_number(const std::string& key, const json& v) {
  if (!v.is_number()) bad("params." + key + " must be a number, got " + shown(v));
  return v.get<double>();
}

// An array of non-empty strings; an empty stop/choice string is never meant.
std::vector<std::string> read_strings(const std::string& key, const json& v) {
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& e = v[i];
    if (!e.is_string() || e.get_ref<const std::string&>().empty()) {
      bad("params." + key + "[" + std::to_string(i) + "] must be a non-empty string, got " +
          shown(e));
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

void parse_key(GenerationParams& p, const std::string& key, const json& v) {
  if (key == "max_tokens") {
    p.max_tokens = static_cast<int>(read_int(key, v, 1, 32768, "between 1 and 32768"));
  } else if (key == "temperature") {
    double t = read_number(key, v);
    if (t < 0 || t > 2) bad("params.temperature must be between 0 and 2, got " + shown(v));
    p.temperature = t;
  } else if (key == "top_p") {
    double t = read_number(key, v);
    if (!(t > 0 && t <= 1)) bad("params.top_p must be greater than 0 and at most 1, got " + shown(v));
    p.top_p = t;
  } else if (key == "top_k") {
    int64_t k = read_int(key, v, -1, std::numeric_limits<int32_t>::max(),
                         "-1 (no limit) or between 1 and 2147483647");
    if (k == 0) bad("params.top_k must be -1 (no limit) or between 1 and 2147483647, got 0");
    p.top_k = static_cast<int>(k);
  } else if (key == "seed") {
    p.seed = read_int(key, v, std::numeric_limits<int64_t>::min(),
                      std::numeric_limits<int64_t>::max(), "a 64-bit integer");
  } else if (key == "stop") {
    if (v.is_string()) {
      if (v.get_ref<const std::string&>().empty()) bad("params.stop must be a non-empty string, got \"\"");
      p.stop = {v.get<std::string>()};
    } else if (v.is_array()) {
      p.stop = read_strings(key, v);
    } else {
      bad("params.stop must be a string or an array of strings, got " + shown(v));
    }
  } else if (key == "choices") {
    if (!v.is_array() || v.empty()) {
      bad("params.choices must be a non-empty array of strings, got " + shown(v));
    }
    if (v.size() > kMaxChoices) {
      bad("params.choices must have at most " + std::to_string(kMaxChoices) + " entries, got " +
          std::to_string(v.size()));
    }
    p.choices = read_strings(key, v);
  } else if (key == "system") {
    if (!v.is_string()) bad("params.system must be a string, got " + shown(v));
    p.system = v.get<std::string>();
  } else if (key == "timeout_ms") {
    p.timeout_ms = static_cast<int>(read_int(key, v, 1, 600000, "between 1 and 600000"));
  } else if (key == "cache") {
    if (!v.is_boolean()) bad("params.cache must be true or false, got " + shown(v));
    p.cache = v.get<bool>();
  } else if (key == "cache_ttl") {
    p.cache_ttl_s = static_cast<int>(read_int(key, v, 1, 2592000, "between 1 and 2592000 (seconds)"));
  } else {
    bad("params key " + shown(json(key)) + " is not known", unknown_key_hint(key));
  }
}

// 64-bit mix from splitmix64: cheap, and adjacent inputs give unrelated outputs.
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

Api parse_api(const std::string& name) {
  if (name == "completions") return Api::completions;
  if (name == "chat") return Api::chat;
  bad("api " + shown(json(name)) + " is not known", "use \"completions\" or \"chat\"");
}

const char* api_name(Api api) { return api == Api::chat ? "chat" : "completions"; }

const char* api_path(Api api) {
  return api == Api::chat ? "/v1/chat/completions" : "/v1/completions";
}

bool GenerationParams::deterministic() const {
  return (temperature.has_value() && *temperature == 0.0) || seed.has_value();
}

GenerationParams parse_params(const std::string& json_text) {
  GenerationParams p;
  // No params at all (empty text) means defaults, like "{}".
  if (trim(json_text).empty()) return p;
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::out_of_range& e) {
    // Valid JSON (jsonb takes 1e400) with a number no double holds: name
    // the key it belongs to, found by parsing again up to the failure.
    std::string number = e.what();  // "... number overflow parsing '1000…'"
    const size_t open = number.find('\''), close = number.rfind('\'');
    number = open != std::string::npos && close > open ? number.substr(open + 1, close - open - 1) : "";
    const std::string shown = number.size() > 24 ? number.substr(0, 24) + "… (" +
                                                       std::to_string(number.size()) + " characters)"
                                                 : number;
    throw Error(sqlstate::numeric_value_out_of_range,
                "params." + key_at_parse_failure(json_text) + " is out of range: " + shown +
                    " does not fit a double");
  } catch (const json::exception& e) {
    throw Error(sqlstate::invalid_text_representation,
                "params is not valid JSON: " + short_parse_error(e));
  }
  // JSON null is not an object either: it would be stored as such.
  if (!doc.is_object()) bad(std::string("params must be a JSON object, got ") + doc.type_name());
  try {
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      if (it.value().is_null()) {
        // Still reject a misspelt key, even when its value is null.
        if (std::find_if(std::begin(kParamKeys), std::end(kParamKeys), [&](const char* k) {
              return it.key() == k;
            }) == std::end(kParamKeys)) {
          parse_key(p, it.key(), it.value());
        }
        continue;
      }
      parse_key(p, it.key(), it.value());
    }
  } catch (const json::exception& e) {
    // Not expected after the type checks above; never let it escape.
    bad(std::string("params could not be read: ") + short_parse_error(e));
  }
  // vLLM applies stop strings to a constrained answer too: one inside a
  // choice cuts it into text that is none of the choices.
  if (!p.stop.empty() && !p.choices.empty()) {
    bad("params.stop and params.choices cannot be combined",
        "a stop string would cut the chosen answer; choices end the answer by themselves");
  }
  return p;
}

std::string build_request_body(Api api, const std::string& model, const std::string& prompt,
                               const GenerationParams& params, int priority, bool send_priority) {
  if (priority < 0 || priority > 10) {
    bad("priority must be between 0 and 10, got " + std::to_string(priority));
  }
  try {
    json body = json::object();
    // Empty model: let the server use the one it serves rather than ask for "".
    if (!model.empty()) body["model"] = model;
    if (api == Api::chat) {
      json messages = json::array();
      if (params.system) messages.push_back({{"role", "system"}, {"content", *params.system}});
      messages.push_back({{"role", "user"}, {"content", prompt}});
      body["messages"] = std::move(messages);
    } else if (params.system) {
      // A completions endpoint has no roles: the system text leads the
      // prompt, as a chat template would put it first. So a decision with
      // a system prompt is served by any endpoint of a mixed fleet, never
      // failed (or silently stripped) by where the router sent it.
      body["prompt"] = *params.system + "\n\n" + prompt;
    } else {
      body["prompt"] = prompt;
    }
    body["max_tokens"] = params.max_tokens.value_or(kDefaultMaxTokens);
    if (params.temperature) body["temperature"] = *params.temperature;
    if (params.top_p) body["top_p"] = *params.top_p;
    if (params.top_k) body["top_k"] = *params.top_k;
    if (params.seed) body["seed"] = *params.seed;
    if (!params.stop.empty()) body["stop"] = params.stop;
    // vLLM >= 0.10's form; the older top-level guided_choice is deprecated,
    // and sending both risks a 400 for conflicting constraints.
    if (!params.choices.empty()) body["structured_outputs"] = {{"choice", params.choices}};
    // Identity mapping: our 0 (most urgent) .. 10 and vLLM's priority both
    // schedule lower values first. timeout_ms/cache/cache_ttl are ours and
    // never sent.
    if (send_priority) body["priority"] = priority;
    return body.dump();
  } catch (const json::type_error&) {
    // dump() refuses invalid UTF-8; say which input carried it.
    auto valid = [](const std::string& s) {
      try {
        (void)json(s).dump();
        return true;
      } catch (const json::exception&) {
        return false;
      }
    };
    const char* what = !valid(prompt) ? "prompt" : !valid(model) ? "model" : "params";
    bad(std::string("request ") + what + " is not valid UTF-8");
  } catch (const json::exception& e) {
    bad(std::string("could not build the request body: ") + short_parse_error(e));
  }
}

Completion parse_response(Api api, const std::string& body) {
  Completion c;
  try {
    json doc;
    try {
      doc = json::parse(body);
    } catch (const json::parse_error& e) {
      c.error = "malformed JSON from endpoint: " + short_parse_error(e);
      return c;
    }
    if (!doc.is_object()) {
      c.error = std::string("malformed JSON from endpoint: expected an object, got ") +
                doc.type_name();
      return c;
    }
    auto err = doc.find("error");
    if (err != doc.end() && !err->is_null()) {
      std::string msg;
      if (err->is_object() && err->contains("message") && (*err)["message"].is_string()) {
        msg = (*err)["message"].get<std::string>();
      } else if (err->is_string()) {
        msg = err->get<std::string>();
      } else {
        msg = shown(*err);
      }
      c.error = "endpoint error: " + utf8_prefix(sanitize(msg), kBodyMessageShown);
      return c;
    }
    auto choices = doc.find("choices");
    if (choices == doc.end() || !choices->is_array() || choices->empty()) {
      c.error = "endpoint answered without choices";
      return c;
    }
    const json& first = (*choices)[0];
    if (!first.is_object()) {
      c.error = "endpoint answered with a malformed choice: " + shown(first);
      return c;
    }
    if (api == Api::chat) {
      auto msg = first.find("message");
      if (msg == first.end() || !msg->is_object()) {
        c.error = "endpoint answered without choices[0].message";
        return c;
      }
      // null content happens (e.g. tool calls); it is an empty answer, not a fault.
      auto content = msg->find("content");
      if (content != msg->end() && !content->is_null()) {
        if (!content->is_string()) {
          c.error = "endpoint answered with a non-text choices[0].message.content: " +
                    shown(*content);
          return c;
        }
        c.text = content->get<std::string>();
      }
    } else {
      auto text = first.find("text");
      if (text == first.end() || !(text->is_string() || text->is_null())) {
        c.error = "endpoint answered without choices[0].text";
        return c;
      }
      if (text->is_string()) c.text = text->get<std::string>();
    }
    auto fr = first.find("finish_reason");
    // Stored with the decision: a word like "stop" or "length", so anything
    // longer is cut, and made safe for a text column.
    if (fr != first.end() && fr->is_string()) {
      c.finish_reason = utf8_prefix(sanitize(fr->get<std::string>()), kFinishReasonKept);
    }
    auto usage = doc.find("usage");
    if (usage != doc.end() && usage->is_object()) {
      // Counts are bookkeeping: a missing or odd one is 0, not a failure.
      auto count = [&](const char* key) {
        auto it = usage->find(key);
        if (it == usage->end() || !it->is_number_integer()) return 0;
        if (it->is_number_unsigned()) {
          return static_cast<int>(std::min<uint64_t>(it->get<uint64_t>(),
                                                     std::numeric_limits<int>::max()));
        }
        int64_t v = it->get<int64_t>();
        return static_cast<int>(std::clamp<int64_t>(v, 0, std::numeric_limits<int>::max()));
      };
      c.prompt_tokens = count("prompt_tokens");
      c.completion_tokens = count("completion_tokens");
    }
    c.ok = true;
    return c;
  } catch (const std::exception& e) {
    // Defensive: nothing above should throw after the type checks.
    Completion failed;
    failed.error = std::string("could not read the endpoint's answer: ") + short_parse_error(e);
    return failed;
  }
}

bool endpoint_misconfigured(long http_status) {
  return (http_status >= 300 && http_status < 400) || http_status == 401 || http_status == 403 ||
         http_status == 404;
}

void check_answer(Completion* c, const std::vector<std::string>& choices) {
  if (!c->ok) return;
  const bool cut = c->finish_reason == "length";
  auto useless = [&](std::string why, bool request_at_fault) {
    c->ok = false;
    c->error = std::move(why);
    c->request_at_fault = request_at_fault;
  };
  if (!choices.empty() && std::find(choices.begin(), choices.end(), c->text) == choices.end()) {
    const std::string text = "\"" + utf8_prefix(sanitize(c->text), kValueShown) + "\"";
    // Cut: the start of a choice. Anything else was never constrained.
    const bool cut_choice = cut && std::any_of(choices.begin(), choices.end(), [&](const std::string& ch) {
                              return ch.compare(0, c->text.size(), c->text) == 0;
                            });
    if (cut_choice) {
      useless("the answer " + text + " was cut at max_tokens before it completed one of "
              "params.choices: raise params.max_tokens", true);
    } else {
      useless("the endpoint answered " + text + ", which is not one of params.choices: does it "
              "support structured_outputs (vLLM 0.10.2 or later)?", false);
    }
  } else if (c->text.empty() && cut) {
    useless("the answer was empty, cut at max_tokens (a reasoning model may spend them "
            "thinking): raise params.max_tokens", true);
  }
  // vLLM ends a request it aborted (e.g. paused generation) or failed inside
  // the engine with a 200 and what it had so far: not an answer to keep.
  if (c->ok && (c->finish_reason == "abort" || c->finish_reason == "error")) {
    useless("the endpoint gave up on the answer (finish_reason \"" + c->finish_reason + "\")", false);
  }
}

Outcome classify(bool transport_ok, long http_status, bool body_ok) {
  if (!transport_ok) return Outcome::transient;
  if (http_status >= 200 && http_status <= 299) {
    // A 200 with a body we cannot read is a flaky server, not a bad request.
    return body_ok ? Outcome::success : Outcome::transient;
  }
  if (http_status == 408 || http_status == 429) return Outcome::transient;
  if (endpoint_misconfigured(http_status)) return Outcome::transient;
  if (http_status >= 500 && http_status <= 599) return Outcome::transient;
  return Outcome::permanent;
}

std::string error_message_from_body(long http_status, const std::string& body) {
  std::string head = "HTTP " + std::to_string(http_status);
  try {
    json doc = json::parse(body, nullptr, false);
    if (doc.is_object()) {
      const json* msg = nullptr;
      auto err = doc.find("error");
      if (err != doc.end()) {
        if (err->is_object() && err->contains("message")) msg = &(*err)["message"];
        else if (err->is_string()) msg = &*err;
      }
      if (!msg && doc.contains("message")) msg = &doc["message"];
      // FastAPI's own errors (e.g. an unknown route) use "detail".
      if (!msg && doc.contains("detail") && doc["detail"].is_string()) msg = &doc["detail"];
      if (msg && msg->is_string() && !trim(msg->get<std::string>()).empty()) {
        return head + ": " +
               utf8_prefix(sanitize(trim(msg->get<std::string>())), kBodyMessageShown);
      }
    }
  } catch (const std::exception&) {
    // Fall through to the raw body.
  }
  std::string raw = trim(utf8_prefix(trim(body), kRawBodyShown));
  if (raw.empty()) return head;
  return head + ": " + sanitize(raw);
}

bool model_is_served(const std::string& models_body, const std::string& model) {
  const nlohmann::json list = nlohmann::json::parse(models_body, nullptr, false);
  if (list.is_discarded() || !list.is_object()) return false;
  auto data = list.find("data");
  if (data == list.end() || !data->is_array()) return false;
  for (const auto& m : *data) {
    if (m.is_object() && m.contains("id") && m["id"].is_string() && m["id"].get<std::string>() == model) return true;
  }
  return false;
}

int64_t retry_delay_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t jitter_seed) {
  if (attempt <= 1) return 0;
  int64_t cap = std::max<int64_t>(cap_ms, 0);
  int64_t base = std::max<int64_t>(base_ms, 0);
  // base * 2^(attempt-2), saturating at the cap without overflowing.
  int exponent = attempt - 2;
  int64_t delay;
  if (base == 0) {
    delay = 0;
  } else if (exponent >= 63 || base > (cap >> exponent)) {
    delay = cap;
  } else {
    delay = base << exponent;
  }
  // Jitter factor in [0.5, 1): delay/2 + (delay - delay/2) * r / 2^32, done in
  // integers split at 32 bits so even INT64_MAX cannot overflow.
  if (delay > 0) {
    uint64_t r = splitmix64(jitter_seed ^ splitmix64(static_cast<uint64_t>(attempt))) >> 32;
    uint64_t d = static_cast<uint64_t>(delay);
    uint64_t half = d - d / 2;
    uint64_t extra = (half >> 32) * r + (((half & 0xFFFFFFFFULL) * r) >> 32);
    delay = static_cast<int64_t>(d / 2 + extra);
    if (delay < 1) delay = 1;
  }
  return delay;
}

}  // namespace npc_scale
