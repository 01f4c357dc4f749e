#!/usr/bin/env bash
# A GPU server dies: its breaker opens, work moves to the rest of the fleet
# (failed attempts are retried elsewhere, nothing lost). It comes back: a
# /health probe closes the breaker and it gets work again.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
q() { npc_psql -tAc "$1"; }

port=$((NPC_GPU_BASE_PORT + 20))
npc_gpu_start victim "$port" --profile instant
q "ALTER SYSTEM SET npc_scale.breaker_cooldown = '300ms'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
cleanup() {
  q "ALTER SYSTEM RESET npc_scale.breaker_cooldown" >/dev/null || true
  q "SELECT pg_reload_conf()" >/dev/null || true
  [ -f "$NPC_STATE/gpu/victim.pid" ] && kill "$(cat "$NPC_STATE/gpu/victim.pid")" 2>/dev/null || true
}
trap cleanup EXIT
q "DELETE FROM npc_scale.gpu_endpoints;
   INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent) VALUES
     (1, '$(q "SELECT npc_test.gpu_url('fast0')")', 16), (2, 'http://127.0.0.1:$port', 16)" >/dev/null
q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 6001 AND 6200" >/dev/null

echo "killing the GPU on port $port"
kill -9 "$(cat "$NPC_STATE/gpu/victim.pid")"
q "SELECT count(*) FROM npc_scale.request_decisions(ARRAY(SELECT 6000 + g FROM generate_series(1, 40) g)::bigint[],
     'scout', ARRAY(SELECT 'scout ' || g FROM generate_series(1, 40) g), 9)" >/dev/null
npc_wait_sql "SELECT count(*) = 40 FROM npc_scale.decision_queue WHERE npc_id BETWEEN 6001 AND 6040 AND status = 'done'" 30
npc_wait_sql "SELECT breaker <> 'closed' FROM npc_scale.endpoint_stats WHERE gpu_id = 2 AND NOT draining" 10
echo "dead GPU: $(q "SELECT breaker || ', errors ' || errors || ', last error: ' || last_error FROM npc_scale.endpoint_stats WHERE gpu_id = 2 AND NOT draining")"
on_dead=$(q "SELECT count(*) FROM npc_scale.decision_queue WHERE npc_id BETWEEN 6001 AND 6040 AND gpu_id = 2")
[ "$on_dead" = 0 ] || { echo "$on_dead decisions were answered by the dead GPU?"; exit 1; }
echo "all 40 done on the live GPU"

echo "restarting the GPU"
npc_gpu_start victim "$port" --profile instant
npc_wait_sql "SELECT breaker = 'closed' FROM npc_scale.endpoint_stats WHERE gpu_id = 2 AND NOT draining" 15
q "SELECT count(*) FROM npc_scale.request_decisions(ARRAY(SELECT 6100 + g FROM generate_series(1, 40) g)::bigint[],
     'scout', ARRAY(SELECT 'scout again ' || g FROM generate_series(1, 40) g), 9)" >/dev/null
npc_wait_sql "SELECT count(*) = 40 FROM npc_scale.decision_queue WHERE npc_id BETWEEN 6101 AND 6140 AND status = 'done'" 30
back=$(q "SELECT count(*) FROM npc_scale.decision_queue WHERE npc_id BETWEEN 6101 AND 6140 AND gpu_id = 2")
echo "after recovery: $back of 40 on the restarted GPU"
[ "$back" -gt 0 ] || { echo "the recovered GPU got no work"; exit 1; }
q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 6001 AND 6200" >/dev/null
