-- Transient errors are retried up to npc_scale.max_attempts, then the decision
-- fails with the last error; permanent errors fail at once; deadlines expire;
-- a misconfigured endpoint is the endpoint's failure.
\ir setup/fresh.sql
SELECT plan(48);

SELECT npc_test.use_gpus(ARRAY['faulty']);
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 1.0, "error_status": 503, "retry_after": 0}');
SELECT npc_test.gpu_reset('faulty');
SELECT npc_scale.request_decision(4001, 'attack', 'Attack now?', 2) AS id1 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id1), '30 s'), 'the decision finishes');
SELECT results_eq(format('SELECT status, attempts FROM npc_scale.decision_queue WHERE id = %s', :id1),
  format('VALUES (''failed''::text, %s)', current_setting('npc_scale.max_attempts')),
  'it failed after max_attempts attempts');
SELECT matches((SELECT error FROM npc_scale.decision_queue WHERE id = :id1),
  '^gave up after \d+ attempts: HTTP 503', 'its error says why: the last HTTP 503');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_requests_total'), current_setting('npc_scale.max_attempts')::numeric,
  'the GPU saw exactly max_attempts requests');

-- An answer the server aborted (a 200, finish_reason "abort", half the
-- text) is retried like a transient error, and never kept or cached.
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0, "abort_rate": 1.0}');
SELECT npc_test.gpu_reset('faulty');
SELECT 'Abort now? ' || gen_random_uuid() AS abort_prompt \gset
SELECT npc_scale.request_decision(4021, 'attack', :'abort_prompt', 2, '{"temperature": 0}') AS id_abort \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_abort), '30 s'), 'the aborted decision finishes');
SELECT results_eq(format('SELECT status, attempts, response FROM npc_scale.decision_queue WHERE id = %s', :id_abort),
  format('VALUES (''failed''::text, %s, NULL::text)', current_setting('npc_scale.max_attempts')),
  'it failed after max_attempts attempts, no partial text kept');
SELECT matches((SELECT error FROM npc_scale.decision_queue WHERE id = :id_abort),
  'gave up on the answer \(finish_reason "abort"\)$', 'its error says the server gave up on the answer');
SELECT npc_test.gpu_faults('faulty', '{"abort_rate": 0}');
SELECT npc_scale.request_decision(4022, 'attack', :'abort_prompt', 2, '{"temperature": 0}') AS id_again \gset
SELECT is((SELECT status || ' ' || (cache_layer IS NULL) || ' ' || (response <> '')
             FROM npc_scale.await_decision(:id_again, '30 s')),  -- after the aborts' breaker cooldown (5 s)
  'done true true', 'the same question afterwards is answered by the GPU: the partial answer was not cached');

-- A permanent error (the request exceeds the model's context: HTTP 400) is not retried.
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0}');
SELECT npc_scale.request_decision(4002, 'attack', 'Attack now?', 2, '{"max_tokens": 32768}') AS id2 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id2), '30 s'), 'the decision finishes');
SELECT results_eq(format('SELECT status, attempts, error ~ ''HTTP 400'' FROM npc_scale.decision_queue WHERE id = %s', :id2),
  $$ VALUES ('failed'::text, 1, true) $$, 'a 400 fails after one attempt');

-- Deadline: waiting for capacity past its deadline → expired, never sent.
UPDATE npc_scale.gpu_endpoints SET model = 'npc-llm', enabled = false;
SELECT npc_test.wait_for('npc_test.fleet_loaded()') AS fleet_loaded \gset
SELECT npc_test.gpu_reset('faulty');
SELECT npc_scale.request_decision(4003, 'defend', 'Raise walls?', 0, '{}', '150 ms') AS id3 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id3), '10 s'), 'the decision finishes');
SELECT results_eq(format('SELECT status, attempts, error FROM npc_scale.decision_queue WHERE id = %s', :id3),
  $$ VALUES ('expired'::text, 0, 'deadline passed before it was sent'::text) $$,
  'it expired without an attempt');
-- request_decisions() gives the whole batch one deadline; an
-- await_decision() on one of them returns at its expiry, woken by it: its
-- own timeout and the safety-net recheck are an hour here, so without the
-- wake-up statement_timeout would cancel it.
SET npc_scale.await_recheck = '1h';
SET statement_timeout = '20s';
SELECT array_agg(id)::text AS batch_ids FROM npc_scale.request_decisions(ARRAY[4011, 4012, 4013], 'defend',
  ARRAY['Wall 1?', 'Wall 2?', 'Wall 3?'], 0, '{}', '150 ms') AS id \gset
SELECT is((SELECT status FROM npc_scale.await_decision((:'batch_ids'::bigint[])[2], '1 h')), 'expired',
  'await_decision() on a batch member returns when it expires');
RESET statement_timeout;
RESET npc_scale.await_recheck;
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(%L::bigint[])', :'batch_ids')), 'the batch is finished');
SELECT results_eq(format($$ SELECT count(*) FILTER (WHERE status = 'expired' AND attempts = 0
                                                    AND deadline BETWEEN created_at AND created_at + interval '150 ms')
                              FROM npc_scale.decision_queue WHERE id = ANY (%L::bigint[]) $$, :'batch_ids'),
  $$ VALUES (3::bigint) $$, 'all three had the deadline and expired unsent');
UPDATE npc_scale.gpu_endpoints SET enabled = true;
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_requests_total'), 0::numeric, 'the GPU never saw it');

-- Deadline passing in flight: the request's timeout is cut to the deadline,
-- and the decision expires with what its attempt met, not "before it was sent".
-- (The GPU holds it: only the deadline can end it.)
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1}');
SELECT npc_scale.request_decision(4004, 'defend', 'Hold the gate?', 0, '{}', '5 s') AS id4 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id4), '20 s'), 'the decision finishes');
SELECT results_eq(format('SELECT status, attempts, error ~ %L FROM npc_scale.decision_queue WHERE id = %s',
                          '^deadline passed after 1 attempt\(s\); last error: .*Timeout', :id4),
  $$ VALUES ('expired'::text, 1, true) $$,
  'it expired after one attempt, with that attempt''s error');

-- A timeout the request chose (its params.timeout_ms, or one cut to its
-- deadline) that a busy GPU cannot meet is the request's, not the endpoint's:
-- it does not open the breaker, or any role could shut the whole fleet with
-- {"timeout_ms": 1}. (A GPU that answers nothing for the whole
-- npc_scale.request_timeout is still failing: unit test EndpointVerdict.)
SELECT array_agg(npc_scale.request_decision(4100 + i, 'scout', 'Scout the ford?', 5, '{"timeout_ms": 30}'))::text AS ids9
  FROM generate_series(1, 3) i \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(%L::bigint[])', :'ids9'), '20 s'), 'the short-timeout decisions finish');
SELECT results_eq(format($$ SELECT count(*) FILTER (WHERE status = 'failed' AND attempts = %s AND error ~ 'Timeout')
                              FROM npc_scale.decision_queue WHERE id = ANY (%L::bigint[]) $$,
                         current_setting('npc_scale.max_attempts'), :'ids9'),
  $$ VALUES (3::bigint) $$, 'each timed out on every attempt');
SELECT is((SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining), 'closed',
  'and the endpoint''s breaker stayed closed');
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 0}');

-- A misconfigured endpoint (unknown model: HTTP 404) is the endpoint's fault,
-- not the decision's: retried (elsewhere, when there is an elsewhere), and it
-- opens the endpoint's breaker, which then stays open like a down
-- endpoint's until the configuration is fixed.
UPDATE npc_scale.gpu_endpoints SET model = 'no-such-model';
SELECT npc_scale.request_decision(4005, 'attack', 'Attack now?', 2) AS id5 \gset
-- (When it opens depends on the endpoint's earlier failures: watch for it.)
SELECT ok(npc_test.wait_for($$ (SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) = 'open' $$, '20 s'),
  'the 404s open the endpoint''s breaker');
-- Its /health answers, but the breaker's probe also asks /v1/models: the
-- model is not there, so the breaker stays open (it used to close, only to
-- fail the next requests), saying why.
SELECT ok(npc_test.wait_for($$ (SELECT last_error FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining)
                                 LIKE 'health probe: %does not list model "no-such-model"' $$, '20 s'),
  'a probe finds the model missing from the server''s /v1/models');
SELECT last_error_at AS probed_at FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining \gset
SELECT npc_test.gpu_metric('faulty', 'fake_gpu_requests_total') AS requests_then \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT last_error_at FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) > %L $$,
                                   :'probed_at'), '20 s'),
  'another probe finds it missing again');
SELECT results_eq($$ SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining $$, $$ VALUES ('open'::text) $$,
  'the breaker stayed open');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_requests_total'), :requests_then::numeric,
  'and no inference request reached the endpoint between the probes');
UPDATE npc_scale.gpu_endpoints SET model = 'npc-llm';
SELECT ok(npc_test.wait_for($$ (SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) = 'closed' $$, '20 s'),
  'the breaker closes again once a probe finds the endpoint healthy');
-- The decision either used its attempts before the breaker opened, or
-- waited (attempts left) and is answered now.
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id5), '30 s'), 'the decision finishes');
SELECT ok((SELECT status = 'done' OR (status = 'failed' AND attempts = current_setting('npc_scale.max_attempts')::int
                                      AND error ~ 'HTTP 404')
             FROM npc_scale.decision_queue WHERE id = :id5),
  'answered once the endpoint is fixed, or failed with the 404 after max_attempts: never failed early');

-- Cancelling a running decision aborts its GPU request: the endpoint's slot
-- (and the GPU's) frees now, not when the GPU would have answered (in 20 s).
SELECT npc_test.metric('requests_cancelled') AS rc0 \gset
SELECT npc_test.gpu_faults('faulty', '{"slow_rate": 1.0, "slow_ms": 20000}');
SELECT npc_scale.request_decision(4006, 'scout', 'Scout the hills?', 5) AS id6 \gset
SELECT ok(npc_test.wait_for(format('(SELECT status FROM npc_scale.decision_queue WHERE id = %s) = ''running''', :id6)),
  'a slow decision is running');
SELECT ok(npc_scale.cancel_decision(:id6), 'cancel_decision on a running decision returns true');
SELECT ok(npc_test.wait_for(format($$ npc_test.metric('requests_cancelled') = %s + 1
            AND (SELECT in_flight FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) = 0
            AND npc_test.gpu_metric('faulty', 'vllm:num_requests_running') = 0 $$, :rc0), '10 s'),
  'its GPU request was aborted: no longer in flight, here or at the GPU');
SELECT npc_test.gpu_faults('faulty', '{"slow_rate": 0}');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE id = :id6), 'cancelled', 'and it stays cancelled');

-- 429 (honouring Retry-After) and connection failures are transient too:
-- retried up to max_attempts, then failed with the last error.
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 1.0, "error_status": 429, "retry_after": 1}');
SELECT npc_test.gpu_reset('faulty');
SELECT npc_scale.request_decision(4007, 'trade', 'Sell clay?', 5) AS id7 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id7), '30 s'), 'the decision finishes');
SELECT results_eq(format('SELECT status, attempts = %s, error ~ ''HTTP 429'' FROM npc_scale.decision_queue WHERE id = %s',
                         current_setting('npc_scale.max_attempts'), :id7),
  $$ VALUES ('failed'::text, true, true) $$, 'a 429 is retried up to max_attempts');
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0}');
SELECT npc_test.use_gpus(ARRAY['down']);
SELECT npc_scale.request_decision(4008, 'trade', 'Buy clay?', 5) AS id8 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id8), '30 s'), 'the decision finishes');
SELECT results_eq(format('SELECT status, attempts = %s, error ~ ''onnect'' FROM npc_scale.decision_queue WHERE id = %s',
                         current_setting('npc_scale.max_attempts'), :id8),
  $$ VALUES ('failed'::text, true, true) $$, 'a connection failure is retried up to max_attempts');

-- A GPU that answers nothing at all for the whole request_timeout (here
-- 1 s) is failing, whatever timeouts the requests chose: its breaker opens
-- under short-timeout traffic too. Silence adds up over the time requests
-- were in flight: each decision's three 400 ms attempts make 1.2 s of it.
SELECT npc_test.use_gpus(ARRAY['faulty']);
CREATE TEMP TABLE before_reload AS
  SELECT config_reloads FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher';
ALTER SYSTEM SET npc_scale.request_timeout = '1s';
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for($$ (SELECT config_reloads FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher')
                               > (SELECT config_reloads FROM before_reload) $$), 'request_timeout is 1 s');
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1.0}');
SELECT array_agg(npc_scale.request_decision(4110 + i, 'scout', 'Anyone there?', 5, '{"timeout_ms": 400}'))::text AS ids10
  FROM generate_series(1, 6) i \gset
SELECT ok(npc_test.wait_for($$ (SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) = 'open' $$, '20 s'),
  'a GPU silent for the whole request_timeout opens its breaker, though each request had 400 ms');
ALTER SYSTEM RESET npc_scale.request_timeout;
SELECT pg_reload_conf() AS reloaded \gset
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 0}');
SELECT count(npc_scale.cancel_decision(id)) AS cancelled FROM unnest(:'ids10'::bigint[]) id \gset
SELECT ok(npc_test.wait_for($$ (SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) = 'closed' $$, '20 s'),
  'and it closes once the GPU answers again');

-- A wall clock stepped forward mid-request (NTP, a VM resumed) lapses the
-- lease of a request the live dispatcher still has in flight: lease
-- recovery leaves it alone (it would be sent again, or failed as "lease
-- expired" while its answer is on the way). A lapsed lease with no request
-- behind it, made in the same transaction, shows a recovery pass has run.
SELECT npc_test.use_gpus(ARRAY['faulty']);
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1.0}');
SELECT npc_scale.request_decision(4031, 'scout', 'Still there? ' || gen_random_uuid(), 5) AS id31 \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT status FROM npc_scale.decision_queue WHERE id = %s) = 'running'
                                      AND npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 1 $$, :id31)),
  'the request is held at the GPU');
BEGIN;
UPDATE npc_scale.decision_queue SET leased_until = now() - interval '1 s' WHERE id = :id31;
SELECT npc_scale.request_decision(4032, 'scout', 'Orphaned?', 5) AS id32 \gset
UPDATE npc_scale.decision_queue
   SET status = 'running', attempts = current_setting('npc_scale.max_attempts')::int,
       started_at = now(), leased_until = now() - interval '1 s'
 WHERE id = :id32;
COMMIT;
SELECT ok(npc_test.wait_for(format($$ (SELECT status FROM npc_scale.decision_queue WHERE id = %s) = 'failed' $$, :id32)),
  'a lapsed lease with no request behind it is recovered');
SELECT is((SELECT status || ', attempt ' || attempts FROM npc_scale.decision_queue WHERE id = :id31), 'running, attempt 1',
  'in the same pass, the lapsed lease of a request in flight is left alone');
SELECT npc_test.gpu_release('faulty');
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 0}');
SELECT is((SELECT status FROM npc_scale.await_decision(:id31, '20 s')), 'done', 'and its answer is written');
SELECT is((SELECT attempts FROM npc_scale.decision_queue WHERE id = :id31), 1, 'at its first attempt');

-- A 503 that says when to come back (Retry-After: a maintenance window
-- behind a proxy) closes its endpoint for that long at once: the decision
-- waits for it, one attempt spent, instead of spending them all in a second.
-- (10 s: the fault is cleared well within it, so the second attempt is the last.)
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 1.0, "error_status": 503, "retry_after": 10}');
SELECT npc_scale.request_decision(4033, 'scout', 'Gate open yet? ' || gen_random_uuid(), 5) AS id33 \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT breaker FROM npc_scale.endpoint_stats WHERE gpu_id = 1 AND NOT draining) = 'open'
                                      AND (SELECT status = 'queued' AND attempts = 1 FROM npc_scale.decision_queue WHERE id = %s) $$, :id33)),
  'a 503 with a Retry-After opens its endpoint at once; the decision waits with one attempt spent');
SELECT npc_test.gpu_faults('faulty', '{"error_rate": 0}');
SELECT is((SELECT status FROM npc_scale.await_decision(:id33, '30 s')), 'done', 'and it is answered once the endpoint is back');
SELECT is((SELECT attempts FROM npc_scale.decision_queue WHERE id = :id33), 2, 'at its second attempt');

DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 4001 AND 4008 OR npc_id BETWEEN 4011 AND 4013 OR npc_id IN (4021, 4022, 4031, 4032, 4033) OR npc_id BETWEEN 4101 AND 4116;

SELECT * FROM finish();
