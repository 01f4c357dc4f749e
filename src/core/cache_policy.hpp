// Which generations may be answered from the cache, for how long, and under
// which key. Only deterministic requests are cached by default (temperature 0
// or a seed): caching a sampled answer would make every NPC say the same
// thing. params.cache_ttl opts a request in anyway; params.cache = false out.
#pragma once

#include <cstdint>
#include <string>

#include "generation.hpp"

namespace npc_scale {

struct CachePolicy {
  bool use = false;
  int64_t ttl_s = 0;
};

CachePolicy cache_policy(const GenerationParams& params, int64_t default_ttl_s);

// cache_set()'s ttl in whole seconds, rounded up (a ttl under a second
// still expires: 0 would mean never). Positive, at most 30 days, the same
// bound as params.cache_ttl; NULL, not a huge ttl, means no expiry.
inline constexpr double kMaxCacheTtlSeconds = 2592000;
int64_t cache_ttl_seconds(double secs);

// 32 hex digits (XXH3-128) over a canonical form of what changes the output:
// the fleet's model signature (model and API of the endpoints that answer),
// the prompt, and the generation parameters (not timeouts or cache options).
std::string generation_cache_key(const std::string& fleet_signature, const std::string& prompt,
                                 const GenerationParams& params);

// The fleet signature as it enters cache keys and shared memory: 32 hex
// digits (XXH3-128) of the full text, so two fleets that differ only far
// into a long list of model names never share keys, and backends (reading
// shared memory) and the dispatcher make the same keys.
std::string fleet_signature_digest(const std::string& signature);

}  // namespace npc_scale
