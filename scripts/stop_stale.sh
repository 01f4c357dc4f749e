#!/usr/bin/env bash
# Stops what an earlier, interrupted run of the same stack left behind
# (found by its pid files), so a re-run never collides with it.
state=$1
[ -n "$state" ] || exit 0
# stop_cluster DATADIR: its postmaster, if the pid in postmaster.pid still is
# that postmaster (after a reboot the pid may be another cluster's: then the
# stale file goes and nothing is signalled).
stop_cluster() {
  local data=$1 pid
  [ -f "$data/postmaster.pid" ] || return 0
  pid=$(head -1 "$data/postmaster.pid")
  if [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$data"; then
    runuser -u postgres -- "${PG_BIN:-/usr/lib/postgresql/15/bin}/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1
  else
    rm -f "$data/postmaster.pid"
  fi
}
stop_cluster "$state/pgdata"
stop_cluster "$state/second/data"  # preload_and_postmaster_death.sh's own cluster
# stop_recorded PIDFILE PROGRAM: the process the file names, if it still is
# PROGRAM (after a reboot the pid may belong to anything), and waits for it
# to be gone, so the next start finds its port free.
stop_recorded() {
  local file=$1 program=$2 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  rm -f "$file"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$program" || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null
}
stop_recorded "$state/redis/redis.pid" redis-server
for f in "$state"/gpu/*.pid; do stop_recorded "$f" fake_gpu; done
exit 0
