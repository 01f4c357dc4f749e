#!/usr/bin/env bash
# Identical concurrent generate() misses are coalesced: eight sessions ask the
# same deterministic question at once, the GPU sees one request, all eight get
# the same answer. Then: a follower whose leader goes away is sent on its own,
# and a decision due before the identical request could end is not joined to it.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
q() { npc_psql -tAc "$1"; }

# The GPU takes 2 s: every call starts while the first request is in flight,
# before any answer could be cached, so only coalescing keeps it to one request.
q "SELECT npc_test.use_gpus(ARRAY['faulty'])" >/dev/null
q "SELECT npc_scale.cache_clear()" >/dev/null
q "SELECT npc_test.gpu_reset('faulty')" >/dev/null
q "SELECT npc_test.gpu_faults('faulty', '{\"slow_rate\": 1, \"slow_ms\": 2000}')" >/dev/null
trap 'q "SELECT npc_test.gpu_faults('"'"'faulty'"'"', '"'"'{\"slow_rate\": 0}'"'"')" >/dev/null 2>&1 || true' EXIT
out=$NPC_STATE/coalesce; rm -rf "$out"; mkdir -p "$out"
prompt="Coalesce: should all eight villages trade iron? $(date +%s%N)"
for i in 1 2 3 4 5 6 7 8; do
  npc_psql -tAc "SELECT npc_scale.generate('$prompt', 5, '{\"temperature\": 0, \"max_tokens\": 12}')" >"$out/$i" &
done
wait
answers=$(cat "$out"/* | sort -u | wc -l)
requests=$(q "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total')::int")
echo "distinct answers: $answers, requests at the GPU: $requests"
[ "$answers" = 1 ] || { echo "sessions got different answers"; exit 1; }
[ "$(wc -l <"$out/1")" = 1 ] && [ -s "$out/1" ] || { echo "empty answer"; exit 1; }
[ "$requests" = 1 ] || { echo "expected one request for eight identical calls"; exit 1; }

# A leader that goes away hands its followers back. Here the leader is a
# generate() call that statement_timeout cancels while a queued decision with
# the same question waits on its request: the decision is sent again and
# answered, and the attempt it waited through (never sent) is not counted.
# start_leader SLOW_MS OUTFILE PSQL_ARGS...: the GPU slowed to SLOW_MS, then
# a generate() call (PSQL_ARGS) in the background until its request is at
# the GPU; $leader is its pid.
start_leader() {
  local slow_ms=$1 outfile=$2
  shift 2
  q "SELECT npc_test.gpu_reset('faulty')" >/dev/null
  q "SELECT npc_test.gpu_faults('faulty', '{\"slow_rate\": 1, \"slow_ms\": $slow_ms}')" >/dev/null
  npc_psql -tA "$@" >"$outfile" 2>&1 &
  leader=$!
  npc_wait_sql "SELECT npc_test.gpu_metric('faulty', 'vllm:num_requests_running') = 1" 10 \
    || { echo "the generate() call did not reach the GPU"; exit 1; }
}
prompt="Coalesce: who answers when the leader leaves? $(date +%s%N)"
params='{"temperature": 0, "max_tokens": 12}'
start_leader 6000 "$out/leader" -c "SET statement_timeout = '3000 ms'" -c "SELECT npc_scale.generate('$prompt', 5, '$params')"
id=$(q "SELECT npc_scale.request_decision(9301, 'trade', '$prompt', 5, '$params')")
# Claimed, and no second request at the GPU: it waits on the leader's.
npc_wait_sql "SELECT status = 'running' FROM npc_scale.decision_queue WHERE id = $id" 10 \
  || { echo "decision $id was not claimed"; exit 1; }
[ "$(q "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total')::int")" = 1 ] \
  || { echo "decision $id was sent on its own instead of waiting on the identical request"; exit 1; }
q "SELECT npc_test.gpu_faults('faulty', '{\"slow_rate\": 0}')" >/dev/null  # what comes next is quick
wait "$leader" || true
grep -q "statement timeout" "$out/leader" || { echo "the leader was expected to time out"; cat "$out/leader"; exit 1; }
row=$(q "SELECT status, attempts FROM npc_scale.await_decision($id, '10 s')")
echo "the follower after its leader left: $row"
[ "$row" = "done|1" ] || { echo "expected done after one counted attempt"; exit 1; }
q "DELETE FROM npc_scale.decision_queue WHERE npc_id = 9301" >/dev/null
# A follower never waits past its own deadline: a decision due in 3 s is not
# joined to an identical generate() request allowed 60 s; it is sent on its own.
prompt="Coalesce: can the deadline wait for the slow one? $(date +%s%N)"
start_leader 4000 "$out/long_leader" \
  -c "SELECT npc_scale.generate('$prompt', 5, '{\"temperature\": 0, \"max_tokens\": 12, \"timeout_ms\": 60000}')"
id=$(q "SELECT npc_scale.request_decision(9302, 'trade', '$prompt', 5, '$params', '3 s')")
npc_wait_sql "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total') = 2" 10 \
  || { echo "decision $id (due in 3 s) waited on the identical 60 s request"; exit 1; }
wait "$leader" || true
echo "a decision due sooner than the identical request in flight was sent on its own"
q "SELECT npc_test.gpu_faults('faulty', '{\"slow_rate\": 0}')" >/dev/null
q "DELETE FROM npc_scale.decision_queue WHERE npc_id = 9302" >/dev/null
