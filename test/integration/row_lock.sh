#!/usr/bin/env bash
# A game session that holds a decision's row lock (cancel_decision() inside a
# transaction it has not ended) must not stall the dispatcher: its one loop
# serves every other decision meanwhile. The locked decision's answer waits
# for the lock and then follows the locker: written if it rolled back,
# dropped if the cancel committed. Either way the decision ends exactly once.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"

cleanup() {
  sessions_close
  release_held >/dev/null 2>&1 || true
}
release_held() { npc_psql -c "SELECT npc_test.gpu_release('faulty')" >/dev/null; }
trap cleanup EXIT
npc_psql -tAc "SELECT npc_test.use_gpus(ARRAY['faulty'])" >/dev/null
sessions_open a

# held_answer ROLLBACK|COMMIT NPC: prints the locked decision's final row
# (its failures go to stderr and end the script through the empty row).
held_answer() {
  local outcome=$1 npc=$2 id other deferred0
  # A decision held at the GPU until released, claimed (running).
  npc_psql -c "SELECT npc_test.gpu_faults('faulty', '{\"hang_rate\": 1}')" >/dev/null
  id=$(npc_psql -tAc "SELECT npc_scale.request_decision($npc, 'build', 'row lock: $outcome', 5)")
  npc_wait_sql "SELECT status = 'running' FROM npc_scale.decision_queue WHERE id = $id
                   AND npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 1" 10 \
    || { echo "decision $id was not claimed and held at the GPU"; exit 1; } >&2
  npc_psql -c "SELECT npc_test.gpu_faults('faulty', '{\"hang_rate\": 0}')" >/dev/null  # new requests are answered
  deferred0=$(npc_psql -tAc "SELECT npc_test.metric('results_deferred')")

  # Session a cancels it in a transaction it keeps open: the row stays locked.
  run_in a "BEGIN; SELECT 'cancel=' || npc_scale.cancel_decision($id);"
  grep -q '^cancel=true$' "$(session_out a)" || { echo "cancel_decision($id) did not return true"; cat "$(session_out a)"; exit 1; } >&2

  # The GPU's answer arrives; its write meets the lock and is put aside.
  release_held
  npc_wait_sql "SELECT npc_test.metric('results_deferred') > $deferred0" 10 \
    || { echo "the answer to $id was not deferred"; exit 1; } >&2

  # Meanwhile another decision is answered as usual.
  other=$(npc_psql -tAc "SELECT npc_scale.request_decision($npc + 1, 'build', 'row lock: meanwhile $outcome', 5)")
  status=$(npc_psql -tAc "SELECT status FROM npc_scale.await_decision($other, '10 s')")
  [ "$status" = done ] || { echo "decision $other ended '$status' while $id's row was locked"; exit 1; } >&2
  status=$(npc_psql -tAc "SELECT status FROM npc_scale.decision_queue WHERE id = $id")
  [ "$status" = running ] || { echo "decision $id is '$status' before its locker ended"; exit 1; } >&2

  run_in a "$outcome;"
  npc_psql -tA -F ' ' -c "SELECT status, response IS NOT NULL, attempts, coalesce(error, '-')
                            FROM npc_scale.await_decision($id, '10 s')"
}

# The cancel rolled back: the answer is written once the lock is gone.
row=$(held_answer ROLLBACK 9201) || exit 1
read -r status has_response attempts _ <<<"$row"
echo "after ROLLBACK: $status, response: $has_response, attempts: $attempts"
[ "$status" = done ] && [ "$has_response" = t ] && [ "$attempts" = 1 ] \
  || { echo "expected done with a response after one attempt"; exit 1; }

# The cancel committed: the answer is dropped, the decision stays cancelled.
row=$(held_answer COMMIT 9203) || exit 1
read -r status has_response attempts error <<<"$row"
echo "after COMMIT: $status, response: $has_response, error: $error"
[ "$status" = cancelled ] && [ "$has_response" = f ] \
  || { echo "expected cancelled without a response"; exit 1; }

npc_psql -tAc "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 9201 AND 9204" >/dev/null
echo "a locked row neither stalls the dispatcher nor gets two endings"
