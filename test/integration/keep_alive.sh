#!/usr/bin/env bash
# vLLM's server (uvicorn) closes a keep-alive connection after 5 s idle, so
# the dispatcher's pooled connections go stale under light load, and a request
# can be sent just as the server hangs up. That must cost nothing: no error
# counted against the endpoint, no breaker trip, no second attempt. The GPU
# here closes idle connections after 20 ms and requests are paced 0-40 ms
# apart, so many land on a connection the server is closing.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
q() { npc_psql -tAc "$1"; }

port=$((NPC_GPU_BASE_PORT + 22))
npc_gpu_start brief "$port" --profile instant --keep-alive-ms 20
cleanup() {
  [ -f "$NPC_STATE/gpu/brief.pid" ] && kill "$(cat "$NPC_STATE/gpu/brief.pid")" 2>/dev/null || true
  q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 9101 AND 9300" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# gpu 22, an id no other test uses: until the dispatcher reloads, the stats
# of the last script's gpu 1 would still be read as this endpoint's.
q "DELETE FROM npc_scale.gpu_endpoints;
   INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent) VALUES (22, 'http://127.0.0.1:$port', 4)" >/dev/null
q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 9101 AND 9300" >/dev/null
npc_wait_sql "SELECT count(*) = 1 FROM npc_scale.endpoint_stats WHERE gpu_id = 22 AND NOT draining AND breaker = 'closed'" 10 \
  || { echo "the endpoint did not come up"; exit 1; }
read -r total0 errors0 <<<"$(q "SELECT total_requests, errors FROM npc_scale.endpoint_stats WHERE gpu_id = 22 AND NOT draining" | tr '|' ' ')"

# 100 generate() calls and 100 queued decisions, one at a time; the pauses
# between them are the load's shape, not a synchronisation.
answered=$(npc_psql -tA <<'SQL'
SELECT setseed(0.21);
DO $$
DECLARE id bigint;
BEGIN
  FOR i IN 1..100 LOOP
    PERFORM pg_sleep(random() * 0.04);
    IF npc_scale.generate('keep-alive ' || i, 9, '{"cache": false}') IS NULL THEN
      RAISE EXCEPTION 'generate() % returned NULL', i;
    END IF;
    PERFORM pg_sleep(random() * 0.04);
    id := npc_scale.request_decision(9100 + i, 'scout', 'keep-alive queued ' || i, 9);
    COMMIT;
    PERFORM 1 FROM npc_scale.await_decision(id, '20 s');
  END LOOP;
END $$;
SELECT count(*) FROM npc_scale.decision_queue WHERE npc_id BETWEEN 9101 AND 9200 AND status = 'done' AND attempts = 1;
SQL
)
answered=$(tail -1 <<<"$answered")
# The dispatcher publishes its endpoint counters every 100 ms, so the last
# requests may reach endpoint_stats a moment after their answers.
npc_wait_sql "SELECT total_requests - $total0 >= 200 FROM npc_scale.endpoint_stats WHERE gpu_id = 22 AND NOT draining" 5 || true
stats=$(q "SELECT total_requests - $total0, errors - $errors0, breaker, coalesce(last_error, '-')
             FROM npc_scale.endpoint_stats WHERE gpu_id = 22 AND NOT draining")
echo "queued decisions done at the first attempt: $answered of 100; endpoint: requests|errors|breaker|last error = $stats"
[ "$answered" = 100 ] || { echo "some decisions needed another attempt or failed"; exit 1; }
IFS='|' read -r sent errors breaker _ <<<"$stats"
[ "$sent" -ge 200 ] || { echo "expected at least 200 requests counted, saw $sent"; exit 1; }
[ "$errors" = 0 ] && [ "$breaker" = closed ] || { echo "stale connections counted against the endpoint"; exit 1; }
echo "ok: 200 requests over connections the server kept closing, no error"
