// What is cached, for how long, under which key.
#include <gtest/gtest.h>

#include "cache_policy.hpp"
#include "error.hpp"
#include "generation.hpp"

using namespace npc_scale;

TEST(CachePolicyTest, OnlyDeterministicRequestsByDefault) {
  EXPECT_FALSE(cache_policy(parse_params("{}"), 60).use) << "default temperature samples";
  EXPECT_FALSE(cache_policy(parse_params(R"({"temperature": 0.7})"), 60).use);
  auto t0 = cache_policy(parse_params(R"({"temperature": 0})"), 60);
  EXPECT_TRUE(t0.use);
  EXPECT_EQ(t0.ttl_s, 60);
  EXPECT_TRUE(cache_policy(parse_params(R"({"temperature": 0.9, "seed": 4})"), 60).use);
}

TEST(CachePolicyTest, CacheTtlOptsInAndCacheFalseOptsOut) {
  auto p = cache_policy(parse_params(R"({"temperature": 1.0, "cache_ttl": 30})"), 60);
  EXPECT_TRUE(p.use);
  EXPECT_EQ(p.ttl_s, 30);
  EXPECT_FALSE(cache_policy(parse_params(R"({"temperature": 0, "cache": false})"), 60).use);
  EXPECT_FALSE(cache_policy(parse_params(R"({"cache_ttl": 30, "cache": false})"), 60).use);
}

TEST(CachePolicyTest, KeyDependsOnWhatChangesTheOutput) {
  auto k = [](const std::string& fleet, const std::string& prompt, const std::string& params) {
    return generation_cache_key(fleet, prompt, parse_params(params));
  };
  std::string base = k("npc-llm/completions", "Build?", R"({"temperature": 0, "max_tokens": 8})");
  EXPECT_EQ(base.size(), 32u);
  EXPECT_EQ(base, k("npc-llm/completions", "Build?", R"({"max_tokens": 8, "temperature": 0})"))
      << "key order in params does not matter";
  EXPECT_EQ(base, k("npc-llm/completions", "Build?",
                    R"({"temperature": 0, "max_tokens": 8, "timeout_ms": 500, "cache_ttl": 9})"))
      << "timeouts and cache options do not change the output";
  EXPECT_NE(base, k("other-model/completions", "Build?", R"({"temperature": 0, "max_tokens": 8})"));
  EXPECT_NE(base, k("npc-llm/completions", "Build!", R"({"temperature": 0, "max_tokens": 8})"));
  EXPECT_NE(base, k("npc-llm/completions", "Build?", R"({"temperature": 0, "max_tokens": 9})"));
  EXPECT_NE(base, k("npc-llm/completions", "Build?", R"({"temperature": 0, "max_tokens": 8, "seed": 1})"));
  EXPECT_NE(base, k("npc-llm/completions", "Build?",
                    R"({"temperature": 0, "max_tokens": 8, "choices": ["a", "b"]})"));
}

TEST(CachePolicyTest, CacheSetTtlRoundsUpAndIsBounded) {
  EXPECT_EQ(cache_ttl_seconds(0.0001), 1) << "a ttl under a second still expires (0 means never)";
  EXPECT_EQ(cache_ttl_seconds(1), 1);
  EXPECT_EQ(cache_ttl_seconds(1.2), 2);
  EXPECT_EQ(cache_ttl_seconds(kMaxCacheTtlSeconds), 2592000);
  for (double bad : {0.0, -1.0, kMaxCacheTtlSeconds + 1, 3.1e13}) {
    try {
      cache_ttl_seconds(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.sqlstate(), sqlstate::invalid_parameter_value) << bad;
      EXPECT_NE(std::string(e.what()).find("cache ttl of "), std::string::npos) << e.what();
    }
  }
}

TEST(CachePolicyTest, FleetSignatureDigestKeepsEveryCharacter) {
  // Shared memory once held the text cut at 255 bytes: two fleets that
  // differed only past it shared generate()'s cache keys.
  const std::string common(300, 'm');
  const std::string a = fleet_signature_digest(common + "/completions,a/chat");
  const std::string b = fleet_signature_digest(common + "/completions,b/chat");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a, fleet_signature_digest(common + "/completions,a/chat")) << "stable";
  EXPECT_NE(generation_cache_key(a, "p", GenerationParams{}), generation_cache_key(b, "p", GenerationParams{}));
}
