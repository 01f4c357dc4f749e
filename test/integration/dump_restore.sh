#!/usr/bin/env bash
# pg_dump keeps the game's npc_scale data: the fleet, queued and answered
# decisions, the persisted cache, refresh schedules (with their run
# history) and partition settings come back from a dump restored into a
# new database, and new ids follow the restored ones. (And decisions are only
# queued where a dispatcher serves them.)
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
src=npc_dump_src
dst=npc_dump_dst
dump=$NPC_STATE/npc_dump.pgdump
cleanup() {
  npc_psql -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" >/dev/null 2>&1 || true
  rm -f "$dump"
}
trap cleanup EXIT
cleanup
q() { npc_psql -d "$1" -tAc "$2"; }
npc_psql -d postgres -c "CREATE DATABASE $src" >/dev/null
# No dispatcher serves this database (npc_scale.database names another), so
# request_decision() refuses it; the rows are written as they stand.
npc_psql -d "$src" -c "CREATE EXTENSION npc_scale" >/dev/null
out=$(npc_psql -d "$src" -v VERBOSITY=verbose -tAc "SELECT npc_scale.request_decision(1, 'build', 'lost?')" 2>&1 || true)
grep -q "55000" <<<"$out" && grep -q "no npc_scale dispatcher serves database \"$src\"" <<<"$out" \
  || { echo "request_decision in a database no dispatcher serves: expected 55000, got: $out"; exit 1; }
out=$(npc_psql -d "$src" -tAc "SELECT npc_scale.request_decisions(ARRAY[1], 'build', ARRAY['lost?'])" 2>&1 || true)
grep -q "no npc_scale dispatcher serves database" <<<"$out" \
  || { echo "request_decisions in a database no dispatcher serves: expected the same error, got: $out"; exit 1; }
# generate() likewise: it waited for ever (statement_timeout only guards the test).
out=$(PGOPTIONS='-c statement_timeout=20s' npc_psql -d "$src" -tAc "SELECT npc_scale.generate('lost?')" 2>&1 || true)
grep -q "no npc_scale dispatcher serves database \"$src\".*wait for ever" <<<"$out" \
  || { echo "generate in a database no dispatcher serves: expected 55000 at once, got: $out"; exit 1; }
# Jobs and partition settings are kept (a database prepared before
# npc_scale.database points at it), with a warning that nothing runs them here.
warnings=$(npc_psql -d "$src" 2>&1 >/dev/null <<'SQL'
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, model, api, max_concurrent, api_key, labels)
VALUES (7, 'http://10.1.2.3:8000', 'npc-llm', 'chat', 12, 'sk-secret', '{"zone": "eu"}');
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt)
SELECT g, 'build', 'Village ' || g || ': what next?' FROM generate_series(1, 3) g;
UPDATE npc_scale.decision_queue SET status = 'done', response = 'granary', finished_at = now()
 WHERE id = (SELECT min(id) FROM npc_scale.decision_queue);
SELECT npc_scale.cache_set('plan:1', 'granary first', '1 hour', persist => true);
CREATE TABLE village_stats (village_id bigint PRIMARY KEY, wood bigint);
CREATE MATERIALIZED VIEW village_summary AS SELECT village_id, wood FROM village_stats;
CREATE UNIQUE INDEX ON village_summary (village_id);
SELECT npc_scale.schedule_refresh('village_summary', '*/5 * * * *');
INSERT INTO npc_scale.maintenance_runs (job, started_at, finished_at, status, duration)
  OVERRIDING SYSTEM VALUE SELECT job, now(), now(), 'succeeded', '1 ms' FROM npc_scale.maintenance_jobs;
CREATE TABLE npc_events (npc_id bigint, occurred_at timestamptz NOT NULL) PARTITION BY RANGE (occurred_at);
SELECT npc_scale.manage_partitions('npc_events', 'occurred_at', '1 day', premake => 2);
SQL
)
for what in "the refresh of village_summary is scheduled, but runs nowhere" \
            "the partitions of npc_events were made now, but nothing premakes more"; do
  grep -q "WARNING:  no npc_scale maintenance worker serves database \"$src\".*: $what" <<<"$warnings" \
    || { echo "expected a warning that $what; got: $warnings"; exit 1; }
done
snapshot() {
  q "$1" "SELECT concat_ws(' | ',
    (SELECT string_agg(concat_ws(',', gpu_id, endpoint, model, api, max_concurrent, api_key, labels), ';') FROM npc_scale.gpu_endpoints),
    (SELECT string_agg(concat_ws(',', id, npc_id, status, prompt, response), ';' ORDER BY id) FROM npc_scale.decision_queue),
    (SELECT string_agg(concat_ws(',', key, value), ';') FROM npc_scale.cache_store),
    (SELECT string_agg(concat_ws(',', job, target, schedule, concurrent_refresh, active), ';') FROM npc_scale.maintenance_jobs),
    (SELECT string_agg(concat_ws(',', run, job, status), ';') FROM npc_scale.maintenance_runs),
    (SELECT string_agg(concat_ws(',', parent, control, partition_interval, premake), ';') FROM npc_scale.partition_configs))"
}
before=$(snapshot "$src")
echo "before: $before"
npc_as_postgres "$PG_BIN/pg_dump" -h "$NPC_PGSOCK" -p "$NPC_PGPORT" -Fc -f "$dump" "$src"
npc_psql -d postgres -c "CREATE DATABASE $dst" >/dev/null
npc_as_postgres "$PG_BIN/pg_restore" -h "$NPC_PGSOCK" -p "$NPC_PGPORT" --exit-on-error -d "$dst" "$dump" \
  || { echo "pg_restore failed"; exit 1; }
after=$(snapshot "$dst")
echo "after:  $after"
[ "$before" = "$after" ] || { echo "the restored npc_scale tables differ from the dumped ones"; exit 1; }
for t in gpu_endpoints decision_queue cache_store maintenance_jobs maintenance_runs partition_configs; do
  [ "$(q "$dst" "SELECT count(*) > 0 FROM npc_scale.$t")" = t ] || { echo "npc_scale.$t restored empty"; exit 1; }
done
# New rows continue after the restored ones.
max_id=$(q "$dst" "SELECT max(id) FROM npc_scale.decision_queue")
new_id=$(q "$dst" "INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt) VALUES (4, 'build', 'after the restore') RETURNING id")
[ "$new_id" -gt "$max_id" ] || { echo "new decision id $new_id does not follow the restored $max_id"; exit 1; }
q "$dst" "CREATE MATERIALIZED VIEW village_totals AS SELECT sum(wood) AS wood FROM village_stats" >/dev/null
new_job=$(q "$dst" "SELECT npc_scale.schedule_refresh('village_totals', '@hourly', false)" 2>/dev/null)
[ "$new_job" -gt "$(q "$dst" "SELECT min(job) FROM npc_scale.maintenance_jobs")" ] \
  || { echo "new job id $new_job collides with a restored one"; exit 1; }
echo "ok: every npc_scale table's rows survive pg_dump and pg_restore; new ids follow them"
