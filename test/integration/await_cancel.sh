#!/usr/bin/env bash
# await_decision() wakes up when another session's cancel_decision() commits,
# not at its periodic re-read: with that re-read set to an hour, the waiter
# still returns the cancelled row. After a cancel that rolls back it waits on.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"

cleanup() {
  sessions_close
  npc_psql -c "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 9401 AND 9402" >/dev/null 2>&1 || true
}
trap cleanup EXIT
npc_psql -tAc "SELECT npc_test.use_gpus(ARRAY['fast0'])" >/dev/null
npc_psql -c "UPDATE npc_scale.gpu_endpoints SET enabled = false" >/dev/null  # nothing is answered
sessions_open waiter canceller

# waiting_on ID: the waiter is inside await_decision(ID), asleep on its latch.
waiting_on() {
  npc_wait_sql "SELECT count(*) = 1 FROM pg_stat_activity
                 WHERE query LIKE '%await_decision($1,%' AND state = 'active' AND wait_event = 'Extension'" 10 \
    || { echo "the waiter is not waiting for decision $1"; cat "$(session_out waiter)"; exit 1; }
}

id=$(npc_psql -tAc "SELECT npc_scale.request_decision(9401, 'trade', 'await me', 5)")
send_to waiter "SET npc_scale.await_recheck = '1h';
SELECT 'first=' || status FROM npc_scale.await_decision($id, '1 h');"
step=$SENT_STEP
waiting_on "$id"

# A cancel that rolls back leaves it queued: the waiter is still waiting.
run_in canceller "BEGIN; SELECT npc_scale.cancel_decision($id); ROLLBACK;"
waiting_on "$id"
grep -q '^first=' "$(session_out waiter)" && { echo "await_decision returned after a rolled-back cancel"; exit 1; }

# The committed cancel wakes it within seconds, against a re-read due in an hour.
run_in canceller "SELECT npc_scale.cancel_decision($id);"
wait_step waiter "$step" 10
grep -qx 'first=cancelled' "$(session_out waiter)" \
  || { echo "expected the waiter to return the cancelled row"; cat "$(session_out waiter)"; exit 1; }
echo "a committed cancel wakes await_decision() at once"
