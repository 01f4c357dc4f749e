-- SIGHUP: the workers reload configuration; a changed npc_scale.database makes
-- them restart connected to the new database. Runs outside a transaction
-- (ALTER SYSTEM cannot run in one) and restores what it changed.
SELECT plan(6);

CREATE TEMP TABLE before AS SELECT name, pid, config_reloads FROM npc_scale.worker_status();
SELECT ok(pg_reload_conf(), 'configuration reload signalled');
SELECT ok(npc_test.wait_for($$
  (SELECT bool_and(w.config_reloads > b.config_reloads) FROM npc_scale.worker_status() w JOIN before b USING (name)) $$),
  'both workers reloaded their configuration on SIGHUP');
SELECT is((SELECT count(*)::int FROM npc_scale.worker_status() w JOIN before b USING (name) WHERE w.pid = b.pid), 2,
  'a reload without a database change does not restart them');

ALTER SYSTEM SET npc_scale.database = 'postgres';
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for($$
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %' AND datname = 'postgres') = 2 $$, '20 s'),
  'a changed npc_scale.database restarts both workers connected to the new database');

ALTER SYSTEM RESET npc_scale.database;
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for($$
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %' AND datname = current_database()) = 2 $$, '20 s'),
  'resetting it brings both back to this database');
SELECT ok(npc_test.wait_for($$ (SELECT bool_and(state = 'idle') FROM npc_scale.worker_status()) $$),
  'both are idle again');

SELECT * FROM finish();
