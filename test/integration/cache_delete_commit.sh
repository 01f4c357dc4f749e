#!/usr/bin/env bash
# A reader that meets a key while another session's cache_delete() is still
# uncommitted finds the committed L3 row and promotes it into L2 and L1.
# Once the delete commits, the key must be gone from every layer: the
# deleting session erases it from L2 and L1 again at COMMIT.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
trap sessions_close EXIT
q() { npc_psql -tAc "$1"; }
key="commit-race-$(date +%s%N)"

q "SELECT npc_scale.cache_set('$key', 'old value', '1 hour', true)" >/dev/null
sessions_open deleter
run_in deleter "BEGIN; SELECT npc_scale.cache_delete('$key');"
# Another session, while the delete is uncommitted: L1 and L2 are empty,
# L3 still shows the committed row, which is promoted back up.
[ "$(q "SELECT npc_scale.cache_get('$key')")" = "old value" ] \
  || { echo "the reader did not see the committed L3 row"; exit 1; }
# The promotion waits for Redis's reply: without it the COMMIT's second
# delete would have nothing to do, and this test would prove nothing.
in_redis=$(redis-cli -p "$NPC_REDIS_PORT" EXISTS "npc_scale:cache:kv:$key")
[ "$in_redis" = 1 ] || { echo "the reader did not promote the row back into Redis: $in_redis"; exit 1; }
# The deleting transaction itself reads its own delete, not the row
# promoted back meanwhile.
run_in deleter "SELECT coalesce(npc_scale.cache_get('$key'), 'own delete: gone');"
grep -q '^own delete: gone$' "$(session_out deleter)" \
  || { echo "the deleting transaction read the key it deleted:"; cat "$(session_out deleter)"; exit 1; }
run_in deleter "COMMIT;"
[ "$(q "SELECT coalesce(npc_scale.cache_get('$key'), 'gone')")" = gone ] \
  || { echo "the deleted key came back after the delete committed"; exit 1; }
[ "$(redis-cli -p "$NPC_REDIS_PORT" EXISTS "npc_scale:cache:kv:$key")" = 0 ] \
  || { echo "the deleted key is still in Redis"; exit 1; }
echo "ok: a key read back during an uncommitted delete is gone once it commits"
