#!/usr/bin/env bash
# A generate() call in flight when npc_scale.database changes: its dispatcher
# restarts in the other database (which has no npc_scale yet, so the new one
# waits there for CREATE EXTENSION). The caller is told at once that the
# dispatcher stopped while serving it (by the one stopping, or else by its
# successor before it waits for its extension), not left waiting until its
# statement_timeout (none by default: for ever).
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
q() { npc_psql -tAc "$1"; }

workers_in() {  # workers_in DB: both workers are connected there
  npc_wait_sql "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %' AND datname = '$1'" 20
}
cleanup() {
  sessions_close
  q "ALTER SYSTEM RESET npc_scale.database" >/dev/null 2>&1 || true
  q "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
  workers_in "$NPC_DB" || true
  q "SELECT npc_test.gpu_faults('faulty', '{\"hang_rate\": 0}'), npc_test.gpu_release('faulty')" >/dev/null 2>&1 || true
}
trap cleanup EXIT
q "SELECT npc_test.use_gpus(ARRAY['faulty']), npc_test.gpu_reset('faulty'),
          npc_test.gpu_faults('faulty', '{\"hang_rate\": 1}')" >/dev/null
sessions_open caller
send_to caller "SET statement_timeout = '60s';
SELECT npc_scale.generate('held across a database switch ' || gen_random_uuid(), 5, '{\"cache\": false}');"
step=$SENT_STEP
npc_wait_sql "SELECT npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 1" 10 \
  || { echo "the generate() call did not reach the GPU"; cat "$(session_out caller)"; exit 1; }

echo "switching npc_scale.database to postgres (no npc_scale there) with the call held at the GPU"
q "ALTER SYSTEM SET npc_scale.database = 'postgres'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
workers_in postgres || { echo "the workers did not move to database postgres"; exit 1; }
# Told within seconds (the new dispatcher is still waiting for its
# extension), far inside the call's 60 s statement_timeout.
wait_step caller "$step" 15 || { echo "the caller is still waiting"; cat "$(session_out caller)"; exit 1; }
grep -Eq "dispatcher (stopped|restarted) while serving" "$(session_out caller)" \
  || { echo "expected the call to fail saying the dispatcher stopped; got:"; cat "$(session_out caller)"; exit 1; }
echo "ok: the held generate() call failed at once: $(grep ERROR "$(session_out caller)")"
