#!/usr/bin/env bash
# A long await_decision() holds no copy of the rows it re-read: with the
# re-read at its shortest (10 ms) on a 32 kB prompt that cannot be
# compressed, the waiter's own memory (RssAnon) stays flat over 5 s (about
# 500 re-reads). It grew ~3 MB/s when every re-read copied the whole row
# into the call's memory until the call returned.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"

cleanup() {
  sessions_close
  npc_psql -c "DELETE FROM npc_scale.decision_queue WHERE npc_id = 9501" >/dev/null 2>&1 || true
}
trap cleanup EXIT
npc_psql -tAc "SELECT npc_test.use_gpus(ARRAY['fast0'])" >/dev/null
npc_psql -c "UPDATE npc_scale.gpu_endpoints SET enabled = false" >/dev/null  # nothing is answered
sessions_open waiter

id=$(npc_psql -tAc "SELECT npc_scale.request_decision(9501, 'trade',
        (SELECT string_agg(md5(i::text || random()::text), '') FROM generate_series(1, 1000) i), 5)")
send_to waiter "SET npc_scale.await_recheck = '10ms';
SELECT status FROM npc_scale.await_decision($id, '1 h');"
npc_wait_sql "SELECT count(*) = 1 FROM pg_stat_activity
               WHERE query LIKE '%await_decision($id,%' AND state = 'active' AND pid <> pg_backend_pid()" 10 \
  || { echo "the waiter is not waiting"; cat "$(session_out waiter)"; exit 1; }
pid=$(npc_psql -tAc "SELECT pid FROM pg_stat_activity WHERE query LIKE '%await_decision($id,%' AND state = 'active' AND pid <> pg_backend_pid()")
rss_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status"; }

start=$(rss_kb)
for _ in $(seq 50); do
  sleep 0.1
  now=$(rss_kb)
  if [ $((now - start)) -gt 8192 ]; then
    echo "the waiter's memory grew from $start kB to $now kB while it waited"; exit 1
  fi
done
echo "waiter RssAnon $start kB -> $now kB over 5 s of 10 ms re-reads"
# It is still waiting (the window measured a wait, not an error).
[ "$(npc_psql -tAc "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND state = 'active'")" = 1 ] \
  || { echo "the waiter stopped waiting"; cat "$(session_out waiter)"; exit 1; }
npc_psql -tAc "SELECT npc_scale.cancel_decision($id)" >/dev/null
wait_step waiter "$SENT_STEP" 10
grep -qx 'cancelled' "$(session_out waiter)" || { echo "expected the cancelled row"; cat "$(session_out waiter)"; exit 1; }
echo "a long await_decision() holds no copies of the rows it re-reads"
