#!/usr/bin/env bash
# Durable throughput: decisions per second end to end (enqueued by pgbench
# clients → all done), beside pgbench's plain-INSERT tps into a table of the
# same shape, measured in the same run on the same cluster. Bar: >= 0.5x.
#   test/bench/throughput.sh [SECONDS] [CLIENTS]
# Benchmarks print figures; they do not pass or fail.
set -uo pipefail
export NPC_PROFILE=${NPC_PROFILE:-bench}
source "$(dirname "$0")/../../scripts/stack.sh"
secs=${1:-15}
clients=${2:-8}

npc_stack_prepare
trap npc_stack_stop EXIT
npc_pg_start
for i in 0 1 2; do npc_gpu_start "instant$i" $((NPC_GPU_BASE_PORT + i)) --profile instant; done
npc_psql -c "CREATE EXTENSION npc_scale" -c "
  INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent)
  SELECT i, 'http://127.0.0.1:' || ($NPC_GPU_BASE_PORT + i), 64 FROM generate_series(0, 2) i" \
  -c "CREATE TABLE public.plain_queue (LIKE npc_scale.decision_queue INCLUDING ALL)" >/dev/null

work=$NPC_STATE/bench; mkdir -p "$work"
cat >"$work/plain.sql" <<'SQL'
\set npc random(1, 500)
INSERT INTO public.plain_queue (npc_id, decision_type, prompt, params, priority)
VALUES (:npc, 'build', 'NPC ' || :npc || ': 320 wood, 210 clay, 180 iron, 400 wheat. What to build?', '{"max_tokens": 8}', 5);
SQL
cat >"$work/request.sql" <<'SQL'
\set npc random(1, 500)
SELECT npc_scale.request_decision(:npc, 'build', 'NPC ' || :npc || ': 320 wood, 210 clay, 180 iron, 400 wheat. What to build?', 5, '{"max_tokens": 8}');
SQL

pgb() { "$PG_BIN/pgbench" -n -c "$clients" -j 2 -T "$secs" -f "$1" "$NPC_DB" 2>&1 | grep -oP 'tps = \K[0-9.]+(?= \(without)'; }
npc_log "baseline: plain INSERT, $clients clients, ${secs}s"
plain_tps=$(pgb "$work/plain.sql")
npc_log "npc_scale.request_decision, $clients clients, ${secs}s"
enqueue_tps=$(pgb "$work/request.sql")
npc_wait_sql "SELECT count(*) = 0 FROM npc_scale.decision_queue WHERE status IN ('queued', 'running')" 300
read -r total done_n span e2e_rate <<<"$(npc_psql -tA -F ' ' -c "
  SELECT count(*), count(*) FILTER (WHERE status = 'done'),
         round(extract(epoch FROM max(finished_at) - min(created_at))::numeric, 2),
         round(count(*) FILTER (WHERE status = 'done') / extract(epoch FROM max(finished_at) - min(created_at))::numeric, 1)
    FROM npc_scale.decision_queue")"
ratio=$(awk -v a="$e2e_rate" -v b="$plain_tps" 'BEGIN { printf "%.2f", a / b }')

printf '\n%-52s %12s\n' "durable throughput ($clients clients, ${secs}s, 3 instant GPUs)" "per second"
printf '%-52s %12.1f\n' "baseline: pgbench plain INSERT tps" "$plain_tps"
printf '%-52s %12.1f\n' "npc_scale.request_decision tps (enqueue)" "$enqueue_tps"
printf '%-52s %12.1f\n' "decisions done end to end ($done_n of $total in ${span}s)" "$e2e_rate"
printf '%-52s %12s\n' "ratio end-to-end / plain INSERT (bar >= 0.5)" "$ratio"
