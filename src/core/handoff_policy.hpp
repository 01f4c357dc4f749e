// What the dispatcher does with a request it sent straight from the commit
// handoff, before the row is claimed. The row's transaction may still be
// committing (the handoff happens at PRE_COMMIT), and a request answered
// quickly needs no separate claim: its answer's write claims it.
#pragma once

#include <cstdint>

namespace npc_scale {

enum class TxnOutcome { in_progress, committed, aborted };

enum class HandoffStep {
  wait,             // nothing to do yet (see handoff_next_look_ms)
  answer_directly,  // committed and answered: write the answer from queued (attempt 1)
  claim,            // committed, still in flight past the delay: claim it (running, leased)
  drop,             // the transaction aborted: there is no row; cancel / forget the answer
};

struct HandoffTiming {
  int64_t claim_after_ms = 5;       // in flight this long before it is claimed
  int64_t commit_poll_ms = 1;       // how often a pending commit is looked at again, at first
  int64_t commit_poll_max_ms = 50;  // and at most, once it has taken long
};

// When a transaction still committing `waited_ms` after it was first looked
// for is looked at again. A commit ends within a millisecond or two of its
// PRE_COMMIT (the WAL flush), and sets no latch: polled every commit_poll_ms.
// One that takes longer (a synchronous standby gone, a wait at commit) is
// polled every eighth of its wait so far, up to commit_poll_max_ms, so the
// loop does not spin a thousand times a second on it.
int64_t commit_look_interval_ms(int64_t waited_ms, const HandoffTiming& t);

// Whether the transaction's outcome matters yet: an unanswered request
// inside its claim delay needs nothing from it.
bool handoff_needs_outcome(bool answered, int64_t sent_ms, int64_t now_ms, const HandoffTiming& t);

// The step for a request whose outcome was looked up.
HandoffStep handoff_step(bool answered, TxnOutcome outcome);

// Milliseconds until the dispatcher should look at this request again.
int64_t handoff_next_look_ms(bool answered, int64_t sent_ms, int64_t now_ms, const HandoffTiming& t);

}  // namespace npc_scale
