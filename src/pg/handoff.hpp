// Decisions handed to the dispatcher through shared memory as their
// transaction commits, so it can send them to a GPU before its claim
// transaction, which then runs while the GPU works instead of in front of it.
//
// They are published at PRE_COMMIT, with the transaction's id: the request
// goes out while the game's backend is still flushing its commit record
// (the WAL flush is the largest part of request_decision's own time). The
// dispatcher claims a handed-off row by id only once that transaction is
// known to have committed, and drops the request if it aborted (a commit can
// still fail after PRE_COMMIT, e.g. a serialization failure): so only
// committed rows are ever answered. Only a shortcut: whatever the
// dispatcher does not take from here (slots full, a backlog, a big prompt)
// it claims from the table as before. The claim by id is what makes the
// attempt count; a decision cancelled meanwhile is not claimed and its
// request is cancelled, so nothing is answered twice.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/handoff_policy.hpp"

extern "C" {
#include "postgres.h"
#include "access/transam.h"
}

namespace npc_scale {

// Whether what was noted in subtransaction `noted` goes when `aborting`
// aborts: subtransaction ids grow within a transaction, and one still open
// when `aborting` aborts is its child, so all noted at or after it go.
inline bool undone_by_abort(SubTransactionId noted, SubTransactionId aborting) {
  return noted != InvalidSubTransactionId && noted >= aborting;
}

struct HandoffEntry {
  TransactionId xid = InvalidTransactionId;  // the inserting (top-level) transaction
  int64_t id = 0;
  int64_t npc_id = 0;
  int priority = 5;
  std::optional<int64_t> deadline_us;  // TimestampTz, if the decision has one
  std::string decision_type, prompt, params;
};

// Shared memory (from the shmem hooks).
Size handoff_size();
void handoff_attach();

// request_decision(): remember the new row until this transaction ends; a
// rolled-back subtransaction forgets its own.
// `changed`: an UPDATE of the row ran since its INSERT began (a game's
// AFTER INSERT trigger): it is not handed off, as after handoff_rows_changed().
void handoff_at_commit(HandoffEntry e, bool changed = false);
bool handoff_has_pending();
// From the PRE_COMMIT callback (wake.cpp), before the dispatcher's latch is
// set: the remembered rows go to shared memory, tagged with `xid`. False if
// any did not fit (the dispatcher must then look at the table once the
// transaction has committed).
bool handoff_publish_pending(TransactionId xid);
// cancel_decision() of a decision this transaction requested: it is not
// handed off (a rollback of the savepoint the cancel was in undoes this).
void handoff_cancel_pending(int64_t id);
// An UPDATE in this transaction may have changed what the hand-off would
// send (a prompt, params, a deadline ...; statement trigger on the queue):
// none of the decisions it requested so far is handed off, the dispatcher
// claims their rows from the table as committed. A rollback of the
// savepoint the UPDATE was in undoes this.
void handoff_rows_changed();
// How many such UPDATEs this backend has run: request_decision() compares it
// around its INSERT.
uint64_t handoff_changes();
// From the abort callback.
void handoff_forget_pending();

// The dispatcher: every entry committed in database `db` since the last
// call, oldest first. Entries of other databases are dropped (their
// dispatcher claims them from their table).
std::vector<HandoffEntry> handoff_take(Oid db);

// The dispatcher, for a handed-off entry: whether its transaction has
// committed yet. Never throws (an unreadable outcome counts as committed).
TxnOutcome handoff_commit_state(TransactionId xid);

}  // namespace npc_scale
