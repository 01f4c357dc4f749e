-- Included by every pgTAP file after its plan(): the same start for each,
-- so one file's failure half-way does not fail the files after it.
-- Settings an earlier file changed with ALTER SYSTEM (the stack's own are
-- in postgresql.conf) are reset, and the workers have applied that.
SELECT count(*) > 0 AS npc_test_leftover_settings FROM pg_file_settings
 WHERE sourcefile LIKE '%/postgresql.auto.conf' \gset
\if :npc_test_leftover_settings
SELECT coalesce(sum(config_reloads), 0) AS npc_test_reloads FROM npc_scale.worker_status() \gset
ALTER SYSTEM RESET ALL;
SELECT pg_reload_conf() AS npc_test_reloaded \gset
SELECT npc_test.wait_for(format('(SELECT sum(config_reloads) - %s >= count(pid) FROM npc_scale.worker_status())',
                                :npc_test_reloads)) AS npc_test_applied \gset
\endif
SELECT npc_test.reset_fixtures() \gset
