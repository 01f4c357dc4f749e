#!/usr/bin/env bash
# Identical concurrent generate() misses are coalesced: eight sessions ask the
# same deterministic question at once, the GPU sees one request, all eight get
# the same answer. Then: a follower whose leader goes away is sent on its own,
# and a decision due before the identical request could end is not joined to it.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
q() { npc_psql -tAc "$1"; }

# The GPU holds every request until the script releases it: all eight calls
# are taken by the dispatcher while the first request is in flight, before
# any answer could be cached, so only coalescing keeps it to one request.
q "SELECT npc_test.use_gpus(ARRAY['faulty'])" >/dev/null
q "SELECT npc_scale.cache_clear()" >/dev/null
q "SELECT npc_test.gpu_reset('faulty')" >/dev/null
hold() { q "SELECT npc_test.gpu_faults('faulty', '{\"hang_rate\": 1}')" >/dev/null; }
release() { q "SELECT npc_test.gpu_release('faulty')" >/dev/null; }
trap 'release >/dev/null 2>&1 || true' EXIT
hold
out=$NPC_STATE/coalesce; rm -rf "$out"; mkdir -p "$out"
prompt="Coalesce: should all eight villages trade iron? $(date +%s%N)"
for i in 1 2 3 4 5 6 7 8; do
  npc_psql -tAc "SELECT npc_scale.generate('$prompt', 5, '{\"temperature\": 0, \"max_tokens\": 12}')" >"$out/$i" &
done
# All eight taken by the dispatcher (none waiting), one request at the GPU.
npc_wait_sql "SELECT npc_test.metric('sync_slots_busy') = 8 AND npc_test.metric('sync_slots_waiting') = 0
                 AND npc_test.gpu_metric('faulty', 'fake_gpu_requests_total') = 1" 20 \
  || { echo "the eight calls were not all taken while one request was held"; exit 1; }
release
wait
answers=$(cat "$out"/* | sort -u | wc -l)
requests=$(q "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total')::int")
echo "distinct answers: $answers, requests at the GPU: $requests"
[ "$answers" = 1 ] || { echo "sessions got different answers"; exit 1; }
[ "$(wc -l <"$out/1")" = 1 ] && [ -s "$out/1" ] || { echo "empty answer"; exit 1; }
[ "$requests" = 1 ] || { echo "expected one request for eight identical calls"; exit 1; }

# A leader that goes away hands its followers back. Here the leader is a
# generate() call, cancelled while a queued decision with the same question
# waits on its request: the decision is sent again and answered, and the
# attempt it waited through (never sent) is not counted.
# start_leader OUTFILE PSQL_ARGS...: a generate() call (PSQL_ARGS) in the
# background, held at the GPU; $leader is its pid.
start_leader() {
  local outfile=$1
  shift
  q "SELECT npc_test.gpu_reset('faulty')" >/dev/null
  hold
  npc_psql -tA "$@" >"$outfile" 2>&1 &
  leader=$!
  npc_wait_sql "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 1" 10 \
    || { echo "the generate() call did not reach the GPU"; exit 1; }
}
prompt="Coalesce: who answers when the leader leaves? $(date +%s%N)"
params='{"temperature": 0, "max_tokens": 12}'
start_leader "$out/leader" -c "SELECT npc_scale.generate('$prompt', 5, '$params')"
id=$(q "SELECT npc_scale.request_decision(9301, 'trade', '$prompt', 5, '$params')")
# Claimed, and no second request at the GPU: it waits on the leader's.
npc_wait_sql "SELECT status = 'running' FROM npc_scale.decision_queue WHERE id = $id" 10 \
  || { echo "decision $id was not claimed"; exit 1; }
[ "$(q "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total')::int")" = 1 ] \
  || { echo "decision $id was sent on its own instead of waiting on the identical request"; exit 1; }
q "SELECT npc_test.gpu_faults('faulty', '{\"hang_rate\": 0}')" >/dev/null  # what comes next is answered
q "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%generate(''$prompt''%' AND pid <> pg_backend_pid()" >/dev/null
wait "$leader" || true
grep -q "canceling statement due to user request" "$out/leader" || { echo "the leader was expected to be cancelled"; cat "$out/leader"; exit 1; }
row=$(q "SELECT status, attempts FROM npc_scale.await_decision($id, '10 s')")
echo "the follower after its leader left: $row"
[ "$row" = "done|1" ] || { echo "expected done after one counted attempt"; exit 1; }
q "DELETE FROM npc_scale.decision_queue WHERE npc_id = 9301" >/dev/null
# A follower never waits past its own deadline: a decision due in 30 s is not
# joined to an identical generate() request allowed 60 s; it is sent on its own.
prompt="Coalesce: can the deadline wait for the slow one? $(date +%s%N)"
start_leader "$out/long_leader" \
  -c "SELECT npc_scale.generate('$prompt', 5, '{\"temperature\": 0, \"max_tokens\": 12, \"timeout_ms\": 60000}')"
id=$(q "SELECT npc_scale.request_decision(9302, 'trade', '$prompt', 5, '$params', '30 s')")
npc_wait_sql "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total') = 2" 10 \
  || { echo "decision $id (due in 30 s) waited on the identical 60 s request"; exit 1; }
echo "a decision due sooner than the identical request in flight was sent on its own"
# That later request leads the question now: the first one ending (its
# caller cancelled) leaves it findable, and a third identical call joins it.
q "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%generate(''$prompt''%' AND pid <> pg_backend_pid()" >/dev/null
wait "$leader" || true
npc_psql -tAc "SELECT npc_scale.generate('$prompt', 5, '{\"temperature\": 0, \"max_tokens\": 12, \"timeout_ms\": 60000}')" >"$out/third" &
third=$!
npc_wait_sql "SELECT npc_test.metric('sync_slots_busy') = 1 AND npc_test.metric('sync_slots_waiting') = 0" 10 \
  || { echo "the third call was not taken"; exit 1; }
[ "$(q "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total')::int")" = 2 ] \
  || { echo "a third identical call was sent on its own instead of joining the request in flight"; exit 1; }
release
wait "$third" || { echo "the third call failed: $(cat "$out/third")"; exit 1; }
[ -s "$out/third" ] || { echo "the third call got no answer"; exit 1; }
[ "$(q "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total')::int")" = 2 ] \
  || { echo "the third call was sent on its own"; exit 1; }
echo "a third identical call joined the request that leads once the first ended"
npc_wait_sql "SELECT npc_test.all_finished(ARRAY[$id]::bigint[])" 10 || { echo "decision $id did not finish"; exit 1; }
q "DELETE FROM npc_scale.decision_queue WHERE npc_id = 9302" >/dev/null
