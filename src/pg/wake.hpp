// Waking the dispatcher at COMMIT (never on rollback, never before the rows
// are visible): request_decision() and changes to gpu_endpoints mark this
// backend's transaction; one transaction callback, registered once per
// backend, sets the dispatcher's latch when it commits.
#pragma once

#include <cstdint>

namespace npc_scale {

// handed_off: the new rows were also given to handoff_at_commit(), so the
// dispatcher need not look at the table for them.
void wake_dispatcher_at_commit(bool handed_off = false);
void endpoints_changed_at_commit();
// cancel_decision(): at commit, the dispatcher aborts the GPU requests of
// decisions that were cancelled while it was serving them, and the
// await_decision() callers waiting for this id wake up.
void cancelled_at_commit(int64_t id);

}  // namespace npc_scale
