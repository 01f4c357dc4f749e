-- An endpoint with api = 'chat': decisions and generate() go to
-- /v1/chat/completions as messages (params.system as the first one), and
-- the answer is the message's content. Commits and cleans up after itself.
\ir setup/fresh.sql
SELECT plan(8);
DELETE FROM npc_scale.gpu_endpoints;
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, api) VALUES (37, npc_test.gpu_url('fast2'), 'chat');
SELECT ok(npc_test.wait_for($$ npc_test.fleet_loaded()
                                AND EXISTS (SELECT FROM npc_scale.endpoint_stats WHERE gpu_id = 37 AND NOT draining) $$),
  'the dispatcher has loaded the chat endpoint');
SELECT npc_test.gpu_reset('fast2') AS reset \gset

SELECT npc_scale.request_decision(14001, 'build', 'What should village 3 build?', 5,
  '{"max_tokens": 5, "system": "You are a Travian NPC.", "cache": false}') AS d1 \gset
SELECT npc_scale.request_decision(14002, 'attack', 'Attack village 9?', 5,
  '{"choices": ["attack", "wait"], "cache": false}') AS d2 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s, %s]::bigint[])', :d1, :d2)),
  'both decisions finish');
SELECT results_eq(
  format($$ SELECT status, gpu_id, cardinality(regexp_split_to_array(response, ' ')), finish_reason
              FROM npc_scale.decision_queue WHERE id = %s $$, :d1),
  $$ VALUES ('done'::text, 37, 5, 'length'::text) $$,
  'the answer is the message content: max_tokens words, cut (length)');
SELECT results_eq(
  format($$ SELECT status, response IN ('attack', 'wait'), finish_reason FROM npc_scale.decision_queue WHERE id = %s $$, :d2),
  $$ VALUES ('done'::text, true, 'stop'::text) $$,
  'params.choices constrain a chat answer too (stop)');
SELECT is(npc_test.gpu_metric('fast2', 'fake_gpu_chat_requests_total'), 2::numeric,
  'both went to /v1/chat/completions');
-- The simulated GPU counts a chat prompt as one "role: content" line per
-- message: the system message is there, ahead of the user's.
SELECT is(npc_test.gpu_metric('fast2', 'vllm:prompt_tokens_total'),
  (SELECT sum(cardinality(regexp_split_to_array(line, ' ')))::numeric
     FROM unnest(ARRAY['system: You are a Travian NPC.', 'user: What should village 3 build?',
                       'user: Attack village 9?']) AS line),
  'params.system is sent as a system message');

SELECT is(cardinality(regexp_split_to_array(npc_scale.generate('Name a resource', 5, '{"max_tokens": 3, "cache": false}'), ' ')), 3,
  'generate() on a chat endpoint returns the message content');
SELECT is(npc_test.gpu_metric('fast2', 'fake_gpu_chat_requests_total'), 3::numeric, 'from /v1/chat/completions');

DELETE FROM npc_scale.decision_queue WHERE npc_id IN (14001, 14002);
DELETE FROM npc_scale.gpu_endpoints;
SELECT * FROM finish();
