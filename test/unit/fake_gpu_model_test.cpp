// Pure simulation logic of fake_gpu: text generation, protocol, GPU model,
// faults, options and metrics. No sockets, no clocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "faults.hpp"
#include "gpu_model.hpp"
#include "gpu_state.hpp"
#include "metrics.hpp"
#include "options.hpp"
#include "protocol.hpp"
#include "text_gen.hpp"

namespace npc_scale::fake_gpu {
namespace {

using nlohmann::json;

std::vector<std::string> words_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

GenParams sampled(double temperature, std::optional<int64_t> seed, int max_tokens = 16) {
  GenParams p;
  p.temperature = temperature;
  p.seed = seed;
  p.max_tokens = max_tokens;
  return p;
}

std::string gen_text(const std::string& prompt, const GenParams& p, uint64_t nonce = 7,
                     int index = 0) {
  return generate(sampling_key(prompt, p, nonce, index), p).text;
}

InferenceRequest parse_ok(bool chat, const json& body, const ServedModel& m = {}) {
  ParseResult r = parse_inference_request(chat, body, m);
  if (auto* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << "unexpected error: " << e->message;
    return {};
  }
  return std::get<InferenceRequest>(r);
}

ApiError parse_err(bool chat, const json& body, const ServedModel& m = {}) {
  ParseResult r = parse_inference_request(chat, body, m);
  if (!std::holds_alternative<ApiError>(r)) {
    ADD_FAILURE() << "expected an error for " << body.dump();
    return {};
  }
  return std::get<ApiError>(r);
}

// ---- text generation ----

TEST(FakeGpuTextGen, CountTokensIsWhitespaceWordCount) {
  EXPECT_EQ(count_tokens(""), 0);
  EXPECT_EQ(count_tokens("   \t\n"), 0);
  EXPECT_EQ(count_tokens("build"), 1);
  EXPECT_EQ(count_tokens("  build  wood\tclay\nx "), 4);
}

TEST(FakeGpuTextGen, SameSeedSameTextDifferentSeedDifferentText) {
  const std::string prompt = "Chief, what shall we do with the clay?";
  std::string a = gen_text(prompt, sampled(0.8, 42), 1);
  std::string b = gen_text(prompt, sampled(0.8, 42), 2);  // nonce ignored with a seed
  std::string c = gen_text(prompt, sampled(0.8, 43), 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, gen_text("another prompt", sampled(0.8, 42), 1));
}

TEST(FakeGpuTextGen, GreedyIgnoresSeedAndNonce) {
  const std::string prompt = "greedy prompt";
  std::string base = gen_text(prompt, sampled(0.0, std::nullopt), 1);
  EXPECT_EQ(base, gen_text(prompt, sampled(0.0, 5), 2));
  EXPECT_EQ(base, gen_text(prompt, sampled(0.0, std::nullopt), 99, 3));
}

TEST(FakeGpuTextGen, UnseededSamplingVariesWithNonce) {
  const std::string prompt = "what next";
  std::set<std::string> seen;
  for (uint64_t nonce = 0; nonce < 20; ++nonce) {
    seen.insert(gen_text(prompt, sampled(1.0, std::nullopt), nonce));
  }
  EXPECT_EQ(seen.size(), 20u);
}

TEST(FakeGpuTextGen, ProducesMaxTokensWordsFromVocabulary) {
  const auto& vocab = vocabulary();
  for (int max_tokens : {1, 5, 64}) {
    GenParams p = sampled(0.0, std::nullopt, max_tokens);
    Generation g = generate(sampling_key("p", p, 0, 0), p);
    auto words = words_of(g.text);
    EXPECT_EQ(static_cast<int>(words.size()), max_tokens);
    EXPECT_EQ(g.completion_tokens, max_tokens);
    EXPECT_EQ(g.finish_reason, "length");
    EXPECT_FALSE(g.stop_reason.has_value());
    for (const auto& w : words) {
      EXPECT_NE(std::find(vocab.begin(), vocab.end(), w), vocab.end()) << w;
    }
  }
}

TEST(FakeGpuTextGen, ChoiceIsAlwaysOneOfTheGiven) {
  std::vector<std::string> choices = {"attack the village", "trade", "build a wall"};
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    GenParams p = sampled(1.0, i);
    p.choices = choices;
    Generation g = generate(sampling_key("prompt " + std::to_string(i), p, 0, 0), p);
    EXPECT_NE(std::find(choices.begin(), choices.end(), g.text), choices.end()) << g.text;
    EXPECT_EQ(g.finish_reason, "stop");
    EXPECT_EQ(g.completion_tokens, static_cast<int>(words_of(g.text).size()));
    seen.insert(g.text);
  }
  EXPECT_EQ(seen.size(), choices.size());  // not stuck on one choice
}

// As in vLLM, max_tokens still applies under a choice constraint: a longer
// choice is cut to that many tokens (words here), ending in "length".
TEST(FakeGpuTextGen, AChoiceLongerThanMaxTokensIsCut) {
  GenParams p = sampled(0.0, std::nullopt, 2);
  p.choices = {"the  great granary of the north"};
  Generation g = generate(sampling_key("prompt", p, 0, 0), p);
  EXPECT_EQ(g.text, "the  great");
  EXPECT_EQ(g.completion_tokens, 2);
  EXPECT_EQ(g.finish_reason, "length");
  p.max_tokens = 6;
  g = generate(sampling_key("prompt", p, 0, 0), p);
  EXPECT_EQ(g.text, p.choices[0]);
  EXPECT_EQ(g.finish_reason, "stop");
}

// vLLM applies stop strings to a constrained answer too.
TEST(FakeGpuTextGen, AStopStringCutsAChoice) {
  GenParams p = sampled(0.0, std::nullopt, 8);
  p.choices = {"attack north gate"};
  p.stop = {"gate", "north"};
  Generation g = generate(sampling_key("prompt", p, 0, 0), p);
  EXPECT_EQ(g.text, "attack ");
  EXPECT_EQ(g.finish_reason, "stop");
  EXPECT_EQ(g.stop_reason, "north");
  p.stop = {"south"};
  EXPECT_EQ(generate(sampling_key("prompt", p, 0, 0), p).text, "attack north gate");
}

TEST(FakeGpuTextGen, StopTruncatesAtEarliestMatch) {
  GenParams p = sampled(0.0, std::nullopt, 40);
  const std::string prompt = "stop test prompt";
  std::string full = gen_text(prompt, p);
  auto words = words_of(full);
  ASSERT_GE(words.size(), 5u);
  // A stop that is sure to occur: the fourth word, and a later cross-word one.
  std::string stop = words[3];
  std::string later = words[6] + " " + words[7];
  p.stop = {later, stop};
  // Expected from the untruncated text: whichever stop occurs first.
  size_t pos = std::min(full.find(stop), full.find(later));
  if (full.find(later) < full.find(stop)) stop = later;
  ASSERT_NE(pos, std::string::npos);
  Generation g = generate(sampling_key(prompt, p, 0, 0), p);
  EXPECT_EQ(g.text, full.substr(0, pos));
  EXPECT_EQ(g.finish_reason, "stop");
  ASSERT_TRUE(g.stop_reason.has_value());
  EXPECT_EQ(*g.stop_reason, stop);
  // Tokens generated up to and including the one completing the match.
  EXPECT_EQ(g.completion_tokens, count_tokens(full.substr(0, pos + stop.size())));
}

TEST(FakeGpuTextGen, StopNeverMatchingKeepsFullLength) {
  GenParams p = sampled(0.0, std::nullopt, 12);
  std::string full = gen_text("x", p);
  p.stop = {"<|never|>", ""};
  Generation g = generate(sampling_key("x", p, 0, 0), p);
  EXPECT_EQ(g.text, full);
  EXPECT_EQ(g.finish_reason, "length");
}

TEST(FakeGpuTextGen, NaturalStopEndsBeforeBudget) {
  GenParams p = sampled(0.0, std::nullopt, 4000);
  p.natural_stop = true;
  Generation g = generate(sampling_key("chat", p, 0, 0), p);
  EXPECT_LT(g.completion_tokens, 4000);
  EXPECT_GT(g.completion_tokens, 0);
  EXPECT_EQ(g.finish_reason, "stop");
  EXPECT_EQ(g.completion_tokens, static_cast<int>(words_of(g.text).size()));
}

// ---- protocol ----

TEST(FakeGpuProtocol, ParsesCompletionParameters) {
  ServedModel priority_scheduling;
  priority_scheduling.priority_scheduling = true;
  InferenceRequest r = parse_ok(false, {{"model", "npc-llm"},
                                        {"prompt", {"a b c", "d"}},
                                        {"max_tokens", 9},
                                        {"temperature", 0.5},
                                        {"seed", -3},
                                        {"n", 2},
                                        {"priority", -7},
                                        {"stop", "iron"},
                                        {"structured_outputs", {{"choice", {"yes", "no"}}}},
                                        {"unknown_field", true}},
                                priority_scheduling);
  EXPECT_FALSE(r.chat);
  EXPECT_EQ(r.prompts, (std::vector<std::string>{"a b c", "d"}));
  EXPECT_EQ(r.prompt_tokens, (std::vector<int>{3, 1}));
  EXPECT_EQ(r.gen.max_tokens, 9);
  EXPECT_DOUBLE_EQ(r.gen.temperature, 0.5);
  EXPECT_EQ(r.gen.seed, std::optional<int64_t>(-3));
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.priority, -7);
  EXPECT_EQ(r.gen.stop, (std::vector<std::string>{"iron"}));
  EXPECT_EQ(r.gen.choices, (std::vector<std::string>{"yes", "no"}));
}

// As FastAPI: JSON is read only from a JSON media type (or none at all).
TEST(FakeGpuProtocol, TheBodyIsJsonOnlyUnderAJsonContentType) {
  for (const char* ok : {static_cast<const char*>(nullptr), "", "application/json", "Application/JSON",
                         "application/json; charset=utf-8", " application/json ", "application/vnd.api+json"}) {
    EXPECT_FALSE(check_content_type(ok).has_value()) << (ok ? ok : "(none)");
  }
  for (const char* bad : {"text/plain", "application/x-www-form-urlencoded", "application/jsonx", "json",
                          "application/+json", "multipart/form-data; boundary=x"}) {
    std::optional<ApiError> e = check_content_type(bad);
    ASSERT_TRUE(e.has_value()) << bad;
    EXPECT_EQ(e->status, 400);
    EXPECT_EQ(e->type, "BadRequestError");
    EXPECT_NE(e->message.find("valid dictionary"), std::string::npos) << e->message;
  }
}

TEST(FakeGpuProtocol, DefaultsLikeVllm) {
  InferenceRequest r = parse_ok(false, {{"prompt", "hi"}});
  EXPECT_EQ(r.gen.max_tokens, 16);
  EXPECT_DOUBLE_EQ(r.gen.temperature, 1.0);
  EXPECT_FALSE(r.gen.seed.has_value());
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.priority, 0);
  EXPECT_TRUE(r.gen.choices.empty());
}

// As vLLM under its default scheduling policy (fcfs): a nonzero priority is a 400.
TEST(FakeGpuProtocol, APriorityNeedsPriorityScheduling) {
  EXPECT_EQ(parse_ok(false, {{"prompt", "hi"}, {"priority", 0}}).priority, 0);
  ApiError e = parse_err(false, {{"prompt", "hi"}, {"priority", 5}});
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.message, "Got priority 5 but Priority scheduling is not enabled.");
}

TEST(FakeGpuProtocol, OlderGuidedChoiceAccepted) {
  InferenceRequest r = parse_ok(false, {{"prompt", "hi"}, {"guided_choice", {"a", "b"}}});
  EXPECT_EQ(r.gen.choices, (std::vector<std::string>{"a", "b"}));
}

TEST(FakeGpuProtocol, UnknownModelIsVllmNotFound) {
  ApiError e = parse_err(false, {{"model", "gpt-4"}, {"prompt", "x"}});
  EXPECT_EQ(e.status, 404);
  EXPECT_EQ(error_json(e).dump(),
            R"({"error":{"message":"The model `gpt-4` does not exist.","type":"NotFoundError","param":null,"code":404}})");
}

TEST(FakeGpuProtocol, RejectsBadParameters) {
  std::vector<json> bad = {
      {{"prompt", "x"}, {"max_tokens", 0}},
      {{"prompt", "x"}, {"max_tokens", -5}},
      {{"prompt", "x"}, {"max_tokens", "16"}},
      {{"prompt", "x"}, {"max_tokens", 1.5}},
      {{"prompt", "x"}, {"n", 0}},
      {{"prompt", "x"}, {"temperature", -0.1}},
      {{"prompt", "x"}, {"temperature", "hot"}},
      {{"prompt", "x"}, {"seed", "s"}},
      {{"prompt", "x"}, {"priority", 1.5}},
      {{"prompt", "x"}, {"stop", 3}},
      {{"prompt", "x"}, {"stop", {"a", 1}}},
      {{"prompt", "x"}, {"guided_choice", json::array()}},
      {{"prompt", "x"}, {"structured_outputs", "choice"}},
      {{"prompt", "x"}, {"stream", true}},
      {{"prompt", "x"}, {"model", 3}},
      {{"prompt", 5}},
      {{"prompt", json::array()}},
      {{"prompt", {1, 2, 3}}},
      {{"prompt", ""}},
      {{"max_tokens", 3}},
      json::array(),
  };
  for (const auto& body : bad) {
    ApiError e = parse_err(false, body);
    EXPECT_EQ(e.status, 400) << body.dump();
    EXPECT_EQ(e.type, "BadRequestError") << body.dump();
    json j = json::parse(error_json(e).dump());
    EXPECT_EQ(j["error"]["code"], 400);
    EXPECT_TRUE(j["error"]["param"].is_null());
  }
  ApiError e = parse_err(false, {{"prompt", "x"}, {"max_tokens", 0}});
  EXPECT_EQ(e.message, "max_tokens must be at least 1, got 0.");
}

TEST(FakeGpuProtocol, MalformedJsonTextIs400) {
  ServedModel m;
  ParseResult r = parse_inference_request(false, std::string_view("{\"prompt\": \"x\""), m);
  ASSERT_TRUE(std::holds_alternative<ApiError>(r));
  EXPECT_EQ(std::get<ApiError>(r).status, 400);
}

TEST(FakeGpuProtocol, ContextWindowEnforced) {
  ServedModel m{"npc-llm", 10, false, ""};
  parse_ok(false, {{"prompt", "one two three four"}, {"max_tokens", 6}}, m);
  ApiError e = parse_err(false, {{"prompt", "one two three four"}, {"max_tokens", 7}}, m);
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("maximum context length is 10 tokens"), std::string::npos);
}

TEST(FakeGpuProtocol, ChatRendersMessagesAndCountsThem) {
  InferenceRequest r = parse_ok(true, {{"messages",
                                        {{{"role", "system"}, {"content", "You are a chief."}},
                                         {{"role", "user"},
                                          {"content", {{{"type", "text"}, {"text", "Build what?"}}}}},
                                         {{"role", "assistant"}, {"content", nullptr}}}},
                                       {"max_completion_tokens", 5}});
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0], "system: You are a chief.\nuser: Build what?\nassistant: \n");
  EXPECT_EQ(r.prompt_tokens[0], (1 + 4) + (1 + 2) + (1 + 0));  // "role:" + content words
  EXPECT_EQ(r.gen.max_tokens, 5);
  EXPECT_FALSE(r.gen.natural_stop);

  InferenceRequest open = parse_ok(true, {{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_TRUE(open.gen.natural_stop);

  EXPECT_EQ(parse_err(true, {{"messages", json::array()}}).status, 400);
  EXPECT_EQ(parse_err(true, {{"messages", {{{"content", "no role"}}}}}).status, 400);
  EXPECT_EQ(parse_err(true, {{"messages", {{{"role", "user"}, {"content", 5}}}}}).status, 400);
}

TEST(FakeGpuProtocol, ListPromptTimesNChoicesWithConsistentUsage) {
  InferenceRequest r = parse_ok(false, {{"prompt", {"first prompt here", "second"}},
                                        {"n", 3},
                                        {"max_tokens", 4},
                                        {"temperature", 0.9}});
  InferenceResult res = run_inference(r, 11);
  ASSERT_EQ(res.choices.size(), 6u);
  EXPECT_EQ(res.prompt_tokens, 3 + 1);
  int sum = 0;
  for (const auto& c : res.choices) sum += c.completion_tokens;
  EXPECT_EQ(res.completion_tokens, sum);
  EXPECT_EQ(res.max_choice_tokens, 4);
  // n samples of one prompt differ at temperature > 0.
  EXPECT_NE(res.choices[0].text, res.choices[1].text);

  json out = json::parse(completion_response(r, res, "cmpl-abc", 1700000000, "npc-llm").dump());
  EXPECT_EQ(out["object"], "text_completion");
  EXPECT_EQ(out["id"], "cmpl-abc");
  EXPECT_EQ(out["created"], 1700000000);
  ASSERT_EQ(out["choices"].size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const json& c = out["choices"][i];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["text"], res.choices[i].text);
    EXPECT_TRUE(c["logprobs"].is_null());
    EXPECT_TRUE(c["prompt_logprobs"].is_null());
    EXPECT_EQ(c["finish_reason"], "length");
  }
  EXPECT_EQ(out["usage"]["prompt_tokens"], res.prompt_tokens);
  EXPECT_EQ(out["usage"]["completion_tokens"], res.completion_tokens);
  EXPECT_EQ(out["usage"]["total_tokens"], res.prompt_tokens + res.completion_tokens);
  EXPECT_TRUE(out["usage"]["prompt_tokens_details"].is_null());
}

TEST(FakeGpuProtocol, ChatResponseShape) {
  InferenceRequest r = parse_ok(true, {{"messages", {{{"role", "user"}, {"content", "hello"}}}},
                                       {"max_tokens", 3},
                                       {"stop", {"zzz"}}});
  InferenceResult res = run_inference(r, 1);
  json out = json::parse(completion_response(r, res, "chatcmpl-1", 5, "m").dump());
  EXPECT_EQ(out["object"], "chat.completion");
  EXPECT_EQ(out["model"], "m");
  const json& msg = out["choices"][0]["message"];
  EXPECT_EQ(msg["role"], "assistant");
  EXPECT_EQ(msg["content"], res.choices[0].text);
  EXPECT_EQ(msg["tool_calls"], json::array());
  EXPECT_EQ(out["usage"]["completion_tokens"], 3);
}

TEST(FakeGpuProtocol, ModelsListing) {
  json out = json::parse(models_response({"my-model", 2048, false, ""}, 42).dump());
  EXPECT_EQ(out["object"], "list");
  ASSERT_EQ(out["data"].size(), 1u);
  EXPECT_EQ(out["data"][0]["id"], "my-model");
  EXPECT_EQ(out["data"][0]["root"], "my-model");
  EXPECT_EQ(out["data"][0]["owned_by"], "vllm");
  EXPECT_EQ(out["data"][0]["max_model_len"], 2048);
  EXPECT_TRUE(out["data"][0]["parent"].is_null());
}

// ---- GPU model ----

TEST(FakeGpuModel, StepTimeFollowsFormulaAndGrowsWithBatch) {
  for (const std::string& name : profile_names()) {
    GpuProfile p = *profile_by_name(name);
    double prev = -1;
    for (int running = 1; running <= p.max_batch && running <= 64; running *= 2) {
      double t = step_ms(p, running);
      EXPECT_DOUBLE_EQ(t, p.per_token_ms * (1 + p.batch_slowdown * (running - 1) / p.max_batch)) << name;
      EXPECT_GE(t, prev) << name;
      if (p.per_token_ms > 0 && p.batch_slowdown > 0 && prev >= 0) {
        EXPECT_GT(t, prev) << name;
      }
      prev = t;
    }
    EXPECT_LE(prefill_ms(p, true), prefill_ms(p, false));
  }
  GpuProfile fast = *profile_by_name("rtx3090ti");
  GpuProfile slow = *profile_by_name("p40");
  EXPECT_LT(step_ms(fast, 1), step_ms(slow, 1));
  EXPECT_LT(prefill_ms(fast, false), prefill_ms(slow, false));
  EXPECT_GT(fast.max_batch, slow.max_batch);
  EXPECT_DOUBLE_EQ(step_ms(*profile_by_name("instant"), 1000), 0.0);
  EXPECT_DOUBLE_EQ(prefill_ms(*profile_by_name("instant"), false), 0.0);
  EXPECT_FALSE(profile_by_name("h100").has_value());
}

GpuProfile tiny_gpu(int max_batch) {
  GpuProfile p;
  p.name = "tiny";
  p.base_ms = 10;
  p.per_token_ms = 1;
  p.max_batch = max_batch;
  p.batch_slowdown = 1.0;
  return p;
}

Job job(uint64_t id, int priority = 0, int tokens = 10) {
  Job j;
  j.id = id;
  j.priority = priority;
  j.completion_tokens = tokens;
  return j;
}

using Ids = std::vector<uint64_t>;

// Alone on the GPU a job takes its prefill plus one step per token.
TEST(FakeGpuModel, ALoneJobTakesPrefillPlusItsTokens) {
  Scheduler s(tiny_gpu(4));
  Progress p = s.submit(job(1, 0, 20), 1000);
  EXPECT_TRUE(p.finished.empty());
  ASSERT_TRUE(p.next_finish_ms);
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 1000 + 10 + 20);
  EXPECT_TRUE(s.advance(1029.9).finished.empty());
  p = s.advance(1030);
  EXPECT_EQ(p.finished, Ids{1});
  EXPECT_FALSE(p.next_finish_ms) << "nothing runs";
  Job hit = job(2, 0, 20);
  hit.prefix_hit = true;
  hit.extra_ms = 7;  // the slow fault
  EXPECT_DOUBLE_EQ(*s.submit(hit, 2000).next_finish_ms, 2000 + 10 * 0.5 + 7 + 20);
}

// Continuous batching: a job that joins slows the one already decoding from
// that moment on, and its leaving speeds the other up again. A time fixed
// at admission would have the first job done at t = 110.
TEST(FakeGpuModel, JoiningAndLeavingChangeTheStepTimeOfTheOthers) {
  GpuProfile g = tiny_gpu(2);
  g.base_ms = 0;  // steps only: 1 ms alone, 1.5 ms for two
  Scheduler s(g);
  EXPECT_DOUBLE_EQ(*s.submit(job(1, 0, 100), 0).next_finish_ms, 100);
  // At t = 50 job 1 has 50 tokens left; both now step at 1.5 ms.
  Progress p = s.submit(job(2, 0, 100), 50);
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 50 + 50 * 1.5);
  EXPECT_TRUE(s.advance(124).finished.empty()) << "no longer done at 100";
  p = s.advance(125);
  EXPECT_EQ(p.finished, Ids{1});
  // Job 2 did 75 / 1.5 = 50 tokens meanwhile; alone, the other 50 take 50 ms.
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 175);
  EXPECT_EQ(s.advance(175).finished, Ids{2});
}

// One call that covers several finishes runs them in order: after the
// first, the rest run faster.
TEST(FakeGpuModel, FinishesBetweenTwoCallsAreRunEventByEvent) {
  GpuProfile g = tiny_gpu(2);
  g.base_ms = 0;
  Scheduler s(g);
  s.submit(job(1, 0, 10), 0);
  s.submit(job(2, 0, 30), 0);
  s.submit(job(3, 0, 5), 0);  // waits for a slot
  EXPECT_EQ(s.waiting(), 1u);
  // Job 1 ends at 15 (10 steps of 1.5 ms); job 3 takes its slot then, ends
  // at 15 + 5 * 1.5 = 22.5; job 2 has 30 - 10 - 5 = 15 tokens left, alone: 37.5.
  Progress p = s.advance(1000);
  EXPECT_EQ(p.finished, (Ids{1, 3, 2}));
  EXPECT_FALSE(p.next_finish_ms);
  Scheduler again(g);
  again.submit(job(1, 0, 10), 0);
  again.submit(job(2, 0, 30), 0);
  again.submit(job(3, 0, 5), 0);
  EXPECT_EQ(again.advance(37.4).finished, (Ids{1, 3}));
  EXPECT_DOUBLE_EQ(*again.advance(37.4).next_finish_ms, 37.5);
}

// Each finished job reports where its time went: the waiting queue, then
// prefill up to its first token (which the first decode step makes), then
// the rest of its decode.
TEST(FakeGpuModel, FinishedJobsReportTheirPhases) {
  Scheduler s(tiny_gpu(1));  // 10 ms fixed cost, 1 ms a token alone
  s.submit(job(1, 0, 20), 1000);
  s.submit(job(2, 0, 5), 1000);  // waits for the one slot
  Progress p = s.advance(1030);
  ASSERT_EQ(p.finished, Ids{1});
  ASSERT_EQ(p.times.size(), 1u);
  EXPECT_DOUBLE_EQ(p.times[0].queued_ms, 0);
  EXPECT_DOUBLE_EQ(p.times[0].prefill_ms, 11) << "10 ms, then the first token's step";
  EXPECT_DOUBLE_EQ(p.times[0].decode_ms, 19);
  EXPECT_EQ(p.times[0].tokens, 20);
  p = s.advance(1045);
  ASSERT_EQ(p.finished, Ids{2});
  ASSERT_EQ(p.times.size(), 1u);
  EXPECT_DOUBLE_EQ(p.times[0].queued_ms, 30) << "admitted when 1 finished";
  EXPECT_DOUBLE_EQ(p.times[0].prefill_ms, 11);
  EXPECT_DOUBLE_EQ(p.times[0].decode_ms, 4);
  // One token: the first is the last.
  s.submit(job(5, 0, 1), 1500);
  p = s.advance(1511);
  ASSERT_EQ(p.finished, Ids{5});
  EXPECT_DOUBLE_EQ(p.times[0].prefill_ms, 11);
  EXPECT_DOUBLE_EQ(p.times[0].decode_ms, 0);
  EXPECT_EQ(p.times[0].tokens, 1);
  // A cancelled job reports nothing; one with no work at all, zeros.
  s.submit(job(3, 0, 5), 2000);
  EXPECT_TRUE(s.cancel(3, 2001).times.empty());
  Scheduler instant(*profile_by_name("instant"));
  p = instant.submit(job(4, 0, 8), 5);
  ASSERT_EQ(p.times.size(), 1u);
  EXPECT_DOUBLE_EQ(p.times[0].queued_ms + p.times[0].prefill_ms + p.times[0].decode_ms, 0);
}

TEST(FakeGpuModel, AJobWithNoWorkFinishesAtOnce) {
  Scheduler s(*profile_by_name("instant"));
  Progress p = s.submit(job(7, 0, 500), 42);
  EXPECT_EQ(p.finished, Ids{7});
  EXPECT_FALSE(p.next_finish_ms);
  EXPECT_EQ(s.running(), 0u);
}

TEST(FakeGpuModel, WaitingQueueBeyondMaxBatchInPriorityOrder) {
  Scheduler s(tiny_gpu(2));
  s.submit(job(1), 0);
  s.submit(job(2), 0);
  s.submit(job(3, 5), 0);
  s.submit(job(4, -1), 0);
  s.submit(job(5, 0), 0);
  s.submit(job(6, 0), 0);
  EXPECT_EQ(s.running(), 2u);
  EXPECT_EQ(s.waiting(), 4u);
  // Lowest priority value first, FIFO among equals (same work: pairs finish
  // together, in admission order).
  EXPECT_EQ(s.advance(1e6).finished, (Ids{1, 2, 4, 5, 6, 3}));
  EXPECT_EQ(s.running(), 0u);
  EXPECT_EQ(s.waiting(), 0u);
  EXPECT_EQ(s.peak_running(), 2u);
}

TEST(FakeGpuModel, CancelFreesSlotOrQueuePlace) {
  Scheduler s(tiny_gpu(1));
  s.submit(job(1), 0);
  s.submit(job(2), 0);
  s.submit(job(3), 0);
  EXPECT_EQ(*s.cancel(2, 5).next_finish_ms, 20) << "waiting: job 1 goes on";
  EXPECT_EQ(s.waiting(), 1u);
  // Running: its slot goes to 3, whose work starts now.
  Progress p = s.cancel(1, 6);
  EXPECT_TRUE(p.finished.empty());
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 6 + 20);
  EXPECT_EQ(s.cancel(99, 7).finished.size(), 0u);
  EXPECT_EQ(s.running(), 1u);
  s.reset_peak();
  EXPECT_EQ(s.peak_running(), 1u);  // restarts from what is running
}

// Threads read their clocks before the lock: a time behind the
// scheduler's is taken as now, never run backwards.
TEST(FakeGpuModel, ATimeBehindTheClockIsNow) {
  Scheduler s(tiny_gpu(2));
  s.submit(job(1, 0, 10), 100);
  EXPECT_DOUBLE_EQ(*s.advance(90).next_finish_ms, 120);
  EXPECT_EQ(s.advance(120).finished, Ids{1});
}

// Whatever the clock's magnitude (here ~3 years in ms, where one double step
// is far above the scheduler's epsilon), every job finishes and the
// scheduler never loops on a remainder left by rounding.
TEST(FakeGpuModel, AHugeClockStillFinishesEveryJob) {
  for (const char* name : {"rtx3090ti", "p40"}) {
    Scheduler s(*profile_by_name(name));
    const double base = 1e11;
    size_t finished = 0;
    for (uint64_t i = 1; i <= 200; i++) {
      finished += s.submit(job(i, static_cast<int>(i % 3), static_cast<int>(1 + i * 7 % 61)), base + i * 0.37).finished.size();
      if (i % 5 == 0) finished += s.advance(base + i * 0.37 + 3.1).finished.size();
    }
    Progress p = s.advance(base + 1e7);
    finished += p.finished.size();
    EXPECT_EQ(finished, 200u) << name;
    EXPECT_FALSE(p.next_finish_ms) << name;
  }
}

// A longer prompt takes longer to prefill; a prefix-cache hit scales the
// whole prefill.
TEST(FakeGpuModel, PrefillGrowsWithThePrompt) {
  GpuProfile g = tiny_gpu(4);
  g.prefill_per_token_ms = 0.5;
  EXPECT_DOUBLE_EQ(prefill_ms(g, false, 100), 10 + 50);
  EXPECT_DOUBLE_EQ(prefill_ms(g, true, 100), (10 + 50) * 0.5);
  Scheduler s(g);
  Job long_prompt = job(1, 0, 20);
  long_prompt.prompt_tokens = 100;
  EXPECT_DOUBLE_EQ(*s.submit(long_prompt, 0).next_finish_ms, 10 + 50 + 20);
  for (const char* name : {"rtx3090ti", "p40"}) {
    GpuProfile p = *profile_by_name(name);
    EXPECT_GT(prefill_ms(p, false, 1000), prefill_ms(p, false, 10)) << name;
    EXPECT_GE(p.kv_cache_tokens, p.max_model_len) << name;
  }
  EXPECT_EQ(profile_by_name("instant")->kv_cache_tokens, 0) << "unlimited";
}

GpuProfile kv_gpu(int64_t kv_tokens) {
  GpuProfile g = tiny_gpu(4);
  g.base_ms = 0;
  g.batch_slowdown = 0;  // 1 ms per step whatever the batch
  g.kv_cache_tokens = kv_tokens;
  return g;
}

Job prompted(uint64_t id, int prompt_tokens, int tokens, int priority = 0) {
  Job j = job(id, priority, tokens);
  j.prompt_tokens = prompt_tokens;
  return j;
}

// A waiting request is admitted only with room in the KV cache for its
// prompt and its next token, even with batch slots free, and the first that
// does not fit holds back the ones behind it, as vLLM's scheduler.
TEST(FakeGpuModel, AFullKvCacheHoldsRequestsBackDespiteFreeSlots) {
  Scheduler s(kv_gpu(100));
  s.submit(prompted(1, 60, 10), 0);
  s.submit(prompted(2, 50, 10), 0);  // 60 + 50 + 1 > 100
  s.submit(prompted(3, 5, 10), 0);   // would fit, but 2 is first
  EXPECT_EQ(s.running(), 1u);
  EXPECT_EQ(s.waiting(), 2u);
  EXPECT_DOUBLE_EQ(s.kv_usage(), 0.6);
  // 1 holds 60 + 10 when it finishes at 10; then 2 and 3 fit together.
  Progress p = s.advance(10);
  EXPECT_EQ(p.finished, Ids{1});
  EXPECT_EQ(s.running(), 2u);
  EXPECT_EQ(s.waiting(), 0u);
  EXPECT_EQ(s.preemptions(), 0u);
  // Cancelling the head of the queue lets the rest in.
  Scheduler c(kv_gpu(100));
  c.submit(prompted(1, 60, 10), 0);
  c.submit(prompted(2, 50, 10), 0);
  c.submit(prompted(3, 5, 10), 0);
  c.cancel(2, 1);
  EXPECT_EQ(c.running(), 2u);
  EXPECT_EQ(c.waiting(), 0u);
}

// The GPU's prefill throughput is shared: prompts prefilled at the same
// time take as long together as one after the other (vLLM's per-step token
// budget), while each request's fixed cost (base_ms) runs alongside. A
// prompt arriving mid-way slows those still prefilling.
TEST(FakeGpuModel, PromptPrefillsShareTheGpu) {
  GpuProfile g = tiny_gpu(8);
  g.base_ms = 2;
  g.prefill_per_token_ms = 0.1;
  g.per_token_ms = 1;
  g.batch_slowdown = 0;
  Scheduler s(g);
  // Three 100-token prompts (10 ms alone each) and one token each: fixed
  // costs together (2 ms), then 30 ms of prompt prefill for all three.
  s.submit(prompted(1, 100, 1), 0);
  s.submit(prompted(2, 100, 1), 0);
  Progress p = s.submit(prompted(3, 100, 1), 0);
  ASSERT_TRUE(p.next_finish_ms);
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 2);  // the next change: the prompts start sharing
  EXPECT_DOUBLE_EQ(*s.advance(2).next_finish_ms, 2 + 30);  // they end together
  EXPECT_DOUBLE_EQ(*s.advance(32).next_finish_ms, 2 + 30 + 1);
  EXPECT_EQ(s.advance(32.5).finished, Ids{});
  EXPECT_EQ(s.advance(33).finished, (Ids{1, 2, 3}));

  // One alone, joined half-way through its prompt: it had 5 ms left alone,
  // now shares: both prompts' remaining 5 + 10 ms take 15 ms together, the
  // first done once 10 ms of shared time covers its 5 (at 2 + 5 + 10).
  Scheduler t(g);
  t.submit(prompted(1, 100, 1), 0);
  t.advance(7);  // fixed 2 ms, then half its prompt
  t.submit(prompted(2, 100, 1), 7);  // its fixed 2 ms first, alone with 1 meanwhile
  // 1 prefills alone until 9 (3 ms left), then both share: 1 ends at 9 + 6,
  // its token at 16; 2 has 7 ms left alone then, done at 15 + 7, token at 23.
  EXPECT_EQ(t.advance(15.5).finished, Ids{});
  EXPECT_EQ(t.advance(16).finished, Ids{1});
  EXPECT_EQ(t.advance(22.5).finished, Ids{});
  EXPECT_EQ(t.advance(23).finished, Ids{2});
}

// Decoding grows the KV cache; when a step finds it full the newest running
// request is preempted: its KV freed, it waits, and once admitted again it
// goes on from the tokens it had (recomputed in its prefill).
TEST(FakeGpuModel, AFullKvCachePreemptsTheNewestRequest) {
  GpuProfile g = kv_gpu(100);
  g.prefill_per_token_ms = 0.1;
  Scheduler s(g);
  s.submit(prompted(1, 40, 50), 0);  // prefill 4 ms alone
  Progress p = s.submit(prompted(2, 40, 50), 0);
  // The two prefills share the GPU: both end at t = 8. Both decode from
  // there at 1 token/ms each: 80 + 2 (t - 8) = 100 at t = 18, before either
  // finishes (58). The caller is told of each change: the prefills' end
  // (the cache starts growing), then the cache full.
  ASSERT_TRUE(p.next_finish_ms);
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 8);
  EXPECT_DOUBLE_EQ(*s.advance(8).next_finish_ms, 18);
  p = s.advance(18);
  EXPECT_TRUE(p.finished.empty());
  EXPECT_EQ(s.preemptions(), 1u);
  EXPECT_EQ(s.running(), 1u);
  EXPECT_EQ(s.waiting(), 1u) << "2 waits, 10 tokens done";
  // 1 finishes alone at 58 (40 tokens left at 1 ms); 2 comes back needing
  // 40 + 10 tokens: prefill 5 ms, then its 40 tokens.
  p = s.advance(58);
  EXPECT_EQ(p.finished, Ids{1});
  ASSERT_TRUE(p.next_finish_ms);
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 58 + 5 + 40);
  EXPECT_EQ(s.advance(103).finished, Ids{2});
  EXPECT_EQ(s.preemptions(), 1u);
  s.reset_preemptions();
  EXPECT_EQ(s.preemptions(), 0u);
}

// A preempted job keeps its first stamps: its time out of the batch counts
// in its decode (it had its first token), and the phases add up to its
// submission-to-finish time.
TEST(FakeGpuModel, APreemptedJobKeepsItsFirstTokenTime) {
  GpuProfile g = kv_gpu(100);
  g.prefill_per_token_ms = 0.1;
  Scheduler s(g);
  s.submit(prompted(1, 40, 50), 0);
  s.submit(prompted(2, 40, 50), 0);
  // As in AFullKvCachePreemptsTheNewestRequest: both prefill to t = 8, 2 is
  // preempted at 18 with 10 tokens, 1 finishes at 58, 2 at 103.
  Progress p = s.advance(58);
  ASSERT_EQ(p.finished, Ids{1});
  EXPECT_DOUBLE_EQ(p.times[0].prefill_ms, 9) << "shared prefill to 8, first step to 9";
  EXPECT_DOUBLE_EQ(p.times[0].decode_ms, 49);
  p = s.advance(103);
  ASSERT_EQ(p.finished, Ids{2});
  EXPECT_EQ(s.preemptions(), 1u);
  EXPECT_DOUBLE_EQ(p.times[0].queued_ms, 0);
  EXPECT_DOUBLE_EQ(p.times[0].prefill_ms, 9) << "its first token came before the preemption";
  EXPECT_DOUBLE_EQ(p.times[0].decode_ms, 103 - 9);
}

// Preempted while still prefilling its prompt, a job's time out of the
// batch counts in its prefill: its first token comes after it is back.
TEST(FakeGpuModel, APreemptionBeforeTheFirstTokenCountsInPrefill) {
  GpuProfile g = kv_gpu(100);
  g.prefill_per_token_ms = 1;
  Scheduler s(g);
  s.submit(prompted(1, 20, 50, 0), 1000);
  s.submit(prompted(2, 70, 50, 5), 1000);  // less urgent: the victim
  // The prompts share the GPU: 1's ends at 1040 (2 has 50 ms left); 1
  // decodes, and the cache (90 held) is full at 1050: 2 goes back to
  // waiting with no token. 1 ends at 1090; 2 prefills its 70 tokens again
  // alone, its first token at 1161, its last at 1210.
  Progress p = s.advance(1090);
  ASSERT_EQ(p.finished, Ids{1});
  EXPECT_DOUBLE_EQ(p.times[0].prefill_ms, 41);
  EXPECT_DOUBLE_EQ(p.times[0].decode_ms, 49);
  p = s.advance(1210);
  ASSERT_EQ(p.finished, Ids{2});
  EXPECT_EQ(s.preemptions(), 1u);
  EXPECT_DOUBLE_EQ(p.times[0].queued_ms, 0) << "first admitted at once";
  EXPECT_DOUBLE_EQ(p.times[0].prefill_ms, 161);
  EXPECT_DOUBLE_EQ(p.times[0].decode_ms, 49);
}

// With priorities the victim is the lowest-priority request, not the newest;
// and a request alone is never preempted, however long (it runs by itself).
TEST(FakeGpuModel, PreemptionSparesHigherPriorityAndALoneRequest) {
  Scheduler s(kv_gpu(100));
  s.submit(prompted(1, 40, 50, 5), 0);
  s.submit(prompted(2, 40, 50, 0), 0);  // newer, but more urgent
  EXPECT_TRUE(s.advance(10).finished.empty());
  EXPECT_EQ(s.preemptions(), 1u);
  EXPECT_EQ(s.advance(50).finished, Ids{2}) << "1 was the one preempted";
  Scheduler alone(kv_gpu(100));
  alone.submit(prompted(1, 90, 50), 0);  // 90 + 50 > 100
  EXPECT_EQ(alone.advance(50).finished, Ids{1});
  EXPECT_EQ(alone.preemptions(), 0u);
}

// Many requests through a small cache at a clock where one double step is
// far above the epsilon: all finish, no event loops for ever.
TEST(FakeGpuModel, AHugeClockWithASmallKvCacheStillFinishesEveryJob) {
  GpuProfile g = *profile_by_name("rtx3090ti");
  g.kv_cache_tokens = 8192;
  Scheduler s(g);
  const double base = 1e11;
  size_t finished = 0;
  for (uint64_t i = 1; i <= 200; i++) {
    Job j = prompted(i, static_cast<int>(50 + i * 37 % 700), static_cast<int>(1 + i * 7 % 300), static_cast<int>(i % 3));
    j.sequences = 1 + static_cast<int>(i % 2);
    finished += s.submit(j, base + i * 0.37).finished.size();
    if (i % 5 == 0) finished += s.advance(base + i * 0.37 + 3.1).finished.size();
  }
  Progress p = s.advance(base + 1e8);
  finished += p.finished.size();
  EXPECT_EQ(finished, 200u);
  EXPECT_FALSE(p.next_finish_ms);
  EXPECT_GT(s.preemptions(), 0u) << "the cache was meant to fill";
}

TEST(FakeGpuModel, PrefixCacheHitsOnSharedPrefixAndEvictsLru) {
  PrefixCache c(2, 16);
  EXPECT_FALSE(c.lookup_and_insert("0123456789abcdef-tail one"));
  EXPECT_TRUE(c.lookup_and_insert("0123456789abcdef-other tail"));
  EXPECT_FALSE(c.lookup_and_insert("short"));
  EXPECT_FALSE(c.lookup_and_insert("third prefix...."));  // evicts the oldest
  EXPECT_TRUE(c.lookup_and_insert("third prefix....!"));
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.queries(), 5u);
  EXPECT_EQ(c.hits(), 2u);
  EXPECT_FALSE(c.lookup_and_insert("0123456789abcdef"));  // was evicted
}

// ---- faults ----

TEST(FakeGpuFaults, RateZeroNeverRateOneAlways) {
  FaultRoller roller(123);
  FaultConfig none;
  FaultConfig all;
  all.hang_rate = all.slow_rate = all.malformed_rate = all.abort_rate = 1;
  for (int i = 0; i < 1000; ++i) {
    FaultRoll r = roller.roll(none);
    EXPECT_FALSE(r.drop || r.error || r.hang || r.slow || r.malformed || r.abort);
    FaultRoll a = roller.roll(all);
    EXPECT_TRUE(a.hang && a.slow && a.malformed && a.abort);
    EXPECT_FALSE(a.drop || a.error);
  }
  FaultConfig terminal;
  terminal.drop_rate = terminal.error_rate = terminal.hang_rate = 1;
  FaultRoll t = roller.roll(terminal);
  EXPECT_TRUE(t.drop);  // drop wins; an ended request gets no other fault
  EXPECT_FALSE(t.error || t.hang);
}

TEST(FakeGpuFaults, SeededRollsReplayAndMatchRate) {
  FaultConfig cfg;
  cfg.error_rate = 0.3;
  FaultRoller a(9), b(9);
  int hits = 0;
  for (int i = 0; i < 10000; ++i) {
    bool x = a.roll(cfg).error;
    EXPECT_EQ(x, b.roll(cfg).error);
    hits += x;
  }
  EXPECT_GT(hits, 2700);
  EXPECT_LT(hits, 3300);
}

TEST(FakeGpuFaults, MergeValidatesAndIsAllOrNothing) {
  FaultConfig cfg;
  EXPECT_FALSE(merge_faults(cfg, {{"error_rate", 0.5}, {"error_status", 503}, {"retry_after", 9}}));
  EXPECT_DOUBLE_EQ(cfg.error_rate, 0.5);
  EXPECT_EQ(cfg.error_status, 503);
  EXPECT_EQ(cfg.retry_after, 9);
  EXPECT_EQ(cfg.hang_ms, FaultConfig{}.hang_ms);

  FaultConfig before = cfg;
  for (const json& bad : {json{{"drop_rate", 0.1}, {"nope", 1}}, json{{"error_rate", 2}},
                          json{{"error_status", 418}}, json{{"hang_ms", -1}},
                          json{{"slow_ms", "fast"}}, json::array()}) {
    EXPECT_TRUE(merge_faults(cfg, bad).has_value()) << bad.dump();
    EXPECT_EQ(faults_to_json(cfg), faults_to_json(before)) << bad.dump();
  }
  auto err = merge_faults(cfg, {{"nope", 1}});
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("nope"), std::string::npos);
}

// ---- options ----

Options parse(std::vector<const char*> args) {
  args.insert(args.begin(), "fake_gpu");
  Options o;
  auto err = parse_options(static_cast<int>(args.size()), args.data(), &o);
  EXPECT_FALSE(err) << *err;
  return o;
}

TEST(FakeGpuOptions, ProfileThenOverridesInAnyOrder) {
  Options a = parse({"--base-ms", "7", "--profile", "p40", "--max-batch=3"});
  GpuProfile p40 = *profile_by_name("p40");
  EXPECT_EQ(a.profile.name, "p40");
  EXPECT_DOUBLE_EQ(a.profile.base_ms, 7);
  EXPECT_EQ(a.profile.max_batch, 3);
  EXPECT_DOUBLE_EQ(a.profile.per_token_ms, p40.per_token_ms);

  Options kv = parse({"--kv-cache-tokens", "20000", "--prefill-per-token-ms", "0.25", "--profile", "p40"});
  EXPECT_EQ(kv.profile.kv_cache_tokens, 20000);
  EXPECT_DOUBLE_EQ(kv.profile.prefill_per_token_ms, 0.25);
  EXPECT_EQ(parse({"--profile", "instant", "--kv-cache-tokens", "0"}).profile.kv_cache_tokens, 0);

  Options d = parse({});
  EXPECT_EQ(d.profile.name, "rtx3090ti");
  EXPECT_EQ(d.model, "npc-llm");
  EXPECT_EQ(d.host, "127.0.0.1");
  EXPECT_TRUE(d.healthy);
}

TEST(FakeGpuOptions, FaultFlagsAndErrors) {
  Options o = parse({"--port", "0", "--error-rate", "0.25", "--error-status", "429", "--retry-after",
                     "4", "--hang-ms", "50", "--drop-rate", "1", "--fault-seed", "77", "--unhealthy"});
  EXPECT_EQ(o.port, 0);
  EXPECT_DOUBLE_EQ(o.faults.error_rate, 0.25);
  EXPECT_EQ(o.faults.error_status, 429);
  EXPECT_EQ(o.faults.retry_after, 4);
  EXPECT_EQ(o.faults.hang_ms, 50);
  EXPECT_DOUBLE_EQ(o.faults.drop_rate, 1);
  EXPECT_EQ(o.faults.fault_seed, 77u);
  EXPECT_FALSE(o.healthy);

  const std::vector<std::vector<const char*>> bad_args = {
      {"fake_gpu", "--profile", "a100"},      {"fake_gpu", "--bogus"},
      {"fake_gpu", "--port"},                 {"fake_gpu", "--port", "70000"},
      {"fake_gpu", "--error-rate", "1.5"},    {"fake_gpu", "--error-status", "404"},
      {"fake_gpu", "--max-batch", "0"},       {"fake_gpu", "--kv-cache-tokens", "-1"},
      {"fake_gpu", "--kv-cache-tokens", "4095", "--profile", "p40"}};  // below max_model_len
  for (const auto& bad : bad_args) {
    Options x;
    EXPECT_TRUE(parse_options(static_cast<int>(bad.size()), bad.data(), &x).has_value()) << bad[1];
  }
}

// ---- metrics and shared state ----

double sample(const std::string& text, const std::string& series) {
  size_t pos = text.find("\n" + series + " ");
  if (pos == std::string::npos) return -1;
  return std::stod(text.substr(pos + series.size() + 2));
}

TEST(FakeGpuMetrics, RendersVllmNamesWithModelLabel) {
  MetricsSnapshot s;
  s.model = "npc-llm";
  s.running = 3;
  s.waiting = 4;
  s.success_length = 5;
  s.faults[static_cast<size_t>(FaultKind::drop)] = 6;
  s.kv_cache_usage = 0.25;
  s.preemptions = 7;
  std::string text = render_metrics(s);
  EXPECT_DOUBLE_EQ(sample(text, "vllm:kv_cache_usage_perc{model_name=\"npc-llm\"}"), 0.25);
  EXPECT_EQ(sample(text, "vllm:num_preemptions_total{model_name=\"npc-llm\"}"), 7);
  EXPECT_EQ(sample(text, "vllm:num_requests_running{model_name=\"npc-llm\"}"), 3);
  EXPECT_EQ(sample(text, "vllm:num_requests_waiting{model_name=\"npc-llm\"}"), 4);
  EXPECT_EQ(sample(text, "vllm:request_success_total{finished_reason=\"length\",model_name=\"npc-llm\"}"), 5);
  EXPECT_EQ(sample(text, "fake_gpu_errors_injected_total{kind=\"drop\",model_name=\"npc-llm\"}"), 6);
  for (const char* name : {"vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                           "fake_gpu_requests_total", "fake_gpu_peak_running",
                           "fake_gpu_prefix_cache_hits_total", "fake_gpu_prefix_cache_queries_total"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
    EXPECT_EQ(sample(text, std::string(name) + "{model_name=\"npc-llm\"}"), 0) << name;
  }
}

TEST(FakeGpuMetrics, E2eLatencyIsAVllmHistogram) {
  MetricsSnapshot s;
  s.model = "npc-llm";
  s.e2e_latency.observe(0.040);   // le 0.3
  s.e2e_latency.observe(0.3);     // le 0.3: bounds are inclusive
  s.e2e_latency.observe(45.0);    // le 50
  s.e2e_latency.observe(10000.0); // +Inf only
  std::string text = render_metrics(s);
  const std::string m = "model_name=\"npc-llm\"}";
  EXPECT_NE(text.find("# TYPE vllm:e2e_request_latency_seconds histogram"), std::string::npos);
  EXPECT_EQ(sample(text, "vllm:e2e_request_latency_seconds_bucket{le=\"0.3\"," + m), 2);
  EXPECT_EQ(sample(text, "vllm:e2e_request_latency_seconds_bucket{le=\"40.0\"," + m), 2);
  EXPECT_EQ(sample(text, "vllm:e2e_request_latency_seconds_bucket{le=\"50.0\"," + m), 3);
  EXPECT_EQ(sample(text, "vllm:e2e_request_latency_seconds_bucket{le=\"7680.0\"," + m), 3);
  EXPECT_EQ(sample(text, "vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\"," + m), 4);
  EXPECT_EQ(sample(text, "vllm:e2e_request_latency_seconds_count{" + m), 4);
  EXPECT_DOUBLE_EQ(sample(text, "vllm:e2e_request_latency_seconds_sum{" + m), 10045.34);
}

// The phase histograms under vLLM's names and bounds; an observation made
// `times` times counts in its bucket, the sum and the count that often.
TEST(FakeGpuMetrics, PhaseHistogramsUnderVllmNames) {
  MetricsSnapshot s;
  s.model = "npc-llm";
  s.first_token.observe(0.001);  // the lowest bound
  s.inter_token.observe(0.02, 7);
  std::string text = render_metrics(s);
  const std::string m = "model_name=\"npc-llm\"}";
  for (const char* name : {"vllm:request_queue_time_seconds", "vllm:request_prefill_time_seconds",
                           "vllm:request_decode_time_seconds", "vllm:request_inference_time_seconds",
                           "vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                           "vllm:time_per_output_token_seconds"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " histogram"), std::string::npos) << name;
  }
  EXPECT_EQ(sample(text, "vllm:request_queue_time_seconds_count{" + m), 0);
  EXPECT_EQ(sample(text, "vllm:time_to_first_token_seconds_bucket{le=\"0.001\"," + m), 1);
  EXPECT_EQ(sample(text, "vllm:time_to_first_token_seconds_bucket{le=\"2560.0\"," + m), 1);
  EXPECT_EQ(sample(text, "vllm:inter_token_latency_seconds_bucket{le=\"0.01\"," + m), 0);
  EXPECT_EQ(sample(text, "vllm:inter_token_latency_seconds_bucket{le=\"0.025\"," + m), 7);
  EXPECT_EQ(sample(text, "vllm:inter_token_latency_seconds_count{" + m), 7);
  EXPECT_DOUBLE_EQ(sample(text, "vllm:inter_token_latency_seconds_sum{" + m), 0.14);
  EXPECT_EQ(sample(text, "vllm:time_per_output_token_seconds_count{" + m), 7) << "vLLM 0.10's name, same data";
}

// Numbers as prometheus_client writes them: the shortest exact form in
// Python's notation, ".0" on whole numbers, and NaN.
TEST(FakeGpuMetrics, NumbersReadBackExactly) {
  MetricsSnapshot s;
  s.model = "m";
  for (int i = 0; i < 3; i++) s.e2e_latency.observe(0.1);
  s.first_token.observe(0.00001);
  s.kv_cache_usage = std::nan("");
  std::string text = render_metrics(s);
  EXPECT_NE(text.find("vllm:e2e_request_latency_seconds_sum{model_name=\"m\"} 0.30000000000000004\n"),
            std::string::npos);
  EXPECT_NE(text.find("vllm:time_to_first_token_seconds_sum{model_name=\"m\"} 1e-05\n"), std::string::npos);
  EXPECT_NE(text.find("vllm:time_to_first_token_seconds_bucket{le=\"2560.0\",model_name=\"m\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("vllm:kv_cache_usage_perc{model_name=\"m\"} NaN\n"), std::string::npos);
  EXPECT_NE(text.find("vllm:request_queue_time_seconds_sum{model_name=\"m\"} 0.0\n"), std::string::npos);
}

TEST(FakeGpuState, CountsAndResets) {
  Options o;
  o.profile = tiny_gpu(1);
  GpuState gpu(o);
  InferenceRequest r = parse_ok(false, {{"prompt", "a b"}, {"max_tokens", 3}});
  InferenceResult res = run_inference(r, 0);

  Intake i1 = gpu.intake(0);
  Intake i2 = gpu.intake(1);
  EXPECT_NE(i1.id, i2.id);
  EXPECT_EQ(owner_of(i2.id), 1);
  gpu.submit(job(i1.id), 0);
  gpu.submit(job(i2.id), 0);
  MetricsSnapshot s = gpu.snapshot();
  EXPECT_EQ(s.requests_total, 2u);
  EXPECT_EQ(s.running, 1u);
  EXPECT_EQ(s.waiting, 1u);
  EXPECT_EQ(s.inflight, 2u);

  EXPECT_EQ(gpu.advance(20).finished, Ids{i1.id});  // 10 ms prefill + 10 tokens
  gpu.succeeded(res, 0.05);
  s = gpu.snapshot();
  // Its phases, counted as it finished: 11 ms to the first token, 9 more
  // intervals of 1 ms; i2 has waited 20 ms and not finished.
  EXPECT_EQ(s.first_token.count, 1u);
  EXPECT_DOUBLE_EQ(s.first_token.sum, 0.011);
  EXPECT_DOUBLE_EQ(s.queue_time.sum, 0);
  EXPECT_DOUBLE_EQ(s.inference_time.sum, 0.020);
  EXPECT_EQ(s.inter_token.count, 9u);
  EXPECT_NEAR(s.inter_token.sum, 0.009, 1e-12);
  EXPECT_EQ(s.e2e_latency.count, 1u);
  EXPECT_EQ(s.running, 1u) << "i2 took the slot";
  EXPECT_EQ(s.waiting, 0u);
  EXPECT_EQ(s.success_length, 1u);
  EXPECT_EQ(s.prompt_tokens, 2u);
  EXPECT_EQ(s.generation_tokens, 3u);
  EXPECT_EQ(s.inflight, 1u);

  gpu.reset();
  s = gpu.snapshot();
  EXPECT_EQ(s.requests_total, 0u);
  EXPECT_EQ(s.success_length, 0u);
  EXPECT_EQ(s.generation_tokens, 0u);
  EXPECT_EQ(s.first_token.count, 0u);
  EXPECT_EQ(s.e2e_latency.count, 0u);
  EXPECT_EQ(s.peak_running, 1u);  // i2 still runs
  EXPECT_EQ(s.peak_inflight, 1u);
  gpu.cancel(i2.id, 21);
  s = gpu.snapshot();
  EXPECT_EQ(s.running, 0u);
  EXPECT_EQ(s.client_disconnects, 1u);
}

// A stall stops the scheduler's clock: nothing finishes and no timer is
// wanted while it lasts, and afterwards each job takes the time it had left.
TEST(FakeGpuState, StallStopsTheClockUntilResumed) {
  Options o;
  o.profile = tiny_gpu(1);
  GpuState gpu(o);
  Intake a = gpu.intake(0);
  Intake b = gpu.intake(0);
  EXPECT_DOUBLE_EQ(*gpu.submit(job(a.id), 0).next_finish_ms, 20);
  gpu.submit(job(b.id), 0);  // waits for a's slot

  Progress p = gpu.set_stalled(true, 5);
  EXPECT_TRUE(p.finished.empty());
  EXPECT_FALSE(p.next_finish_ms);
  EXPECT_TRUE(gpu.stalled());
  p = gpu.advance(1000);
  EXPECT_TRUE(p.finished.empty());
  EXPECT_FALSE(p.next_finish_ms);
  MetricsSnapshot s = gpu.snapshot();
  EXPECT_EQ(s.running, 1u);
  EXPECT_EQ(s.waiting, 1u);
  EXPECT_TRUE(s.stalled);

  p = gpu.set_stalled(false, 1000);  // a had 15 of its 20 ms left
  EXPECT_FALSE(gpu.stalled());
  EXPECT_TRUE(p.finished.empty());
  ASSERT_TRUE(p.next_finish_ms);
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 1015);
  EXPECT_TRUE(gpu.advance(1014.9).finished.empty());
  p = gpu.advance(1015);
  EXPECT_EQ(p.finished, Ids{a.id});
  ASSERT_TRUE(p.next_finish_ms);
  EXPECT_DOUBLE_EQ(*p.next_finish_ms, 1035);  // b's 20 ms from a's finish

  // A second stall adds to the first; stalling twice is one stall.
  gpu.set_stalled(true, 1020);
  gpu.set_stalled(true, 1050);
  EXPECT_FALSE(gpu.set_stalled(false, 1120).next_finish_ms == std::nullopt);
  EXPECT_TRUE(gpu.advance(1134.9).finished.empty());
  EXPECT_EQ(gpu.advance(1135).finished, Ids{b.id});
  EXPECT_FALSE(gpu.snapshot().stalled);
}

}  // namespace
}  // namespace npc_scale::fake_gpu
