#include "cache_policy.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "error.hpp"

namespace npc_scale {

CachePolicy cache_policy(const GenerationParams& params, int64_t default_ttl_s) {
  CachePolicy p;
  if (params.cache && !*params.cache) return p;
  if (params.cache_ttl_s) {
    p.use = true;
    p.ttl_s = *params.cache_ttl_s;
    return p;
  }
  if (params.deterministic()) {
    p.use = true;
    p.ttl_s = default_ttl_s;
  }
  return p;
}

std::string generation_cache_key(const std::string& fleet_signature, const std::string& prompt,
                                 const GenerationParams& params) {
  // ordered_json: the same request always serialises to the same bytes.
  nlohmann::ordered_json canon;
  canon["v"] = 1;
  canon["fleet"] = fleet_signature;
  canon["prompt"] = prompt;
  if (params.max_tokens) canon["max_tokens"] = *params.max_tokens;
  if (params.temperature) canon["temperature"] = *params.temperature;
  if (params.top_p) canon["top_p"] = *params.top_p;
  if (params.top_k) canon["top_k"] = *params.top_k;
  if (params.seed) canon["seed"] = *params.seed;
  if (!params.stop.empty()) canon["stop"] = params.stop;
  if (!params.choices.empty()) canon["choices"] = params.choices;
  if (params.system) canon["system"] = *params.system;
  std::string bytes = canon.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  char hex[33];
  std::snprintf(hex, sizeof(hex), "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return hex;
}

std::string fleet_signature_digest(const std::string& signature) {
  XXH128_hash_t h = XXH3_128bits(signature.data(), signature.size());
  char hex[33];
  snprintf(hex, sizeof(hex), "%016llx%016llx", static_cast<unsigned long long>(h.high64),
           static_cast<unsigned long long>(h.low64));
  return hex;
}

int64_t cache_ttl_seconds(double secs) {
  const std::string shown = seconds_text(secs);
  if (!(secs > 0)) {
    throw Error(sqlstate::invalid_parameter_value,
                "cache ttl of " + shown + " s must be positive (NULL: no expiry)");
  }
  if (secs > kMaxCacheTtlSeconds) {
    throw Error(sqlstate::invalid_parameter_value,
                "cache ttl of " + shown + " s is more than 30 days", {},
                "Use a ttl of at most 30 days, or NULL for no expiry.");
  }
  return static_cast<int64_t>(std::ceil(secs));
}

}  // namespace npc_scale
