-- Routing: 429 with Retry-After opens the endpoint's breaker for exactly that
-- long (no request reaches it meanwhile) while the decision's retry goes
-- elsewhere at once; a /health probe closes it; NPC affinity keeps an NPC on
-- one endpoint; the stats view.
\ir setup/fresh.sql
SELECT plan(35);

-- A rate-limited endpoint: every inference request gets 429, Retry-After: 30.
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 1.0, "error_status": 429, "retry_after": 30, "hang_rate": 0, "slow_rate": 0}');
SELECT npc_test.gpu_reset('faulty');
SELECT npc_test.use_gpus(ARRAY['faulty']);
SELECT npc_scale.request_decision(5001, 'trade', 'Sell clay?', 5) AS limited \gset
SELECT ok(npc_test.wait_for($$ (SELECT breaker = 'open' FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) $$),
  'a 429 opens the endpoint''s breaker');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_requests_total'), 1::numeric, 'after one request');
SELECT ok(npc_test.wait_for(format($$ (SELECT status = 'queued' FROM npc_scale.decision_queue WHERE id = %s) $$, :limited)),
  'the rate-limited decision waits for a GPU');
SELECT ok((SELECT not_before < started_at + interval '30 s' FROM npc_scale.decision_queue WHERE id = :limited),
  'its retry has the usual back-off: Retry-After holds the endpoint, not the decision');

-- Add a healthy endpoint: the rate-limited decision and new work go there
-- while the first one's breaker is still open.
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent) VALUES (2, npc_test.gpu_url('fast0'), 16);
CREATE TEMP TABLE meanwhile AS
SELECT npc_scale.request_decision(5100 + g, 'trade', 'Buy wheat ' || g, 9) AS id FROM generate_series(1, 10) g;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM meanwhile))'), 'other work finishes meanwhile');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue JOIN meanwhile USING (id) WHERE gpu_id = 2 AND status = 'done'), 10,
  'all of it on the healthy endpoint');
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :limited)), 'the rate-limited decision finishes');
SELECT results_eq(format('SELECT status, gpu_id, attempts FROM npc_scale.decision_queue WHERE id = %s', :limited),
  $$ VALUES ('done'::text, 2, 2) $$, 'on its second attempt, on the healthy endpoint');
SELECT is((SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining), 'open',
  'without waiting for the first endpoint''s Retry-After');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_requests_total'), 1::numeric,
  'no request reached the rate-limited endpoint while its breaker was open');
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0}');

-- After Retry-After the breaker probes /health and closes (a 2 s Retry-After
-- on a fresh endpoint, the only one).
SELECT npc_test.gpu_faults('fast1', '{"error_rate": 1.0, "error_status": 429, "retry_after": 2}');
SELECT npc_test.gpu_reset('fast1') AS reset \gset
SELECT npc_test.use_gpus(ARRAY['fast1']);
SELECT npc_scale.request_decision(5002, 'trade', 'Sell iron?', 5) AS limited2 \gset
-- Its own 429 (counted by the GPU), not the last endpoint's breaker still shown as gpu 1.
SELECT ok(npc_test.wait_for($$ npc_test.fleet_loaded() AND npc_test.gpu_metric('fast1', 'fake_gpu_requests_total') >= 1
                               AND (SELECT breaker = 'open' FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) $$),
  'a 429 opens its breaker');
SELECT npc_test.gpu_faults('fast1', '{"error_rate": 0}');
SELECT ok(npc_test.wait_for($$ (SELECT breaker = 'closed' FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) $$, '15 s'),
  'a healthy probe closes the breaker');
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :limited2), '15 s'),
  'the rate-limited decision is answered on its retry');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE id = :limited2), 'done', 'done');

-- Affinity: one NPC's decisions stay on one endpoint while loads are even.
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1', 'fast2']);
SELECT hits AS aff_hits0, misses AS aff_misses0 FROM npc_scale.affinity_stats \gset
CREATE TEMP TABLE npc42 (id bigint);
DO $$
BEGIN
  FOR i IN 1 .. 12 LOOP
    INSERT INTO npc42 SELECT npc_scale.request_decision(42, 'build', 'NPC 42 step ' || i, 5);
    COMMIT;
    PERFORM npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', (SELECT max(id) FROM npc42)));
  END LOOP;
END $$;
SELECT is((SELECT count(DISTINCT gpu_id)::int FROM npc_scale.decision_queue JOIN npc42 USING (id)), 1,
  'twelve sequential decisions of one NPC all went to the same endpoint');
SELECT results_eq(format('SELECT hits - %s, misses - %s FROM npc_scale.affinity_stats', :aff_hits0, :aff_misses0),
  $$ VALUES (12::bigint, 0::bigint) $$, 'affinity_stats counts the twelve as routed to their home endpoint');

-- Decision types in npc_scale.prefix_affinity_types are keyed by their
-- prompt's first 64 bytes, not by NPC: many NPCs asking about one shared
-- situation land on one endpoint (its prefix cache); other types spread by NPC.
SELECT config_reloads AS reloads0 FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher' \gset
ALTER SYSTEM SET npc_scale.prefix_affinity_types = 'world_event, raid';
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT config_reloads > %s FROM npc_scale.worker_status()
                                        WHERE name = 'npc_scale dispatcher') $$, :reloads0)),
  'the dispatcher has read prefix_affinity_types');
CREATE TEMP TABLE by_prefix (decision_type text, id bigint);
DO $$
DECLARE
  shared text := 'A horde of Natars has been sighted at the oasis north of the capital. ';
  t text;
BEGIN
  FOR i IN 1 .. 12 LOOP
    FOREACH t IN ARRAY ARRAY['raid', 'build'] LOOP
      INSERT INTO by_prefix SELECT t, npc_scale.request_decision(5400 + i, t, shared || 'NPC ' || i || ': what now?', 5);
      COMMIT;
      PERFORM npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', (SELECT max(id) FROM by_prefix)));
    END LOOP;
  END LOOP;
END $$;
SELECT is((SELECT count(DISTINCT gpu_id)::int FROM npc_scale.decision_queue JOIN by_prefix USING (id) WHERE by_prefix.decision_type = 'raid'), 1,
  'twelve NPCs'' decisions of a listed type with one prompt prefix all went to one endpoint');
SELECT ok((SELECT count(DISTINCT gpu_id) FROM npc_scale.decision_queue JOIN by_prefix USING (id) WHERE by_prefix.decision_type = 'build') > 1,
  'the same prompts as an unlisted type went to their NPCs'' endpoints, more than one');
ALTER SYSTEM RESET npc_scale.prefix_affinity_types;
SELECT pg_reload_conf() AS reloaded \gset
-- generate() is always keyed by its prompt's prefix: ten calls sharing one
-- go to one server; ten with prompts of their own do not.
SELECT bool_and(npc_test.gpu_reset(g) IS NOT NULL) AS reset FROM unnest(ARRAY['fast0', 'fast1', 'fast2']) g \gset
SELECT count(npc_scale.generate('A horde of Natars has been sighted at the oasis north of the capital. Village '
                                || g || '?', 5, '{"cache": false, "max_tokens": 2}')) AS shared_calls
  FROM generate_series(1, 10) g \gset
SELECT is((SELECT max(npc_test.gpu_metric(g, 'fake_gpu_requests_total')) FROM unnest(ARRAY['fast0', 'fast1', 'fast2']) g),
  10::numeric, 'ten generate() calls sharing a prompt prefix all went to one server');
SELECT bool_and(npc_test.gpu_reset(g) IS NOT NULL) AS reset FROM unnest(ARRAY['fast0', 'fast1', 'fast2']) g \gset
SELECT count(npc_scale.generate('Village ' || g || ': a horde of Natars has been sighted at the oasis?', 5,
                                '{"cache": false, "max_tokens": 2}')) AS own_calls
  FROM generate_series(1, 10) g \gset
SELECT ok((SELECT max(npc_test.gpu_metric(g, 'fake_gpu_requests_total')) FROM unnest(ARRAY['fast0', 'fast1', 'fast2']) g) < 10,
  'ten with prompts of their own did not');

-- The stats view: one row per endpoint, sane figures, never the api_key.
SELECT is((SELECT count(*)::int FROM npc_scale.endpoint_stats WHERE breaker = 'closed' AND enabled), 3,
  'endpoint_stats shows the three endpoints, breakers closed');
SELECT hasnt_column('npc_scale', 'endpoint_stats', 'api_key', 'endpoint_stats has no api_key column');

-- gpu_endpoints.weight scales an endpoint's share of NPC homes (with its
-- slots): the same sixty NPCs, one decision each in turn, at weights 1:1
-- and then 1:4.
CREATE PROCEDURE pg_temp.homes(round text) LANGUAGE plpgsql AS $f$
BEGIN
  FOR i IN 1 .. 60 LOOP
    INSERT INTO homes SELECT round, npc_scale.request_decision(5500 + i, 'build', 'weight ' || round || ' ' || i, 5);
    COMMIT;
    PERFORM npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', (SELECT max(id) FROM homes)));
  END LOOP;
END $f$;
CREATE TEMP TABLE homes (round text, id bigint);
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1']);
CALL pg_temp.homes('even');
UPDATE npc_scale.gpu_endpoints SET weight = 4 WHERE gpu_id = 2;
CALL pg_temp.homes('heavy');
SELECT ok((SELECT count(*) FILTER (WHERE gpu_id = 2) < 2 * count(*) FILTER (WHERE gpu_id = 1)
             FROM npc_scale.decision_queue JOIN homes USING (id) WHERE round = 'even'),
  'at equal weights the second endpoint is not home to twice as many NPCs as the first');
SELECT ok((SELECT count(*) FILTER (WHERE gpu_id = 2) >= 2 * count(*) FILTER (WHERE gpu_id = 1)
             FROM npc_scale.decision_queue JOIN homes USING (id) WHERE round = 'heavy'),
  'at weight 4 against 1 the heavier one is home to more than twice as many');

-- A request one server refuses for its own configuration (here
-- send_priority on a vLLM without priority scheduling: HTTP 400) is asked
-- once more on another endpoint, not failed as the caller's error.
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1']);
UPDATE npc_scale.gpu_endpoints SET send_priority = true WHERE gpu_id = 1;
CREATE TEMP TABLE prio AS
SELECT npc_scale.request_decision(5200 + g, 'build', 'Priority? ' || g, 5) AS id FROM generate_series(1, 12) g;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM prio))', '30 s'), 'the decisions finish');
SELECT results_eq($$ SELECT status, count(*)::int FROM npc_scale.decision_queue JOIN prio USING (id) GROUP BY 1 $$,
  $$ VALUES ('done'::text, 12) $$, 'all are answered');
SELECT ok((SELECT count(*) FROM npc_scale.decision_queue JOIN prio USING (id) WHERE attempts = 2 AND gpu_id = 2) > 0,
  'those routed to the refusing server first were answered by the other one, in a second attempt');
SELECT is((SELECT count(npc_scale.generate('Priority for generate() call ' || g || '?', 5, '{"cache": false}'))
             FROM generate_series(1, 8) g), 8::bigint,
  'generate() calls are answered too');
UPDATE npc_scale.gpu_endpoints SET send_priority = false;

-- A retry is not joined to an identical request in flight on the endpoint
-- its last attempt failed on (it would get that endpoint's answer): it goes
-- to another one. The retry's back-off holds it until the scene is set,
-- then the test makes it due.
SELECT config_reloads AS reloads1 FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher' \gset
ALTER SYSTEM SET npc_scale.retry_base_delay = '10min';
ALTER SYSTEM SET npc_scale.retry_max_delay = '10min';
SELECT pg_reload_conf() AS reloaded \gset
SELECT npc_test.wait_for(format($$ (SELECT config_reloads > %s FROM npc_scale.worker_status()
                                     WHERE name = 'npc_scale dispatcher') $$, :reloads1)) AS applied \gset
SELECT 'Same question after a failure? ' || clock_timestamp() AS same_prompt \gset
SELECT npc_test.use_gpus(ARRAY['faulty', 'fast0'], ARRAY[1, 16]);
UPDATE npc_scale.gpu_endpoints SET enabled = false WHERE gpu_id = 2;
SELECT npc_test.wait_for('npc_test.fleet_loaded()') AS fleet_loaded \gset
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 1, "error_status": 500}') AS faults \gset
SELECT npc_scale.request_decision(5301, 'build', :'same_prompt', 5, '{"temperature": 0}') AS failed_once \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT status = 'queued' AND attempts = 1 AND error IS NOT NULL
                                         FROM npc_scale.decision_queue WHERE id = %s) $$, :failed_once)),
  'a decision fails once on the faulty endpoint and waits for its retry');
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0, "hang_rate": 1, "hang_ms": 60000}') AS faults \gset
SELECT npc_scale.request_decision(5302, 'build', :'same_prompt', 5, '{"temperature": 0}') AS hanging \gset
SELECT ok(npc_test.wait_for($$ npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 1 $$),
  'an identical request hangs on that endpoint');
UPDATE npc_scale.gpu_endpoints SET enabled = true WHERE gpu_id = 2;
SELECT ok(npc_test.wait_for('npc_test.fleet_loaded()'),
  'the dispatcher has loaded the enabled endpoint');
SELECT ok((SELECT status = 'queued' AND attempts = 1 FROM npc_scale.decision_queue WHERE id = :failed_once),
  'the retry is still held by its back-off');
WITH due AS (UPDATE npc_scale.decision_queue SET not_before = now() WHERE id = :failed_once RETURNING 1)
SELECT npc_scale._wake_dispatcher_at_commit() FROM due \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :failed_once)),
  'the retry is answered while that request still hangs');
SELECT results_eq(format('SELECT status, gpu_id, attempts FROM npc_scale.decision_queue WHERE id = %s', :failed_once),
  $$ VALUES ('done'::text, 2, 2) $$, 'by the other endpoint, not joined to the request on the one that failed it');
SELECT npc_scale.cancel_decision(:hanging) AS cancelled \gset
SELECT npc_test.gpu_reset('faulty') AS reset \gset
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 0, "hang_ms": 3600000}') AS faults \gset
ALTER SYSTEM RESET npc_scale.retry_base_delay;
ALTER SYSTEM RESET npc_scale.retry_max_delay;
SELECT pg_reload_conf() AS reloaded \gset

DELETE FROM npc_scale.decision_queue WHERE npc_id IN (5001, 42) OR npc_id BETWEEN 5101 AND 5110 OR npc_id BETWEEN 5201 AND 5212
   OR npc_id IN (5301, 5302) OR npc_id BETWEEN 5401 AND 5412 OR npc_id BETWEEN 5501 AND 5560;
SELECT * FROM finish();
