// What one finished HTTP attempt means for a decision (src/core/attempt).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/attempt.hpp"

using npc_scale::Api;
using npc_scale::AttemptOutcome;
using npc_scale::AttemptReply;
using npc_scale::HttpResult;
using npc_scale::RetryPolicy;

namespace {

HttpResult http(long status, std::string body) {
  HttpResult r;
  r.transport_ok = true;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResult transport_error(const std::string& why) {
  HttpResult r;
  r.error = why;
  return r;
}

const RetryPolicy kPolicy{3, 200, 10000};

}  // namespace

TEST(Attempt, TwoHundredWithAChoiceIsDone) {
  AttemptOutcome o = npc_scale::resolve_attempt(
      Api::completions, http(200, R"({"choices":[{"text":"build a granary"}]})"), 1, kPolicy, 7);
  EXPECT_EQ(o.kind, AttemptOutcome::Kind::done);
  EXPECT_EQ(o.response, "build a granary");
  EXPECT_TRUE(o.error.empty());
  EXPECT_EQ(o.finish_reason, "") << "the server said none";
}

// A cut answer is still an answer; the row says it was cut.
TEST(Attempt, DoneCarriesTheFinishReason) {
  AttemptOutcome o = npc_scale::resolve_attempt(
      Api::completions, http(200, R"({"choices":[{"text":"build a","finish_reason":"length"}]})"),
      1, kPolicy, 7);
  ASSERT_EQ(o.kind, AttemptOutcome::Kind::done);
  EXPECT_EQ(o.response, "build a");
  EXPECT_EQ(o.finish_reason, "length");
}

TEST(Attempt, ChatAnswerIsTheMessageContent) {
  AttemptOutcome o = npc_scale::resolve_attempt(
      Api::chat, http(200, R"({"choices":[{"message":{"role":"assistant","content":"raid"}}]})"), 1,
      kPolicy, 7);
  ASSERT_EQ(o.kind, AttemptOutcome::Kind::done);
  EXPECT_EQ(o.response, "raid");
}

TEST(Attempt, NulBytesAreDroppedFromTheAnswer) {
  AttemptOutcome o = npc_scale::resolve_attempt(
      Api::completions, http(200, R"({"choices":[{"text":"a\u0000b"}]})"), 1, kPolicy, 7);
  ASSERT_EQ(o.kind, AttemptOutcome::Kind::done);
  EXPECT_EQ(o.response, "ab");
}

TEST(Attempt, TransientErrorsRetryUntilTheLastAttempt) {
  for (const HttpResult& r : {http(503, R"({"error":{"message":"overloaded"}})"),
                              http(429, "slow down"), http(200, "<html>"),
                              transport_error("Connection refused")}) {
    AttemptOutcome first = npc_scale::resolve_attempt(Api::completions, r, 1, kPolicy, 7);
    EXPECT_EQ(first.kind, AttemptOutcome::Kind::retry) << r.status << " " << r.body;
    EXPECT_GT(first.retry_delay_ms, 0) << r.status;
    EXPECT_FALSE(first.error.empty());
    AttemptOutcome last = npc_scale::resolve_attempt(Api::completions, r, 3, kPolicy, 7);
    EXPECT_EQ(last.kind, AttemptOutcome::Kind::failed) << r.status;
    EXPECT_EQ(last.error.rfind("gave up after 3 attempts: ", 0), 0u) << last.error;
  }
}

// A 429's Retry-After keeps its endpoint closed (the circuit breaker), not
// the decision: the retry has the usual back-off and goes to another GPU.
TEST(Attempt, A429sRetryAfterDoesNotDelayTheRetry) {
  HttpResult limited = http(429, R"({"error":{"message":"rate limited"}})");
  HttpResult plain = limited;
  limited.retry_after_s = 60;
  AttemptOutcome with = npc_scale::resolve_attempt(Api::completions, limited, 1, kPolicy, 7);
  AttemptOutcome without = npc_scale::resolve_attempt(Api::completions, plain, 1, kPolicy, 7);
  ASSERT_EQ(with.kind, AttemptOutcome::Kind::retry);
  EXPECT_EQ(with.retry_delay_ms, without.retry_delay_ms);
  EXPECT_LE(with.retry_delay_ms, kPolicy.max_delay_ms);
}

TEST(Attempt, TheErrorNamesWhatTheEndpointSaid) {
  AttemptOutcome o = npc_scale::resolve_attempt(
      Api::completions, http(503, R"({"error":{"message":"KV cache full"}})"), 1, kPolicy, 7);
  EXPECT_NE(o.error.find("KV cache full"), std::string::npos) << o.error;
  o = npc_scale::resolve_attempt(Api::completions, transport_error("Operation timed out"), 1,
                                 kPolicy, 7);
  EXPECT_EQ(o.error, "Operation timed out");
}

// An answer is checked against params.choices: free text from a server
// that ignores structured_outputs is retried like a malformed answer; a
// choice (or an empty answer) cut at max_tokens is the request's doing,
// failed at once and marked rejected.
TEST(Attempt, AnAnswerOfNoUseIsNotDone) {
  const std::vector<std::string> choices = {"attack", "trade"};
  auto resolve = [&](Api api, const std::string& body, const std::vector<std::string>& ch) {
    return npc_scale::resolve_attempt(npc_scale::read_attempt(api, http(200, body), ch), 1, kPolicy, 7);
  };
  AttemptOutcome ok = resolve(Api::completions, R"({"choices":[{"text":"trade","finish_reason":"stop"}]})", choices);
  EXPECT_EQ(ok.kind, AttemptOutcome::Kind::done);
  AttemptOutcome free = resolve(Api::completions,
                                R"({"choices":[{"text":"well, maybe raid","finish_reason":"stop"}]})", choices);
  EXPECT_EQ(free.kind, AttemptOutcome::Kind::retry);
  EXPECT_FALSE(free.rejected);
  EXPECT_NE(free.error.find(R"(answered "well, maybe raid", which is not one of params.choices)"),
            std::string::npos) << free.error;
  AttemptOutcome cut = resolve(Api::completions,
                               R"({"choices":[{"text":"att","finish_reason":"length"}]})", choices);
  EXPECT_EQ(cut.kind, AttemptOutcome::Kind::failed);
  EXPECT_TRUE(cut.rejected);
  EXPECT_NE(cut.error.find("cut at max_tokens"), std::string::npos) << cut.error;
  // Free text that ran to max_tokens is still free text, not a cut choice.
  AttemptOutcome long_free = resolve(Api::completions,
                                     R"({"choices":[{"text":"well, maybe","finish_reason":"length"}]})", choices);
  EXPECT_EQ(long_free.kind, AttemptOutcome::Kind::retry);
  EXPECT_NE(long_free.error.find("not one of params.choices"), std::string::npos) << long_free.error;
  AttemptOutcome empty = resolve(
      Api::chat, R"({"choices":[{"message":{"role":"assistant","content":null},"finish_reason":"length"}]})", {});
  EXPECT_EQ(empty.kind, AttemptOutcome::Kind::failed);
  EXPECT_TRUE(empty.rejected);
  EXPECT_NE(empty.error.find("empty, cut at max_tokens"), std::string::npos) << empty.error;
  // Without choices, any text is an answer; an empty one that ended by
  // itself too (the model had nothing to say).
  EXPECT_EQ(resolve(Api::completions, R"({"choices":[{"text":"well, maybe raid","finish_reason":"length"}]})", {}).kind,
            AttemptOutcome::Kind::done);
  EXPECT_EQ(resolve(Api::completions, R"({"choices":[{"text":"","finish_reason":"stop"}]})", {}).kind,
            AttemptOutcome::Kind::done);
}

// vLLM's finish_reason "abort" (a paused or aborted engine) and "error"
// come with a 200 and partial text: retried, never kept as the answer.
TEST(Attempt, AnAnswerTheServerGaveUpOnIsRetried) {
  for (const char* reason : {"abort", "error"}) {
    const std::string body = std::string(R"({"choices":[{"text":"build a gra","finish_reason":")") + reason + R"("}]})";
    AttemptOutcome o = npc_scale::resolve_attempt(npc_scale::read_attempt(Api::completions, http(200, body), {}), 1,
                                                  kPolicy, 7);
    EXPECT_EQ(o.kind, AttemptOutcome::Kind::retry) << reason;
    EXPECT_FALSE(o.rejected) << reason;
    EXPECT_EQ(o.error, std::string("the endpoint gave up on the answer (finish_reason \"") + reason + "\")");
  }
  AttemptOutcome last = npc_scale::resolve_attempt(
      npc_scale::read_attempt(Api::chat, http(200, R"({"choices":[{"message":{"content":"ra"},"finish_reason":"abort"}]})"), {}),
      3, kPolicy, 7);
  EXPECT_EQ(last.kind, AttemptOutcome::Kind::failed) << "at the last attempt";
  EXPECT_EQ(npc_scale::resolve_attempt(
                npc_scale::read_attempt(Api::completions, http(200, R"({"choices":[{"text":"x","finish_reason":"stop"}]})"), {}),
                1, kPolicy, 7).kind,
            AttemptOutcome::Kind::done);
}

TEST(Attempt, ARejectedRequestFailsAtOnce) {
  AttemptOutcome o = npc_scale::resolve_attempt(
      Api::completions, http(400, R"({"error":{"message":"max_tokens is too large"}})"), 1,
      kPolicy, 7);
  EXPECT_EQ(o.kind, AttemptOutcome::Kind::failed);
  EXPECT_NE(o.error.find("max_tokens is too large"), std::string::npos) << o.error;
  EXPECT_TRUE(o.rejected);  // generate() reports it as the caller's input (22023)
  for (long status : {413L, 422L}) {
    EXPECT_TRUE(npc_scale::resolve_attempt(Api::completions, http(status, "{}"), 1, kPolicy, 7).rejected)
        << status;
  }
  // A wrong model or URL (404, a redirect) and auth errors are the fleet's configuration.
  for (long status : {301L, 308L, 401L, 403L, 404L}) {
    AttemptOutcome f = npc_scale::resolve_attempt(Api::completions, http(status, "{}"), 3, kPolicy, 7);
    EXPECT_EQ(f.kind, AttemptOutcome::Kind::failed) << status;
    EXPECT_FALSE(f.rejected) << status;
  }
  EXPECT_FALSE(npc_scale::resolve_attempt(Api::completions, http(503, "{}"), 3, kPolicy, 7).rejected);
}

// The dispatcher reads a reply once and judges it again later (after a
// deferred claim the attempt number is known): the verdicts must match
// reading the body each time.
TEST(Attempt, AReplyReadOnceIsJudgedLikeAFreshOne) {
  for (const HttpResult& r : {http(200, R"({"choices":[{"text":"ok"}]})"), http(200, "{}"),
                              http(500, "boom"), http(404, "no such model"),
                              transport_error("reset")}) {
    AttemptReply reply = npc_scale::read_attempt(Api::completions, r);
    EXPECT_EQ(reply.http.body, r.body);
    for (int attempts = 1; attempts <= 3; attempts++) {
      AttemptOutcome once = npc_scale::resolve_attempt(reply, attempts, kPolicy, 11);
      AttemptOutcome fresh = npc_scale::resolve_attempt(Api::completions, r, attempts, kPolicy, 11);
      EXPECT_EQ(once.kind, fresh.kind) << r.status << " attempt " << attempts;
      EXPECT_EQ(once.response, fresh.response);
      EXPECT_EQ(once.error, fresh.error);
      EXPECT_EQ(once.retry_delay_ms, fresh.retry_delay_ms);
    }
  }
}

// ---- judge_endpoint: what a finished request says about its endpoint -------

namespace {
HttpResult timed_out(bool request_sent = true) {
  HttpResult r = transport_error("Timeout was reached");
  r.timed_out = true;
  r.request_sent = request_sent;
  return r;
}
}  // namespace

TEST(EndpointVerdict, RepliesAreJudgedByStatus) {
  using npc_scale::EndpointVerdict;
  using npc_scale::judge_endpoint;
  const npc_scale::RequestTimes t{30000, 30000, 0};
  EXPECT_EQ(judge_endpoint(http(200, "{}"), true, t), EndpointVerdict::healthy);
  EXPECT_EQ(judge_endpoint(http(200, "{}"), false, t), EndpointVerdict::failing);  // unusable 2xx
  EXPECT_EQ(judge_endpoint(http(429, "{}"), false, t), EndpointVerdict::rate_limited);
  for (long status : {500L, 503L, 301L, 307L, 401L, 403L, 404L}) {
    EXPECT_EQ(judge_endpoint(http(status, "{}"), false, t), EndpointVerdict::failing) << status;
  }
  for (long status : {400L, 405L, 413L, 422L}) {
    EXPECT_EQ(judge_endpoint(http(status, "{}"), false, t), EndpointVerdict::neutral) << status;
  }
  EXPECT_EQ(judge_endpoint(transport_error("Connection refused"), false, t), EndpointVerdict::failing);
  // A 503 that says when to come back (a maintenance window behind a proxy).
  HttpResult later = http(503, "{}");
  later.retry_after_s = 30;
  EXPECT_EQ(judge_endpoint(later, false, t), EndpointVerdict::unavailable);
  later.retry_after_s = 0;  // a date already past
  EXPECT_EQ(judge_endpoint(later, false, t), EndpointVerdict::failing);
  HttpResult other = http(500, "{}");
  other.retry_after_s = 30;  // only 503 and 429 carry it by the standard
  EXPECT_EQ(judge_endpoint(other, false, t), EndpointVerdict::failing);
}

// A caller's {"timeout_ms": 1}, or a timeout cut to a near deadline, that a
// busy GPU cannot meet must not open its breaker; a GPU that answers nothing
// at all is failing whatever the requests' timeouts.
TEST(EndpointVerdict, ATimeoutCountsOnlyWhenTheEndpointHadTheFleetsWholeTimeout) {
  using npc_scale::EndpointVerdict;
  using npc_scale::judge_endpoint;
  EXPECT_EQ(judge_endpoint(timed_out(), false, {30000, 30000, 30000}), EndpointVerdict::failing);
  EXPECT_EQ(judge_endpoint(timed_out(), false, {60000, 30000, 1000}), EndpointVerdict::failing);
  EXPECT_EQ(judge_endpoint(timed_out(), false, {1, 30000, 5}), EndpointVerdict::neutral);
  EXPECT_EQ(judge_endpoint(timed_out(), false, {29999, 30000, 29999}), EndpointVerdict::neutral);
  // Silent for the fleet's whole timeout: its short timeouts count too.
  EXPECT_EQ(judge_endpoint(timed_out(), false, {1, 30000, 30000}), EndpointVerdict::failing);
  // Only the wait for an answer: a connect or name lookup that timed out
  // never reached the server, whatever the request's timeout.
  EXPECT_EQ(judge_endpoint(timed_out(false), false, {1, 30000, 5}), EndpointVerdict::failing);
  EXPECT_EQ(judge_endpoint(timed_out(false), false, {29999, 30000, 29999}), EndpointVerdict::failing);
  // Only a timeout is excused: a refused connection is the endpoint's.
  HttpResult refused = transport_error("Connection refused");
  EXPECT_EQ(judge_endpoint(refused, false, {1, 30000, 5}), EndpointVerdict::failing);
}

// A 400 may be one server's configuration (a smaller context, no priority
// scheduling): asked once more elsewhere on the first attempt, then final.
TEST(Attempt, ARejectedRequestIsAskedElsewhereOnceOnItsFirstAttempt) {
  const AttemptOutcome rejected = npc_scale::resolve_attempt(
      Api::completions, http(400, R"({"error":{"message":"Got priority 5 but Priority scheduling is not enabled."}})"),
      1, kPolicy, 7);
  ASSERT_EQ(rejected.kind, AttemptOutcome::Kind::failed);
  AttemptOutcome again = npc_scale::ask_elsewhere_once(rejected, 1, kPolicy, true);
  EXPECT_EQ(again.kind, AttemptOutcome::Kind::retry);
  EXPECT_FALSE(again.rejected);
  EXPECT_EQ(again.retry_delay_ms, 1);  // at once, and looked for when due
  EXPECT_NE(again.error.find("Priority scheduling"), std::string::npos) << again.error;
  // No other endpoint, a second attempt, or no attempt left: final.
  EXPECT_EQ(npc_scale::ask_elsewhere_once(rejected, 1, kPolicy, false).kind, AttemptOutcome::Kind::failed);
  EXPECT_EQ(npc_scale::ask_elsewhere_once(rejected, 2, kPolicy, true).kind, AttemptOutcome::Kind::failed);
  EXPECT_EQ(npc_scale::ask_elsewhere_once(rejected, 1, RetryPolicy{1, 200, 10000}, true).kind,
            AttemptOutcome::Kind::failed);
  // Only a rejection: a transient failure or an answer pass as they are.
  const AttemptOutcome down = npc_scale::resolve_attempt(Api::completions, http(503, "{}"), 3, kPolicy, 7);
  EXPECT_EQ(npc_scale::ask_elsewhere_once(down, 1, kPolicy, true).error, down.error);
  EXPECT_EQ(npc_scale::ask_elsewhere_once(down, 1, kPolicy, true).kind, down.kind);
}
