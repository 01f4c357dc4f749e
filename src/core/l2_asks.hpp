// The dispatcher's Redis (L2) lookups in flight. A request is sent to a GPU
// first and Redis is asked after, without waiting; until the ask is answered
// the request is "waiting": neither claimed nor answered, so a hit can still
// withdraw it. This book keeps which requests each ask covers, matches the
// answers to them, and gives up on an ask no answer came back for, so no
// request waits on Redis for ever and none gets two outcomes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace npc_scale {

// One request whose cache key was asked.
struct L2Check {
  uint64_t tag = 0;   // the request in flight
  int64_t id = 0;     // its decision
  std::string key;    // its cache key
  uint32_t xid = 0;   // handed off, not claimed yet (attempts 0): its transaction
  int attempts = 0;   // > 0: claimed on the table path
};

// Redis's answer to one ask: hits[i] is the value for the ask's i-th key, or
// nullopt for a miss (or a hit that could not be used). Missing entries are misses.
struct L2Reply {
  uint64_t ticket = 0;
  std::vector<std::optional<std::string>> hits;
};

struct L2Outcome {
  L2Check check;
  std::optional<std::string> hit;  // nullopt: a miss (or the ask was given up)
};

class L2Asks {
 public:
  // An ask is given up (every check a miss) this long after its command
  // timeout: Redis's own timeout answers it first, so this is a backstop.
  explicit L2Asks(int64_t grace_ms = 1000) : grace_ms_(grace_ms) {}

  // Records the ask `ticket` for `checks` (in the order of its keys).
  void asked(uint64_t ticket, std::vector<L2Check> checks, int64_t now_ms);

  // Whether the request `tag` awaits an ask's answer.
  bool waiting(uint64_t tag) const { return waiting_.count(tag) > 0; }
  size_t pending_asks() const { return asks_.size(); }
  // The request `tag` no longer waits (it was cancelled); its ask's outcome
  // still comes, for the caller to find nothing to do with.
  void release(uint64_t tag) { waiting_.erase(tag); }

  // The outcomes of the asks answered in `replies`, and of the asks older
  // than timeout_ms + grace (all misses). Each check has exactly one outcome:
  // a reply for an ask already answered or given up is ignored. Every
  // returned check is no longer waiting.
  std::vector<L2Outcome> take(std::vector<L2Reply> replies, int64_t now_ms, int64_t timeout_ms);

  // Milliseconds until the oldest pending ask is given up (0: due now), -1 if none.
  int64_t ms_until_give_up(int64_t now_ms, int64_t timeout_ms) const;

 private:
  struct Ask {
    std::vector<L2Check> checks;
    int64_t asked_ms;
  };
  int64_t grace_ms_;
  std::unordered_map<uint64_t, Ask> asks_;  // by ticket
  std::unordered_set<uint64_t> waiting_;    // tags
};

}  // namespace npc_scale
