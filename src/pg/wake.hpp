// Waking the dispatcher at COMMIT (never on rollback, never before the rows
// are visible): request_decision() and changes to gpu_endpoints mark this
// backend's transaction; one transaction callback, registered once per
// backend, sets the dispatcher's latch when it commits.
#pragma once

namespace npc_scale {

void wake_dispatcher_at_commit();
void endpoints_changed_at_commit();

}  // namespace npc_scale
