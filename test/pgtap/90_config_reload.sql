-- SIGHUP: the workers reload configuration; a changed npc_scale.database makes
-- them restart connected to the new database. Runs outside a transaction
-- (ALTER SYSTEM cannot run in one) and restores what it changed.
\ir setup/fresh.sql
SELECT plan(13);

CREATE TEMP TABLE before AS SELECT name, pid, config_reloads FROM npc_scale.worker_status();
SELECT ok(pg_reload_conf(), 'configuration reload signalled');
SELECT ok(npc_test.wait_for($$
  (SELECT bool_and(w.config_reloads > b.config_reloads) FROM npc_scale.worker_status() w JOIN before b USING (name)) $$),
  'both workers reloaded their configuration on SIGHUP');
SELECT is((SELECT count(*)::int FROM npc_scale.worker_status() w JOIN before b USING (name) WHERE w.pid = b.pid), 2,
  'a reload without a database change does not restart them');

-- The breaker's settings apply on a reload, though no endpoint changed:
-- with npc_scale.breaker_failures = 1, one failure opens the breaker (its
-- settings used to wait for the next change to gpu_endpoints).
SELECT npc_test.use_gpus(ARRAY['faulty'], ARRAY[7]);
SELECT ok(npc_test.wait_for($$ (SELECT array_agg(max_concurrent) FROM npc_scale.endpoint_stats WHERE NOT draining) = '{7}' $$),
  'the dispatcher has loaded the one endpoint');
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 1.0, "error_status": 503, "retry_after": 0}');
SELECT npc_test.gpu_reset('faulty');
TRUNCATE before;
INSERT INTO before SELECT name, pid, config_reloads FROM npc_scale.worker_status();
ALTER SYSTEM SET npc_scale.breaker_failures = 1;
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for($$
  (SELECT w.config_reloads > b.config_reloads FROM npc_scale.worker_status() w JOIN before b USING (name)
    WHERE name = 'npc_scale dispatcher') $$),
  'the dispatcher reloaded its configuration');
SELECT throws_like($$ SELECT npc_scale.generate('Is the gate open?', 5, '{"cache": false}') $$, '%503%',
  'a call its GPU answers with 503 fails');
SELECT ok(npc_test.wait_for($$ (SELECT breaker FROM npc_scale.endpoint_stats WHERE NOT draining) = 'open' $$),
  'that one failure opened the breaker');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_requests_total'), 1::numeric, 'after one request');
ALTER SYSTEM RESET npc_scale.breaker_failures;
SELECT pg_reload_conf() AS reloaded \gset
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0}');

-- /metrics scraping switched off on a reload: the last reading is dropped
-- (it stood for ever, a busy moment counted against the GPU from then on).
-- (max_concurrent 5: the new member's row, not the last one's reading.)
SELECT npc_test.use_gpus(ARRAY['fast0'], ARRAY[5]);
SELECT ok(npc_test.wait_for($$ (SELECT remote_running IS NOT NULL FROM npc_scale.endpoint_stats
                                 WHERE NOT draining AND max_concurrent = 5) $$),
  'the endpoint''s /metrics has been read');
ALTER SYSTEM SET npc_scale.metrics_interval = 0;
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for($$ (SELECT remote_running IS NULL AND remote_waiting IS NULL
                                  FROM npc_scale.endpoint_stats WHERE NOT draining) $$),
  'with scraping off, the last reading is dropped');
ALTER SYSTEM RESET npc_scale.metrics_interval;
SELECT pg_reload_conf() AS reloaded \gset

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
