-- Included first by every pgTAP file (before any BEGIN: ALTER SYSTEM cannot
-- run in a transaction): the same start for each, so one file's failure
-- half-way does not fail the files after it. Settings an earlier file
-- changed with ALTER SYSTEM (the stack's own are in postgresql.conf) are
-- reset, and each worker has reloaded its configuration (or restarted).
SELECT count(*) > 0 AS npc_test_leftover_settings FROM pg_file_settings
 WHERE sourcefile LIKE '%/postgresql.auto.conf' \gset
\if :npc_test_leftover_settings
CREATE TEMP TABLE npc_test_workers_before AS SELECT name, started_at, config_reloads FROM npc_scale.worker_status();
ALTER SYSTEM RESET ALL;
SELECT pg_reload_conf() AS npc_test_reloaded \gset
SELECT npc_test.wait_for($$ NOT EXISTS (
         SELECT FROM npc_scale.worker_status() w JOIN npc_test_workers_before b USING (name)
          WHERE w.pid IS NULL OR (w.config_reloads <= b.config_reloads AND w.started_at = b.started_at)) $$)
    AS npc_test_applied \gset
DROP TABLE npc_test_workers_before;
\endif
SELECT npc_test.reset_fixtures() \gset
