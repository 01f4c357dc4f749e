// Deterministic stand-in for a language model: turns (prompt, seed) into
// game-flavoured words. One word is one token, so usage numbers are easy to
// check from the outside.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace npc_scale::fake_gpu {

// Our tokenizer: the number of whitespace-separated words. Real tokenizers
// differ, but clients must only rely on usage being self-consistent.
int count_tokens(std::string_view text);

// splitmix64: tiny, fast and good enough to pick words; seeding costs nothing,
// unlike std::mt19937_64 which would dominate the per-request cost.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, 1).
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

struct GenParams {
  int max_tokens = 16;  // >= 1, validated by the protocol layer
  double temperature = 1.0;
  std::optional<int64_t> seed;
  std::vector<std::string> stop;     // empty strings are ignored
  std::vector<std::string> choices;  // guided choice: text is one of these
  // Chat without max_tokens: the "model" emits a simulated EOS after a
  // natural length (capped by max_tokens), like a real chat model.
  bool natural_stop = false;
};

struct Generation {
  std::string text;
  int completion_tokens = 0;
  std::string finish_reason;               // "length" or "stop"
  std::optional<std::string> stop_reason;  // the matched stop string, as vLLM
};

// Selects the sampling stream. temperature 0 (greedy) depends on the prompt
// only; temperature > 0 mixes in the request seed or, without one, the
// caller-supplied nonce (so unseeded sampling varies between calls), plus the
// choice index so n > 1 samples differ.
uint64_t sampling_key(std::string_view prompt, const GenParams& params,
                      uint64_t nonce, int choice_index);

Generation generate(uint64_t key, const GenParams& params);

// The word list, exposed so tests can check every output word comes from it.
const std::vector<std::string_view>& vocabulary();

}  // namespace npc_scale::fake_gpu
