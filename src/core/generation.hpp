// Generation requests and answers in vLLM's OpenAI-compatible API, without
// Postgres: validating a decision's `params`, shaping the HTTP body for
// /v1/completions or /v1/chat/completions, reading the answer, and saying
// whether a failure is worth another attempt.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace npc_scale {

enum class Api { completions, chat };

// "completions" | "chat"; throws Error(22023) naming the value otherwise.
Api parse_api(const std::string& name);
const char* api_name(Api api);
// The path appended to an endpoint's base URL, e.g. "/v1/completions".
const char* api_path(Api api);

// Generation settings a decision may carry in `params` (jsonb). Unknown keys
// are an error, never ignored: a typo like "max_token" must not silently
// produce 16-token answers.
struct GenerationParams {
  std::optional<int> max_tokens;        // 1 .. 32768
  std::optional<double> temperature;    // 0 .. 2
  std::optional<double> top_p;          // (0, 1]
  std::optional<int> top_k;             // -1 or >= 1
  std::optional<int64_t> seed;
  std::vector<std::string> stop;        // "stop": string or array of strings
  std::vector<std::string> choices;     // constrained output: answer is one of them
  std::optional<std::string> system;    // chat: a system message before the prompt
  std::optional<int> timeout_ms;        // per-request timeout, 1 .. 600000
  std::optional<bool> cache;            // false: skip the cache (issue: cache)
  std::optional<int> cache_ttl_s;       // cache even if not deterministic, for this long

  // Deterministic output for the same prompt: temperature 0 or a seed.
  bool deterministic() const;
};

// Parses `params` (JSON text of an object). Throws npc_scale::Error with
// SQLSTATE 22023 naming the key/value for: not an object, unknown key, wrong
// type, out-of-range value; 22P02 for text that is not JSON.
GenerationParams parse_params(const std::string& json_text);

// The JSON body for one request. `priority` (our 0..10) is passed through
// only when `send_priority` (vLLM started with --scheduling-policy priority).
std::string build_request_body(Api api, const std::string& model, const std::string& prompt,
                               const GenerationParams& params, int priority = 5,
                               bool send_priority = false);

// What an endpoint answered.
struct Completion {
  bool ok = false;
  std::string text;            // choices[0].text or choices[0].message.content
  std::string finish_reason;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  std::string error;           // when !ok: why, fit for the decision's error column
  // !ok because of the request itself (its max_tokens too small for an
  // answer): final, and no fault of the endpoint.
  bool request_at_fault = false;
};

// Reads a 200 response body. Malformed JSON or a missing choice → !ok with a
// reason (never throws).
Completion parse_response(Api api, const std::string& body);

// Turns a readable answer that is of no use into !ok, with the reason: with
// params.choices, a text that is none of them (a server that ignores
// structured_outputs, as vLLM before 0.10.2 does: retried, perhaps
// elsewhere), or a choice cut at max_tokens; an empty text cut at max_tokens
// (a reasoning model that spent them thinking). The last two are the
// request's own (request_at_fault).
void check_answer(Completion* c, const std::vector<std::string>& choices);

// How a finished HTTP exchange is classified.
enum class Outcome {
  success,
  transient,  // connect failure, timeout, 5xx, 429, 3xx/401/403/404, malformed body: try again
  permanent,  // other 4xx: the request itself is wrong; retrying cannot help
};

// 401, 403, 404, and a redirect (never followed: the api_key must not go
// where the row does not say): the endpoint's configuration is wrong
// (api_key, model, base URL, http:// for an https:// server), not the request. One misconfigured endpoint must not fail its share
// of all traffic: such a reply counts against the endpoint (its breaker) and
// the request is tried again elsewhere.
bool endpoint_misconfigured(long http_status);

// `transport_ok` false means no HTTP status was received (connect error,
// timeout, dropped connection).
Outcome classify(bool transport_ok, long http_status, bool body_ok);

// For an HTTP error body (vLLM's {"error":{"message":...}} or the older
// {"message":...}), a short message; falls back to a prefix of the raw body.
std::string error_message_from_body(long http_status, const std::string& body);

// Whether an OpenAI-style model list (GET /v1/models: {"data": [{"id":
// ...}, ...]}) names `model`. False for anything else, never throws.
bool model_is_served(const std::string& models_body, const std::string& model);

// Delay before attempt number `attempt` (1-based: the delay after the first
// failure is for attempt 2): exponential from base_ms, capped, with
// deterministic jitter from `jitter_seed` (so tests can assert it). A
// Retry-After header is not the request's: it keeps the endpoint that sent
// it closed (its circuit breaker) while the retry goes elsewhere.
int64_t retry_delay_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t jitter_seed);

}  // namespace npc_scale
