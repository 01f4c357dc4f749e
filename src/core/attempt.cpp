#include "attempt.hpp"

#include <algorithm>


namespace npc_scale {

AttemptOutcome resolve_attempt(Api api, const HttpResult& result, int attempts,
                               const RetryPolicy& policy, uint64_t jitter_seed) {
  AttemptOutcome out;
  Completion completion;
  bool body_ok = false;
  if (result.transport_ok && result.status >= 200 && result.status < 300) {
    completion = parse_response(api, result.body);
    body_ok = completion.ok;
  }
  switch (classify(result.transport_ok, result.status, body_ok)) {
    case Outcome::success:
      out.kind = AttemptOutcome::Kind::done;
      out.response = std::move(completion.text);
      // A text column cannot hold NUL; a model that emits one loses only that byte.
      out.response.erase(std::remove(out.response.begin(), out.response.end(), '\0'),
                         out.response.end());
      return out;
    case Outcome::permanent:
      out.kind = AttemptOutcome::Kind::failed;
      out.error = error_message_from_body(result.status, result.body);
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
                                      jitter_seed, result.retry_after_s);
  return out;
}

}  // namespace npc_scale
