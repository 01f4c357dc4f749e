#!/usr/bin/env bash
# Partition maintenance behind a long game query on a managed parent gives
# up after npc_scale.maintenance_lock_timeout (55P03) instead of waiting
# with its lock queued (so does one behind another call's per-parent lock), where every game statement on the parent would
# queue behind it; once the query ends, it goes through.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
cleanup() {
  sessions_close
  npc_psql -c "DROP TABLE IF EXISTS public.pl_mem" >/dev/null 2>&1 || true
}
trap cleanup EXIT
npc_psql -c "DROP TABLE IF EXISTS public.pl_mem" \
  -c "CREATE TABLE public.pl_mem (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts)" \
  -c "SELECT npc_scale.manage_partitions('public.pl_mem', 'ts', '1 month', 2)" \
  -c "INSERT INTO public.pl_mem VALUES (now() + interval '5 months', 1)" >/dev/null

# gives_up_on_a_lock SQL WHAT: SQL must fail on maintenance_lock_timeout
# (300 ms here). statement_timeout only guards the test from hanging: the
# lock timeout must come first.
gives_up_on_a_lock() {
  local out
  out=$(PGOPTIONS='-c npc_scale.maintenance_lock_timeout=300ms -c statement_timeout=30s' npc_psql -tAc "$1" 2>&1) && {
    echo "maintenance went through while $2: $out"; exit 1; }
  echo "$out" | grep -q "canceling statement due to lock timeout" \
    || { echo "maintenance did not give up on the lock while $2: $out"; exit 1; }
}

# A long read of the parent (it locks every partition, the default one too).
sessions_open a
run_in a "BEGIN; SELECT count(*) FROM public.pl_mem;"
# More premade partitions: attaching them needs the default partition (the
# row there moves), which the read holds.
gives_up_on_a_lock "SELECT npc_scale.manage_partitions('public.pl_mem', 'ts', '1 month', 6)" \
  "the parent was being read"
in_default=$(npc_psql -tAc "SELECT count(*) FROM public.pl_mem_default")
[ "$in_default" = 1 ] || { echo "the failed run changed the table: $in_default rows in the default"; exit 1; }
run_in a "ROLLBACK;"

# Without the read, the same call goes through and moves the row.
PGOPTIONS='-c npc_scale.maintenance_lock_timeout=300ms' npc_psql -tAc \
  "SELECT npc_scale.manage_partitions('public.pl_mem', 'ts', '1 month', 6)" >/dev/null
moved=$(npc_psql -tAc "SELECT tableoid::regclass::text FROM public.pl_mem")
[ "$moved" = "pl_mem_p$(npc_psql -tAc "SELECT to_char((now() + interval '5 months') AT TIME ZONE 'UTC', 'YYYY_MM')")" ] \
  || { echo "the row is in $moved"; exit 1; }

# A person's open transaction holding the parent's maintenance lock (its
# manage_partitions() call not committed yet) is waited for no longer
# either: the worker's run would wait for ever, and the purges and refreshes
# after it with it.
run_in a "BEGIN; SELECT npc_scale.manage_partitions('public.pl_mem', 'ts', '1 month', 6);"
gives_up_on_a_lock "SELECT npc_scale.run_maintenance('public.pl_mem')" "another call held the parent's lock"
run_in a "ROLLBACK;"
echo "ok: partition maintenance gave up on a lock held by a long read or another call, then went through"
