// fake_gpu over real HTTP: spawns the binary on a free loopback port and
// talks to it with libcurl (helpers in fake_gpu_process.hpp).
#include <gtest/gtest.h>

#include <cmath>
#include <ctime>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fake_gpu_process.hpp"
#include "protocol.hpp"  // kVllmVersion

namespace {

using namespace fake_gpu_test;

// Fires requests from background threads; replies are read after join().
class Concurrent {
 public:
  void post(const FakeGpu& gpu, const json& body, long timeout_ms = 10000) {
    size_t slot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      slot = replies_.size();
      replies_.emplace_back();
      done_order_.emplace_back(-1);
    }
    threads_.emplace_back([this, &gpu, body, timeout_ms, slot] {
      Reply r = gpu.post("/v1/completions", body, timeout_ms);
      std::lock_guard<std::mutex> lock(mu_);
      replies_[slot] = std::move(r);
      done_order_[slot] = finished_++;
    });
  }
  void join() {
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  ~Concurrent() { join(); }
  const Reply& reply(size_t i) const { return replies_[i]; }
  int done_order(size_t i) const { return done_order_[i]; }
  size_t size() const { return replies_.size(); }

 private:
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::deque<Reply> replies_;  // deque: stable slots while threads write
  std::deque<int> done_order_;
  int finished_ = 0;
};

json completion(const std::string& prompt, int max_tokens = 8, double temperature = 0) {
  return {{"model", "npc-llm"}, {"prompt", prompt}, {"max_tokens", max_tokens},
          {"temperature", temperature}};
}

TEST(FakeGpuApi, CompletionSinglePrompt) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  const std::string prompt = "Chief, the wood stock is low. What now?";
  auto before = std::time(nullptr);
  Reply r = gpu.post("/v1/completions", completion(prompt, 7));
  ASSERT_EQ(r.code, CURLE_OK);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.parsed();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(j["model"], "npc-llm");
  EXPECT_GE(j["created"].get<int64_t>(), before);
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& c = j["choices"][0];
  EXPECT_EQ(c["index"], 0);
  EXPECT_EQ(c["finish_reason"], "length");
  EXPECT_TRUE(c["logprobs"].is_null());
  EXPECT_TRUE(c["stop_reason"].is_null());
  EXPECT_TRUE(c.contains("prompt_logprobs"));
  const std::string text = c["text"];
  EXPECT_EQ(word_count(text), 7);
  EXPECT_EQ(j["usage"]["completion_tokens"], 7);
  EXPECT_EQ(j["usage"]["prompt_tokens"], word_count(prompt));
  EXPECT_EQ(j["usage"]["total_tokens"], 7 + word_count(prompt));
  EXPECT_TRUE(j["usage"]["prompt_tokens_details"].is_null());

  // Greedy output is a function of the prompt; ids are per request.
  json again = gpu.post("/v1/completions", completion(prompt, 7)).parsed();
  EXPECT_EQ(again["choices"][0]["text"], text);
  EXPECT_NE(again["id"], j["id"]);
}

TEST(FakeGpuApi, ListPromptWithN) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  std::vector<std::string> prompts = {"raid the east camp", "trade clay", "who guards the wall?"};
  // Greedy sampling has one answer per prompt: vLLM refuses n > 1 with it.
  Reply greedy = gpu.post("/v1/completions",
                          {{"prompt", prompts}, {"n", 2}, {"max_tokens", 5}, {"temperature", 0}});
  EXPECT_EQ(greedy.status, 400);
  EXPECT_EQ(greedy.parsed()["error"]["message"], "n must be 1 when using greedy sampling, got 2.");
  Reply r = gpu.post("/v1/completions",
                     {{"prompt", prompts}, {"n", 2}, {"max_tokens", 5}, {"temperature", 0.8}, {"seed", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.parsed();
  ASSERT_EQ(j["choices"].size(), 6u);
  int prompt_words = 0, completion_words = 0;
  for (const auto& p : prompts) prompt_words += word_count(p);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    completion_words += word_count(j["choices"][i]["text"]);
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt_words);
  EXPECT_EQ(j["usage"]["completion_tokens"], completion_words);
  EXPECT_EQ(completion_words, 6 * 5);
  EXPECT_NE(j["choices"][0]["text"], j["choices"][2]["text"]);  // different prompts differ
  EXPECT_NE(j["choices"][2]["text"], j["choices"][4]["text"]);
}

TEST(FakeGpuApi, SeedsAndTemperature) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  json seeded = completion("seeded prompt", 12, 0.9);
  seeded["seed"] = 1234;
  std::string a = gpu.post("/v1/completions", seeded).parsed()["choices"][0]["text"];
  std::string b = gpu.post("/v1/completions", seeded).parsed()["choices"][0]["text"];
  EXPECT_EQ(a, b);
  json unseeded = completion("seeded prompt", 12, 0.9);
  std::string c = gpu.post("/v1/completions", unseeded).parsed()["choices"][0]["text"];
  std::string d = gpu.post("/v1/completions", unseeded).parsed()["choices"][0]["text"];
  EXPECT_NE(c, d);
}

TEST(FakeGpuApi, ChoicesAndStop) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  std::vector<std::string> choices = {"attack", "defend", "trade with allies"};
  for (int i = 0; i < 10; ++i) {
    json body = completion("decide " + std::to_string(i), 8, 1.0);
    if (i % 2) {
      body["structured_outputs"] = {{"choice", choices}};
    } else {
      body["guided_choice"] = choices;
    }
    json j = gpu.post("/v1/completions", body).parsed();
    std::string text = j["choices"][0]["text"];
    EXPECT_NE(std::find(choices.begin(), choices.end(), text), choices.end()) << text;
    EXPECT_EQ(j["usage"]["completion_tokens"], word_count(text));
  }

  json plain = completion("stop here please", 20);
  std::string full = gpu.post("/v1/completions", plain).parsed()["choices"][0]["text"];
  std::istringstream words(full);
  std::string w;
  for (int i = 0; i < 4; ++i) words >> w;  // the fourth word surely occurs
  plain["stop"] = w;
  json j = gpu.post("/v1/completions", plain).parsed();
  EXPECT_EQ(j["choices"][0]["text"], full.substr(0, full.find(w)));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["stop_reason"], w);
  plain["stop"] = json::array({w, ""});
  Reply empty = gpu.post("/v1/completions", plain);
  EXPECT_EQ(empty.status, 400);
  EXPECT_EQ(empty.parsed()["error"]["message"], "stop cannot contain an empty string.");
}

TEST(FakeGpuApi, ChatCompletionShape) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  json body = {{"model", "npc-llm"},
               {"messages",
                {{{"role", "system"}, {"content", "You are a village elder."}},
                 {{"role", "user"}, {"content", "Should we build a wall?"}}}},
               {"max_completion_tokens", 6},
               {"temperature", 0}};
  Reply r = gpu.post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.parsed();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  ASSERT_EQ(j["choices"].size(), 1u);
  const json& msg = j["choices"][0]["message"];
  EXPECT_EQ(msg["role"], "assistant");
  EXPECT_EQ(msg["tool_calls"], json::array());
  EXPECT_EQ(word_count(msg["content"]), 6);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 6);
  // Documented count: "role:" plus the content words, per message.
  EXPECT_EQ(j["usage"]["prompt_tokens"], (1 + 5) + (1 + 5));
  EXPECT_EQ(gpu.post("/v1/chat/completions", body).parsed()["choices"][0]["message"]["content"],
            msg["content"]);
}

TEST(FakeGpuApi, ModelsAndHealth) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--model", "village-7b", "--max-model-len", "1234");
  json m = gpu.get("/v1/models").parsed();
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "village-7b");
  EXPECT_EQ(m["data"][0]["owned_by"], "vllm");
  EXPECT_EQ(m["data"][0]["max_model_len"], 1234);

  Reply h = gpu.get("/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body, "");
  Reply v = gpu.get("/version");
  EXPECT_EQ(v.status, 200);
  EXPECT_EQ(v.parsed(), json({{"version", npc_scale::fake_gpu::kVllmVersion}}));
  EXPECT_EQ(gpu.post("/version", json::object()).status, 405);
  EXPECT_EQ(gpu.post("/admin/health", {{"healthy", false}}).status, 200);
  EXPECT_EQ(gpu.get("/health").status, 503);
  json served = completion("x");
  served["model"] = "village-7b";
  Reply dead = gpu.post("/v1/completions", served);  // a dead engine serves nothing
  EXPECT_EQ(dead.status, 500);
  EXPECT_EQ(dead.parsed()["error"]["type"], "InternalServerError");
  EXPECT_EQ(gpu.post("/admin/health", {{"healthy", true}}).status, 200);
  EXPECT_EQ(gpu.post("/v1/completions", served).status, 200);
  EXPECT_EQ(gpu.get("/health").status, 200);
  EXPECT_EQ(gpu.post("/admin/health", {{"healthy", "no"}}).status, 400);

  // The served name is what requests must use.
  EXPECT_EQ(gpu.post("/v1/completions", completion("x")).status, 404);
  json ok = completion("x");
  ok["model"] = "village-7b";
  EXPECT_EQ(gpu.post("/v1/completions", ok).status, 200);
}

// vLLM's --api-key guards the /v1/ routes only, answering 401 with a bare
// string as "error"; /health and /metrics stay open.
TEST(FakeGpuApi, AnApiKeyGuardsTheV1Routes) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--api-key", "s3cret");
  for (const Reply& r : {gpu.post("/v1/completions", completion("x")),
                         gpu.post_with("Authorization: Bearer wrong", "/v1/completions", completion("x")),
                         gpu.get("/v1/models")}) {
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(r.parsed(), json({{"error", "Unauthorized"}}));
  }
  EXPECT_EQ(gpu.post_with("Authorization: Bearer s3cret", "/v1/completions", completion("x")).status, 200);
  EXPECT_EQ(gpu.get_with("Authorization: Bearer s3cret", "/v1/models").status, 200);
  EXPECT_EQ(gpu.get("/version").status, 200);
  EXPECT_EQ(gpu.get("/health").status, 200);
  EXPECT_EQ(gpu.get("/metrics").status, 200);
}

TEST(FakeGpuApi, StartsUnhealthy) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--unhealthy");
  EXPECT_EQ(gpu.get("/health").status, 503);
  EXPECT_EQ(gpu.post("/v1/completions", completion("x")).status, 500);
}

TEST(FakeGpuApi, ErrorsInVllmShape) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  json body = completion("x");
  body["model"] = "nope";
  Reply r = gpu.post("/v1/completions", body);
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.parsed(), json::parse(R"({"error":{"message":"The model `nope` does not exist.",
                                       "type":"NotFoundError","param":null,"code":404}})"));

  body = completion("x", 0);
  r = gpu.post("/v1/completions", body);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.parsed()["error"]["type"], "BadRequestError");
  EXPECT_EQ(r.parsed()["error"]["code"], 400);

  r = http(gpu.url("/v1/completions"), std::string("{\"prompt\": \"unterminated"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.parsed()["error"]["code"], 400);
  EXPECT_EQ(gpu.post("/v1/completions", {{"prompt", {{"role", "user"}}}}).status, 400);
  EXPECT_EQ(gpu.post("/v1/chat/completions", {{"messages", "hi"}}).status, 400);
  // A content part whose type is not a string (it aborted the server).
  EXPECT_EQ(gpu.post("/v1/chat/completions",
                     {{"messages", {{{"role", "user"}, {"content", {{{"type", 5}, {"text", "x"}}}}}}}}).status,
            400);
  EXPECT_EQ(gpu.post("/v1/chat/completions",
                     {{"messages", {{{"role", "user"}, {"content", {{{"type", nullptr}, {"text", "x"}}}}}}}}).status,
            400);
  EXPECT_EQ(gpu.get("/health").status, 200);  // still serving
  // More words than the simulation writes at arrival: a 400, not a stalled loop.
  json big = completion("x", 32000, 1.0);
  big["n"] = 128;
  big["prompt"] = {"a", "b"};
  r = gpu.post("/v1/completions", big);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("at most 4000000 tokens"), std::string::npos) << r.body;
  EXPECT_EQ(gpu.get("/v1/completions").status, 405);
  EXPECT_EQ(gpu.get("/no/such/route").status, 404);
  // Rejected requests never reach the GPU.
  EXPECT_EQ(gpu.metric("vllm:request_success_total"), 0);
  EXPECT_EQ(gpu.metric("fake_gpu_inflight"), 0);
}

TEST(FakeGpuApi, MetricsMatchServedTraffic) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--model", "m1");
  std::string text = gpu.metrics();
  for (const char* name :
       {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success_total",
        "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "fake_gpu_requests_total",
        "fake_gpu_peak_running", "fake_gpu_errors_injected_total",
        "fake_gpu_prefix_cache_hits_total", "fake_gpu_prefix_cache_queries_total"}) {
    EXPECT_FALSE(std::isnan(metric(text, name, "model_name=\"m1\""))) << name;
  }
  int prompt_tokens = 0, completion_tokens = 0;
  const std::string shared = "You are the chief of a small village in the northern hills. ";
  for (int i = 0; i < 5; ++i) {
    json body = {{"prompt", shared + "Turn " + std::to_string(i)}, {"max_tokens", 3 + i}};
    json j = gpu.post("/v1/completions", body).parsed();
    prompt_tokens += j["usage"]["prompt_tokens"].get<int>();
    completion_tokens += j["usage"]["completion_tokens"].get<int>();
  }
  text = gpu.metrics();
  EXPECT_EQ(metric(text, "vllm:request_success_total"), 5);
  EXPECT_EQ(metric(text, "fake_gpu_requests_total"), 5);
  EXPECT_EQ(metric(text, "vllm:prompt_tokens_total"), prompt_tokens);
  EXPECT_EQ(metric(text, "vllm:generation_tokens_total"), completion_tokens);
  // Same first 64 bytes: the first is a miss, the other four hit.
  EXPECT_EQ(metric(text, "fake_gpu_prefix_cache_queries_total"), 5);
  EXPECT_EQ(metric(text, "fake_gpu_prefix_cache_hits_total"), 4);
  // Chat requests are counted apart too (a client's tests can tell the routes apart).
  EXPECT_EQ(metric(text, "fake_gpu_chat_requests_total"), 0);
  json chat = {{"messages", json::array({{{"role", "user"}, {"content", "Turn 5"}}})}, {"max_tokens", 2}};
  ASSERT_EQ(gpu.post("/v1/chat/completions", chat).status, 200);
  text = gpu.metrics();
  EXPECT_EQ(metric(text, "fake_gpu_chat_requests_total"), 1);
  EXPECT_EQ(metric(text, "fake_gpu_requests_total"), 6);
}

// vLLM's e2e latency histogram counts each answer from its arrival: with a
// fixed 350 ms service time the mean is at least that, and no answer falls in
// the lowest bucket (0.3 s) — bounds that hold however slow the machine is.
TEST(FakeGpuApi, E2eLatencyHistogramCountsEachAnswer) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--base-ms", "350");
  EXPECT_EQ(gpu.metric("vllm:e2e_request_latency_seconds_count"), 0);
  for (int i = 0; i < 3; ++i) {
    Reply r = gpu.post("/v1/completions", json{{"prompt", "turn " + std::to_string(i)}, {"max_tokens", 2}});
    ASSERT_EQ(r.status, 200) << r.body;
  }
  std::string text = gpu.metrics();
  EXPECT_EQ(metric(text, "vllm:e2e_request_latency_seconds_count"), 3);
  double mean = metric(text, "vllm:e2e_request_latency_seconds_sum") / 3;
  EXPECT_GE(mean, 0.350);
  EXPECT_EQ(metric(text, "vllm:e2e_request_latency_seconds_bucket", "le=\"0.3\""), 0);
  EXPECT_EQ(metric(text, "vllm:e2e_request_latency_seconds_bucket", "le=\"+Inf\""), 3);
}

// The phase histograms follow the simulated GPU's own clock, not the
// machine's: each of three lone requests (100 ms fixed cost, 10 ms a token,
// 5 tokens) waits 0, reaches its first token at 110 ms and has 4 intervals
// of 10 ms after it, however late this machine's timers fire.
TEST(FakeGpuApi, PhaseHistogramsFollowTheSimulatedGpu) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--base-ms", "100", "--per-token-ms", "10");
  for (int i = 0; i < 3; ++i) {
    Reply r = gpu.post("/v1/completions", json{{"prompt", "phase " + std::to_string(i)}, {"max_tokens", 5}});
    ASSERT_EQ(r.status, 200) << r.body;
  }
  std::string text = gpu.metrics();
  EXPECT_EQ(metric(text, "vllm:time_to_first_token_seconds_count"), 3);
  EXPECT_NEAR(metric(text, "vllm:time_to_first_token_seconds_sum"), 3 * 0.110, 1e-6);
  EXPECT_EQ(metric(text, "vllm:time_to_first_token_seconds_bucket", "le=\"0.1\""), 0);
  EXPECT_EQ(metric(text, "vllm:time_to_first_token_seconds_bucket", "le=\"0.25\""), 3);
  EXPECT_NEAR(metric(text, "vllm:request_queue_time_seconds_sum"), 0, 1e-6);
  EXPECT_NEAR(metric(text, "vllm:request_prefill_time_seconds_sum"), 3 * 0.110, 1e-6);
  EXPECT_NEAR(metric(text, "vllm:request_decode_time_seconds_sum"), 3 * 0.040, 1e-6);
  EXPECT_NEAR(metric(text, "vllm:request_inference_time_seconds_sum"), 3 * 0.150, 1e-6);
  EXPECT_EQ(metric(text, "vllm:inter_token_latency_seconds_count"), 12);
  EXPECT_NEAR(metric(text, "vllm:inter_token_latency_seconds_sum"), 12 * 0.010, 1e-6);
  EXPECT_EQ(metric(text, "vllm:inter_token_latency_seconds_bucket", "le=\"0.025\""), 12);
}

TEST(FakeGpuApi, RunningAndWaitingVisibleWhileInFlight) {
  START_FAKE_GPU(gpu, "--profile", "p40", "--base-ms", "40", "--per-token-ms", "0",
                 "--max-batch", "2");
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", true}}).status, 200);
  Concurrent load;
  for (int i = 0; i < 4; ++i) load.post(gpu, completion("request " + std::to_string(i), 2));
  EXPECT_TRUE(wait_until([&] {
    std::string m = gpu.metrics();
    return metric(m, "vllm:num_requests_running") == 2 &&
           metric(m, "vllm:num_requests_waiting") == 2;
  })) << gpu.metrics();
  EXPECT_EQ(gpu.metric("fake_gpu_stalled"), 1);
  Reply resumed = gpu.post("/admin/stall", {{"stalled", false}});
  ASSERT_EQ(resumed.status, 200);
  EXPECT_EQ(resumed.parsed()["stalled"], false);
  load.join();
  for (size_t i = 0; i < load.size(); ++i) EXPECT_EQ(load.reply(i).status, 200);
  std::string m = gpu.metrics();
  EXPECT_EQ(metric(m, "vllm:num_requests_running"), 0);
  EXPECT_EQ(metric(m, "vllm:num_requests_waiting"), 0);
  EXPECT_EQ(metric(m, "fake_gpu_peak_running"), 2);  // never above max batch
  EXPECT_EQ(metric(m, "fake_gpu_peak_inflight"), 4);
  EXPECT_EQ(metric(m, "fake_gpu_stalled"), 0);
}

// A KV cache of 256 tokens: two 100-word prompts fit, a third waits with a
// batch slot free; decoding then fills the cache and preempts the newest.
// The simulated clock decides both, so the outcome does not depend on timing.
TEST(FakeGpuApi, AKvCacheLimitQueuesThenPreempts) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--per-token-ms", "0.2", "--max-batch", "8",
                 "--max-model-len", "256", "--kv-cache-tokens", "256");
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", true}}).status, 200);
  std::string words;
  for (int i = 0; i < 100; ++i) words += "w" + std::to_string(i) + " ";
  Concurrent load;
  for (int i = 0; i < 3; ++i) {
    load.post(gpu, completion(std::to_string(i) + words.substr(1), 100));
    ASSERT_TRUE(wait_until([&] { return gpu.metric("fake_gpu_inflight") == i + 1; }));
  }
  EXPECT_TRUE(wait_until([&] {
    std::string m = gpu.metrics();
    return metric(m, "vllm:num_requests_running") == 2 && metric(m, "vllm:num_requests_waiting") == 1;
  })) << gpu.metrics();
  EXPECT_DOUBLE_EQ(gpu.metric("vllm:kv_cache_usage_perc"), 200.0 / 256);
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", false}}).status, 200);
  load.join();
  for (size_t i = 0; i < load.size(); ++i) {
    ASSERT_EQ(load.reply(i).status, 200);
    EXPECT_EQ(load.reply(i).parsed()["usage"]["completion_tokens"], 100) << "a preempted one too";
  }
  std::string m = gpu.metrics();
  EXPECT_GE(metric(m, "vllm:num_preemptions_total"), 1);
  EXPECT_EQ(metric(m, "vllm:kv_cache_usage_perc"), 0);
  EXPECT_EQ(metric(m, "fake_gpu_peak_running"), 2) << "the cache, not the batch, was the bound";
}

TEST(FakeGpuApi, WaitingQueueServesLowerPriorityValueFirst) {
  // Stalled, the blocker holds the one slot while both others queue behind it.
  START_FAKE_GPU(gpu, "--profile", "p40", "--base-ms", "40", "--per-token-ms", "0",
                 "--max-batch", "1", "--scheduling-policy", "priority");
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", true}}).status, 200);
  Concurrent load;
  load.post(gpu, completion("blocker", 1));
  ASSERT_TRUE(wait_until([&] { return gpu.metric("vllm:num_requests_running") == 1; }));
  json low = completion("low", 1);
  low["priority"] = 10;
  load.post(gpu, low);
  ASSERT_TRUE(wait_until([&] { return gpu.metric("vllm:num_requests_waiting") == 1; }));
  json high = completion("high", 1);
  high["priority"] = -5;
  load.post(gpu, high);
  ASSERT_TRUE(wait_until([&] { return gpu.metric("vllm:num_requests_waiting") == 2; }));
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", false}}).status, 200);
  load.join();
  for (size_t i = 0; i < 3; ++i) ASSERT_EQ(load.reply(i).status, 200);
  EXPECT_EQ(load.done_order(0), 0);
  EXPECT_LT(load.done_order(2), load.done_order(1));  // high overtook low
}

TEST(FakeGpuApi, PeakRunningReflectsConcurrencyAndReset) {
  START_FAKE_GPU(gpu, "--profile", "rtx3090ti", "--base-ms", "40", "--per-token-ms", "0");
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", true}}).status, 200);
  Concurrent load;
  for (int i = 0; i < 5; ++i) load.post(gpu, completion("peak " + std::to_string(i), 1));
  EXPECT_TRUE(wait_until([&] { return gpu.metric("vllm:num_requests_running") == 5; }));
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", false}}).status, 200);
  load.join();
  std::string m = gpu.metrics();
  EXPECT_EQ(metric(m, "fake_gpu_peak_running"), 5);
  EXPECT_EQ(metric(m, "fake_gpu_requests_total"), 5);
  EXPECT_EQ(metric(m, "vllm:request_success_total"), 5);

  EXPECT_EQ(gpu.post("/admin/reset", json::object()).status, 200);
  m = gpu.metrics();
  EXPECT_EQ(metric(m, "fake_gpu_peak_running"), 0);
  EXPECT_EQ(metric(m, "fake_gpu_requests_total"), 0);
  EXPECT_EQ(metric(m, "vllm:request_success_total"), 0);
  EXPECT_EQ(metric(m, "vllm:generation_tokens_total"), 0);
  EXPECT_EQ(metric(m, "fake_gpu_prefix_cache_queries_total"), 0);
}

// A stall holds requests that are running on another worker thread too, and
// its end reaches them: the worker that resumes passes their finishes on.
TEST(FakeGpuApi, StallHoldsEveryThreadsRequestsAndRefusesBadInput) {
  START_FAKE_GPU(gpu, "--profile", "rtx3090ti", "--base-ms", "40", "--per-token-ms", "0",
                 "--threads", "2");
  EXPECT_EQ(gpu.get("/admin/stall").parsed()["stalled"], false);
  Reply bad = gpu.post("/admin/stall", {{"stalled", 1}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(gpu.post("/admin/stall", {{"stalled", true}, {"extra", 1}}).status, 400);
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", true}}).status, 200);
  EXPECT_EQ(gpu.get("/admin/stall").parsed()["stalled"], true);
  Concurrent load;
  for (int i = 0; i < 6; ++i) load.post(gpu, completion("held " + std::to_string(i), 1));
  ASSERT_TRUE(wait_until([&] { return gpu.metric("vllm:num_requests_running") == 6; }));
  // Five service times later, still nothing answered (a negative check can
  // only wait; on a slow machine it proves less, never fails wrongly).
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(gpu.metric("vllm:request_success_total"), 0);
  EXPECT_EQ(gpu.metric("vllm:num_requests_running"), 6);
  ASSERT_EQ(gpu.post("/admin/stall", {{"stalled", false}}).status, 200);
  load.join();
  for (size_t i = 0; i < load.size(); ++i) EXPECT_EQ(load.reply(i).status, 200);
  EXPECT_EQ(gpu.metric("vllm:request_success_total"), 6);
  EXPECT_EQ(gpu.metric("fake_gpu_inflight"), 0);
}

TEST(FakeGpuApi, InjectedInternalError) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--error-rate", "1");
  Reply r = gpu.post("/v1/completions", completion("x"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.parsed()["error"]["code"], 500);
  EXPECT_FALSE(r.retry_after.has_value());
  EXPECT_EQ(gpu.metric("fake_gpu_errors_injected_total", "kind=\"error\""), 1);
  EXPECT_EQ(gpu.get("/health").status, 200);  // faults hit inference only
}

TEST(FakeGpuApi, Injected503And429CarryRetryAfter) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--error-rate", "1", "--error-status", "503",
                 "--retry-after", "3");
  Reply r = gpu.post("/v1/completions", completion("x"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.parsed()["error"]["code"], 503);
  EXPECT_EQ(r.retry_after, std::optional<std::string>("3"));

  ASSERT_EQ(gpu.post("/admin/faults", {{"error_status", 429}, {"retry_after", 11}}).status, 200);
  r = gpu.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.parsed()["error"]["code"], 429);
  EXPECT_EQ(r.retry_after, std::optional<std::string>("11"));
}

TEST(FakeGpuApi, MalformedBodyIsUnparseable) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--malformed-rate", "1");
  Reply r = gpu.post("/v1/completions", completion("x"));
  EXPECT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.body.empty());
  EXPECT_FALSE(json::accept(r.body)) << r.body;
  EXPECT_EQ(gpu.metric("fake_gpu_errors_injected_total", "kind=\"malformed\""), 1);
}

// An aborted request: a 200 with what it had so far and finish_reason
// "abort", counted as vLLM counts it.
TEST(FakeGpuApi, AbortAnswersWithPartOfTheText) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  const std::string full = gpu.post("/v1/completions", completion("abort me", 8)).parsed()["choices"][0]["text"];
  ASSERT_EQ(gpu.post("/admin/faults", {{"abort_rate", 1}}).status, 200);
  Reply r = gpu.post("/v1/completions", completion("abort me", 8));
  ASSERT_EQ(r.status, 200) << r.body;
  const json c = r.parsed()["choices"][0];
  EXPECT_EQ(c["finish_reason"], "abort");
  EXPECT_EQ(c["text"], full.substr(0, full.size() / 2));
  EXPECT_EQ(gpu.metric("fake_gpu_errors_injected_total", "kind=\"abort\""), 1);
  EXPECT_EQ(gpu.metric("vllm:request_success_total", "finished_reason=\"abort\""), 1);
}

// A body sent as something other than JSON is refused before it reaches the
// engine, as vLLM's request validation does; a charset parameter is fine.
TEST(FakeGpuApi, ABodyNotSentAsJsonIsABadRequest) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  Reply plain = gpu.post_with("Content-Type: text/plain", "/v1/completions", completion("x"));
  EXPECT_EQ(plain.status, 400);
  EXPECT_EQ(plain.parsed()["error"]["type"], "BadRequestError");
  EXPECT_EQ(gpu.post_with("Content-Type: application/json; charset=utf-8", "/v1/completions", completion("x")).status,
            200);
  EXPECT_EQ(gpu.metric("fake_gpu_inflight"), 0);
}

// An engine that dies fails what it holds, running or waiting, at once (as
// vLLM's server does before it exits); nothing is answered 200 later.
TEST(FakeGpuApi, AnEngineThatDiesFailsTheRequestsItHolds) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--base-ms", "60000", "--max-batch", "2", "--threads", "2");
  Concurrent load;
  for (int i = 0; i < 3; ++i) load.post(gpu, completion("doomed " + std::to_string(i)), 120000);
  ASSERT_TRUE(wait_until([&] {
    std::string m = gpu.metrics();
    return metric(m, "vllm:num_requests_running") == 2 && metric(m, "vllm:num_requests_waiting") == 1;
  })) << gpu.metrics();
  EXPECT_EQ(gpu.post("/admin/health", {{"healthy", false}}).status, 200);
  load.join();
  for (size_t i = 0; i < load.size(); ++i) {
    EXPECT_EQ(load.reply(i).status, 500) << load.reply(i).body;
    EXPECT_EQ(load.reply(i).parsed()["error"]["type"], "InternalServerError");
  }
  std::string m = gpu.metrics();
  EXPECT_EQ(metric(m, "fake_gpu_inflight"), 0);
  EXPECT_EQ(metric(m, "vllm:num_requests_running"), 0);
  EXPECT_EQ(metric(m, "vllm:num_requests_waiting"), 0);
  EXPECT_EQ(metric(m, "fake_gpu_client_disconnects_total"), 0) << "failed by the server, not left by the client";
}

TEST(FakeGpuApi, DropClosesWithoutReply) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--drop-rate", "1");
  Reply r = gpu.post("/v1/completions", completion("x"), 20000);
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_NE(r.code, CURLE_OPERATION_TIMEDOUT);  // closed, not hung
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(gpu.get("/health").status, 200);
  std::string m = gpu.metrics();
  EXPECT_EQ(metric(m, "fake_gpu_errors_injected_total", "kind=\"drop\""), 1);
  EXPECT_EQ(metric(m, "fake_gpu_inflight"), 0);
}

TEST(FakeGpuApi, HangTimesOutClientAndIsReleasedOnDisconnect) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--hang-rate", "1");
  // 2 s: ample for the request to reach the server on a busy machine.
  Reply r = gpu.post("/v1/completions", completion("x"), 2000);
  EXPECT_EQ(r.code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_EQ(r.status, 0);
  // The server notices the hang-up and forgets the request (no 1 h leak).
  EXPECT_TRUE(wait_until([&] {
    std::string m = gpu.metrics();
    return metric(m, "fake_gpu_inflight") == 0 && metric(m, "fake_gpu_client_disconnects_total") == 1;
  })) << gpu.metrics();
  EXPECT_EQ(gpu.metric("fake_gpu_errors_injected_total", "kind=\"hang\""), 1);
  EXPECT_EQ(gpu.get("/health").status, 200);
}

// A test holds requests in flight for as long as it needs, then lets them
// go: /admin/release serves every hanging request at once, on every worker
// thread (hang_ms is an hour by default).
TEST(FakeGpuApi, ReleaseServesHangingRequestsAtOnce) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--hang-rate", "1", "--threads", "2");
  Concurrent load;
  for (int i = 0; i < 4; ++i) load.post(gpu, completion("held " + std::to_string(i), 3), 20000);
  ASSERT_TRUE(wait_until([&] { return gpu.metric("fake_gpu_inflight") == 4; })) << gpu.metrics();
  EXPECT_EQ(gpu.post("/admin/release", json::object()).status, 200);
  load.join();
  for (size_t i = 0; i < load.size(); ++i) {
    ASSERT_EQ(load.reply(i).status, 200) << load.reply(i).body;
    EXPECT_EQ(load.reply(i).parsed()["usage"]["completion_tokens"], 3);
  }
  EXPECT_EQ(gpu.metric("fake_gpu_inflight"), 0);
  EXPECT_EQ(gpu.metric("fake_gpu_errors_injected_total", "kind=\"hang\""), 4);
}

TEST(FakeGpuApi, DisconnectFreesBatchSlot) {
  START_FAKE_GPU(gpu, "--profile", "p40", "--base-ms", "600000", "--max-batch", "1");
  Reply r = gpu.post("/v1/completions", completion("long job"), 250);
  EXPECT_EQ(r.code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_TRUE(wait_until([&] {
    std::string m = gpu.metrics();
    return metric(m, "vllm:num_requests_running") == 0 && metric(m, "fake_gpu_inflight") == 0;
  })) << gpu.metrics();
}

TEST(FakeGpuApi, SlowFaultStillAnswers) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--slow-rate", "1", "--slow-ms", "20");
  Reply r = gpu.post("/v1/completions", completion("x", 4));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.parsed()["usage"]["completion_tokens"], 4);
  EXPECT_EQ(gpu.metric("fake_gpu_errors_injected_total", "kind=\"slow\""), 1);
}

TEST(FakeGpuApi, AdminFaultChangesTakeEffect) {
  START_FAKE_GPU(gpu, "--profile", "instant");
  EXPECT_EQ(gpu.post("/v1/completions", completion("x")).status, 200);
  Reply set = gpu.post("/admin/faults", {{"error_rate", 1.0}, {"error_status", 503}});
  ASSERT_EQ(set.status, 200) << set.body;
  EXPECT_EQ(set.parsed()["error_rate"], 1.0);
  EXPECT_EQ(gpu.post("/v1/completions", completion("x")).status, 503);
  json cfg = gpu.get("/admin/faults").parsed();
  EXPECT_EQ(cfg["error_rate"], 1.0);
  EXPECT_EQ(cfg["error_status"], 503);

  Reply bad = gpu.post("/admin/faults", {{"error_rate", 0.0}, {"no_such_knob", 1}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.parsed()["error"]["type"], "BadRequestError");
  EXPECT_EQ(gpu.get("/admin/faults").parsed(), cfg);  // nothing half-applied

  ASSERT_EQ(gpu.post("/admin/faults", {{"error_rate", 0.0}}).status, 200);
  EXPECT_EQ(gpu.post("/v1/completions", completion("x")).status, 200);
}

TEST(FakeGpuApi, TwoThreadsShareOneGpu) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--threads", "2");
  // A fresh connection per request spreads them over both listeners.
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(gpu.post("/v1/completions", completion("t" + std::to_string(i), 2)).status, 200);
  }
  std::string m = gpu.metrics();
  EXPECT_EQ(metric(m, "fake_gpu_requests_total"), 20);
  EXPECT_EQ(metric(m, "vllm:generation_tokens_total"), 40);
}

TEST(FakeGpuApi, TwoThreadsShareOneBatch) {
  // Jobs queue across both loops: a slot freed on one thread admits a job
  // owned by the other.
  START_FAKE_GPU(gpu, "--profile", "p40", "--base-ms", "40", "--per-token-ms", "0",
                 "--max-batch", "1", "--threads", "2");
  Concurrent load;
  for (int i = 0; i < 6; ++i) load.post(gpu, completion("shared " + std::to_string(i), 1));
  load.join();
  for (size_t i = 0; i < load.size(); ++i) EXPECT_EQ(load.reply(i).status, 200);
  std::string m = gpu.metrics();
  EXPECT_EQ(metric(m, "vllm:request_success_total"), 6);
  EXPECT_EQ(metric(m, "fake_gpu_peak_running"), 1);
  EXPECT_EQ(metric(m, "vllm:num_requests_waiting"), 0);
}

// A script that starts it detached learns its pid from --pid-file, written
// once it listens and removed when it exits.
TEST(FakeGpuApi, PidFileWhileRunning) {
  char dir[] = "/tmp/fake_gpu_pid_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/gpu.pid";
  {
    START_FAKE_GPU(gpu, "--profile", "instant", "--pid-file", path);
    std::ifstream in(path);
    long pid = 0;
    ASSERT_TRUE(in >> pid) << "no pid in " << path;
    EXPECT_EQ(pid, static_cast<long>(gpu.pid()));
    EXPECT_EQ(gpu.stop(), 0);
    EXPECT_NE(access(path.c_str(), F_OK), 0) << "the pid file outlived the server";
  }
  rmdir(dir);
}

TEST(FakeGpuApi, SigtermExitsCleanlyWithRequestsPending) {
  START_FAKE_GPU(gpu, "--profile", "p40", "--base-ms", "600000", "--max-batch", "1");
  Concurrent load;
  load.post(gpu, completion("a"), 10000);
  load.post(gpu, completion("b"), 10000);
  ASSERT_TRUE(wait_until([&] { return gpu.metric("vllm:num_requests_waiting") == 1; }));
  EXPECT_EQ(gpu.stop(), 0);
  load.join();
  EXPECT_NE(load.reply(0).code, CURLE_OK);
  EXPECT_NE(load.reply(1).code, CURLE_OK);
}

// As vLLM's uvicorn, a connection idle for keep_alive_ms is closed by the
// server (a client's pooled connection goes stale), but a request waiting for
// its answer longer than that is not cut.
int record_socket(void* out, curl_socket_t fd, curlsocktype) {
  *static_cast<curl_socket_t*>(out) = fd;
  return CURL_SOCKOPT_OK;
}

TEST(FakeGpuApi, IdleConnectionIsClosedAfterKeepAlive) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--keep-alive-ms", "300");
  CURL* c = curl_easy_init();
  curl_socket_t fd = CURL_SOCKET_BAD;
  const std::string body = completion("keep me", 2).dump();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, gpu.url("/v1/completions").c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, +[](char*, size_t s, size_t n, void*) { return s * n; });
  curl_easy_setopt(c, CURLOPT_SOCKOPTFUNCTION, &record_socket);
  curl_easy_setopt(c, CURLOPT_SOCKOPTDATA, &fd);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  long status = 0, connects = 0;
  ASSERT_EQ(curl_easy_perform(c), CURLE_OK);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  EXPECT_EQ(status, 200);
  ASSERT_NE(fd, CURL_SOCKET_BAD);
  // The connection stays in curl's pool; the server hangs up on it.
  bool closed = wait_until([&] {
    char byte;
    pollfd p{fd, POLLIN, 0};
    return poll(&p, 1, 0) == 1 && recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  });
  EXPECT_TRUE(closed) << "the idle connection was not closed by the server";
  // The next request notices and connects again.
  ASSERT_EQ(curl_easy_perform(c), CURLE_OK);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects);
  EXPECT_EQ(status, 200);
  EXPECT_EQ(connects, 1);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
}

TEST(FakeGpuApi, RequestHeldLongerThanKeepAliveIsAnswered) {
  START_FAKE_GPU(gpu, "--profile", "instant", "--keep-alive-ms", "100", "--hang-rate", "1");
  Concurrent load;
  load.post(gpu, completion("held past the keep-alive", 3), 20000);
  ASSERT_TRUE(wait_until([&] { return gpu.metric("fake_gpu_inflight") == 1; })) << gpu.metrics();
  // The premise, not a synchronisation: held for 5x the keep-alive.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(gpu.metric("fake_gpu_client_disconnects_total"), 0);
  EXPECT_EQ(gpu.post("/admin/release", json::object()).status, 200);
  load.join();
  ASSERT_EQ(load.reply(0).status, 200) << load.reply(0).body;
  EXPECT_EQ(load.reply(0).parsed()["usage"]["completion_tokens"], 3);
}

}  // namespace
