#!/usr/bin/env bash
# A table lock on the decision queue (LOCK TABLE, VACUUM FULL, a
# non-concurrent CREATE INDEX), or on gpu_endpoints, must not stop the dispatcher's loop: its
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

# generate() is answered while RELATION is still held ACCESS EXCLUSIVE.
expect_generate_under_lock() {  # RELATION WHEN
  local answer held
  answer=$(PGOPTIONS='-c statement_timeout=10s' npc_psql -tAc \
    "SELECT npc_scale.generate('$2? ' || gen_random_uuid(), 5, '{\"max_tokens\": 3}') <> ''")
  [ "$answer" = t ] || { echo "generate() was not answered $2: $answer"; exit 1; }
  held=$(npc_psql -tAc "SELECT count(*) FROM pg_locks WHERE relation = '$1'::regclass
                          AND mode = 'AccessExclusiveLock' AND granted")
  [ "$held" = 1 ] || { echo "the lock on $1 was not held while generate() was answered $2"; exit 1; }
}

sessions_open a b
run_in a "BEGIN; LOCK TABLE npc_scale.decision_queue IN ACCESS EXCLUSIVE MODE;"
# The dispatcher meets the lock (lease recovery looks every second) and
# gives up on it, counted as an error of its loop ...
npc_wait_sql "SELECT ($dispatcher_errors) > $errors0" 15 \
  || { echo "the dispatcher never gave up waiting for the table lock"; exit 1; }
# ... which goes on: generate() is served while the lock is still held.
expect_generate_under_lock npc_scale.decision_queue "during a table lock"
run_in a "ROLLBACK;"

# Queued work flows again once it is released.
id=$(npc_psql -tAc "SELECT npc_scale.request_decision(8801, 'build', 'after the table lock', 5)")
npc_wait_sql "SELECT status = 'done' FROM npc_scale.decision_queue WHERE id = $id" 10 \
  || { echo "decision $id was not done after the lock was released"; exit 1; }
npc_psql -c "DELETE FROM npc_scale.decision_queue WHERE npc_id = 8801" >/dev/null

# A change to gpu_endpoints commits, and a migration's lock on the table is
# granted before the dispatcher has read it (queued behind the change's
# transaction): the dispatcher's load fails, again and again while the
# lock is held, and only the load: generate() is still served.
errors1=$(npc_psql -tAc "$dispatcher_errors")
run_in b "BEGIN; UPDATE npc_scale.gpu_endpoints SET weight = weight;"
send_to a "BEGIN; LOCK TABLE npc_scale.gpu_endpoints IN ACCESS EXCLUSIVE MODE;"
lock_step=$SENT_STEP
npc_wait_sql "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'npc_scale.gpu_endpoints'::regclass
                              AND mode = 'AccessExclusiveLock' AND NOT granted)" 10 \
  || { echo "the migration's lock was not queued"; exit 1; }
run_in b "COMMIT;"
wait_step a "$lock_step"
npc_wait_sql "SELECT ($dispatcher_errors) > $errors1 + 1" 15 \
  || { echo "the dispatcher did not fail its load of the locked endpoint table twice"; exit 1; }
expect_generate_under_lock npc_scale.gpu_endpoints "during an endpoint table lock"
loaded=$(npc_psql -tAc "SELECT (SELECT value FROM npc_scale.metrics() WHERE name = 'endpoints_loaded')
                          < (SELECT value FROM npc_scale.metrics() WHERE name = 'endpoints_generation')")
[ "$loaded" = t ] || { echo "the change was loaded through the lock?"; exit 1; }
run_in a "ROLLBACK;"
# Once the lock is gone the change is loaded.
npc_wait_sql "SELECT (SELECT value FROM npc_scale.metrics() WHERE name = 'endpoints_loaded')
                = (SELECT value FROM npc_scale.metrics() WHERE name = 'endpoints_generation')" 10 \
  || { echo "the endpoint change was not loaded after the lock"; exit 1; }

# A dispatcher that restarts while the queue is locked (its start-up puts
# back what the last one left running, which needs the table) serves
# generate() all the same, and recovers once the lock is gone.
old_pid=$(npc_psql -tAc "SELECT npc_test.worker_pid('dispatcher')")
run_in a "BEGIN; LOCK TABLE npc_scale.decision_queue IN ACCESS EXCLUSIVE MODE;"
npc_psql -tAc "SELECT pg_terminate_backend($old_pid)" >/dev/null
npc_wait_sql "SELECT npc_test.worker_pid('dispatcher') NOT IN (0, $old_pid)" 30 \
  || { echo "no new dispatcher started"; exit 1; }
expect_generate_under_lock npc_scale.decision_queue "by a dispatcher restarted under the table lock"
run_in a "ROLLBACK;"
id=$(npc_psql -tAc "SELECT npc_scale.request_decision(8802, 'build', 'after the restart under a lock', 5)")
npc_wait_sql "SELECT status = 'done' FROM npc_scale.decision_queue WHERE id = $id" 10 \
  || { echo "decision $id was not done after the lock was released"; exit 1; }
npc_psql -c "DELETE FROM npc_scale.decision_queue WHERE npc_id = 8802" >/dev/null
echo "ok: a table lock on the queue or the endpoint table did not stall the dispatcher, nor its restart"
