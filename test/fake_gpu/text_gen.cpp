#include "text_gen.hpp"

#include <xxhash.h>

#include <algorithm>

namespace npc_scale::fake_gpu {

namespace {

const std::vector<std::string_view> kVocabulary = {
    "build",   "wood",    "clay",    "iron",     "wheat",  "attack",
    "village", "trade",   "market",  "barracks", "spear",  "sword",
    "axe",     "scout",   "cavalry", "wall",     "farm",   "warehouse",
    "defend",  "raid",    "tribe",   "noble",    "coins",  "recruit",
    "upgrade", "smithy",  "rally",   "point",    "hide",   "loot",
    "support", "retreat", "north",   "south",    "east",   "west",
    "allies",  "enemy",   "valley",  "harvest",  "forge",  "mine",
    "quarry",  "lumber",  "camp",    "ram",      "catapult", "archer",
    "watchtower", "granary", "merchant", "caravan", "siege", "banner",
    "hero",    "quest",   "gold",    "stone",    "bread",  "horse",
    "night",   "dawn",    "march",   "wait"};

// Natural-length bounds for chat answers without max_tokens.
constexpr int kNaturalMin = 8;
constexpr int kNaturalSpan = 41;

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t words[2] = {a, b};
  return XXH3_64bits(words, sizeof(words));
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

// Earliest match of any stop string that ends at or after `from`; returns
// npos if none. Searching from `from` keeps incremental checks linear.
size_t find_stop(const std::string& text, size_t from,
                 const std::vector<std::string>& stops, size_t* which) {
  size_t best = std::string::npos;
  for (size_t i = 0; i < stops.size(); ++i) {
    const std::string& s = stops[i];
    if (s.empty()) continue;
    size_t start = from >= s.size() ? from - s.size() + 1 : 0;
    size_t pos = text.find(s, start);
    if (pos != std::string::npos && pos < best) {
      best = pos;
      *which = i;
    }
  }
  return best;
}

}  // namespace

const std::vector<std::string_view>& vocabulary() { return kVocabulary; }

int count_tokens(std::string_view text) {
  int n = 0;
  bool in_word = false;
  for (char c : text) {
    if (is_space(c)) {
      in_word = false;
    } else if (!in_word) {
      in_word = true;
      ++n;
    }
  }
  return n;
}

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t sampling_key(std::string_view prompt, const GenParams& params,
                      uint64_t nonce, int choice_index) {
  uint64_t base = XXH3_64bits(prompt.data(), prompt.size());
  if (params.temperature <= 0.0) return base;  // greedy: prompt decides all
  uint64_t salt = params.seed ? static_cast<uint64_t>(*params.seed)
                              : nonce ^ 0xA5A5A5A5DEADBEEFULL;
  // Seeded and unseeded streams must not collide for equal numbers.
  uint64_t tag = params.seed ? 1 : 2;
  return mix(mix(base, salt), (tag << 32) | static_cast<uint32_t>(choice_index));
}

Generation generate(uint64_t key, const GenParams& params) {
  SplitMix64 rng(key);
  Generation out;

  if (!params.choices.empty()) {
    // Guided decoding forces one of the choices, ending in "stop"; but
    // max_tokens still applies, as in vLLM: a longer choice is cut, "length".
    const std::string& choice = params.choices[rng.next() % params.choices.size()];
    const int budget = std::max(1, params.max_tokens);
    // Stop strings apply to a constrained answer too, as in vLLM: one
    // inside the choice cuts it there.
    size_t which = 0;
    const size_t stop_at = params.stop.empty() ? std::string::npos : find_stop(choice, 0, params.stop, &which);
    if (stop_at != std::string::npos && count_tokens(choice.substr(0, stop_at)) <= budget) {
      out.text = choice.substr(0, stop_at);
      out.completion_tokens = std::max(1, count_tokens(out.text));
      out.finish_reason = "stop";
      out.stop_reason = params.stop[which];
      return out;
    }
    if (count_tokens(choice) <= budget) {
      out.text = choice;
      out.completion_tokens = std::max(1, count_tokens(choice));
      out.finish_reason = "stop";
      return out;
    }
    // The first `budget` words, as many "tokens".
    size_t end = 0;
    for (int words = 0; end < choice.size(); ++end) {
      if (!is_space(choice[end]) && (end == 0 || is_space(choice[end - 1])) && words++ == budget) break;
    }
    out.text = choice.substr(0, end);
    while (!out.text.empty() && is_space(out.text.back())) out.text.pop_back();
    out.completion_tokens = budget;
    out.finish_reason = "length";
    return out;
  }

  int budget = std::max(1, params.max_tokens);
  bool eos = false;
  if (params.natural_stop) {
    int natural = kNaturalMin + static_cast<int>(rng.next() % kNaturalSpan);
    if (natural < budget) {
      budget = natural;
      eos = true;
    }
  }

  size_t max_stop = 0;
  for (const auto& s : params.stop) max_stop = std::max(max_stop, s.size());
  out.text.reserve(static_cast<size_t>(budget) * 8);

  for (int t = 0; t < budget; ++t) {
    size_t before = out.text.size();
    if (t > 0) out.text.push_back(' ');
    out.text.append(kVocabulary[rng.next() % kVocabulary.size()]);
    out.completion_tokens = t + 1;
    if (max_stop == 0) continue;
    // Like vLLM's incremental detokenizer: check stops after every token,
    // drop the stop string from the output and report it as stop_reason.
    size_t which = 0;
    size_t pos = find_stop(out.text, before, params.stop, &which);
    if (pos != std::string::npos) {
      out.text.resize(pos);
      out.finish_reason = "stop";
      out.stop_reason = params.stop[which];
      return out;
    }
  }
  out.finish_reason = eos ? "stop" : "length";
  return out;
}

}  // namespace npc_scale::fake_gpu
