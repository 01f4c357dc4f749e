// Decisions handed to the dispatcher at COMMIT through shared memory, so it
// can send them to a GPU before its claim transaction, which then runs while
// the GPU works instead of in front of it. Only a shortcut: every handed-off
// decision is a committed, queued row, and whatever the dispatcher does not
// take from here (slots full, a backlog, a big prompt) it claims from the
// table as before. The claim by id after sending is what makes the attempt
// count; a decision cancelled meanwhile is not claimed and its request is
// cancelled, so nothing is answered twice.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

extern "C" {
#include "postgres.h"
}

namespace npc_scale {

struct HandoffEntry {
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
void handoff_at_commit(HandoffEntry e);
// From the commit callback (wake.cpp), before the dispatcher's latch is set:
// the remembered rows go to shared memory. False if any did not fit (the
// dispatcher must then look at the table).
bool handoff_publish_pending();
// From the abort callback.
void handoff_forget_pending();

// The dispatcher: every entry committed in database `db` since the last
// call, oldest first. Entries of other databases are dropped (their
// dispatcher claims them from their table).
std::vector<HandoffEntry> handoff_take(Oid db);

}  // namespace npc_scale
