#!/usr/bin/env bash
# SIGKILL of a worker: the postmaster treats it as a crash, resets shared
# memory and restarts; both npc_scale workers come back with new pids.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"

old=$(npc_psql -tAc "SELECT pid FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher'")
old_maint=$(npc_psql -tAc "SELECT pid FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance'")
[ -n "$old" ] && [ -n "$old_maint" ] || { echo "a worker is not running"; exit 1; }
echo "killing dispatcher pid $old with SIGKILL"
kill -9 "$old"

# Crash recovery: wait until the server accepts connections and both workers run again.
npc_wait_sql "SELECT count(*) = 2 FROM npc_scale.worker_status() WHERE pid IS NOT NULL AND pid NOT IN ($old, $old_maint) AND state = 'idle'" 60
new=$(npc_psql -tAc "SELECT pid FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher'")
echo "dispatcher restarted: pid $old -> $new"
[ "$new" != "$old" ]
kill -0 "$old" 2>/dev/null && { echo "old dispatcher still alive"; exit 1; }
grep -q "npc_scale dispatcher.*was terminated by signal 9" "$NPC_STATE/log/postgres.log"
echo "postmaster logged the crash and recovered"
