#!/usr/bin/env bash
# The dispatcher is SIGKILLed with decisions in flight. After the crash
# restart, their claims are recovered (leases; or, when the crash lost the
# asynchronously committed claim, the rows are simply still queued) and every
# decision ends exactly once: done, with one answer, the 8 that were in
# flight sent again.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"

q() { npc_psql -tAc "$1"; }
q "SELECT npc_test.use_gpus(ARRAY['faulty'], ARRAY[8])" >/dev/null
# The GPU holds every request until released: the crash lands with 8 in flight.
q "SELECT npc_test.gpu_faults('faulty', '{\"error_rate\": 0, \"slow_rate\": 0, \"hang_rate\": 1}')" >/dev/null
release() { q "SELECT npc_test.gpu_release('faulty')" >/dev/null; }
trap 'release >/dev/null 2>&1 || true' EXIT
q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 7001 AND 7020" >/dev/null
q "SELECT npc_test.gpu_reset('faulty')" >/dev/null
q "SELECT count(*) FROM npc_scale.request_decisions(ARRAY(SELECT 7000 + g FROM generate_series(1, 20) g)::bigint[],
     'build', ARRAY(SELECT 'lease test ' || g FROM generate_series(1, 20) g))" >/dev/null

npc_wait_sql "SELECT count(*) = 8 FROM npc_scale.decision_queue WHERE npc_id BETWEEN 7001 AND 7020 AND status = 'running'" 20
npc_wait_sql "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 8" 20
pid=$(q "SELECT pid FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher'")
echo "8 decisions in flight; SIGKILL dispatcher $pid"
kill -9 "$pid"

# Crash restart: wait for the server and a new dispatcher, then let the GPU
# answer (what the new dispatcher sent before that is released too).
npc_wait_sql "SELECT count(*) = 2 FROM npc_scale.worker_status() WHERE pid IS NOT NULL AND pid <> $pid" 60
npc_wait_sql "SELECT true" 30
release
npc_wait_sql "SELECT count(*) = 20 FROM npc_scale.decision_queue WHERE npc_id BETWEEN 7001 AND 7020 AND status NOT IN ('queued', 'running')" 60

summary=$(q "SELECT count(*) FILTER (WHERE status = 'done' AND response <> ''), count(*), max(attempts),
                    npc_test.gpu_metric('faulty', 'fake_gpu_requests_total')::int
               FROM npc_scale.decision_queue WHERE npc_id BETWEEN 7001 AND 7020")
echo "done|total|max_attempts|gpu_requests = $summary"
IFS='|' read -r done total max_attempts gpu_requests <<<"$summary"
[ "$done" = 20 ] && [ "$total" = 20 ] || { echo "not every decision is done exactly once"; exit 1; }
[ "$max_attempts" -le 2 ] || { echo "a decision was attempted more than twice"; exit 1; }
[ "$gpu_requests" = 28 ] || { echo "expected 28 requests at the GPU (8 lost in flight + 20), saw $gpu_requests"; exit 1; }
q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 7001 AND 7020" >/dev/null
echo "lease recovery: all 20 done once, the 8 in flight re-attempted"
