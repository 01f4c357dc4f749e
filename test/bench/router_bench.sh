#!/usr/bin/env bash
# Router benchmark: this router vs round-robin vs the seed's rules as written,
# on loopback fake GPUs (1x rtx3090ti cap 50, 2x p40 cap 40). No Postgres.
# Prints build/router_bench's table, then the issue's three bars with the
# measured values. Bounded: about 4-5 minutes with the defaults.
#
#   test/bench/router_bench.sh                        # defaults
#   WARMUP=2 MEASURE=5 test/bench/router_bench.sh     # quicker, noisier
#   NPCS=500 POLICIES=router LOADS=0.8 test/bench/router_bench.sh
#
# Needs build/fake_gpu (make fake_gpu) and build/router_bench (build line in
# test/bench/README.md, section router_bench); builds router_bench if missing.
set -euo pipefail

export NPC_PROFILE=${NPC_PROFILE:-rbench}
export NPC_GPU_BASE_PORT=${NPC_GPU_BASE_PORT:-18401}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/stack.sh
source "$ROOT/scripts/stack.sh"

NPCS=${NPCS:-500}
# Each simulated GPU keeps the prefixes of ~256 prompts in its KV cache: a
# third of the NPCs. Without affinity every GPU sees every NPC and misses.
PREFIX_CACHE=${PREFIX_CACHE:-256}
WARMUP=${WARMUP:-3}
FIRST_WARMUP=${FIRST_WARMUP:-6}
MEASURE=${MEASURE:-10}
LOADS=${LOADS:-0.4,0.8,1.0,1.2}
POLICIES=${POLICIES:-router,router-noaff,round-robin,seed}
MAX_TOKENS=${MAX_TOKENS:-16}
SEED=${SEED:-1}
OUT=${OUT:-$NPC_BUILD/bench/router_bench.tsv}

mkdir -p "$NPC_BUILD" "$NPC_STATE/log" "$(dirname "$OUT")"
# Make knows what router_bench depends on (the router's sources included).
make -C "$NPC_ROOT" -s fake_gpu router_bench || npc_die "build failed"

# The naive policies (caps ignored) open a connection per queued request: a
# few thousand at overload, on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

npc_gpus_stop  # leftovers of an interrupted run of this profile (recorded pids only)
trap 'npc_gpus_stop' EXIT
trap 'exit 130' INT TERM
P=$NPC_GPU_BASE_PORT
npc_log "fake GPUs on 127.0.0.1:$P-$((P + 2)) (rtx3090ti, p40, p40)"
npc_gpu_start rtx3090ti "$P" --profile rtx3090ti --model npc-llm --prefix-cache-entries "$PREFIX_CACHE"
npc_gpu_start p40a $((P + 1)) --profile p40 --model npc-llm --prefix-cache-entries "$PREFIX_CACHE"
npc_gpu_start p40b $((P + 2)) --profile p40 --model npc-llm --prefix-cache-entries "$PREFIX_CACHE"

"$NPC_BUILD/router_bench" \
  --gpu "rtx3090ti=http://127.0.0.1:$P,50" \
  --gpu "p40a=http://127.0.0.1:$((P + 1)),40" \
  --gpu "p40b=http://127.0.0.1:$((P + 2)),40" \
  --npcs "$NPCS" --warmup "$WARMUP" --first-warmup "$FIRST_WARMUP" --measure "$MEASURE" --loads "$LOADS" \
  --policies "$POLICIES" --max-tokens "$MAX_TOKENS" --seed "$SEED" --tsv "$OUT"

# ---- the issue's bars, from the TSV -------------------------------------
echo
echo "bars (router = Router::pick with affinity on, the default config):"
awk -F'\t' '
  $1 == "calib" { c[$2] = $3; next }
  $1 == "row"   { key = $2 "@" $3; cap[key] = $6; p99[key] = $8; hit[key] = $18; seen[$2] = 1
                  hits = hits sprintf(" %s@%.0f%%=%.2f", $2, $3 * 100, $18)
                  if ($2 == "router" && $3 + 0 > maxload) maxload = $3 + 0; next }
  function verdict(ok) { return ok ? "MET" : "MISSED" }
  function show(policy, load) { return policy "@" sprintf("%.2f", load) }
  END {
    if (!("router" in seen)) { print "  (router policy not run: no bars)"; exit }
    sat = show("router", maxload)
    if (maxload < 1) print "  (no router window at >= 100% offered: throughput bar not evaluated)"
    else if (sat in cap)
      printf "  router throughput at %.0f%% offered: %.1f%% of capacity (bar >= 95%%) %s\n",
             maxload * 100, cap[sat], verdict(cap[sat] >= 95)
    k = show("router", 0.8)
    limit = 1.2 * c["fast_cold_ms"]
    if (k in p99) {
      printf "  router priority 0-2 p99 at 80%% load: %.1f ms (bar <= 1.2 x %s unloaded %.1f ms = %.1f ms) %s\n",
             p99[k], c["fast_gpu"], c["fast_cold_ms"], limit, verdict(p99[k] <= limit)
      printf "      (against the warm-prefix unloaded time %.1f ms the limit would be %.1f ms: %s)\n",
             c["fast_warm_ms"], 1.2 * c["fast_warm_ms"], verdict(p99[k] <= 1.2 * c["fast_warm_ms"])
      printf "  router (affinity on) prefix-cache hit rate at 80%% load: %.2f (bar >= 0.8) %s\n",
             hit[k], verdict(hit[k] >= 0.8)
    } else print "  (no 80% load window: latency and hit-rate bars not evaluated)"
    print "      hit rates by policy@load:" hits
  }' "$OUT"
echo "(raw figures: $OUT)"
