#!/usr/bin/env bash
# Durable throughput: decisions per second end to end (enqueued by pgbench
# clients → all done), beside pgbench's plain-INSERT tps into a table of the
# same shape, measured on the same cluster in the same run. Bar: >= 0.5x.
# The two alternate in ROUNDS rounds (plain, then decisions, drained before
# the next round), so drift on a shared machine hits both sides alike; each
# round's ratio is printed, and the overall ratio is of the summed rates.
# Also printed: the CPU time per decision of the dispatcher and of the three
# simulated GPUs (which share this machine's cores here; on a real fleet they
# are other machines), from /proc over each decision phase until drained.
#   test/bench/throughput.sh [SECONDS] [CLIENTS] [ROUNDS]   (12 s per phase, 8, 3)
# Benchmarks print figures; they do not pass or fail.
set -uo pipefail
export NPC_PROFILE=${NPC_PROFILE:-bench}
source "$(dirname "$0")/../../scripts/stack.sh"
secs=${1:-12}
clients=${2:-8}
rounds=${3:-3}

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

# CPU seconds (user + system) of the given processes, from /proc.
cpu_s() {
  local ticks=0 p
  for p in "$@"; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}
gpu_pids=$(cat "$NPC_STATE"/gpu/*.pid)
dispatcher_pid=$(npc_psql -tAc "SELECT pid FROM npc_scale.worker_status() WHERE name LIKE '%dispatcher%'")

pgb() { "$PG_BIN/pgbench" -n -c "$clients" -j 2 -T "$secs" -f "$1" "$NPC_DB" 2>&1 | grep -oP 'tps = \K[0-9.]+(?= \(without)'; }

printf -v header '%-7s %14s %14s %16s %7s %14s %11s' round "plain INSERT/s" "enqueue/s" "end to end/s" ratio \
  "dispatcher µs" "GPUs µs"
sum_disp=0 sum_gpu=0 sum_done=0
rows=()
sum_plain=0 sum_e2e=0
for r in $(seq 1 "$rounds"); do
  npc_log "round $r/$rounds: plain INSERT, $clients clients, ${secs}s"
  plain_tps=$(pgb "$work/plain.sql")
  npc_log "round $r/$rounds: npc_scale.request_decision, $clients clients, ${secs}s"
  sed "s/'build'/'round_$r'/" "$work/request.sql" >"$work/request_$r.sql"
  d0=$(cpu_s "$dispatcher_pid"); g0=$(cpu_s $gpu_pids)
  enqueue_tps=$(pgb "$work/request_$r.sql")
  npc_wait_sql "SELECT count(*) = 0 FROM npc_scale.decision_queue WHERE status IN ('queued', 'running')" 300
  d1=$(cpu_s "$dispatcher_pid"); g1=$(cpu_s $gpu_pids)
  read -r total done_n e2e_rate <<<"$(npc_psql -tA -F ' ' -c "
    SELECT count(*), count(*) FILTER (WHERE status = 'done'),
           round(count(*) FILTER (WHERE status = 'done') / extract(epoch FROM max(finished_at) - min(created_at))::numeric, 1)
      FROM npc_scale.decision_queue WHERE decision_type = 'round_$r'")"
  ratio=$(awk -v a="$e2e_rate" -v b="$plain_tps" 'BEGIN { printf "%.2f", a / b }')
  disp_us=$(awk -v a="$d0" -v b="$d1" -v n="$total" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
  gpu_us=$(awk -v a="$g0" -v b="$g1" -v n="$total" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
  sum_disp=$(awk -v s="$sum_disp" -v a="$d0" -v b="$d1" 'BEGIN { print s + b - a }')
  sum_gpu=$(awk -v s="$sum_gpu" -v a="$g0" -v b="$g1" 'BEGIN { print s + b - a }')
  sum_done=$((sum_done + total))
  printf -v row '%-7s %14.1f %14.1f %16.1f %7s %14s %11s   (%s of %s done)' "$r" "$plain_tps" "$enqueue_tps" \
    "$e2e_rate" "$ratio" "$disp_us" "$gpu_us" "$done_n" "$total"
  rows+=("$row")
  sum_plain=$(awk -v a="$sum_plain" -v b="$plain_tps" 'BEGIN { print a + b }')
  sum_e2e=$(awk -v a="$sum_e2e" -v b="$e2e_rate" 'BEGIN { print a + b }')
  # Both tables start each round empty.
  npc_psql -c "TRUNCATE public.plain_queue" -c "TRUNCATE npc_scale.decision_queue" >/dev/null
done

printf '\ndurable throughput (%s clients, %s rounds of %ss per side, 3 instant GPUs)\n' "$clients" "$rounds" "$secs"
printf '%s\n' "$header"
printf '%s\n' "${rows[@]}"
printf '%-7s %14.1f %14s %16.1f %7s %14s %11s\n' mean "$(awk -v a="$sum_plain" -v n="$rounds" 'BEGIN { print a / n }')" "" \
  "$(awk -v a="$sum_e2e" -v n="$rounds" 'BEGIN { print a / n }')" \
  "$(awk -v a="$sum_e2e" -v b="$sum_plain" 'BEGIN { printf "%.2f", a / b }')" \
  "$(awk -v a="$sum_disp" -v n="$sum_done" 'BEGIN { printf "%.1f", a * 1e6 / n }')" \
  "$(awk -v a="$sum_gpu" -v n="$sum_done" 'BEGIN { printf "%.1f", a * 1e6 / n }')"
echo "ratio = decisions done end to end per second / plain INSERT tps (bar >= 0.5)"
echo "dispatcher µs, GPUs µs = CPU time per decision of the dispatcher and of the three simulated GPUs"
