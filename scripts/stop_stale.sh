#!/usr/bin/env bash
# Stops what an earlier, interrupted run of the same stack left behind
# (found by its pid files), so a re-run never collides with it.
state=$1
[ -n "$state" ] || exit 0
if [ -f "$state/pgdata/postmaster.pid" ]; then
  runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$state/pgdata" -m immediate stop >/dev/null 2>&1
fi
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
