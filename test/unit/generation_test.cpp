// Generation requests in vLLM's OpenAI-compatible API: params validation,
// request bodies, reading answers, failure classification and retry delays.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "error.hpp"
#include "generation.hpp"

using nlohmann::json;
using npc_scale::Api;
using npc_scale::Completion;
using npc_scale::Error;
using npc_scale::GenerationParams;
using npc_scale::Outcome;
namespace sqlstate = npc_scale::sqlstate;

namespace {

// Runs parse_params expecting an Error; returns it for inspection.
Error params_error(const std::string& text) {
  try {
    npc_scale::parse_params(text);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error for params " << text;
  return Error(sqlstate::internal_error, "");
}

// Asserts a 22023 whose message contains every fragment.
void expect_invalid(const std::string& text, std::initializer_list<const char*> fragments) {
  Error e = params_error(text);
  EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value) << text;
  for (const char* f : fragments) {
    EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
        << "message for " << text << " lacks [" << f << "]: " << e.what();
  }
}

json body_of(Api api, const std::string& prompt, const GenerationParams& p, int priority = 5,
             bool send_priority = false, const std::string& model = "npc-llm") {
  return json::parse(npc_scale::build_request_body(api, model, prompt, p, priority, send_priority));
}

// A /v1/completions answer as vLLM (and test/fake_gpu) shapes it.
const char* kCompletionBody = R"({
  "id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "npc-llm",
  "choices": [{"index": 0, "text": " I open the gate.", "logprobs": null,
               "finish_reason": "stop", "stop_reason": null, "prompt_logprobs": null}],
  "usage": {"prompt_tokens": 12, "total_tokens": 17, "completion_tokens": 5,
            "prompt_tokens_details": null}})";

const char* kChatBody = R"({
  "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "npc-llm",
  "choices": [{"index": 0,
               "message": {"role": "assistant", "content": "attack", "reasoning_content": null,
                           "tool_calls": []},
               "logprobs": null, "finish_reason": "length", "stop_reason": null}],
  "usage": {"prompt_tokens": 30, "total_tokens": 31, "completion_tokens": 1},
  "prompt_logprobs": null})";

}  // namespace

// ---- api -------------------------------------------------------------------

TEST(GenerationApi, ParsesNamesAndPaths) {
  EXPECT_EQ(npc_scale::parse_api("completions"), Api::completions);
  EXPECT_EQ(npc_scale::parse_api("chat"), Api::chat);
  EXPECT_STREQ(npc_scale::api_name(Api::completions), "completions");
  EXPECT_STREQ(npc_scale::api_name(Api::chat), "chat");
  EXPECT_STREQ(npc_scale::api_path(Api::completions), "/v1/completions");
  EXPECT_STREQ(npc_scale::api_path(Api::chat), "/v1/chat/completions");
}

TEST(GenerationApi, UnknownApiNamesTheValue) {
  for (const char* name : {"Chat", "", "embeddings"}) {
    try {
      npc_scale::parse_api(name);
      ADD_FAILURE() << "accepted api " << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value);
      EXPECT_NE(std::string(e.what()).find(std::string("\"") + name + "\""), std::string::npos)
          << e.what();
    }
  }
}

// ---- parse_params: accepted input --------------------------------------------

TEST(GenerationParams, EmptyInputMeansDefaults) {
  for (const char* text : {"", "{}", "  \n", " { } "}) {
    GenerationParams p = npc_scale::parse_params(text);
    EXPECT_FALSE(p.max_tokens) << text;
    EXPECT_FALSE(p.temperature);
    EXPECT_FALSE(p.top_p);
    EXPECT_FALSE(p.top_k);
    EXPECT_FALSE(p.seed);
    EXPECT_TRUE(p.stop.empty());
    EXPECT_TRUE(p.choices.empty());
    EXPECT_FALSE(p.system);
    EXPECT_FALSE(p.timeout_ms);
    EXPECT_FALSE(p.cache);
    EXPECT_FALSE(p.cache_ttl_s);
  }
}

TEST(GenerationParams, EveryKeyRoundTrips) {
  GenerationParams p = npc_scale::parse_params(R"({
    "max_tokens": 128, "temperature": 0.7, "top_p": 0.95, "top_k": 40,
    "seed": -9223372036854775808, "stop": ["\n", "END"],
    "system": "You are a guard.", "timeout_ms": 2500, "cache": false, "cache_ttl": 600})");
  EXPECT_EQ(p.max_tokens, 128);
  EXPECT_DOUBLE_EQ(*p.temperature, 0.7);
  EXPECT_DOUBLE_EQ(*p.top_p, 0.95);
  EXPECT_EQ(p.top_k, 40);
  EXPECT_EQ(p.seed, std::numeric_limits<int64_t>::min());
  EXPECT_EQ(p.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_EQ(npc_scale::parse_params(R"({"choices": ["flee", "fight"]})").choices,
            (std::vector<std::string>{"flee", "fight"}));
  EXPECT_EQ(p.system, "You are a guard.");
  EXPECT_EQ(p.timeout_ms, 2500);
  EXPECT_EQ(p.cache, false);
  EXPECT_EQ(p.cache_ttl_s, 600);
}

// vLLM cuts a constrained answer at a stop string too, into text that is
// none of the choices: the combination is refused where it is asked for.
TEST(GenerationParams, StopAndChoicesAreNotCombined) {
  expect_invalid(R"({"choices": ["attack north", "wait"], "stop": ["north"]})",
                 {"params.stop and params.choices cannot be combined"});
  expect_invalid(R"({"stop": "x", "choices": ["a"]})", {"cannot be combined"});
  EXPECT_NO_THROW(npc_scale::parse_params(R"({"choices": ["a"], "stop": null})"));
}

TEST(GenerationParams, RangeBoundsAreInclusive) {
  GenerationParams lo = npc_scale::parse_params(
      R"({"max_tokens":1,"temperature":0,"top_p":1e-9,"top_k":-1,"timeout_ms":1,"cache_ttl":1})");
  EXPECT_EQ(lo.max_tokens, 1);
  EXPECT_EQ(lo.temperature, 0.0);
  EXPECT_EQ(lo.top_k, -1);
  EXPECT_EQ(lo.timeout_ms, 1);
  EXPECT_EQ(lo.cache_ttl_s, 1);
  GenerationParams hi = npc_scale::parse_params(
      R"({"max_tokens":32768,"temperature":2,"top_p":1,"top_k":2147483647,
          "timeout_ms":600000,"cache_ttl":2592000,"seed":9223372036854775807})");
  EXPECT_EQ(hi.max_tokens, 32768);
  EXPECT_EQ(hi.temperature, 2.0);
  EXPECT_EQ(hi.top_p, 1.0);
  EXPECT_EQ(hi.top_k, 2147483647);
  EXPECT_EQ(hi.timeout_ms, 600000);
  EXPECT_EQ(hi.cache_ttl_s, 2592000);
  EXPECT_EQ(hi.seed, std::numeric_limits<int64_t>::max());
}

TEST(GenerationParams, NumberBeyondADoubleNamesItsKey) {
  // jsonb accepts 1e400; no double holds it.
  for (const char* text : {R"({"temperature":1e400})", R"({"seed":1, "temperature":-1e400})",
                           R"({"stop":["x"], "temperature":1e400, "max_tokens":5})"}) {
    try {
      npc_scale::parse_params(text);
      ADD_FAILURE() << text << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), sqlstate::numeric_value_out_of_range) << text;
      EXPECT_NE(std::string(e.what()).find("params.temperature is out of range"), std::string::npos)
          << e.what();
    }
  }
}

TEST(GenerationParams, IntegralFloatsAreIntegers) {
  GenerationParams p =
      npc_scale::parse_params(R"({"max_tokens":64.0,"seed":7e0,"cache_ttl":3.6e3,"top_k":-1.0})");
  EXPECT_EQ(p.max_tokens, 64);
  EXPECT_EQ(p.seed, 7);
  EXPECT_EQ(p.cache_ttl_s, 3600);
  EXPECT_EQ(p.top_k, -1);
}

// A double beyond 2^53 is not the number written: an integer read through
// one would silently be another (a seed off by one, -2^63-1 as -2^63).
TEST(GenerationParams, InexactFloatsAreNotIntegers) {
  for (const char* text : {R"({"seed":12345678901234567.5})", R"({"seed":-9223372036854775809})",
                           R"({"seed":9.2e18})"}) {
    try {
      npc_scale::parse_params(text);
      ADD_FAILURE() << text << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value) << text;
      EXPECT_NE(std::string(e.what()).find("params.seed must be"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(npc_scale::parse_params(R"({"seed":9007199254740992.0})").seed, 9007199254740992LL);
  EXPECT_EQ(npc_scale::parse_params(R"({"seed":9223372036854775807})").seed, std::numeric_limits<int64_t>::max());
}

TEST(GenerationParams, StopMayBeOneString) {
  EXPECT_EQ(npc_scale::parse_params(R"({"stop":"###"})").stop, std::vector<std::string>{"###"});
  EXPECT_TRUE(npc_scale::parse_params(R"({"stop":[]})").stop.empty());
}

TEST(GenerationParams, NullMeansNotSet) {
  GenerationParams p = npc_scale::parse_params(
      R"({"max_tokens":null,"temperature":null,"seed":null,"stop":null,"choices":null,
          "system":null,"cache":null,"cache_ttl":null,"top_p":null,"top_k":null,
          "timeout_ms":null})");
  EXPECT_FALSE(p.max_tokens);
  EXPECT_FALSE(p.temperature);
  EXPECT_FALSE(p.seed);
  EXPECT_TRUE(p.stop.empty());
  EXPECT_TRUE(p.choices.empty());
  EXPECT_FALSE(p.system);
  EXPECT_FALSE(p.cache);
  EXPECT_FALSE(p.cache_ttl_s);
  EXPECT_FALSE(p.top_p);
  EXPECT_FALSE(p.top_k);
  EXPECT_FALSE(p.timeout_ms);
}

TEST(GenerationParams, SixtyFourChoicesAreAllowed) {
  json choices = json::array();
  for (int i = 0; i < 64; ++i) choices.push_back("c" + std::to_string(i));
  GenerationParams p = npc_scale::parse_params(json{{"choices", choices}}.dump());
  ASSERT_EQ(p.choices.size(), 64u);
  EXPECT_EQ(p.choices[63], "c63");
}

TEST(GenerationParams, Deterministic) {
  EXPECT_FALSE(npc_scale::parse_params("{}").deterministic());  // vLLM defaults to 1.0
  EXPECT_TRUE(npc_scale::parse_params(R"({"temperature":0})").deterministic());
  EXPECT_TRUE(npc_scale::parse_params(R"({"temperature":0.0})").deterministic());
  EXPECT_FALSE(npc_scale::parse_params(R"({"temperature":0.01})").deterministic());
  EXPECT_TRUE(npc_scale::parse_params(R"({"temperature":1.5,"seed":42})").deterministic());
  EXPECT_TRUE(npc_scale::parse_params(R"({"seed":0})").deterministic());
}

// ---- parse_params: rejected input --------------------------------------------

TEST(GenerationParams, NotJsonIsInvalidTextRepresentation) {
  for (const char* text : {"{", "max_tokens=5", "{\"a\":}", "{'max_tokens': 5}", "{} x"}) {
    Error e = params_error(text);
    EXPECT_EQ(e.sqlstate(), sqlstate::invalid_text_representation) << text;
    EXPECT_NE(std::string(e.what()).find("params is not valid JSON"), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find("[json.exception"), std::string::npos) << e.what();
  }
}

TEST(GenerationParams, NotAnObject) {
  expect_invalid("[1,2]", {"must be a JSON object", "array"});
  expect_invalid("\"max_tokens\"", {"must be a JSON object", "string"});
  expect_invalid("42", {"must be a JSON object", "number"});
  expect_invalid("true", {"must be a JSON object", "boolean"});
  expect_invalid("null", {"must be a JSON object", "null"});
}

TEST(GenerationParams, UnknownKeyIsNamedWithAHint) {
  Error e = params_error(R"({"max_tokens":16,"max_token":16})");
  EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value);
  EXPECT_STREQ(e.what(), "params key \"max_token\" is not known");
  EXPECT_NE(e.hint().find("did you mean \"max_tokens\""), std::string::npos) << e.hint();
  for (const char* k : {"max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "choices",
                        "system", "timeout_ms", "cache", "cache_ttl"}) {
    EXPECT_NE(e.hint().find(k), std::string::npos) << k;
  }
  // The struct's field name is not the JSON key.
  expect_invalid(R"({"cache_ttl_s":60})", {"\"cache_ttl_s\""});
  // Far from every key: no guess, still the list.
  Error far = params_error(R"({"frobnicate":1})");
  EXPECT_EQ(far.hint().find("did you mean"), std::string::npos);
  EXPECT_NE(far.hint().find("allowed keys"), std::string::npos);
  // A misspelt key is an error even with a null value.
  expect_invalid(R"({"temprature":null})", {"\"temprature\""});
  // Case matters.
  expect_invalid(R"({"Max_Tokens":5})", {"\"Max_Tokens\""});
}

TEST(GenerationParams, WrongTypesNameKeyAndValue) {
  expect_invalid(R"({"temperature":"hot"})", {"params.temperature must be a number, got \"hot\""});
  expect_invalid(R"({"top_p":true})", {"params.top_p", "true"});
  expect_invalid(R"({"max_tokens":"64"})", {"params.max_tokens must be an integer", "\"64\""});
  expect_invalid(R"({"max_tokens":true})", {"params.max_tokens", "true"});
  expect_invalid(R"({"seed":[1]})", {"params.seed", "[1]"});
  expect_invalid(R"({"top_k":{}})", {"params.top_k", "{}"});
  expect_invalid(R"({"timeout_ms":"1s"})", {"params.timeout_ms", "\"1s\""});
  expect_invalid(R"({"cache":"yes"})", {"params.cache must be true or false", "\"yes\""});
  expect_invalid(R"({"cache":1})", {"params.cache", "1"});
  expect_invalid(R"({"cache_ttl":"1h"})", {"params.cache_ttl", "\"1h\""});
  expect_invalid(R"({"system":["a"]})", {"params.system must be a string", "[\"a\"]"});
  expect_invalid(R"({"stop":5})", {"params.stop must be a string or an array", "5"});
  expect_invalid(R"({"stop":["ok",3]})", {"params.stop[1]", "3"});
  expect_invalid(R"({"stop":["ok",""]})", {"params.stop[1]", "\"\""});
  expect_invalid(R"({"stop":""})", {"params.stop"});
  expect_invalid(R"({"choices":"yes"})", {"params.choices", "\"yes\""});
  expect_invalid(R"({"choices":[]})", {"params.choices must be a non-empty array", "[]"});
  expect_invalid(R"({"choices":["a",null]})", {"params.choices[1]", "null"});
  expect_invalid(R"({"choices":["a","b",""]})", {"params.choices[2] must be a non-empty string"});
}

TEST(GenerationParams, OutOfRangeNamesKeyAndValue) {
  expect_invalid(R"({"max_tokens":0})", {"params.max_tokens must be between 1 and 32768, got 0"});
  expect_invalid(R"({"max_tokens":32769})", {"params.max_tokens", "got 32769"});
  expect_invalid(R"({"max_tokens":-5})", {"params.max_tokens", "got -5"});
  expect_invalid(R"({"max_tokens":1e10})", {"params.max_tokens", "between 1 and 32768"});
  expect_invalid(R"({"temperature":-0.1})", {"params.temperature", "between 0 and 2", "-0.1"});
  expect_invalid(R"({"temperature":2.5})", {"params.temperature", "2.5"});
  expect_invalid(R"({"top_p":0})", {"params.top_p", "got 0"});
  expect_invalid(R"({"top_p":1.01})", {"params.top_p", "1.01"});
  expect_invalid(R"({"top_k":0})", {"params.top_k", "got 0"});
  expect_invalid(R"({"top_k":-2})", {"params.top_k", "got -2"});
  expect_invalid(R"({"top_k":2147483648})", {"params.top_k", "2147483648"});
  expect_invalid(R"({"timeout_ms":0})", {"params.timeout_ms", "got 0"});
  expect_invalid(R"({"timeout_ms":600001})", {"params.timeout_ms", "600001"});
  expect_invalid(R"({"cache_ttl":0})", {"params.cache_ttl", "got 0"});
  expect_invalid(R"({"cache_ttl":2592001})", {"params.cache_ttl", "2592001"});
  expect_invalid(R"({"seed":9223372036854775808})", {"params.seed", "9223372036854775808"});
  expect_invalid(R"({"seed":1e19})", {"params.seed", "64-bit"});
  expect_invalid(R"({"seed":-1e19})", {"params.seed"});
}

TEST(GenerationParams, FractionalIntegersAreRejected) {
  expect_invalid(R"({"max_tokens":64.5})", {"params.max_tokens must be an integer, got 64.5"});
  expect_invalid(R"({"seed":0.1})", {"params.seed", "0.1"});
  expect_invalid(R"({"cache_ttl":1.5})", {"params.cache_ttl", "1.5"});
  expect_invalid(R"({"timeout_ms":100.25})", {"params.timeout_ms", "100.25"});
}

TEST(GenerationParams, TooManyChoices) {
  json choices = json::array();
  for (int i = 0; i < 65; ++i) choices.push_back("c" + std::to_string(i));
  expect_invalid(json{{"choices", choices}}.dump(), {"params.choices", "at most 64", "got 65"});
}

TEST(GenerationParams, LongValuesAreShortenedInMessages) {
  std::string huge(5000, 'x');
  Error e = params_error(json{{"temperature", huge}}.dump());
  EXPECT_LT(std::string(e.what()).size(), 200u);
  EXPECT_NE(std::string(e.what()).find("params.temperature"), std::string::npos);
}

// ---- build_request_body --------------------------------------------------------

TEST(GenerationBody, CompletionsDefaults) {
  json b = body_of(Api::completions, "The guard says:", GenerationParams{});
  EXPECT_EQ(b["model"], "npc-llm");
  EXPECT_EQ(b["prompt"], "The guard says:");
  EXPECT_EQ(b["max_tokens"], 64);
  // Only what was asked for: vLLM's own defaults apply to the rest.
  EXPECT_EQ(b.size(), 3u) << b.dump();
  EXPECT_FALSE(b.contains("messages"));
  EXPECT_FALSE(b.contains("priority"));
}

TEST(GenerationBody, CompletionsCarriesEverySamplingKey) {
  GenerationParams p = npc_scale::parse_params(
      R"({"max_tokens":9,"temperature":0.25,"top_p":0.5,"top_k":7,"seed":123456789012,
          "stop":"\n","timeout_ms":100,"cache":true,"cache_ttl":60})");
  json b = body_of(Api::completions, "p", p);
  EXPECT_EQ(b["max_tokens"], 9);
  EXPECT_DOUBLE_EQ(b["temperature"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(b["top_p"].get<double>(), 0.5);
  EXPECT_EQ(b["top_k"], 7);
  EXPECT_EQ(b["seed"].get<int64_t>(), 123456789012);
  EXPECT_EQ(b["stop"], json::array({"\n"}));
  // Our own knobs never reach the server.
  for (const char* k : {"timeout_ms", "cache", "cache_ttl", "cache_ttl_s", "system"}) {
    EXPECT_FALSE(b.contains(k)) << k;
  }
  EXPECT_FALSE(b.contains("structured_outputs"));
}

TEST(GenerationBody, TemperatureZeroIsSentNotDropped) {
  json b = body_of(Api::completions, "p", npc_scale::parse_params(R"({"temperature":0})"));
  ASSERT_TRUE(b.contains("temperature"));
  EXPECT_EQ(b["temperature"].get<double>(), 0.0);
}

TEST(GenerationBody, ChoicesUseStructuredOutputsOnly) {
  GenerationParams p = npc_scale::parse_params(R"({"choices":["yes","no","maybe later"]})");
  for (Api api : {Api::completions, Api::chat}) {
    json b = body_of(api, "p", p);
    ASSERT_TRUE(b.contains("structured_outputs"));
    EXPECT_EQ(b["structured_outputs"], (json{{"choice", {"yes", "no", "maybe later"}}}));
    EXPECT_FALSE(b.contains("guided_choice"));
  }
}

TEST(GenerationBody, ChatMessages) {
  json b = body_of(Api::chat, "What now?", GenerationParams{});
  EXPECT_EQ(b["model"], "npc-llm");
  EXPECT_FALSE(b.contains("prompt"));
  EXPECT_EQ(b["messages"], (json::array({{{"role", "user"}, {"content", "What now?"}}})));
  EXPECT_EQ(b["max_tokens"], 64);

  GenerationParams p = npc_scale::parse_params(
      R"({"system":"You are Bob.","max_tokens":3,"seed":5,"stop":["a","b"]})");
  b = body_of(Api::chat, "What now?", p);
  ASSERT_EQ(b["messages"].size(), 2u);
  EXPECT_EQ(b["messages"][0], (json{{"role", "system"}, {"content", "You are Bob."}}));
  EXPECT_EQ(b["messages"][1], (json{{"role", "user"}, {"content", "What now?"}}));
  EXPECT_EQ(b["max_tokens"], 3);
  EXPECT_EQ(b["seed"], 5);
  EXPECT_EQ(b["stop"], json::array({"a", "b"}));
  EXPECT_FALSE(b.contains("system"));
}

TEST(GenerationBody, SystemOnCompletionsLeadsThePrompt) {
  GenerationParams p = npc_scale::parse_params(R"({"system":"You are Bob."})");
  json b = body_of(Api::completions, "What now?", p);
  EXPECT_EQ(b["prompt"], "You are Bob.\n\nWhat now?");  // neither dropped nor an error
  EXPECT_FALSE(b.contains("system"));
  EXPECT_FALSE(b.contains("messages"));
  EXPECT_EQ(body_of(Api::completions, "What now?", GenerationParams{})["prompt"], "What now?");
}

TEST(GenerationBody, PriorityOnlyWhenAskedAndPassedThrough) {
  GenerationParams p;
  EXPECT_FALSE(body_of(Api::completions, "p", p, 0, false).contains("priority"));
  for (int prio : {0, 3, 10}) {
    for (Api api : {Api::completions, Api::chat}) {
      json b = body_of(api, "p", p, prio, true);
      ASSERT_TRUE(b.contains("priority"));
      EXPECT_EQ(b["priority"], prio);  // both scales: lower runs first
    }
  }
  for (int bad : {-1, 11}) {
    try {
      npc_scale::build_request_body(Api::chat, "m", "p", p, bad, true);
      ADD_FAILURE() << "priority " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value);
      EXPECT_NE(std::string(e.what()).find("got " + std::to_string(bad)), std::string::npos);
    }
  }
}

TEST(GenerationBody, EscapingAndUnicodeRoundTrip) {
  std::string prompt = "He said \"halt\"\n\tthen \\ left — ß 🐉 {\"x\":1}";
  json b = body_of(Api::completions, prompt, GenerationParams{}, 5, false, "org/model\"q");
  EXPECT_EQ(b["prompt"], prompt);
  EXPECT_EQ(b["model"], "org/model\"q");
}

TEST(GenerationBody, EmptyModelIsOmitted) {
  json b = body_of(Api::chat, "p", GenerationParams{}, 5, false, "");
  EXPECT_FALSE(b.contains("model"));
}

TEST(GenerationBody, InvalidUtf8IsAnErrorNamingTheInput) {
  std::string bad_prompt = "ok \xff\xfe";
  try {
    npc_scale::build_request_body(Api::completions, "m", bad_prompt, GenerationParams{});
    FAIL() << "invalid UTF-8 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value);
    EXPECT_NE(std::string(e.what()).find("prompt"), std::string::npos) << e.what();
  }
  try {
    npc_scale::build_request_body(Api::chat, "m\xc3", "fine", GenerationParams{});
    FAIL() << "invalid UTF-8 model accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model"), std::string::npos) << e.what();
  }
}

// ---- parse_response --------------------------------------------------------------

TEST(GenerationResponse, CompletionsBody) {
  Completion c = npc_scale::parse_response(Api::completions, kCompletionBody);
  ASSERT_TRUE(c.ok) << c.error;
  EXPECT_EQ(c.text, " I open the gate.");
  EXPECT_EQ(c.finish_reason, "stop");
  EXPECT_EQ(c.prompt_tokens, 12);
  EXPECT_EQ(c.completion_tokens, 5);
  EXPECT_TRUE(c.error.empty());
}

TEST(GenerationResponse, ChatBody) {
  Completion c = npc_scale::parse_response(Api::chat, kChatBody);
  ASSERT_TRUE(c.ok) << c.error;
  EXPECT_EQ(c.text, "attack");
  EXPECT_EQ(c.finish_reason, "length");
  EXPECT_EQ(c.prompt_tokens, 30);
  EXPECT_EQ(c.completion_tokens, 1);
}

TEST(GenerationResponse, ApiMismatchIsNotOk) {
  // A chat body read as completions has no text, and vice versa.
  EXPECT_FALSE(npc_scale::parse_response(Api::completions, kChatBody).ok);
  EXPECT_FALSE(npc_scale::parse_response(Api::chat, kCompletionBody).ok);
}

TEST(GenerationResponse, NullContentAndMissingUsage) {
  Completion c = npc_scale::parse_response(
      Api::chat, R"({"choices":[{"message":{"role":"assistant","content":null},
                                  "finish_reason":"tool_calls"}]})");
  ASSERT_TRUE(c.ok) << c.error;
  EXPECT_EQ(c.text, "");
  EXPECT_EQ(c.finish_reason, "tool_calls");
  EXPECT_EQ(c.prompt_tokens, 0);
  EXPECT_EQ(c.completion_tokens, 0);

  c = npc_scale::parse_response(Api::completions,
                                R"({"choices":[{"text":"x","finish_reason":null}],"usage":null})");
  ASSERT_TRUE(c.ok);
  EXPECT_EQ(c.text, "x");
  EXPECT_EQ(c.finish_reason, "");
  EXPECT_EQ(c.prompt_tokens, 0);
}

// It is written to the decision's row: kept short and safe for a text column.
TEST(GenerationResponse, FinishReasonIsCutAndMadeSafe) {
  Completion c = npc_scale::parse_response(
      Api::completions, R"({"choices":[{"text":"x","finish_reason":"len\u0000gth\n)" +
                            std::string(100, 'z') + R"("}]})");
  ASSERT_TRUE(c.ok) << c.error;
  EXPECT_EQ(c.finish_reason, "len gth " + std::string(24, 'z'));
  c = npc_scale::parse_response(Api::completions,
                                R"({"choices":[{"text":"x","finish_reason":7}]})");
  ASSERT_TRUE(c.ok);
  EXPECT_EQ(c.finish_reason, "") << "not a string: not stored";
}

TEST(GenerationResponse, OddUsageCountsAreZeroOrClamped) {
  Completion c = npc_scale::parse_response(
      Api::completions,
      R"({"choices":[{"text":"x"}],"usage":{"prompt_tokens":"12","completion_tokens":-3}})");
  ASSERT_TRUE(c.ok);
  EXPECT_EQ(c.prompt_tokens, 0);
  EXPECT_EQ(c.completion_tokens, 0);
  c = npc_scale::parse_response(
      Api::completions,
      R"({"choices":[{"text":"x"}],"usage":{"prompt_tokens":99999999999,"completion_tokens":7}})");
  EXPECT_EQ(c.prompt_tokens, std::numeric_limits<int>::max());
  EXPECT_EQ(c.completion_tokens, 7);
}

TEST(GenerationResponse, OnlyTheFirstChoiceCounts) {
  Completion c = npc_scale::parse_response(
      Api::completions, R"({"choices":[{"text":"first","finish_reason":"stop"},{"text":"second"}]})");
  ASSERT_TRUE(c.ok);
  EXPECT_EQ(c.text, "first");
}

TEST(GenerationResponse, MalformedJson) {
  for (const char* body : {"", "<html>502 Bad Gateway</html>", "{\"choices\":[{\"text\":\"hal",
                           "{\"choices\":[]", "nul"}) {
    Completion c = npc_scale::parse_response(Api::completions, body);
    EXPECT_FALSE(c.ok) << body;
    EXPECT_EQ(c.error.rfind("malformed JSON from endpoint: ", 0), 0u) << c.error;
    EXPECT_EQ(c.error.find("[json.exception"), std::string::npos) << c.error;
    EXPECT_GT(c.error.size(), std::string("malformed JSON from endpoint: ").size());
  }
  Completion arr = npc_scale::parse_response(Api::chat, "[1]");
  EXPECT_FALSE(arr.ok);
  EXPECT_NE(arr.error.find("malformed JSON from endpoint"), std::string::npos);
}

TEST(GenerationResponse, TruncatedBodiesNeverThrowOrSucceed) {
  std::string full = kChatBody;
  for (size_t n = 0; n < full.size() - 1; ++n) {
    std::string cut = full.substr(0, n);
    Completion c;
    ASSERT_NO_THROW(c = npc_scale::parse_response(Api::chat, cut)) << n;
    EXPECT_FALSE(c.ok) << "truncated at " << n;
    EXPECT_FALSE(c.error.empty());
  }
}

TEST(GenerationResponse, WithoutChoices) {
  for (const char* body : {R"({"id":"x"})", R"({"choices":[]})", R"({"choices":null})",
                           R"({"choices":{"text":"x"}})"}) {
    Completion c = npc_scale::parse_response(Api::completions, body);
    EXPECT_FALSE(c.ok) << body;
    EXPECT_EQ(c.error, "endpoint answered without choices") << body;
  }
  Completion c = npc_scale::parse_response(Api::completions, R"({"choices":[{"index":0}]})");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.error.find("choices[0].text"), std::string::npos);
  c = npc_scale::parse_response(Api::chat, R"({"choices":[{"index":0,"text":"x"}]})");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.error.find("choices[0].message"), std::string::npos);
  c = npc_scale::parse_response(Api::chat, R"({"choices":[{"message":{"content":42}}]})");
  EXPECT_FALSE(c.ok);
  c = npc_scale::parse_response(Api::chat, R"({"choices":["text"]})");
  EXPECT_FALSE(c.ok);
}

TEST(GenerationResponse, ErrorObject) {
  Completion c = npc_scale::parse_response(
      Api::chat,
      R"({"error":{"message":"The model `x` does not exist.","type":"NotFoundError",
                   "param":null,"code":404}})");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.error.find("The model `x` does not exist."), std::string::npos) << c.error;
  c = npc_scale::parse_response(Api::completions, R"({"error":"overloaded","choices":[{"text":"x"}]})");
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.error.find("overloaded"), std::string::npos);
  // "error": null is how some servers say "no error".
  c = npc_scale::parse_response(Api::completions, R"({"error":null,"choices":[{"text":"x"}]})");
  EXPECT_TRUE(c.ok);
}

// ---- classify -------------------------------------------------------------------

TEST(GenerationClassify, Table) {
  struct Row {
    bool transport_ok;
    long status;
    bool body_ok;
    Outcome want;
  };
  const Row rows[] = {
      {false, 0, false, Outcome::transient},   {false, 200, true, Outcome::transient},
      {true, 200, true, Outcome::success},     {true, 201, true, Outcome::success},
      {true, 299, true, Outcome::success},     {true, 200, false, Outcome::transient},
      {true, 429, true, Outcome::transient},   {true, 408, false, Outcome::transient},
      {true, 500, false, Outcome::transient},  {true, 502, true, Outcome::transient},
      {true, 503, false, Outcome::transient},  {true, 599, false, Outcome::transient},
      {true, 400, false, Outcome::permanent},  {true, 401, false, Outcome::transient},
      {true, 403, false, Outcome::transient},  {true, 404, true, Outcome::transient},
      {true, 405, false, Outcome::permanent},  {true, 413, false, Outcome::permanent},
      {true, 422, false, Outcome::permanent},  {true, 499, false, Outcome::permanent},
      {true, 300, true, Outcome::transient},   {true, 302, false, Outcome::transient},
      {true, 308, false, Outcome::transient},  {true, 399, false, Outcome::transient},
      {true, 100, false, Outcome::permanent},  {true, 600, false, Outcome::permanent},
      {true, 0, false, Outcome::permanent},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(npc_scale::classify(r.transport_ok, r.status, r.body_ok), r.want)
        << r.transport_ok << " " << r.status << " " << r.body_ok;
  }
}

// ---- error_message_from_body --------------------------------------------------

TEST(GenerationErrorMessage, FromJsonBodies) {
  EXPECT_EQ(npc_scale::error_message_from_body(
                400, R"({"error":{"message":"max_tokens must be at least 1, got 0.",
                         "type":"BadRequestError","param":null,"code":400}})"),
            "HTTP 400: max_tokens must be at least 1, got 0.");
  EXPECT_EQ(npc_scale::error_message_from_body(503, R"({"message":"Service Unavailable"})"),
            "HTTP 503: Service Unavailable");
  EXPECT_EQ(npc_scale::error_message_from_body(404, R"({"detail":"Not Found"})"),
            "HTTP 404: Not Found");
  EXPECT_EQ(npc_scale::error_message_from_body(429, R"({"error":"rate limited"})"),
            "HTTP 429: rate limited");
}

TEST(GenerationErrorMessage, FallsBackToRawBody) {
  EXPECT_EQ(npc_scale::error_message_from_body(503, ""), "HTTP 503");
  EXPECT_EQ(npc_scale::error_message_from_body(503, " \r\n"), "HTTP 503");
  EXPECT_EQ(npc_scale::error_message_from_body(502, "Bad Gateway\n"), "HTTP 502: Bad Gateway");
  // JSON without a message: the raw text is the best we have.
  EXPECT_EQ(npc_scale::error_message_from_body(500, R"({"code":7})"), R"(HTTP 500: {"code":7})");
  std::string long_body(1000, 'a');
  EXPECT_EQ(npc_scale::error_message_from_body(500, long_body), "HTTP 500: " + std::string(200, 'a'));
}

TEST(GenerationErrorMessage, RawBodyIsSafeText) {
  // 199 ASCII bytes then a 2-byte character: cutting at 200 would split it.
  std::string body = std::string(199, 'b') + "\xc3\xa9" + "tail";
  std::string msg = npc_scale::error_message_from_body(500, body);
  EXPECT_EQ(msg, "HTTP 500: " + std::string(199, 'b'));
  // NUL and invalid bytes cannot go into a text column.
  msg = npc_scale::error_message_from_body(500, std::string("a\0b\xff", 4) + "c");
  EXPECT_EQ(msg.find('\0'), std::string::npos);
  EXPECT_EQ(msg, "HTTP 500: a b?c");
}

// ---- retry_delay_ms ---------------------------------------------------------------

TEST(GenerationRetry, FirstAttemptHasNoDelay) {
  EXPECT_EQ(npc_scale::retry_delay_ms(1, 100, 10000, 42), 0);
  EXPECT_EQ(npc_scale::retry_delay_ms(0, 100, 10000, 42), 0);
  EXPECT_EQ(npc_scale::retry_delay_ms(-3, 100, 10000, 42), 0);
}

TEST(GenerationRetry, ExponentialWithinJitterBounds) {
  const int64_t base = 100, cap = 10000;
  for (uint64_t seed : {0ull, 1ull, 42ull, 0xdeadbeefull, ~0ull}) {
    for (int attempt = 2; attempt <= 20; ++attempt) {
      int64_t nominal = attempt - 2 < 20 ? std::min<int64_t>(base << (attempt - 2), cap) : cap;
      int64_t d = npc_scale::retry_delay_ms(attempt, base, cap, seed);
      EXPECT_GE(d, nominal / 2) << "attempt " << attempt << " seed " << seed;
      EXPECT_LE(d, nominal) << "attempt " << attempt << " seed " << seed;
    }
  }
}

TEST(GenerationRetry, MonotonicUpToTheCap) {
  // Jitter is in [0.5, 1): the next attempt's floor is this attempt's nominal
  // delay, so the sequence never shrinks until it reaches the cap.
  const int64_t base = 50, cap = 1 << 20;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    int64_t prev = 0;
    for (int attempt = 2; (base << (attempt - 2)) <= cap; ++attempt) {
      int64_t d = npc_scale::retry_delay_ms(attempt, base, cap, seed);
      EXPECT_GE(d, prev) << "attempt " << attempt << " seed " << seed;
      prev = d;
    }
  }
}

TEST(GenerationRetry, JitterIsDeterministicPerSeedAndVaries) {
  std::set<int64_t> seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    int64_t a = npc_scale::retry_delay_ms(5, 1000, 60000, seed);
    EXPECT_EQ(a, npc_scale::retry_delay_ms(5, 1000, 60000, seed));
    EXPECT_GE(a, 4000);
    EXPECT_LE(a, 8000);
    seen.insert(a);
  }
  // Two hundred seeds spread over a 4000 ms window: real jitter, not a constant.
  EXPECT_GT(seen.size(), 150u);
  int64_t lo = *seen.begin(), hi = *seen.rbegin();
  EXPECT_LT(lo, 4400);
  EXPECT_GT(hi, 7600);
  // Same seed, different attempts at the cap: not the same factor every time.
  std::set<int64_t> at_cap;
  for (int attempt = 30; attempt < 60; ++attempt) {
    at_cap.insert(npc_scale::retry_delay_ms(attempt, 1000, 60000, 7));
  }
  EXPECT_GT(at_cap.size(), 20u);
}

TEST(GenerationRetry, SmallDelaysStayPositive) {
  for (uint64_t seed = 0; seed < 100; ++seed) {
    EXPECT_EQ(npc_scale::retry_delay_ms(2, 1, 1000, seed), 1);
  }
  EXPECT_EQ(npc_scale::retry_delay_ms(5, 0, 1000, 1), 0);
}

TEST(GenerationRetry, NoOverflowAtLargeAttempts) {
  for (int attempt : {62, 63, 64, 65, 100, 1000, std::numeric_limits<int>::max()}) {
    int64_t d = npc_scale::retry_delay_ms(attempt, 250, 30000, 9);
    EXPECT_GE(d, 15000) << attempt;
    EXPECT_LE(d, 30000) << attempt;
    const int64_t huge = std::numeric_limits<int64_t>::max();
    int64_t h = npc_scale::retry_delay_ms(attempt, huge / 3, huge, 9);
    EXPECT_GE(h, huge / 2) << attempt;
    EXPECT_LE(h, huge) << attempt;
  }
  EXPECT_GE(npc_scale::retry_delay_ms(100, 1, std::numeric_limits<int64_t>::max(), 3), 1);
}

// ---- model_is_served -------------------------------------------------------

TEST(GenerationModels, AModelListNamesTheServedModels) {
  const std::string vllm =
      R"({"object":"list","data":[{"id":"npc-llm","object":"model","owned_by":"vllm"},)"
      R"({"id":"npc-lora","object":"model","parent":"npc-llm"}]})";
  EXPECT_TRUE(npc_scale::model_is_served(vllm, "npc-llm"));
  EXPECT_TRUE(npc_scale::model_is_served(vllm, "npc-lora"));
  EXPECT_FALSE(npc_scale::model_is_served(vllm, "no-such-model"));
  EXPECT_FALSE(npc_scale::model_is_served(vllm, "npc"));
  for (const char* junk : {"", "not json", "[]", R"({"data":{}})", R"({"data":[1,{"id":7}]})",
                           R"({"error":{"message":"Unauthorized"}})"}) {
    EXPECT_FALSE(npc_scale::model_is_served(junk, "npc-llm")) << junk;
  }
}
