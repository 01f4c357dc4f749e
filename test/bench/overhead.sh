#!/usr/bin/env bash
# Dispatch overhead as a game server sees it, at 50 and 500 NPCs: a load
# generator with a small pool (8 connections, a prepared statement) enqueues
# each NPC's next decision after an exponential think time (mean 2 s) and
# learns of results by LISTEN. Three simulated GPUs answer in a fixed 40 ms,
# well below capacity. Overhead = end-to-end latency − 40 ms, p50/p99 over the
# measured window. Also prints the dispatcher's memory.
#
# Baseline, measured in the same run with the same load generator: the least
# a queue in Postgres costs on this machine — a plain INSERT whose trigger
# NOTIFYs an external worker (build/echo_worker), which waits the same 40 ms
# and answers with an UPDATE + NOTIFY. Same pool, think times, commits and
# LISTEN path; no npc_scale.
#
# "Minus the fake GPU's own service time" is read two ways, both printed:
# minus the nominal 40 ms, and minus the service time the stand-ins measured
# themselves (mean over the run): the simulated GPUs' vLLM histogram
# vllm:e2e_request_latency_seconds (arrival to answer), and for the baseline
# the wait echo_worker actually gave each request. On a VM a 40 ms timer
# wakes ~0.15 ms late; that is the stand-in's time, not the queue's.
#
# Bars (issue 3): p50 <= 1 ms, p99 <= 5 ms at 500 NPCs; RSS <= 64 MB.
#   test/bench/overhead.sh [SECONDS] [ROUNDS]   (default 60 s per run, 1 round)
# ROUNDS > 1 alternates the two paths that many times at each NPC count (this
# VM drifts by ±20% within minutes: alternation keeps the comparison fair)
# and ends with the median of each column. NPCS="500" runs one NPC count.
set -uo pipefail
export NPC_PROFILE=${NPC_PROFILE:-bench}
source "$(dirname "$0")/../../scripts/stack.sh"
secs=${1:-60}
rounds=${2:-1}

npc_stack_prepare
echo_pid=
stop_all() {
  [ -n "$echo_pid" ] && kill "$echo_pid" 2>/dev/null && wait "$echo_pid" 2>/dev/null
  npc_stack_stop
}
trap stop_all EXIT
npc_pg_start
# Redis up, as in production: the cacheable decisions (temperature 0) meet
# the L2 cache on their way, so its cost shows here.
npc_redis_start
for i in 0 1 2; do
  npc_gpu_start "fixed40_$i" $((NPC_GPU_BASE_PORT + i)) --profile instant --base-ms 40 --max-batch 512
done
npc_psql -c "CREATE EXTENSION npc_scale" -c "
  INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent)
  SELECT i, 'http://127.0.0.1:' || ($NPC_GPU_BASE_PORT + i), 128 FROM generate_series(0, 2) i" >/dev/null
# The baseline queue: the same columns the game would care about, an index on
# the id, the request announced at commit, the answer announced at commit on
# the channel npc_load listens to.
npc_psql >/dev/null <<'SQL'
CREATE SCHEMA npc_baseline;
CREATE TABLE npc_baseline.queue (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, npc_id bigint NOT NULL,
  decision_type text NOT NULL, prompt text NOT NULL, params jsonb NOT NULL, priority smallint NOT NULL,
  status text NOT NULL DEFAULT 'queued', response text,
  created_at timestamptz NOT NULL DEFAULT now(), finished_at timestamptz,
  service_ms float8);  -- the wait echo_worker actually gave it
CREATE FUNCTION npc_baseline.announce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('npc_load_requests', NEW.id::text); RETURN NULL; END $$;
CREATE TRIGGER announce AFTER INSERT ON npc_baseline.queue FOR EACH ROW EXECUTE FUNCTION npc_baseline.announce();
CREATE FUNCTION npc_baseline.enqueue(npc_id bigint, decision_type text, prompt text, priority int, params jsonb)
RETURNS bigint LANGUAGE sql AS $$
  INSERT INTO npc_baseline.queue (npc_id, decision_type, prompt, params, priority)
  VALUES (npc_id, decision_type, prompt, params, priority) RETURNING id $$;
CREATE FUNCTION npc_baseline.answer(id bigint, service_ms float8) RETURNS void LANGUAGE sql AS $$
  UPDATE npc_baseline.queue SET status = 'done', response = 'ok', finished_at = now(),
         service_ms = answer.service_ms WHERE queue.id = answer.id;
  SELECT pg_notify('npc_scale_decisions', answer.id::text) $$;
SQL
# Host, port and user from PGHOST, PGPORT, PGUSER (stack.sh): a clone path with spaces needs no quoting.
conninfo="dbname=$NPC_DB"
"$NPC_BUILD/echo_worker" --conninfo "$conninfo" --service-ms 40 --pool 4 &
echo_pid=$!

# "sum count" of the service time (ms) the stand-ins report having given so far.
service_totals() {
  if [ "$1" = npc_baseline.enqueue ]; then
    npc_psql -tA -F ' ' -c "SELECT coalesce(sum(service_ms), 0), count(service_ms) FROM npc_baseline.queue"
  else
    local i text sum=0 count=0
    for i in 0 1 2; do
      text=$(curl -s "http://127.0.0.1:$((NPC_GPU_BASE_PORT + i))/metrics")
      sum=$(awk -v s="$sum" '/^vllm:e2e_request_latency_seconds_sum/ { s += $NF * 1000 } END { printf "%.3f", s }' <<<"$text")
      count=$(awk -v c="$count" '/^vllm:e2e_request_latency_seconds_count/ { c += $NF } END { printf "%d", c }' <<<"$text")
    done
    echo "$sum $count"
  fi
}

report=$NPC_STATE/overhead.jsonl
: >"$report"
declare -A measured_service  # by "NPCs function": the stand-in's mean service time (ms)
for npcs in ${NPCS:-50 500}; do
  for round in $(seq "$rounds"); do
  for fn in npc_scale.request_decision npc_baseline.enqueue; do
    echo
    extra=()
    [ "$fn" = npc_scale.request_decision ] && extra=(--rss-pid-of-dispatcher)
    read -r sum0 count0 <<<"$(service_totals "$fn")"
    "$NPC_BUILD/npc_load" --conninfo "$conninfo" --enqueue-function "$fn" \
      --npcs "$npcs" --pool 8 --think-ms 2000 --duration "$secs" --warmup 5 --service-ms 40 \
      "${extra[@]}" --report "$report"
    read -r sum1 count1 <<<"$(service_totals "$fn")"
    mean=$(awk -v a="$sum0" -v b="$sum1" -v c="$count0" -v d="$count1" \
      'BEGIN { if (d > c) printf "%.3f", (b - a) / (d - c); else print "nan" }')
    measured_service["$npcs $fn $round"]=$mean
    echo "  service time the stand-in measured itself: mean $mean ms over $((count1 - count0)) answers (nominal 40)"
  done
  done
done

field() { grep -oP "\"$2\":\\K[-0-9.]+" <<<"$1"; }
echo
printf 'dispatch overhead over the 40 ms service time, ms (%s s per run)\n' "$secs"
table=$NPC_STATE/overhead.table
: >"$table"
declare -A seen  # runs read so far, by "NPCs function": gives each line its round
while read -r line; do
  fn=$(grep -oP '"enqueue_function":"\K[^"]+' <<<"$line")
  npcs=$(field "$line" npcs)
  round=$(( ${seen["$npcs $fn"]:-0} + 1 ))
  seen["$npcs $fn"]=$round
  name=$([ "$fn" = npc_baseline.enqueue ] && echo "baseline" || echo "npc_scale")
  p50=$(field "$line" overhead_p50_ms) p99=$(field "$line" overhead_p99_ms)
  service=${measured_service["$npcs $fn $round"]:-nan}
  net() { awk -v a="$1" -v s="$service" 'BEGIN { if (s == "nan") print "nan"; else printf "%.2f", a - (s - 40) }'; }
  printf '%s %s %s %.2f %.2f %.2f %s %s %s\n' "$npcs" "$name" "$round" "$p50" "$p99" \
    "$(field "$line" enqueue_p50_ms)" "$service" "$(net "$p50")" "$(net "$p99")" >>"$table"
done <"$report"
# One row per run; with several rounds, then the median of each column.
awk -v rounds="$rounds" '
  function median(key, col,   n, i, j, t, v) {
    n = cnt[key]
    for (i = 1; i <= n; i++) v[i] = val[key, i, col]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  BEGIN { printf "%-6s %-10s %5s %8s %8s %12s %11s %9s %9s\n", "NPCs", "path", "round", "p50", "p99", "enqueue p50", "service ms", "p50 net", "p99 net" }
  {
    printf "%-6s %-10s %5s %8.2f %8.2f %12.2f %11s %9s %9s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9
    key = $1 " " $2
    if (!(key in cnt)) order[++nkeys] = key
    cnt[key]++
    for (c = 4; c <= 9; c++) val[key, cnt[key], c] = $c
  }
  END {
    if (rounds <= 1) exit
    print "median of " rounds " rounds:"
    for (k = 1; k <= nkeys; k++) {
      split(order[k], parts, " ")
      printf "%-6s %-10s %5s %8.2f %8.2f %12.2f %11.3f %9.2f %9.2f\n", parts[1], parts[2], "med",
        median(order[k], 4), median(order[k], 5), median(order[k], 6), median(order[k], 7),
        median(order[k], 8), median(order[k], 9)
    }
  }' "$table"
echo "p50/p99: end to end minus the nominal 40 ms; service ms: the mean service time the stand-in"
echo "measured itself (simulated GPUs: vllm:e2e_request_latency_seconds; baseline: echo_worker's wait);"
echo "net: end to end minus that measured service time"
echo
echo "dispatcher memory at the end of each npc_scale run, MB"
printf '%-6s %5s %8s %8s %8s %8s\n' NPCs round RssAnon private PSS VmRSS
declare -A mseen
while read -r line; do
  grep -q '"enqueue_function":"npc_scale.request_decision"' <<<"$line" || continue
  npcs=$(field "$line" npcs)
  mseen[$npcs]=$(( ${mseen[$npcs]:-0} + 1 ))
  printf '%-6s %5s %8s %8s %8s %8s\n' "$npcs" "${mseen[$npcs]}" "$(field "$line" dispatcher_rssanon_mb)" \
    "$(field "$line" dispatcher_private_mb)" "$(field "$line" dispatcher_pss_mb)" "$(field "$line" dispatcher_vmrss_mb)"
done <"$report"
echo "RssAnon: the dispatcher's own memory (heap, stack); private: pages no other process maps, shared"
echo "memory only it touched included; VmRSS counts in full every shared page it touched (shared buffers,"
echo "WAL buffers, the L1 cache, the server's code)"
echo "bars at 500 NPCs: npc_scale p50 <= 1 ms, p99 <= 5 ms; dispatcher memory <= 64 MB (RssAnon)"
