#!/usr/bin/env bash
# Partitions maintenance makes go to the parent's tablespace, as CREATE
# TABLE ... PARTITION OF would put them (they were made in the default one:
# a parent moved to a big data disk filled the main disk instead).
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
dir="$NPC_STATE/tablespace_pt"
cleanup() {
  npc_psql -c "DROP TABLE IF EXISTS public.pt_mem" -c "DROP TABLESPACE IF EXISTS npc_test_pt" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
cleanup
mkdir -p "$dir" && chown postgres "$dir"
npc_psql -c "CREATE TABLESPACE npc_test_pt LOCATION '$dir'" \
  -c "CREATE TABLE public.pt_mem (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts) TABLESPACE npc_test_pt" \
  -c "SELECT npc_scale.manage_partitions('public.pt_mem', 'ts', '1 month', 2)" >/dev/null
placed=$(npc_psql -tAc "SELECT count(*) FILTER (WHERE t.spcname = 'npc_test_pt') || '/' || count(*)
                          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                          LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
                         WHERE i.inhparent = 'public.pt_mem'::regclass")
# Premade partitions: this month, two back, two ahead; the default one is
# made PARTITION OF, so it is there too.
[ "$placed" = "6/6" ] || { echo "partitions in the parent's tablespace: $placed"; exit 1; }
echo "ok: every partition ($placed) is in the parent's tablespace"
