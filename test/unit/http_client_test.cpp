// src/core/http_client against a real fake_gpu process on loopback: many
// requests in flight on one event loop, pooled easy handles that carry no
// state from one request to the next, cancel, and timeouts.
#include <gtest/gtest.h>
#include <sys/epoll.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/http_client.hpp"
#include "fake_gpu_process.hpp"

using fake_gpu_test::FakeGpu;
using npc_scale::HttpClient;
using npc_scale::HttpRequest;
using npc_scale::HttpResult;

namespace {

HttpRequest completion(const FakeGpu& gpu, uint64_t tag, int max_tokens = 4, long timeout_ms = 5000) {
  HttpRequest r;
  r.tag = tag;
  r.url = gpu.url("/v1/completions");
  r.body = nlohmann::json{{"model", "npc-llm"}, {"prompt", "NPC " + std::to_string(tag) + ": what next?"},
                          {"max_tokens", max_tokens}}
               .dump();
  r.timeout_ms = timeout_ms;
  return r;
}

HttpRequest get(const FakeGpu& gpu, uint64_t tag, const std::string& path) {
  HttpRequest r;
  r.tag = tag;
  r.url = gpu.url(path);
  return r;
}

// Drives the client the way the dispatcher does (wait on its epoll fd or its
// timer, then perform) until `n` results are in or 10 s have passed.
std::map<uint64_t, HttpResult> drive(HttpClient& http, size_t n) {
  std::map<uint64_t, HttpResult> out;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  http.perform();  // starts what was just added
  while (out.size() < n && std::chrono::steady_clock::now() < end) {
    for (HttpResult& r : http.take_finished()) {
      uint64_t tag = r.tag;
      EXPECT_TRUE(out.emplace(tag, std::move(r)).second) << "tag " << tag << " reported twice";
    }
    if (out.size() >= n) break;
    long wait = http.next_timeout_ms();
    if (wait < 0 || wait > 50) wait = 50;
    epoll_event ev;
    epoll_wait(http.epoll_fd(), &ev, 1, static_cast<int>(wait));
    http.perform();
  }
  return out;
}

}  // namespace

TEST(HttpClient, ManyRequestsInFlightAreEachAnsweredUnderTheirTag) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  HttpClient http;
  for (uint64_t tag = 1; tag <= 40; tag++) http.start(completion(gpu, tag));
  EXPECT_EQ(http.in_flight(), 40u);
  auto results = drive(http, 40);
  ASSERT_EQ(results.size(), 40u);
  for (auto& [tag, r] : results) {
    EXPECT_TRUE(r.transport_ok) << tag << ": " << r.error;
    EXPECT_EQ(r.status, 200) << tag;
    auto j = nlohmann::json::parse(r.body);
    EXPECT_EQ(j["usage"]["completion_tokens"], 4) << tag;
    EXPECT_GE(r.elapsed_ms, 0) << tag;
  }
  EXPECT_EQ(http.in_flight(), 0u);
}

// Handles are reset and reused: a GET after a POST must go out as a GET
// (fake_gpu answers 405 to a POST on /v1/models), and a POST after GETs
// must carry its body again.
TEST(HttpClient, AReusedHandleCarriesNothingFromItsLastRequest) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  HttpClient http;
  uint64_t tag = 1;
  for (int round = 0; round < 3; round++) {
    http.start(completion(gpu, tag++, 3));
    auto posted = drive(http, 1);
    ASSERT_EQ(posted.size(), 1u);
    EXPECT_EQ(posted.begin()->second.status, 200) << posted.begin()->second.body;

    http.start(get(gpu, tag++, "/v1/models"));
    auto models = drive(http, 1);
    ASSERT_EQ(models.size(), 1u);
    EXPECT_EQ(models.begin()->second.status, 200) << models.begin()->second.body;
    EXPECT_EQ(nlohmann::json::parse(models.begin()->second.body)["data"][0]["id"], "npc-llm");
  }
}

// What the dispatcher's wait relies on: a reply that a perform() collected
// stays in has_finished() until taken, and its socket does not signal again
// (so a wait on the epoll fd alone would sit on it until some timer).
TEST(HttpClient, ACollectedReplyIsReportedUntilTakenAndItsSocketIsQuiet) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  HttpClient http;
  EXPECT_FALSE(http.has_finished());
  http.start(completion(gpu, 7));
  http.perform();
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!http.has_finished() && std::chrono::steady_clock::now() < end) {
    long wait = http.next_timeout_ms();
    if (wait < 0 || wait > 50) wait = 50;
    epoll_event ev;
    epoll_wait(http.epoll_fd(), &ev, 1, static_cast<int>(wait));
    http.perform();
  }
  ASSERT_TRUE(http.has_finished());
  epoll_event ev;
  EXPECT_EQ(epoll_wait(http.epoll_fd(), &ev, 1, 0), 0);
  EXPECT_TRUE(http.has_finished());  // still there: nothing took it
  auto results = http.take_finished();
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].tag, 7u);
  EXPECT_EQ(results[0].status, 200);
  EXPECT_FALSE(http.has_finished());
}

TEST(HttpClient, ACancelledRequestReportsNothingAndTheNextOneIsAnswered) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--base-ms", "2000");
  HttpClient http;
  http.start(completion(gpu, 1));
  http.perform();
  EXPECT_TRUE(http.cancel(1));
  EXPECT_FALSE(http.cancel(1));  // already gone
  EXPECT_EQ(http.in_flight(), 0u);
  http.start(get(gpu, 2, "/health"));
  auto results = drive(http, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results.count(1), 0u);
  EXPECT_EQ(results.at(2).status, 200);
}

TEST(HttpClient, ASlowEndpointTimesOutAsATransportErrorWithoutHoldingUpOthers) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--base-ms", "20000");
  START_FAKE_GPU(quick, "--profile", "instant");
  HttpClient http;
  // 3 s: the quick answer comes well within it, even on a busy machine.
  http.start(completion(gpu, 1, 4, 3000));
  http.start(completion(quick, 2, 4, 5000));
  auto first = drive(http, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first.begin()->first, 2u) << "the quick endpoint's answer came second";
  auto second = drive(http, 1);
  ASSERT_EQ(second.size(), 1u);
  const HttpResult& slow = second.at(1);
  EXPECT_FALSE(slow.transport_ok);
  // A timeout (not the 20 s answer) shows the 3 s limit was applied.
  EXPECT_NE(slow.error.find("imeout"), std::string::npos) << slow.error;
  EXPECT_TRUE(slow.timed_out);  // its breaker may excuse a timeout the request chose
  EXPECT_TRUE(slow.request_sent);  // waiting for the answer, not for a connection
  EXPECT_FALSE(first.begin()->second.timed_out);
}

// Header lists are kept per bearer token; a token no longer configured is
// dropped once no request in flight uses it.
TEST(HttpClient, ATokenNoLongerConfiguredIsForgottenOnceUnused) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--base-ms", "300");
  HttpClient http;
  HttpRequest old_key = completion(gpu, 1);
  old_key.bearer_token = "sk-old";
  http.start(old_key);
  EXPECT_EQ(http.tokens_held(), 1u);
  http.forget_tokens_except({"sk-new"});
  EXPECT_EQ(http.tokens_held(), 1u) << "still used by the request in flight";
  auto results = drive(http, 1);
  ASSERT_EQ(results.at(1).status, 200);
  http.forget_tokens_except({"sk-new"});
  EXPECT_EQ(http.tokens_held(), 0u);
  HttpRequest new_key = completion(gpu, 2);
  new_key.bearer_token = "sk-new";
  http.start(new_key);
  EXPECT_EQ(drive(http, 1).at(2).status, 200) << "a handle that carried the old list works with the new one";
  http.forget_tokens_except({"sk-new"});
  EXPECT_EQ(http.tokens_held(), 1u);
}

TEST(HttpClient, ADuplicateTagIsRefused) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  HttpClient http;
  http.start(completion(gpu, 7));
  EXPECT_THROW(http.start(completion(gpu, 7)), std::logic_error);
  EXPECT_EQ(http.in_flight(), 1u);
  auto results = drive(http, 1);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results.at(7).status, 200);
}

TEST(HttpClient, AReplyOverItsSizeLimitIsAbortedAsATransportError) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  HttpClient http;
  HttpRequest big = completion(gpu, 1, 400);  // 400 words: a few kB of JSON
  big.max_response_bytes = 512;
  http.start(big);
  http.start(completion(gpu, 2, 400));  // the default limit: read in full
  auto out = drive(http, 2);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out.at(1).transport_ok);
  EXPECT_EQ(out.at(1).error, "reply larger than 512 bytes: aborted");
  EXPECT_TRUE(out.at(1).body.empty());
  ASSERT_TRUE(out.at(2).transport_ok) << out.at(2).error;
  EXPECT_GT(out.at(2).body.size(), 512u);
}

// The GPU fleet is reached directly: a proxy named in the server's
// environment (http_proxy and the like) would see every prompt and api_key.
TEST(HttpClient, ProxyEnvironmentVariablesAreIgnored) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  const char* names[] = {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"};
  for (const char* n : names) setenv(n, "http://127.0.0.1:9", 1);  // discard port: nothing listens
  HttpClient http;
  http.start(completion(gpu, 1));
  auto results = drive(http, 1);
  for (const char* n : names) unsetenv(n);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results.at(1).transport_ok) << results.at(1).error;
  EXPECT_EQ(results.at(1).status, 200);
}
