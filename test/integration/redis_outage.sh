#!/usr/bin/env bash
# Redis stops in the middle of the game: cache lookups become misses (never
# errors), counted; one log line says it is down. A delete, which cannot be
# promised then, is an error that changes nothing, and so is a clear. Redis comes back: L2 hits
# resume, and one log line says so.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
q() { npc_psql -tAc "$1"; }
tag=$(date +%s%N)  # fresh keys: L1 keeps what an earlier run cached

q "SELECT npc_scale.cache_set('outage-$tag', 'still here', '1 hour')" >/dev/null
redis_key=$(redis-cli -p "$NPC_REDIS_PORT" GET npc_scale:cache:kv:outage-$tag)
[ "$redis_key" = "still here" ] || { echo "the value did not reach Redis"; exit 1; }

lines_before=$(grep -c "Redis L2 cache unavailable" "$NPC_STATE/log/postgres.log" || true)
echo "stopping Redis"
back_before=$(grep -c "Redis L2 cache is reachable again" "$NPC_STATE/log/postgres.log" || true)
npc_redis_stop
# Whatever fails below, the scripts after this one need Redis back.
trap 'sessions_close; [ -n "${redis_back:-}" ] || npc_redis_start' EXIT
# One session that lives through the outage: it says Redis is down, and
# later that it is back.
sessions_open watcher
run_in watcher "SELECT npc_scale.cache_get('never-set-watcher');"
errors_before=$(q "SELECT redis_errors FROM npc_scale.cache_stats")
# A new session: its own L2 connection. L1 still answers the key we set …
[ "$(q "SELECT npc_scale.cache_get('outage-$tag')")" = "still here" ] || { echo "L1 lost the value"; exit 1; }
# … and a key only Redis could know is a miss, without an error.
out=$(q "SELECT coalesce(npc_scale.cache_get('never-set-' || g), 'miss') FROM generate_series(1, 20) g" 2>&1)
[ "$(grep -c '^miss$' <<<"$out")" = 20 ] || { echo "expected 20 misses, got: $out"; exit 1; }
q "SELECT npc_scale.cache_set('during-$tag', 'outage', '1 hour')" >/dev/null || { echo "cache_set failed while Redis is down"; exit 1; }
# A delete cannot be promised while Redis (which may still hold the value,
# to be served again on an L1 miss) is away: an error, and nothing changed.
out=$(npc_psql -v VERBOSITY=verbose -tAc "SELECT npc_scale.cache_delete('outage-$tag')" 2>&1 || true)
grep -q "08006" <<<"$out" && grep -q "could not reach Redis" <<<"$out" \
  || { echo "cache_delete during the outage: expected 08006, got: $out"; exit 1; }
[ "$(q "SELECT npc_scale.cache_get('outage-$tag')")" = "still here" ] || { echo "a failed delete changed L1"; exit 1; }
state=$(q "SELECT redis_up, redis_errors > $errors_before FROM npc_scale.cache_stats")
echo "during the outage: redis_up|errors_grew = $state"
[ "$state" = "f|t" ] || { echo "the outage was not recorded"; exit 1; }
down_lines=$(( $(grep -c "Redis L2 cache unavailable" "$NPC_STATE/log/postgres.log" || true) - lines_before ))
echo "log lines saying Redis is down: $down_lines (one per session that noticed, not per request)"
[ "$down_lines" -ge 1 ] && [ "$down_lines" -le 5 ] || { echo "expected a few down lines, got $down_lines"; exit 1; }
run_in watcher "SELECT npc_scale.cache_get('never-set-watcher');"  # the watcher notices too
# A clear cannot be promised either: L1 and the L3 table keep what they hold.
q "SELECT npc_scale.cache_set('kept-$tag', 'in L3 $tag', '1 hour', persist => true)" >/dev/null
out=$(npc_psql -v VERBOSITY=verbose -tAc "SELECT npc_scale.cache_clear()" 2>&1 || true)
grep -q "08006" <<<"$out" && grep -q "cache_clear() could not reach Redis .*: its values could still be served" <<<"$out" \
  || { echo "cache_clear during the outage: expected 08006, got: $out"; exit 1; }
[ "$(q "SELECT npc_scale.cache_get('outage-$tag')")" = "still here" ] || { echo "a failed clear changed L1"; exit 1; }
[ "$(q "SELECT count(*) FROM npc_scale.cache_store WHERE value = 'in L3 $tag'")" = 1 ] \
  || { echo "a failed clear emptied the L3 table"; exit 1; }

echo "starting Redis again"
npc_redis_start
redis_back=1
# A restarted Redis is another server (its run_id): every key is doubted
# until the maintenance worker has emptied it (redis_lost_write.sh, part 7).
q "SELECT npc_scale.cache_get('first-after-restart-$tag')" >/dev/null
npc_wait_sql "SELECT NOT l2_doubts_all FROM npc_scale.cache_stats" 30 \
  || { echo "the restarted Redis is still doubted"; exit 1; }
redis-cli -p "$NPC_REDIS_PORT" SET npc_scale:cache:kv:from-redis-$tag "written to Redis directly" >/dev/null
hits_before=$(q "SELECT l2_hits FROM npc_scale.cache_stats")
[ "$(q "SELECT npc_scale.cache_get('from-redis-$tag')")" = "written to Redis directly" ] || { echo "L2 did not come back"; exit 1; }
[ "$(q "SELECT l2_hits > $hits_before AND redis_up FROM npc_scale.cache_stats")" = t ] || { echo "no L2 hit counted"; exit 1; }
# The session that saw it go down says it is back, at its first lookup
# after its back-off.
deadline=$(( $(date +%s) + 20 ))
until [ "$(grep -c "Redis L2 cache is reachable again" "$NPC_STATE/log/postgres.log" || true)" -gt "$back_before" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "no log line says Redis is back"; exit 1; }
  run_in watcher "SELECT npc_scale.cache_get('never-set-watcher');"
  sleep 0.1
done
echo "Redis back: L2 hits resume"
