#!/usr/bin/env bash
# A cache_get() in a REPEATABLE READ transaction whose snapshot predates a
# committed cache_delete() must not bring the deleted value back: its L3 read
# is made on a snapshot taken at the read, not the transaction's, so the
# deleted row is not found, and nothing goes up into L2 and L1 for every
# other session to be served.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"

cleanup() {
  sessions_close
  npc_psql -c "SELECT npc_scale.cache_delete('stale-snapshot-key')" >/dev/null 2>&1 || true
}
trap cleanup EXIT
sessions_open reader
npc_psql -c "SELECT npc_scale.cache_set('stale-snapshot-key', 'the old value', '1 hour', true)" >/dev/null

# The reader's snapshot is taken before the delete commits.
run_in reader "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 'snapshot taken';"
npc_psql -c "SELECT npc_scale.cache_delete('stale-snapshot-key')" >/dev/null
run_in reader "SELECT 'reader got=' || coalesce(npc_scale.cache_get('stale-snapshot-key'), 'NULL'); COMMIT;"
grep -qx 'reader got=NULL' "$(session_out reader)" \
  || { echo "the reader's old snapshot served the deleted value"; cat "$(session_out reader)"; exit 1; }
got=$(npc_psql -tAc "SELECT coalesce(npc_scale.cache_get('stale-snapshot-key'), 'NULL')")
[ "$got" = NULL ] || { echo "the deleted value came back for everyone: $got"; exit 1; }
echo "a cache_get() on an old snapshot does not bring a deleted value back"
