#include "handoff_policy.hpp"

#include <algorithm>

namespace npc_scale {

bool handoff_needs_outcome(bool answered, int64_t sent_ms, int64_t now_ms, const HandoffTiming& t) {
  return answered || now_ms - sent_ms >= t.claim_after_ms;
}

HandoffStep handoff_step(bool answered, TxnOutcome outcome) {
  switch (outcome) {
    case TxnOutcome::in_progress:
      return HandoffStep::wait;
    case TxnOutcome::aborted:
      return HandoffStep::drop;
    case TxnOutcome::committed:
      return answered ? HandoffStep::answer_directly : HandoffStep::claim;
  }
  return HandoffStep::wait;
}

int64_t commit_look_interval_ms(int64_t waited_ms, const HandoffTiming& t) {
  const int64_t first = std::max<int64_t>(0, t.commit_poll_ms);
  return std::clamp<int64_t>(std::max<int64_t>(0, waited_ms) / 8, first, std::max(first, t.commit_poll_max_ms));
}

int64_t handoff_next_look_ms(bool answered, int64_t sent_ms, int64_t now_ms, const HandoffTiming& t) {
  // Past the delay (or answered) it waits for its commit, which sets no
  // latch: poll. Inside it, look when the delay ends.
  if (handoff_needs_outcome(answered, sent_ms, now_ms, t)) return commit_look_interval_ms(now_ms - sent_ms, t);
  return std::max<int64_t>(0, sent_ms + t.claim_after_ms - now_ms);
}

}  // namespace npc_scale
