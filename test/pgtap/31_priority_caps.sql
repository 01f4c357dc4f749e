-- Under a backlog, work is sent in priority order then age; an endpoint's
-- max_concurrent is never exceeded (the simulated GPU's observed peak says so),
-- not even across an endpoint's renumbering or a change of its URL.
\ir setup/fresh.sql
SELECT plan(39);

-- Backlog: enqueue while no endpoint is enabled, then open one slot.
SELECT npc_test.use_gpus(ARRAY['slow'], ARRAY[1]);
UPDATE npc_scale.gpu_endpoints SET enabled = false;
SELECT npc_test.wait_for('npc_test.fleet_loaded()') AS fleet_loaded \gset
CREATE TEMP TABLE backlog AS
SELECT npc_scale.request_decision(2000 + g, 'build', 'backlog ' || g, (g * 7) % 11) AS id, (g * 7) % 11 AS priority
  FROM generate_series(1, 30) g;
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue d JOIN backlog b USING (id) WHERE d.status = 'queued'), 30,
  'with no enabled endpoint everything waits in the queue');
UPDATE npc_scale.gpu_endpoints SET enabled = true;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM backlog))', '30 s'), 'the backlog drains');
SELECT is(
  (SELECT array_agg(d.id ORDER BY d.started_at, d.id) FROM npc_scale.decision_queue d JOIN backlog b USING (id)),
  (SELECT array_agg(id ORDER BY priority, id) FROM backlog),
  'decisions were started in priority order, then age');

-- Aging (npc_scale.priority_aging, 10 s a step): a priority-10 decision that
-- has waited 200 s counts as priority 0, and goes before newer priority-0
-- work; without aging it would go last.
UPDATE npc_scale.gpu_endpoints SET enabled = false;
SELECT npc_test.wait_for('npc_test.fleet_loaded()') AS fleet_loaded \gset
SELECT npc_scale.request_decision(2100, 'build', 'aged', 10) AS aged_id \gset
UPDATE npc_scale.decision_queue SET created_at = created_at - interval '200 s' WHERE id = :aged_id;
-- And one from a thousand years ago (a restored dump, a clock stepped
-- back): its steps of aging overflow an int, and must not fail the claim.
SELECT npc_scale.request_decision(2100, 'build', 'ancient', 10) AS ancient_id \gset
UPDATE npc_scale.decision_queue SET created_at = created_at - interval '1000 years' WHERE id = :ancient_id;
CREATE TEMP TABLE fresh AS
SELECT npc_scale.request_decision(2100 + g, 'build', 'fresh ' || g, 0) AS id FROM generate_series(1, 5) g;
UPDATE npc_scale.gpu_endpoints SET enabled = true;
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY(SELECT id FROM fresh) || ARRAY[%s, %s]::bigint[])',
                                  :aged_id, :ancient_id), '30 s'),
  'the aged decisions and the fresh ones are answered');
SELECT is((SELECT array_agg(id ORDER BY started_at, id) FROM npc_scale.decision_queue
            WHERE id IN (:aged_id, :ancient_id) OR id IN (SELECT id FROM fresh)),
          (SELECT ARRAY[:aged_id, :ancient_id]::bigint[] || array_agg(id ORDER BY id) FROM fresh),
  'the aged priority-10 decisions were started first, then the fresh ones in order');
SELECT is((SELECT status || ' ' || attempts FROM npc_scale.decision_queue WHERE id = :ancient_id), 'done 1',
  'the thousand-year-old one was claimed and answered at its first attempt');

-- Caps: 4 slots on a GPU that takes 40 ms per request, 60 decisions at once.
SELECT npc_test.gpu_reset('slow');
SELECT npc_test.use_gpus(ARRAY['slow'], ARRAY[4]);
CREATE TEMP TABLE burst AS SELECT id FROM npc_test.burst(3000, 60, 'burst') AS id;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM burst))', '30 s'), 'the burst drains');
SELECT is(npc_test.gpu_metric('slow', 'fake_gpu_peak_running'), 4::numeric,
  'the GPU never saw more than max_concurrent = 4 requests at once (and saw 4)');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue d JOIN burst USING (id) WHERE status = 'done' AND attempts = 1), 60,
  'all 60 done, each in one attempt');

-- The urgent reserve: the fastest endpoint keeps 20% of its slots for
-- priority 0-2 until work has waited npc_scale.reserve_wait for a slot. With
-- the wait raised to 10 minutes, a burst of priority-5 work (200 ms of it) never
-- takes the last of 5 slots, and what was claimed and handed back unsent
-- does not count as an attempt.
CREATE TEMP TABLE reloads AS
  SELECT config_reloads FROM npc_scale.worker_status() WHERE name LIKE '%dispatcher%';
ALTER SYSTEM SET npc_scale.reserve_wait = '10min';
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for($$ SELECT (SELECT config_reloads FROM npc_scale.worker_status() WHERE name LIKE '%dispatcher%')
                                 > (SELECT config_reloads FROM reloads) $$), 'the dispatcher reloaded its configuration');
SELECT npc_test.use_gpus(ARRAY['slow'], ARRAY[5]);
-- One decision first: the reserve is on the fastest endpoint with latency samples.
SELECT npc_scale.request_decision(3101, 'build', 'reserve: sample', 0) AS sample_id \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :sample_id)), 'a first decision is answered');
SELECT npc_test.gpu_reset('slow') IS NOT NULL AS reset \gset
CREATE TEMP TABLE burst5 AS SELECT id FROM npc_test.burst(3200, 20, 'reserve burst') AS id;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM burst5))', '30 s'), 'the priority-5 burst drains');
SELECT is(npc_test.gpu_metric('slow', 'fake_gpu_peak_running'), 4::numeric,
  'priority 5 never took the reserved fifth slot (peak 4 of 5)');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue d JOIN burst5 USING (id) WHERE status = 'done' AND attempts = 1), 20,
  'all 20 done, each in one attempt (hand-backs are not attempts)');
-- And priority 0 takes the reserved slot while priority-5 work waits: six
-- priority-5 decisions, held at the GPU, fill the four open slots; an urgent
-- one is then the fifth request the GPU sees.
SELECT npc_test.gpu_reset('slow') IS NOT NULL AS reset \gset
SELECT npc_test.gpu_faults('slow', '{"hang_rate": 1}') IS NOT NULL AS held \gset
CREATE TEMP TABLE waiting5 AS SELECT id FROM npc_test.burst(3300, 6, 'reserve wait ' || clock_timestamp()) AS id;
SELECT ok(npc_test.wait_for($$ npc_test.gpu_metric('slow', 'fake_gpu_inflight') = 4 $$),
  'four priority-5 decisions are in flight');
SELECT npc_scale.request_decision(3399, 'defend', 'reserve: urgent ' || clock_timestamp(), 0) AS urgent \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT status = 'running' FROM npc_scale.decision_queue WHERE id = %s)
                                      AND npc_test.gpu_metric('slow', 'fake_gpu_inflight') = 5 $$, :urgent)),
  'a priority-0 decision is sent to the fifth slot');
SELECT is(npc_test.gpu_metric('slow', 'fake_gpu_requests_total'), 5::numeric,
  'while the other two priority-5 decisions still wait (five requests in all)');
SELECT npc_test.gpu_release('slow') AS released \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY(SELECT id FROM waiting5) || %s::bigint)', :urgent), '30 s'),
  'all seven finish once released');
ALTER SYSTEM RESET npc_scale.reserve_wait;
SELECT pg_reload_conf() AS reloaded \gset
SELECT npc_test.wait_for($$ SELECT (SELECT config_reloads FROM npc_scale.worker_status() WHERE name LIKE '%dispatcher%')
                                   > (SELECT config_reloads FROM reloads) + 1 $$) AS reset_applied \gset

-- Renumbering an endpoint while its requests are in flight: the old row
-- drains, and its requests count against the new row's cap, which is the
-- same server's. 9 requests on 3 slots; the server holds every request
-- until the test releases them (the renumbering lands while the first
-- three are held, and anything sent meanwhile is held too).
SELECT npc_test.use_gpus(ARRAY['faulty'], ARRAY[3]);
SELECT npc_test.gpu_reset('faulty') IS NOT NULL AS reset \gset
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1}') IS NOT NULL AS held \gset
CREATE TEMP TABLE renumber AS
  SELECT id FROM npc_test.burst(3400, 9, 'renumber ' || clock_timestamp()) AS id;  -- never cached
SELECT ok(npc_test.wait_for($$ npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 3 $$),
  'three requests in flight on the old row');
UPDATE npc_scale.gpu_endpoints SET gpu_id = 7;
SELECT ok(npc_test.wait_for($$ EXISTS (SELECT FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND draining AND in_flight = 3)
                               AND EXISTS (SELECT FROM npc_scale.endpoint_stats WHERE gpu_id = 7 AND NOT draining) $$),
  'the dispatcher has the new row, and the old member draining its three');
SELECT ok(npc_test.gpu_release('faulty'), 'the held requests are released');
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM renumber))', '30 s'), 'all nine finish');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_peak_inflight'), 3::numeric,
  'the server never saw more than its cap of 3 across the renumbering');
SELECT results_eq('SELECT * FROM npc_test.done_once_by_gpu(ARRAY(SELECT id FROM renumber))', $$ VALUES (1, 3), (7, 6) $$,
  'three answered by the old row, six by the new one, each in one attempt');

-- A row pointed at another server while its requests are in flight, and a
-- new row for the old server: the old server's requests drain on the old
-- member and count against the new row's cap. (Row 1 is parked too, so
-- that row 2 is the only way to the fleet: without that counting it would
-- send three more at once.)
SELECT npc_test.use_gpus(ARRAY['faulty'], ARRAY[3]);
SELECT npc_test.gpu_reset('faulty') IS NOT NULL AS reset \gset
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1}') IS NOT NULL AS held \gset
CREATE TEMP TABLE repoint AS
  SELECT id FROM npc_test.burst(3500, 9, 'repoint ' || clock_timestamp()) AS id;  -- never cached
SELECT ok(npc_test.wait_for($$ npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 3 $$),
  'three requests in flight on row 1');
-- Before the dispatcher has the change (here: not even committed), the
-- counters of row 1's server are not shown under the URL it now names.
SELECT ok(npc_test.wait_for($$ (SELECT in_flight = 3 AND endpoint = npc_test.gpu_url('faulty')
                                   FROM npc_scale.endpoint_stats WHERE gpu_id = 1) $$),
  'endpoint_stats shows the three under row 1''s URL (published every 100 ms)');
BEGIN;
UPDATE npc_scale.gpu_endpoints SET endpoint = npc_test.gpu_url('slow') WHERE gpu_id = 1;
SELECT results_eq($$ SELECT endpoint, in_flight FROM npc_scale.endpoint_stats WHERE gpu_id = 1 $$,
  $$ VALUES (NULL::text, 3) $$,
  'a row pointed at another server: its old server''s counters are not shown under the new URL');
ROLLBACK;
WITH repointed AS (
  UPDATE npc_scale.gpu_endpoints SET endpoint = npc_test.gpu_url('slow'), enabled = false WHERE gpu_id = 1 RETURNING 1)
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent)
SELECT 2, npc_test.gpu_url('faulty'), 3 FROM repointed;
SELECT ok(npc_test.wait_for($$ EXISTS (SELECT FROM npc_scale.endpoint_stats
                                        WHERE gpu_id = 1 AND draining AND in_flight = 3 AND endpoint IS NULL) $$),
  'endpoint_stats shows the old member draining its three, without the row''s new URL');
SELECT ok(npc_test.wait_for($$ EXISTS (SELECT FROM npc_scale.endpoint_stats WHERE gpu_id = 2 AND NOT draining) $$),
  'the dispatcher has the new row for the old server');
SELECT ok(npc_test.gpu_release('faulty'), 'the held requests are released');
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM repoint))', '30 s'), 'all nine finish');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_peak_inflight'), 3::numeric,
  'the server never saw more than its cap of 3 when its row changed');
SELECT results_eq('SELECT * FROM npc_test.done_once_by_gpu(ARRAY(SELECT id FROM repoint))', $$ VALUES (1, 3), (2, 6) $$,
  'three answered through row 1, six through row 2, each in one attempt');

-- generate() counts its own wait for a slot: with the one unreserved slot of
-- two busy, a priority-5 call takes the reserved one after reserve_wait
-- instead of waiting for the busy slot to free (on an idle fleet it waited
-- until statement_timeout).
SELECT npc_test.use_gpus(ARRAY['faulty'], ARRAY[2]);
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0, "slow_rate": 0, "hang_rate": 0}') IS NOT NULL AS calm \gset
SELECT ok(length(npc_scale.generate('reserve: a first sample ' || clock_timestamp(), 0)) > 0,
  'a first generate() gives the endpoint latency samples (the reserve is on it)');
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1}') IS NOT NULL AS held \gset
SELECT npc_scale.request_decision(3590, 'build', 'reserve: occupy ' || clock_timestamp(), 0) AS occupy \gset
SELECT ok(npc_test.wait_for($$ npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 1 $$),
  'a decision held at the server occupies the unreserved slot');
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 0}') IS NOT NULL AS answering \gset
SELECT npc_test.gpu_reset('faulty') IS NOT NULL AS reset \gset
SET statement_timeout = '20s';
SELECT ok(length(npc_scale.generate('reserve: priority 5 ' || clock_timestamp(), 5)) > 0,
  'a priority-5 generate() is answered');
RESET statement_timeout;
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_peak_inflight'), 2::numeric,
  'on the reserved slot, while the held decision still occupied the other');
SELECT ok(npc_test.gpu_release('faulty'), 'the held decision is released');
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :occupy), '30 s'), 'and finishes');

DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 2000 AND 3600;
SELECT * FROM finish();
