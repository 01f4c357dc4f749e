// Fault injection: configuration (JSON in/out for the admin route) and the
// per-request dice, seeded so a run can be replayed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "text_gen.hpp"

namespace npc_scale::fake_gpu {

struct FaultConfig {
  double error_rate = 0;
  int error_status = 500;  // 500, 503 or 429
  int retry_after = 1;     // seconds, sent with 503 and 429
  double hang_rate = 0;
  int64_t hang_ms = 3600000;  // one hour: effectively "never answers"
  double slow_rate = 0;
  int64_t slow_ms = 2000;
  double malformed_rate = 0;
  double drop_rate = 0;
  // vLLM ends an aborted request (paused engine, engine error) with a 200,
  // finish_reason "abort" and the text it had so far.
  double abort_rate = 0;
  uint64_t fault_seed = 1;
  // As vLLM before 0.10.2: structured_outputs is an unknown field there,
  // ignored with a warning, so a choice constraint yields free text.
  bool ignore_structured_outputs = false;
};

nlohmann::ordered_json faults_to_json(const FaultConfig& cfg);

// Applies the keys of `patch` (an object) onto `cfg`. On an unknown key, a
// wrong type or an out-of-range value returns the reason and leaves `cfg`
// untouched, so a bad admin call never half-applies.
std::optional<std::string> merge_faults(FaultConfig& cfg,
                                        const nlohmann::json& patch);

// Which faults hit one request. drop and error end the request at once; hang,
// slow and malformed can stack on a request that is otherwise served.
struct FaultRoll {
  bool drop = false;
  bool error = false;
  bool hang = false;
  bool slow = false;
  bool malformed = false;
  bool abort = false;
};

class FaultRoller {
 public:
  explicit FaultRoller(uint64_t seed) : rng_(seed), abort_rng_(seed ^ kAbortStream) {}
  void reseed(uint64_t seed) {
    rng_ = SplitMix64(seed);
    abort_rng_ = SplitMix64(seed ^ kAbortStream);
  }
  // Always draws the same number of values, so a given seed yields the same
  // sequence of decisions whatever the rates are.
  FaultRoll roll(const FaultConfig& cfg);

 private:
  // abort_rate came later: its own stream leaves the other faults' sequence
  // for a seed as it was.
  static constexpr uint64_t kAbortStream = 0xAB0127AB0127ULL;
  SplitMix64 rng_;
  SplitMix64 abort_rng_;
};

}  // namespace npc_scale::fake_gpu
