#!/usr/bin/env bash
# Cache benchmark (issue 5), one run on one cluster:
#  - pgbench `SELECT npc_scale.generate('<same prompt>', 5, '{"temperature":0}')`
#    (L1 hits) beside pgbench `SELECT 1`, same clients. Bar: >= 0.8x.
#  - average latency of an L1, L2 (Redis) and L3 (table) hit, through cache_get.
#  - hit rate on a 500-NPC workload where each NPC repeats its decisions.
#   test/bench/cache.sh [SECONDS] [CLIENTS]
set -uo pipefail
export NPC_PROFILE=${NPC_PROFILE:-bench}
source "$(dirname "$0")/../../scripts/stack.sh"
secs=${1:-10}
clients=${2:-8}

npc_stack_prepare
trap npc_stack_stop EXIT
npc_pg_start
npc_redis_start
npc_gpu_start instant0 "$NPC_GPU_BASE_PORT" --profile instant
npc_psql -c "CREATE EXTENSION npc_scale" \
  -c "INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent) VALUES (0, 'http://127.0.0.1:$NPC_GPU_BASE_PORT', 64)" >/dev/null
w=$NPC_STATE/bench; mkdir -p "$w"
echo "SELECT 1;" >"$w/select1.sql"
echo "SELECT npc_scale.generate('Village 12 has 400 wood. What to build?', 5, '{\"temperature\": 0}');" >"$w/generate.sql"
npc_psql -c "SELECT npc_scale.generate('Village 12 has 400 wood. What to build?', 5, '{\"temperature\": 0}')" >/dev/null

n=200000
npc_log "loading $n keys into Redis only and $n rows into cache_store only"
for i in $(seq 1 $n); do printf 'SET npc_scale:cache:kv:r%d value-%d EX 3600\r\n' "$i" "$i"; done | redis-cli -p "$NPC_REDIS_PORT" --pipe >/dev/null
npc_psql -c "INSERT INTO npc_scale.cache_store SELECT 'kv:t' || g, 'value-' || g, now() + interval '1 hour' FROM generate_series(1, $n) g" >/dev/null
npc_psql -c "SELECT npc_scale.cache_set('hot', 'value', '1 hour')" >/dev/null
printf '\\set k random(1, %d)\nSELECT npc_scale.cache_get('"'"'r'"'"' || :k);\n' "$n" >"$w/l2.sql"
printf '\\set k random(1, %d)\nSELECT npc_scale.cache_get('"'"'t'"'"' || :k);\n' "$n" >"$w/l3.sql"
echo "SELECT npc_scale.cache_get('hot');" >"$w/l1.sql"

pgb() {  # pgb FILE CLIENTS SECONDS|-tN → "tps latency_ms"
  "$PG_BIN/pgbench" -n -c "$2" -j 2 $3 -f "$1" "$NPC_DB" 2>&1 |
    awk '/^latency average/ {lat=$4} /^tps/ {tps=$3} END {print tps, lat}'
}
read -r t_select1 l_select1 <<<"$(pgb "$w/select1.sql" "$clients" "-T $secs")"
read -r t_generate l_generate <<<"$(pgb "$w/generate.sql" "$clients" "-T $secs")"
# Each L2/L3 transaction reads a random key of 200k once (then it is in L1): few repeats.
read -r _ l_l1 <<<"$(pgb "$w/l1.sql" 1 "-t 5000")"
read -r _ l_l2 <<<"$(pgb "$w/l2.sql" 1 "-t 5000")"
read -r _ l_l3 <<<"$(pgb "$w/l3.sql" 1 "-t 5000")"
read -r _ l_s1 <<<"$(pgb "$w/select1.sql" 1 "-t 5000")"
stats=$(npc_psql -tA -c "SELECT l1_hits, l2_hits, l3_hits, misses FROM npc_scale.cache_stats")

# Hit rate on a 500-NPC game where each NPC cycles through 5 questions.
npc_psql -c "SELECT npc_scale.cache_clear()" >/dev/null
before=$(npc_psql -tA -c "SELECT l1_hits + l2_hits + l3_hits, misses FROM npc_scale.cache_stats")
"$NPC_BUILD/npc_load" --conninfo "dbname=$NPC_DB" \
  --npcs 500 --think-ms 200 --duration "$secs" --warmup 0 --repeat 5 >"$w/npc_load.txt" 2>&1
layers=$(npc_psql -tA -F ' ' -c "SELECT count(*) FILTER (WHERE cache_layer IS NOT NULL), count(*)
                                   FROM npc_scale.decision_queue WHERE status = 'done'")
read -r cached total <<<"$layers"

ratio=$(awk -v a="$t_generate" -v b="$t_select1" 'BEGIN { printf "%.2f", a / b }')
hit=$(awk -v a="$cached" -v b="$total" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
printf '\n%-58s %12s\n' "cache benchmark ($clients clients, ${secs}s)" "figure"
printf '%-58s %12.0f\n' "baseline: pgbench SELECT 1 tps" "$t_select1"
printf '%-58s %12.0f\n' "generate() of one cached prompt (L1 hits) tps" "$t_generate"
printf '%-58s %12s\n' "ratio generate L1 / SELECT 1 (bar >= 0.8)" "$ratio"
printf '%-58s %12s\n' "latency, 1 client: SELECT 1 (ms)" "$l_s1"
printf '%-58s %12s\n' "latency, 1 client: cache_get L1 hit (ms)" "$l_l1"
printf '%-58s %12s\n' "latency, 1 client: cache_get L2 hit, Redis (ms)" "$l_l2"
printf '%-58s %12s\n' "latency, 1 client: cache_get L3 hit, table (ms)" "$l_l3"
printf '%-58s %12s\n' "500 NPCs repeating 5 questions: decisions from cache" "$cached / $total"
printf '%-58s %12s\n' "  hit rate" "$hit"
echo "(cache_stats after the latency runs: l1|l2|l3|misses = $stats)"
