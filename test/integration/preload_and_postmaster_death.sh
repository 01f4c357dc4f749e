#!/usr/bin/env bash
# A second, throwaway cluster:
#  1. without shared_preload_libraries, CREATE EXTENSION fails with a clear
#     error that says how to fix it;
#  2. with it, the workers start; when the postmaster dies (SIGKILL) they exit
#     on their own instead of lingering.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"

dir=$NPC_STATE/second
port=$((NPC_PGPORT + 100))
rm -rf "$dir"; mkdir -p "$dir"; chown -R postgres:postgres "$dir"
cleanup() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
runuser -u postgres -- "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
# Beside the main cluster's socket (another port, another file): a socket
# path no longer than the one the stack already checked.
unix_socket_directories = '$NPC_PGSOCK'
CONF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
q() { "$PG_BIN/psql" -X -h "$NPC_PGSOCK" -p "$port" -U postgres -d postgres "$@"; }

# 1. not preloaded
out=$(q -c "CREATE EXTENSION npc_scale" 2>&1 || true)
echo "$out"
grep -q 'ERROR:  npc_scale must be loaded via shared_preload_libraries' <<<"$out"
grep -q "HINT:  Add 'npc_scale' to shared_preload_libraries" <<<"$out"
[ "$(q -tAc "SELECT count(*) FROM pg_extension WHERE extname = 'npc_scale'")" = 0 ]
[ "$(q -tAc "SELECT count(*) FROM pg_namespace WHERE nspname = 'npc_scale'")" = 0 ]
echo "not preloaded: clear error, nothing half-created"

# 2. preloaded, then the postmaster is killed
echo "shared_preload_libraries = 'npc_scale'" >>"$dir/data/postgresql.conf"
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w restart >/dev/null
deadline=$(( $(date +%s) + 20 ))
until [ "$(q -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %'")" = 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "workers did not start"; exit 1; }
  sleep 0.05
done
pids=$(q -tAc "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %'")
pm=$(head -1 "$dir/data/postmaster.pid")
echo "killing postmaster $pm; workers: $pids"
kill -9 "$pm"
deadline=$(( $(date +%s) + 20 ))
for p in $pids; do
  while kill -0 "$p" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "worker $p outlived the postmaster"; exit 1; }
    sleep 0.05
  done
done
echo "all workers exited after postmaster death"
# The dead cluster's shared memory (its SysV interlock, its DSM segments) is
# freed only by a start of the same data directory, once the last of its
# processes (checkpointer etc.) has gone too: start it once and stop it.
deadline=$(( $(date +%s) + 20 ))
until runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 20 start >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "(the dead cluster's shared memory is left: it did not start again)"; break; }
  sleep 0.2
done
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
