#include "attempt.hpp"

#include <algorithm>


namespace npc_scale {

namespace {
bool is_2xx(const HttpResult& r) { return r.transport_ok && r.status >= 200 && r.status < 300; }
}  // namespace

AttemptReply read_attempt(Api api, HttpResult result, const std::vector<std::string>& choices) {
  AttemptReply reply;
  if (is_2xx(result)) {
    reply.completion = parse_response(api, result.body);
    check_answer(&reply.completion, choices);
    // A text column cannot hold NUL; a model that emits one loses only that byte.
    std::string& text = reply.completion.text;
    text.erase(std::remove(text.begin(), text.end(), '\0'), text.end());
  }
  reply.http = std::move(result);
  return reply;
}

AttemptOutcome resolve_attempt(Api api, const HttpResult& result, int attempts,
                               const RetryPolicy& policy, uint64_t jitter_seed) {
  return resolve_attempt(read_attempt(api, result), attempts, policy, jitter_seed);
}

AttemptOutcome resolve_attempt(const AttemptReply& reply, int attempts, const RetryPolicy& policy,
                               uint64_t jitter_seed) {
  const HttpResult& result = reply.http;
  const Completion& completion = reply.completion;
  AttemptOutcome out;
  const bool body_ok = is_2xx(result) && completion.ok;
  if (is_2xx(result) && completion.request_at_fault) {
    // Asking again gets the same answer: the caller's to change.
    out.kind = AttemptOutcome::Kind::failed;
    out.error = completion.error;
    out.rejected = true;
    return out;
  }
  switch (classify(result.transport_ok, result.status, body_ok)) {
    case Outcome::success:
      out.kind = AttemptOutcome::Kind::done;
      out.response = completion.text;
      out.finish_reason = completion.finish_reason;
      return out;
    case Outcome::permanent:
      out.kind = AttemptOutcome::Kind::failed;
      out.error = error_message_from_body(result.status, result.body);
      out.rejected = result.transport_ok &&
                     (result.status == 400 || result.status == 413 || result.status == 422);
      return out;
    case Outcome::transient:
      break;
  }
  if (!result.transport_ok) {
    out.error = result.error.empty() ? "transport error" : result.error;
  } else if (result.status >= 200 && result.status < 300) {
    out.error = completion.error;
  } else {
    out.error = error_message_from_body(result.status, result.body);
  }
  if (attempts >= policy.max_attempts) {
    out.kind = AttemptOutcome::Kind::failed;
    out.error = "gave up after " + std::to_string(attempts) + " attempt" +
                (attempts == 1 ? "" : "s") + ": " + out.error;
    return out;
  }
  out.kind = AttemptOutcome::Kind::retry;
  out.retry_delay_ms = retry_delay_ms(attempts + 1, policy.base_delay_ms, policy.max_delay_ms,
                                      jitter_seed);
  return out;
}

AttemptOutcome ask_elsewhere_once(AttemptOutcome o, int attempts, const RetryPolicy& policy,
                                  bool another_endpoint) {
  if (o.kind != AttemptOutcome::Kind::failed || !o.rejected || attempts != 1 ||
      attempts >= policy.max_attempts || !another_endpoint) {
    return o;
  }
  o.kind = AttemptOutcome::Kind::retry;
  o.rejected = false;
  // At once, but not 0: a retry with a delay has the dispatcher look for it
  // when it is due (one without would wait for its next round).
  o.retry_delay_ms = 1;
  return o;
}

EndpointVerdict judge_endpoint(const HttpResult& r, bool usable, const RequestTimes& times) {
  if (usable) return EndpointVerdict::healthy;
  if (!r.transport_ok) {
    // Excused only while waiting for the answer: a connect that never
    // completed (a host dropping packets) is the endpoint's, however short
    // the request's own timeout.
    const bool own_timeout = r.timed_out && r.request_sent && times.own_timeout_ms < times.fleet_timeout_ms &&
                             times.endpoint_silent_ms < times.fleet_timeout_ms;
    return own_timeout ? EndpointVerdict::neutral : EndpointVerdict::failing;
  }
  if (r.status == 429) return EndpointVerdict::rate_limited;
  if (r.status == 503 && r.retry_after_s && *r.retry_after_s > 0) return EndpointVerdict::unavailable;
  if (r.status >= 500 || is_2xx(r) || endpoint_misconfigured(r.status)) return EndpointVerdict::failing;
  return EndpointVerdict::neutral;
}

}  // namespace npc_scale
