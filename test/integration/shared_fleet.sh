#!/usr/bin/env bash
# A GPU shared with other clients (another database's dispatcher, a batch
# job): npc_scale reads its load from the server's /metrics
# (vllm:num_requests_running + waiting, every npc_scale.metrics_interval)
# and sends its own work elsewhere while that server is busy. Without the
# outside load, the same decisions are spread over both servers.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
q() { npc_psql -tAc "$1"; }

port=$((NPC_GPU_BASE_PORT + 21))
npc_gpu_start shared "$port" --profile instant
shared_url="http://127.0.0.1:$port"
outside=()
cleanup() {
  for pid in "${outside[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$NPC_STATE/gpu/shared.pid" ] && kill "$(cat "$NPC_STATE/gpu/shared.pid")" 2>/dev/null || true
  q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 8801 AND 8840" >/dev/null 2>&1 || true
}
trap cleanup EXIT
q "DELETE FROM npc_scale.gpu_endpoints;
   INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent) VALUES
     (1, '$shared_url', 16), (2, '$(q "SELECT npc_test.gpu_url('fast1')")', 16)" >/dev/null

# sequential FIRST_NPC: twenty priority-9 decisions of twenty NPCs, one at a
# time (each NPC's home on the affinity ring, unless that endpoint's load,
# ours or another client's, is over the fleet's average); prints how many
# each gpu_id answered.
sequential() {
  local ids=() id
  for i in $(seq 0 19); do
    id=$(q "SELECT npc_scale.request_decision($1 + $i, 'scout', 'shared fleet $1 $i', 9)")
    q "SELECT status FROM npc_scale.await_decision($id, '20 s')" >/dev/null
    ids+=("$id")
  done
  q "SELECT string_agg(gpu_id || ':' || n, ' ' ORDER BY gpu_id)
       FROM (SELECT gpu_id, count(*) n FROM npc_scale.decision_queue
              WHERE id IN ($(IFS=,; echo "${ids[*]}")) AND status = 'done' GROUP BY 1) s"
}

quiet=$(sequential 8801)
echo "no outside load: answered by gpu_id:count = $quiet"
[[ "$quiet" == *"1:"* && "$quiet" == *"2:"* ]] || { echo "expected both servers to answer while neither is busy"; exit 1; }

# Twelve requests from another client hold twelve of the shared server's
# batch slots (each runs for ten minutes unless its client leaves).
curl -s -m 5 -X POST -H 'Content-Type: application/json' --data '{"slow_rate": 1, "slow_ms": 600000}' \
  "$shared_url/admin/faults" >/dev/null
for i in $(seq 12); do
  curl -s -m 900 -X POST -H 'Content-Type: application/json' \
    --data "{\"model\": \"npc-llm\", \"prompt\": \"another client's job $i\", \"max_tokens\": 4}" \
    "$shared_url/v1/completions" >/dev/null 2>&1 &
  outside+=($!)
done
npc_wait_sql "SELECT remote_running = 12 FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining" 20 \
  || { echo "npc_scale did not see the shared server's twelve running requests"; exit 1; }
busy=$(sequential 8821)
echo "twelve outside requests on gpu 1: answered by gpu_id:count = $busy"
[ "$busy" = "2:20" ] || { echo "expected every decision on gpu 2 while gpu 1 is busy with another client's work"; exit 1; }
echo "the dispatcher routes around load it did not send"
