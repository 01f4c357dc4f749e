#!/usr/bin/env bash
# A scheduled refresh whose job row another session holds locked (a
# migration dropping its view, an UPDATE of the job left open) is passed
# over until the lock goes: the maintenance worker looks again each tick,
# not in a loop (it woke thousands of times a second, a core at 100%).
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
cleanup() {
  sessions_close
  npc_psql -c "DROP MATERIALIZED VIEW IF EXISTS public.ml_view" >/dev/null 2>&1 || true
}
trap cleanup EXIT
npc_psql -c "DROP MATERIALIZED VIEW IF EXISTS public.ml_view" \
  -c "CREATE MATERIALIZED VIEW public.ml_view AS SELECT 1 AS one" \
  -c "SELECT npc_scale.schedule_refresh('public.ml_view', '1 seconds', false)" >/dev/null
job=$(npc_psql -tAc "SELECT job FROM npc_scale.maintenance_jobs WHERE target = 'public.ml_view'::regclass")
npc_wait_sql "SELECT count(*) > 0 FROM npc_scale.maintenance_runs WHERE job = $job AND status = 'succeeded'" 20 \
  || { echo "the job never ran"; exit 1; }

sessions_open a
run_in a "BEGIN; SELECT job FROM npc_scale.maintenance_jobs WHERE job = $job FOR UPDATE;"
# Now due (every second) and locked.
npc_wait_sql "SELECT next_run_at < now() - interval '200 ms' FROM npc_scale.maintenance_jobs WHERE job = $job" 10 \
  || { echo "the job did not fall due"; exit 1; }
runs0=$(npc_psql -tAc "SELECT count(*) FROM npc_scale.maintenance_runs WHERE job = $job")
# A measurement window, not a synchronisation: wake-ups per second while the
# job is due and locked.
per_s=$(npc_psql -tAc "
  CREATE TEMP TABLE w0 AS SELECT wakeups, clock_timestamp() AS t FROM npc_scale.worker_status()
                           WHERE name = 'npc_scale maintenance';
  SELECT pg_sleep(2);
  SELECT round((w.wakeups - w0.wakeups) / extract(epoch FROM clock_timestamp() - w0.t))
    FROM npc_scale.worker_status() w, w0 WHERE w.name = 'npc_scale maintenance';" | tail -1)
[ "$per_s" -lt 10 ] || { echo "the maintenance worker woke $per_s times a second while the job was locked"; exit 1; }
runs1=$(npc_psql -tAc "SELECT count(*) FROM npc_scale.maintenance_runs WHERE job = $job")
[ "$runs1" = "$runs0" ] || { echo "the locked job ran: $runs0 -> $runs1 runs"; exit 1; }
run_in a "COMMIT;"
# Once the lock goes, it runs again.
npc_wait_sql "SELECT count(*) > $runs1 FROM npc_scale.maintenance_runs WHERE job = $job" 20 \
  || { echo "the job did not run once the lock was gone"; exit 1; }
echo "ok: a locked due job is passed over at $per_s wake-ups a second, and runs once unlocked"
