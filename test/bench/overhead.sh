#!/usr/bin/env bash
# Dispatch overhead as a game server sees it, at 50 and 500 NPCs: a load
# generator with a small pool (8 connections) enqueues each NPC's next
# decision after an exponential think time (mean 2 s) and learns of results by
# LISTEN. Three simulated GPUs answer in a fixed 40 ms, well below capacity.
# Overhead = end-to-end latency − 40 ms, p50/p99 over the measured window.
# Also prints the dispatcher's memory. Bars (issue 3): p50 <= 1 ms, p99 <= 5 ms
# at 500 NPCs; RSS <= 64 MB.
#   test/bench/overhead.sh [SECONDS]     (default 60 per run)
set -uo pipefail
export NPC_PROFILE=${NPC_PROFILE:-bench}
source "$(dirname "$0")/../../scripts/stack.sh"
secs=${1:-60}

npc_stack_prepare
trap npc_stack_stop EXIT
npc_pg_start
for i in 0 1 2; do
  npc_gpu_start "fixed40_$i" $((NPC_GPU_BASE_PORT + i)) --profile instant --base-ms 40 --max-batch 512
done
npc_psql -c "CREATE EXTENSION npc_scale" -c "
  INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent)
  SELECT i, 'http://127.0.0.1:' || ($NPC_GPU_BASE_PORT + i), 128 FROM generate_series(0, 2) i" >/dev/null

for npcs in 50 500; do
  echo
  "$NPC_BUILD/npc_load" --conninfo "host=$NPC_PGSOCK port=$NPC_PGPORT user=postgres dbname=$NPC_DB" \
    --npcs "$npcs" --pool 8 --think-ms 2000 --duration "$secs" --warmup 5 --service-ms 40 \
    --rss-pid-of-dispatcher --report "$NPC_STATE/overhead.jsonl"
done
