#!/usr/bin/env bash
# Redis slow or silent (stopped with SIGSTOP until the script lets it go on:
# it accepts and reads nothing meanwhile) while the dispatcher asks it about a
# cacheable decision: the ask does not hold up the event loop (a decision
# asked for after it is answered first), the asked one waits for Redis's
# reply (a hit would withdraw its request) and is then answered from the
# GPU; a Redis silent past redis_command_timeout is a miss and an error.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
q() { npc_psql -tAc "$1"; }

redis_pid=$(cat "$NPC_STATE/redis/redis.pid")
hold_redis() { kill -STOP "$redis_pid"; }
release_redis() { kill -CONT "$redis_pid"; }
restore() {
  release_redis || true
  q "ALTER SYSTEM RESET npc_scale.redis_command_timeout" >/dev/null
  q "ALTER SYSTEM RESET npc_scale.lease_timeout" >/dev/null
  q "SELECT pg_reload_conf()" >/dev/null
}
trap restore EXIT

# Sets redis_command_timeout and waits until the dispatcher has reloaded.
set_timeout() {
  local before
  before=$(q "SELECT config_reloads FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher'")
  q "ALTER SYSTEM SET npc_scale.redis_command_timeout = '$1'" >/dev/null
  q "SELECT pg_reload_conf()" >/dev/null
  q "SELECT npc_test.wait_for('(SELECT config_reloads > $before FROM npc_scale.worker_status()
                               WHERE name = ''npc_scale dispatcher'')')" >/dev/null
}
status_of() { q "SELECT status FROM npc_scale.decision_queue WHERE id = $1"; }
tag=$(date +%s%N)

q "SELECT npc_test.use_gpus(ARRAY['fast1'])" >/dev/null
redis-cli -p "$NPC_REDIS_PORT" PING >/dev/null

echo "== Redis slow, within the timeout (60 s): held until the script releases it"
set_timeout 60s
errors0=$(q "SELECT redis_errors FROM npc_scale.cache_stats")
hold_redis
a=$(q "SELECT npc_scale.request_decision(3101, 'build', 'slow redis: cacheable $tag', 5, '{\"temperature\": 0}')")
# D: cacheable, over the 4 kB hand-off slot: claimed and sent on the table path.
d=$(q "SELECT npc_scale.request_decision(3104, 'build', repeat('slow redis, the long way: $tag ', 150), 5, '{\"temperature\": 0}')")
q "SELECT npc_test.wait_for('(SELECT status = ''running'' FROM npc_scale.decision_queue WHERE id = $d)')" >/dev/null
b=$(q "SELECT npc_scale.request_decision(3102, 'build', 'slow redis: not cacheable $tag', 5)")
q "SELECT npc_test.wait_for('npc_test.all_finished(ARRAY[$b]::bigint[])')" >/dev/null
sa=$(status_of "$a") sd=$(status_of "$d")
echo "decision B (not cacheable) is $(status_of "$b") while A (handed off) is $sa and D (claimed) is $sd, both waiting for Redis"
[ "$(status_of "$b")" = done ] || { echo "B did not finish"; exit 1; }
[ "$sa" = queued ] || [ "$sa" = running ] || { echo "A should still wait for Redis's reply, is $sa"; exit 1; }
[ "$sd" = running ] || { echo "D should still wait for Redis's reply, is $sd"; exit 1; }
release_redis
q "SELECT npc_test.wait_for('npc_test.all_finished(ARRAY[$a, $d]::bigint[])')" >/dev/null
for id in "$a" "$d"; do
  row=$(q "SELECT status, cache_layer IS NULL, response <> '' FROM npc_scale.decision_queue WHERE id = $id")
  echo "after the pause, decision $id: status|from the GPU|has an answer = $row"
  [ "$row" = "done|t|t" ] || { echo "$id was not answered by the GPU after Redis's miss"; exit 1; }
done
[ "$(q "SELECT redis_errors FROM npc_scale.cache_stats")" = "$errors0" ] || { echo "a slow reply within the timeout counted as an error"; exit 1; }

echo "== Redis slower than the lease: the answered row waits for it, not recovered and sent again"
# lease_timeout 5 s (its least), Redis's word on the key awaited up to 60 s.
q "ALTER SYSTEM SET npc_scale.lease_timeout = '5s'" >/dev/null
set_timeout 60s
hold_redis
f=$(q "SELECT npc_scale.request_decision(3106, 'build', repeat('slower than the lease: $tag ', 150), 5, '{\"temperature\": 0}')")
q "SELECT npc_test.wait_for('(SELECT status = ''running'' FROM npc_scale.decision_queue WHERE id = $f)')" >/dev/null
# Lease recovery runs each second: 3 s after the lease lapsed it has looked.
q "SELECT npc_test.wait_for('(SELECT leased_until < clock_timestamp() - interval ''3 s'' OR attempts > 1 OR status <> ''running''
                             FROM npc_scale.decision_queue WHERE id = $f)', '20 s')" >/dev/null
row=$(q "SELECT status, attempts FROM npc_scale.decision_queue WHERE id = $f")
echo "F, 3 s past its lease with Redis silent: status|attempts = $row"
[ "$row" = "running|1" ] || { echo "F's lease was recovered while its answer waited for Redis"; exit 1; }
release_redis
q "SELECT npc_test.wait_for('npc_test.all_finished(ARRAY[$f]::bigint[])')" >/dev/null
row=$(q "SELECT status, attempts, cache_layer IS NULL FROM npc_scale.decision_queue WHERE id = $f")
echo "F after Redis's miss: status|attempts|from the GPU = $row"
[ "$row" = "done|1|t" ] || { echo "F was not answered once, by its first attempt"; exit 1; }
q "ALTER SYSTEM RESET npc_scale.lease_timeout" >/dev/null

echo "== Redis silent past the timeout (200 ms): held until C is answered"
set_timeout 200ms
hold_redis
c=$(q "SELECT npc_scale.request_decision(3103, 'build', 'silent redis: cacheable $tag', 5, '{\"temperature\": 0}')")
q "SELECT npc_test.wait_for('npc_test.all_finished(ARRAY[$c]::bigint[])')" >/dev/null
row=$(q "SELECT status, cache_layer IS NULL FROM npc_scale.decision_queue WHERE id = $c")
errors=$(q "SELECT redis_errors > $errors0 FROM npc_scale.cache_stats")
echo "C: status|from the GPU = $row; Redis errors counted: $errors"
[ "$row" = "done|t" ] || { echo "C was not answered after its ask timed out"; exit 1; }
[ "$errors" = t ] || { echo "the timed-out ask was not counted as a Redis error"; exit 1; }
release_redis
redis-cli -p "$NPC_REDIS_PORT" PING >/dev/null

echo "== Redis answering again"
# A backend sees it up. The dispatcher, whose last ask failed, still thinks it
# down until it next asks; working without Redis meanwhile (a decision that
# is not cacheable), it must not report that stale state over the backend's.
restore
redis-cli -p "$NPC_REDIS_PORT" SET "npc_scale:cache:kv:back-$tag" "back" >/dev/null
[ "$(q "SELECT npc_scale.cache_get('back-$tag')")" = back ] || { echo "L2 did not answer"; exit 1; }
e=$(q "SELECT npc_scale.request_decision(3105, 'build', 'after the pause $tag', 5)")
q "SELECT npc_test.wait_for('npc_test.all_finished(ARRAY[$e]::bigint[])')" >/dev/null
up=$(q "SELECT redis_up FROM npc_scale.cache_stats")
echo "redis_up after the dispatcher's next decision: $up"
[ "$up" = t ] || { echo "a stale 'down' overwrote redis_up"; exit 1; }
q "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 3101 AND 3106" >/dev/null
echo "ok"
