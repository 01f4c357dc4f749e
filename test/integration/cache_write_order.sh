#!/usr/bin/env bash
# Two sessions write one key, the second after the first has committed but
# while the first's COMMIT still applies its writes to L1 and Redis (Redis
# stopped, so it waits out redis_command_timeout, then puts its value into
# L1 again as Redis may have lost it). The second writer waits for the key
# until then: every layer ends as the later commit left it. Without that,
# the second's value is put first and the first's late L1 put brings the
# older one back, served until its TTL.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
q() { npc_psql -tAc "$1"; }
redis_pid=$(cat "$NPC_STATE/redis/redis.pid")
restore() {
  kill -CONT "$redis_pid" 2>/dev/null || true
  sessions_close
  q "ALTER SYSTEM RESET npc_scale.redis_command_timeout" >/dev/null
  q "SELECT pg_reload_conf()" >/dev/null
}
trap restore EXIT
key="write-order-$(date +%s%N)"

# Long, so the moment the second writer needs (the first a second into its
# wait) lasts five seconds: a starved VM's observer cannot miss it.
q "ALTER SYSTEM SET npc_scale.redis_command_timeout = '6s'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
# A new backend starts with what the postmaster has loaded: wait for it there.
for _ in $(seq 500); do
  [ "$(q "SHOW npc_scale.redis_command_timeout")" = 6s ] && break
  sleep 0.01
done
[ "$(q "SHOW npc_scale.redis_command_timeout")" = 6s ] || { echo "the new timeout was not loaded"; exit 1; }
sessions_open first second
for s in first second; do
  # Connected to Redis before it stops.
  run_in "$s" "SELECT npc_scale.cache_get('$key-warm');"
  run_in "$s" "SHOW npc_scale.redis_command_timeout;"
done
grep -c '^6s$' "$(session_out first)" "$(session_out second)" | grep -q ':0' && { echo "a session missed the timeout"; exit 1; }
q "SELECT npc_scale.cache_set('$key', 'V0', '1 hour')" >/dev/null
[ "$(q "SELECT npc_scale.cache_get('$key')")" = V0 ] || { echo "V0 was not cached"; exit 1; }

kill -STOP "$redis_pid"
send_to first "SELECT npc_scale.cache_set('$key', 'V1', '1 hour');"
first_step=$SENT_STEP
# The second writer comes a second into the first's wait for Redis (6 s).
q "SELECT npc_test.wait_for(\$\$ EXISTS (SELECT FROM pg_stat_activity WHERE state = 'active'
                                          AND query LIKE '%cache_set(''$key'', ''V1''%'
                                          AND clock_timestamp() - query_start > interval '1 s') \$\$)" >/dev/null
send_to second "SELECT npc_scale.cache_set('$key', 'V2', '1 hour');"
second_step=$SENT_STEP
# The first gives Redis up (its SET may be lost: it puts V1 into L1 again);
# Redis comes back before the second's wait runs out, so the second's SET
# is answered and its L1 put stands as it was.
wait_step first "$first_step" 20
kill -CONT "$redis_pid"
wait_step second "$second_step" 20
redis-cli -p "$NPC_REDIS_PORT" PING >/dev/null

final=$(q "SELECT npc_scale.cache_get('$key')")
echo "after V1 and then V2 committed while Redis was stopped: $final"
[ "$final" = V2 ] || { echo "the earlier write's late L1 put outlived the later one"; cat "$(session_out second)"; exit 1; }
echo "ok"
