-- generate(): synchronous, through shared-memory slots; cancellable by
-- statement_timeout; clear errors when the fleet is down or empty.
SELECT plan(11);
SELECT npc_test.use_gpus(ARRAY['fast0']);
SELECT npc_test.gpu_reset('fast0');

SELECT is(npc_scale.generate('Attack or trade?', 1, '{"choices": ["attack", "trade"]}') IN ('attack', 'trade'), true,
  'with choices, the answer is one of them');
SELECT is(npc_scale.generate('Describe the village', 5, '{"temperature": 0, "max_tokens": 5}'),
          npc_scale.generate('Describe the village', 5, '{"temperature": 0, "max_tokens": 5}'),
  'a repeated temperature-0 call gets the same answer');
SELECT is(cardinality(regexp_split_to_array(npc_scale.generate('Describe the village', 5, '{"max_tokens": 7, "seed": 3}'), ' ')), 7,
  'max_tokens reaches the GPU');
SELECT is(npc_test.gpu_metric('fast0', 'fake_gpu_requests_total'), 3::numeric,
  'four calls, three requests at the GPU: the repeated deterministic one was a cache hit');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE prompt = 'Describe the village'), 0,
  'and no rows in the decision queue');

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

-- Fleet down: nothing listens at the endpoint → clear error after the attempts.
SELECT npc_test.use_gpus(ARRAY['down']);
SELECT throws_like($$ SELECT npc_scale.generate('Anyone?', 5) $$,
  'generate() failed: gave up after % attempts: %onnect%', 'a down fleet is a clear error');
-- Its breaker is open now: the next call fails at once, saying why, instead
-- of waiting for a slot that will not come (the timeout only bounds a regression).
SET statement_timeout = '10 s';
SELECT throws_like($$ SELECT npc_scale.generate('Anyone there now?', 5) $$,
  'generate() failed: no GPU endpoint is accepting requests: every enabled one is failing (circuit breaker open); last error: GPU 1: %onnect%',
  'a fleet whose breakers are all open is a clear error, not a wait');
RESET statement_timeout;
DELETE FROM npc_scale.gpu_endpoints;
SELECT throws_like($$ SELECT npc_scale.generate('Anyone?', 5) $$,
  '%no enabled GPU endpoint%', 'no endpoints is a clear error');

SELECT * FROM finish();
