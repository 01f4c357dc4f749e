// What one finished HTTP attempt means for a decision: done with an answer,
// another attempt after a back-off, or failed with a reason; and the row the
// dispatcher writes back for it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "generation.hpp"
#include "http_client.hpp"

namespace npc_scale {

struct RetryPolicy {
  int max_attempts = 3;
  int64_t base_delay_ms = 200;
  int64_t max_delay_ms = 10000;
};

struct AttemptOutcome {
  enum class Kind { done, retry, failed };
  Kind kind = Kind::failed;
  std::string response;  // when done
  // When done: why the server stopped, e.g. "stop", or "length" (cut at
  // max_tokens); empty when it did not say.
  std::string finish_reason;
  std::string error;     // when retry/failed: the last error, for the error column
  // Failed because the server refused the request itself as invalid (HTTP
  // 400, 413, 422: e.g. max_tokens beyond the model's context): the
  // caller's input, not a fault of the fleet.
  bool rejected = false;
  int64_t retry_delay_ms = 0;
};

// A finished HTTP attempt with its body read once. The dispatcher judges one
// reply several times (its endpoint's statistics, the decision, coalesced
// followers, again after a deferred claim); parsing the JSON is the costly part.
struct AttemptReply {
  HttpResult http;
  Completion completion;  // parsed when the status was 2xx
};
// choices: the request's params.choices (check_answer).
AttemptReply read_attempt(Api api, HttpResult result, const std::vector<std::string>& choices = {});

// `attempts` counts the attempt that just finished (1 for the first).
AttemptOutcome resolve_attempt(const AttemptReply& reply, int attempts, const RetryPolicy& policy,
                               uint64_t jitter_seed);
AttemptOutcome resolve_attempt(Api api, const HttpResult& result, int attempts,
                               const RetryPolicy& policy, uint64_t jitter_seed);

// A request the server refused as invalid (400, 413, 422) may be refused for
// that server's configuration alone: a smaller max_model_len, no chat
// template, send_priority on a vLLM without priority scheduling. On its first
// attempt, when the fleet has another endpoint and the policy another
// attempt, it is asked there once (retried at once); refused again, it is
// the request's (failed, rejected).
AttemptOutcome ask_elsewhere_once(AttemptOutcome o, int attempts, const RetryPolicy& policy,
                                  bool another_endpoint);

// What a finished request says about the endpoint that served it, for its
// circuit breaker.
enum class EndpointVerdict {
  healthy,       // answered usefully
  failing,       // no reply, 5xx, an unusable 2xx, a misconfigured endpoint
  rate_limited,  // 429: back off for its Retry-After
  unavailable,   // 503 with a Retry-After (a maintenance window, a proxy): failing, for that long
  neutral,       // the request's own fault (other 4xx, or its own short timeout)
};
struct RequestTimes {
  long own_timeout_ms = 0;    // the time the request was given
  long fleet_timeout_ms = 0;  // npc_scale.request_timeout
  // How long the endpoint has sent no HTTP reply to any request.
  int64_t endpoint_silent_ms = 0;
};
// usable: the reply answered the request (or was cut at its own max_tokens).
// A timeout tells against the endpoint only when the request had the fleet's
// whole timeout, or when the endpoint has answered nothing for that long: a
// request given less (its params.timeout_ms, or cut to its deadline) that a
// busy GPU could not meet is its own, else any caller could open every
// breaker with {"timeout_ms": 1}, and deadlines cut short under load would
// shut a busy fleet down.
EndpointVerdict judge_endpoint(const HttpResult& r, bool usable, const RequestTimes& times);

// One row for the result write. status: done | failed | queued (retry) | expired.
struct DecisionResult {
  int64_t id = 0;
  int attempts = 0;  // fencing token: only the claim that made this attempt may write
  std::string status;
  std::string response;
  std::string error;
  std::optional<int> gpu_id;  // the endpoint that answered, if one did (any int is a gpu_id)
  int64_t retry_ms = 0;
  std::string cache_layer;  // l1 | l2 | l3 when the cache answered
  // A handed-off decision answered before it was claimed: its row is still
  // queued, and this write is its claim as well (attempt 1).
  bool from_queued = false;
  int64_t elapsed_ms = 0;  // from_queued: how long ago the request was sent
  // Claimed but handed back unsent (no slot it may use): the claim's
  // attempt is not counted.
  bool release = false;
  std::string finish_reason;  // done by a server: the server's (empty: NULL)
};

}  // namespace npc_scale
