#!/usr/bin/env bash
# A table lock on the decision queue (LOCK TABLE, VACUUM FULL, a
# non-concurrent CREATE INDEX) must not stop the dispatcher's loop: its
# statements give up after lock_timeout and are tried again later. So
# generate(), which needs no table, is answered while the lock is held, and
# queued work goes on once it is released.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
trap sessions_close EXIT
npc_psql -tAc "SELECT npc_test.use_gpus(ARRAY['fast1'])" >/dev/null
dispatcher_errors="SELECT errors FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher'"
errors0=$(npc_psql -tAc "$dispatcher_errors")

sessions_open a
run_in a "BEGIN; LOCK TABLE npc_scale.decision_queue IN ACCESS EXCLUSIVE MODE;"
# The dispatcher meets the lock (lease recovery looks every second) and
# gives up on it, counted as an error of its loop ...
npc_wait_sql "SELECT ($dispatcher_errors) > $errors0" 15 \
  || { echo "the dispatcher never gave up waiting for the table lock"; exit 1; }
# ... which goes on: generate() is served while the lock is still held.
answer=$(PGOPTIONS='-c statement_timeout=10s' npc_psql -tAc \
  "SELECT npc_scale.generate('During a table lock?', 5, '{\"max_tokens\": 3}') <> ''")
[ "$answer" = t ] || { echo "generate() was not answered during the table lock: $answer"; exit 1; }
held=$(npc_psql -tAc "SELECT count(*) FROM pg_locks WHERE relation = 'npc_scale.decision_queue'::regclass
                        AND mode = 'AccessExclusiveLock' AND granted")
[ "$held" = 1 ] || { echo "the lock was not held during generate()"; exit 1; }
run_in a "ROLLBACK;"

# Queued work flows again once it is released.
id=$(npc_psql -tAc "SELECT npc_scale.request_decision(8801, 'build', 'after the table lock', 5)")
npc_wait_sql "SELECT status = 'done' FROM npc_scale.decision_queue WHERE id = $id" 10 \
  || { echo "decision $id was not done after the lock was released"; exit 1; }
npc_psql -c "DELETE FROM npc_scale.decision_queue WHERE npc_id = 8801" >/dev/null
echo "ok: a table lock on the queue did not stall the dispatcher"
