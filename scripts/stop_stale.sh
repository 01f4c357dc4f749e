#!/usr/bin/env bash
# Stops what an earlier, interrupted run of the same stack left behind
# (found by its pid files), so a re-run never collides with it.
state=$1
[ -n "$state" ] || exit 0
if [ -f "$state/pgdata/postmaster.pid" ]; then
  runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$state/pgdata" -m immediate stop >/dev/null 2>&1
fi
[ -f "$state/redis/redis.pid" ] && kill "$(cat "$state/redis/redis.pid")" 2>/dev/null
for f in "$state"/gpu/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; rm -f "$f"; done
exit 0
