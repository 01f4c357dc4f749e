#!/usr/bin/env bash
# Router benchmark: this router vs round-robin vs the seed's rules as written,
# on loopback fake GPUs (1x rtx3090ti cap 50, 2x p40 cap 40). No Postgres.
# Prints build/router_bench's table, then the issue's three bars with the
# measured values and the oracle bound on the hit rate.
#
# One run per prefix-cache size in PREFIX_CACHES (fake GPUs restarted with
# --prefix-cache-entries SIZE in between): the first size runs POLICIES x
# LOADS; each further size only POLICIES_EXTRA at LOADS_EXTRA (the hit-rate
# bar at a larger cache). Throughput and p99 bars: first size only.
#
# Bounded: with the defaults about 5.5 minutes (first size ~4.5 min: 16
# windows of 3+10 s, +6 s per policy, ~25 s calibration; each further size
# ~1 min: calibration + 2 windows of 6+3+10 s). The quick run
#   POLICIES=router LOADS=0.8 test/bench/router_bench.sh
# takes about 2 minutes (45 s + 1 min for 384).
#
#   test/bench/router_bench.sh                        # defaults
#   WARMUP=2 MEASURE=5 test/bench/router_bench.sh     # quicker, noisier
#   NPCS=500 POLICIES=router LOADS=0.8 PREFIX_CACHES=256 test/bench/router_bench.sh
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
# Each simulated GPU keeps the prefixes of PREFIX_CACHE recent prompts (LRU):
# fewer than the 500 NPCs, so a GPU that sees every NPC misses; see
# test/bench/README.md ("Cache sizes, and the oracle bound").
# Sizes, space or comma separated; PREFIX_CACHE (one size) is still honoured.
PREFIX_CACHES=${PREFIX_CACHES:-${PREFIX_CACHE:-256 384}}
read -r -a CACHE_SIZES <<<"${PREFIX_CACHES//,/ }"
[ "${#CACHE_SIZES[@]}" -ge 1 ] || { echo "router_bench.sh: PREFIX_CACHES is empty" >&2; exit 2; }
POLICIES_EXTRA=${POLICIES_EXTRA:-router,router-noaff}
LOADS_EXTRA=${LOADS_EXTRA:-0.8}
WARMUP=${WARMUP:-3}
FIRST_WARMUP=${FIRST_WARMUP:-6}
MEASURE=${MEASURE:-10}
LOADS=${LOADS:-0.4,0.8,1.0,1.2}
POLICIES=${POLICIES:-router,router-noaff,round-robin,seed}
MAX_TOKENS=${MAX_TOKENS:-16}
SEED=${SEED:-1}
OUT=${OUT:-$NPC_BUILD/bench/router_bench.tsv}  # one file per size: router_bench.c256.tsv, ...

mkdir -p "$NPC_BUILD" "$NPC_STATE/log" "$(dirname "$OUT")"
# Make knows what router_bench depends on (the router's sources included).
make -C "$NPC_ROOT" -s fake_gpu router_bench || npc_die "build failed"

# The naive policies (caps ignored) open a connection per queued request: a
# few thousand at overload, on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Stops this profile's GPUs (recorded pids only); npc_gpus_stop waits for
# them to exit, so a restart on the same ports never talks to the old ones.
gpus_stop() { npc_gpus_stop; }
gpus_start() {  # SIZE
  npc_log "fake GPUs on 127.0.0.1:$P-$((P + 2)) (rtx3090ti, p40, p40), prefix cache $1 entries each"
  npc_gpu_start rtx3090ti "$P" --profile rtx3090ti --model npc-llm --prefix-cache-entries "$1"
  npc_gpu_start p40a $((P + 1)) --profile p40 --model npc-llm --prefix-cache-entries "$1"
  npc_gpu_start p40b $((P + 2)) --profile p40 --model npc-llm --prefix-cache-entries "$1"
}

# ---- the issue's bars, from a TSV -----------------------------------------
# bars TSV FIRST: FIRST=1 also evaluates the throughput and p99 bars.
bars() {
  awk -F'\t' -v first="$2" '
  $1 == "calib" { c[$2] = $3; next }
  $1 == "row"   { key = $2 "@" $3; cap[key] = $6; p99[key] = $8; hit[key] = $18; bound[key] = $25; seen[$2] = 1
                  hits = hits sprintf(" %s@%.0f%%=%.2f(%.2f)", $2, $3 * 100, $18, $25)
                  if ($2 == "router" && $3 + 0 > maxload) maxload = $3 + 0; next }
  function verdict(ok) { return ok ? "MET" : "MISSED" }
  function show(policy, load) { return policy "@" sprintf("%.2f", load) }
  END {
    if (!("router" in seen)) { print "  (router policy not run: no bars)"; exit }
    k = show("router", 0.8)
    if (first) {
      sat = show("router", maxload)
      if (maxload < 1) print "  (no router window at >= 100% offered: throughput bar not evaluated)"
      else if (sat in cap)
        printf "  router throughput at %.0f%% offered: %.1f%% of capacity (bar >= 95%%) %s\n",
               maxload * 100, cap[sat], verdict(cap[sat] >= 95)
      limit = 1.2 * c["fast_cold_ms"]
      if (k in p99) {
        printf "  router priority 0-2 p99 at 80%% load: %.1f ms (bar <= 1.2 x %s unloaded %.1f ms = %.1f ms) %s\n",
               p99[k], c["fast_gpu"], c["fast_cold_ms"], limit, verdict(p99[k] <= limit)
        printf "      (against the warm-prefix unloaded time %.1f ms the limit would be %.1f ms: %s)\n",
               c["fast_warm_ms"], 1.2 * c["fast_warm_ms"], verdict(p99[k] <= 1.2 * c["fast_warm_ms"])
      }
    }
    if (k in hit) {
      noaff = show("router-noaff", 0.8)
      printf "  router (affinity on) prefix-cache hit rate at 80%% load (cache %s entries/GPU): %.2f " \
             "(oracle bound %.2f%s) (bar >= 0.8) %s\n",
             c["prefix_cache"], hit[k], bound[k],
             (noaff in hit) ? sprintf("; no affinity %.2f", hit[noaff]) : "", verdict(hit[k] >= 0.8)
    } else print "  (no router window at 80% load: " (first ? "latency and hit-rate bars" : "hit-rate bar") " not evaluated)"
    print "      hit rates (oracle bound) by policy@load:" hits
  }' "$1"
}

gpus_stop  # leftovers of an interrupted run of this profile (recorded pids only)
trap 'gpus_stop' EXIT
trap 'exit 130' INT TERM
P=$NPC_GPU_BASE_PORT

outs=()
for ((i = 0; i < ${#CACHE_SIZES[@]}; i++)); do
  size=${CACHE_SIZES[$i]}
  policies=$POLICIES loads=$LOADS
  if [ "$i" -gt 0 ]; then policies=$POLICIES_EXTRA loads=$LOADS_EXTRA; gpus_stop; fi
  out=${OUT%.tsv}.c$size.tsv
  outs+=("$out")
  gpus_start "$size"
  echo
  echo "==== prefix cache $size entries/GPU: policies $policies, loads $loads"
  "$NPC_BUILD/router_bench" \
    --gpu "rtx3090ti=http://127.0.0.1:$P,50" \
    --gpu "p40a=http://127.0.0.1:$((P + 1)),40" \
    --gpu "p40b=http://127.0.0.1:$((P + 2)),40" \
    --npcs "$NPCS" --warmup "$WARMUP" --first-warmup "$FIRST_WARMUP" --measure "$MEASURE" --loads "$loads" \
    ${EPSILON:+--epsilon "$EPSILON"} ${URGENT_RESERVE:+--urgent-reserve "$URGENT_RESERVE"} \
    ${RESERVE_WAIT_MS:+--reserve-wait-ms "$RESERVE_WAIT_MS"} --prefix-cache "$size" \
    --policies "$policies" --max-tokens "$MAX_TOKENS" --seed "$SEED" --tsv "$out"
done

echo
echo "bars (router = Router::pick with affinity on, the default config):"
for ((i = 0; i < ${#outs[@]}; i++)); do
  bars "${outs[$i]}" "$([ "$i" -eq 0 ] && echo 1 || echo 0)"
done
echo "(raw figures: ${outs[*]})"
