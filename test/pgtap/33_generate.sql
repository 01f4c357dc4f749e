-- generate(): synchronous, through shared-memory slots; cancellable by
-- statement_timeout; clear errors when the fleet is down or empty.
\ir setup/fresh.sql
SELECT plan(22);
SELECT npc_test.use_gpus(ARRAY['fast0']);
SELECT npc_test.gpu_reset('fast0');
SELECT npc_scale.cache_clear();  -- answers cached by an earlier run of this file would hide requests

SELECT is(npc_scale.generate('Attack or trade?', 1, '{"choices": ["attack", "trade"]}') IN ('attack', 'trade'), true,
  'with choices, the answer is one of them');
SELECT is(npc_scale.generate('Describe the village', 5, '{"temperature": 0, "max_tokens": 5}'),
          npc_scale.generate('Describe the village', 5, '{"temperature": 0, "max_tokens": 5}'),
  'a repeated temperature-0 call gets the same answer');
SELECT is(cardinality(regexp_split_to_array(npc_scale.generate('Describe the village', 5, '{"max_tokens": 7, "seed": 3}'), ' ')), 7,
  'max_tokens reaches the GPU');
SELECT is(npc_test.gpu_metric('fast0', 'fake_gpu_requests_total'), 3::numeric,
  'four calls, three requests at the GPU: the repeated deterministic one was a cache hit');
-- An answer over npc_scale.max_response_bytes (32 kB here) is an error, and
-- stays one when the same request meets it in the cache (filled meanwhile).
SELECT l1_bytes AS b0 FROM npc_scale.cache_stats \gset
SELECT throws_like($$ SELECT npc_scale.generate('Tell the whole saga', 5, '{"temperature": 0, "max_tokens": 12000}') $$,
  '%exceeds npc_scale.max_response_bytes%', 'an answer over max_response_bytes is an error');
-- Only that answer is over 32 kB: L1 growing by that much is its fill.
SELECT ok(npc_test.wait_for($$ (SELECT l1_bytes FROM npc_scale.cache_stats) > $$ || :b0 || $$ + 32768 $$),
  'its answer was cached');
SELECT throws_like($$ SELECT npc_scale.generate('Tell the whole saga', 5, '{"temperature": 0, "max_tokens": 12000}') $$,
  '%exceeds npc_scale.max_response_bytes%', 'and so is the same answer met in the cache');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE prompt = 'Describe the village'), 0,
  'and no rows in the decision queue');
-- A request the server refuses as invalid fails the same on every GPU: the
-- caller's input (22023), not a fleet failure (58000).
SELECT matches(npc_test.error_of($$ SELECT npc_scale.generate('Tell a long story', 5, '{"max_tokens": 32768}') $$),
  '^22023: generate\(\) request was rejected by the GPU server: .*maximum context length',
  'a request the GPU server rejects is 22023, with the server''s reason');
-- So is an answer cut at max_tokens before it completed a choice (the
-- server keeps max_tokens under a choice constraint): asking again would
-- get the same, so it is not retried.
SELECT matches(npc_test.error_of($$ SELECT npc_scale.generate('Which building?', 5,
                 '{"choices": ["the great granary of the north"], "max_tokens": 2}') $$),
  '^22023: generate\(\) request was rejected by the GPU server: the answer "the great" was cut at max_tokens',
  'a choice cut at max_tokens is 22023, naming max_tokens');
-- params.system on a completions endpoint (fast0): it leads the prompt, so
-- the decision is served wherever the router sends it. The row is gpu_id 0,
-- a valid id like any other (once a "none" marker that left gpu_id NULL).
UPDATE npc_scale.gpu_endpoints SET gpu_id = 0;
SELECT ok(npc_test.wait_for($$ (SELECT array_agg(gpu_id) FROM npc_scale.endpoint_stats WHERE NOT draining) = '{0}' $$),
  'the dispatcher has the row as gpu_id 0');
SELECT npc_scale.request_decision(3301, 'talk', 'Greet the player', 5, '{"system": "You are a guard.", "max_tokens": 3}') AS sys_id \gset
SELECT is((SELECT status || coalesce(': ' || error, '') || ' by gpu ' || coalesce(gpu_id::text, 'NULL')
             FROM npc_scale.await_decision(:sys_id, '10 s')), 'done by gpu 0',
  'a decision with a system prompt is served by a completions endpoint, and gpu_id 0 is recorded');
DELETE FROM npc_scale.decision_queue WHERE npc_id = 3301;

-- A hanging GPU: statement_timeout interrupts generate() and frees its slot.
SELECT npc_test.use_gpus(ARRAY['faulty']);
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1.0, "hang_ms": 60000, "error_rate": 0}');
SET statement_timeout = '300ms';
SELECT is(npc_test.error_of($$ SELECT npc_scale.generate('Hang?', 5) $$),
  '57014: canceling statement due to statement timeout', 'statement_timeout cancels a hanging generate()');
RESET statement_timeout;
SELECT ok(npc_test.wait_for($$ npc_test.metric('sync_slots_busy') = 0 $$), 'its slot is freed');
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 0}');
SELECT ok(npc_scale.generate('Still alive?', 5) <> '', 'generate() works again afterwards');
-- A server that ignores structured_outputs (vLLM before 0.10.2) answers
-- free text: that is not taken as the answer; tried again, then a clear error.
SELECT npc_test.gpu_faults('faulty', '{"ignore_structured_outputs": true}');
SELECT throws_like($$ SELECT npc_scale.generate('Attack or trade?', 1, '{"choices": ["attack", "trade"], "max_tokens": 4}') $$,
  '%the endpoint answered "%", which is not one of params.choices: does it support structured_outputs%',
  'an answer that is none of params.choices is not taken');
SELECT npc_test.gpu_faults('faulty', '{"ignore_structured_outputs": false}');

-- Fleet down: nothing listens at the endpoint → clear error after the attempts.
SELECT npc_test.use_gpus(ARRAY['down']);
SELECT npc_test.metric('sync_retries_held') AS held0 \gset
SELECT throws_like($$ SELECT npc_scale.generate('Anyone?', 5) $$,
  'generate() failed: gave up after % attempts: %onnect%', 'a down fleet is a clear error');
-- On its one GPU its retries were held back for their back-off, not sent
-- again within a millisecond.
SELECT cmp_ok(npc_test.metric('sync_retries_held'), '>', :held0::bigint,
  'its retries on the one GPU waited for their back-off');
-- Its breaker is open now: the next call fails at once, saying why, instead
-- of waiting for a slot that will not come (the timeout only bounds a regression).
SET statement_timeout = '10 s';
SELECT throws_like($$ SELECT npc_scale.generate('Anyone there now?', 5) $$,
  'generate() failed: no GPU endpoint is accepting requests: every enabled one is failing (circuit breaker open); last error: GPU 1: %onnect%',
  'a fleet whose breakers are all open is a clear error, not a wait');
RESET statement_timeout;
-- params as long as request_decision() takes them (npc_scale.max_prompt_bytes),
-- not a smaller limit of generate()'s own; longer ones refused the same way.
SELECT npc_test.use_gpus(ARRAY['fast0']);
SELECT ok(length(npc_scale.generate('long params', 5, jsonb_build_object('max_tokens', 3,
            'stop', to_jsonb(array_fill('zqx'::text, ARRAY[1500]))))) > 0,
  'params of 10 kB are served');
SELECT throws_ok($$ SELECT npc_scale.generate('too long params', 5, jsonb_build_object('max_tokens', 3,
            'stop', to_jsonb(array_fill('zqx'::text, ARRAY[6000])))) $$,
  '54000', NULL, 'params over npc_scale.max_prompt_bytes are refused, as by request_decision()');
DELETE FROM npc_scale.gpu_endpoints;
SELECT throws_like($$ SELECT npc_scale.generate('Anyone?', 5) $$,
  '%no enabled GPU endpoint%', 'no endpoints is a clear error');

SELECT * FROM finish();
