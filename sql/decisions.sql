-- The decision API: happy path with deterministic answers from the simulated
\set SHOW_CONTEXT never
-- GPU, and every kind of bad input (SQLSTATE shown after each error).
SELECT npc_test.use_gpus(ARRAY['fast0']);
-- Answers from an earlier run would come from the cache.
SELECT npc_scale.cache_clear() \gset

SELECT npc_scale.request_decision(501, 'build', 'Village 3 has 900 wood. Build?', 4,
                                  '{"temperature": 0, "max_tokens": 5}') AS id \gset
SELECT status, attempts, response, error, cache_layer, finish_reason
  FROM npc_scale.await_decision(:id, '10 s');

SELECT npc_scale.request_decision(502, 'attack', 'Attack village 9?', 0,
                                  '{"choices": ["attack", "wait"], "seed": 7}') AS id \gset
SELECT status, response, finish_reason FROM npc_scale.await_decision(:id, '10 s');

-- A batch keeps input order.
SELECT count(*) AS queued, bool_and(id > 0) AS ids
  FROM npc_scale.request_decisions(ARRAY[601, 602, 603], 'move', ARRAY['go north', 'go east', 'go south'],
                                   6, '{"temperature": 0, "max_tokens": 3}') AS id;
SELECT q.npc_id, a.status, a.response
  FROM npc_scale.decision_queue q,
       LATERAL npc_scale.await_decision(q.id, '10 s') a
 WHERE q.npc_id IN (601, 602, 603) ORDER BY q.id;

SELECT npc_scale.generate('Name a resource', 5, '{"temperature": 0, "max_tokens": 4}');
SELECT npc_scale.generate('Pick one', 1, '{"choices": ["wood", "clay", "iron", "wheat"], "temperature": 0}');

-- Bad input: each is an ERROR naming the value, and nothing is inserted.
SELECT count(*) AS rows_before FROM npc_scale.decision_queue \gset
SELECT npc_scale.request_decision(NULL, 'build', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, '', 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, NULL, 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', '');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', E' \t\n ');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 11);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, '{"max_token": 5}');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, '{"temperature": "hot"}');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, '{"max_tokens": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', repeat('x', current_setting('npc_scale.max_prompt_bytes')::int + 1));
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, '{}', '-1 s');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(ARRAY[1, 2], 'build', ARRAY['only one']);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(ARRAY[1, 2], 'build', ARRAY['ok', '']);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(ARRAY[1, NULL], 'build', ARRAY['ok', 'ok']);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(ARRAY[[1, 2]], 'build', ARRAY[['ok', 'ok']]);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, 'null');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.generate('x', 12);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.generate('x', 5, '{"stop": 3}');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.generate(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.generate('   ');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.await_decision(1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.cancel_decision(NULL);
\echo :LAST_ERROR_SQLSTATE
-- Limits: a tag-sized decision_type, params within the prompt's limit,
-- deadlines and await timeouts that are waits, not overflows.
SELECT npc_scale.request_decision(1, repeat('é', 40), 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5,
  jsonb_build_object('system', repeat('s', current_setting('npc_scale.max_prompt_bytes')::int)));
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, '{"temperature": 1e400}');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decision(1, 'build', 'x', 5, '{}', '1000000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.await_decision(1, '1000000 years');
\echo :LAST_ERROR_SQLSTATE
-- request_decisions: the same rules as request_decision, by position, and
-- the shared arguments even for an empty batch.
SELECT npc_scale.request_decisions(ARRAY[1, 2], E'\t', ARRAY['ok', 'ok']);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(ARRAY[]::bigint[], 'build', ARRAY[]::text[], 11);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(ARRAY[1], 'build', ARRAY['ok'], 5, '{}', '1000000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(NULL, 'build', ARRAY['ok']);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.cache_set('k', 'v', '1000000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.cache_set('k', 'v', '-1 s');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.cache_set('k', repeat('v', 1048577), '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.cache_set('k', 'v', '1 hour', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.cache_delete(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.unschedule(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.request_decisions(ARRAY(SELECT g FROM generate_series(1, 10001) g)::bigint[], 'build',
                                   array_fill('ok'::text, ARRAY[10001]));
\echo :LAST_ERROR_SQLSTATE
-- A cache write waits for its COMMIT: it cannot wait in a prepared transaction.
BEGIN;
SELECT npc_scale.cache_set('k', 'v', '1 hour');
PREPARE TRANSACTION 'npc_scale_cache';
\echo :LAST_ERROR_SQLSTATE
SELECT npc_scale.cache_get('k') AS after_refused_prepare;
SELECT count(*) - :rows_before AS rows_inserted_by_bad_calls FROM npc_scale.decision_queue;
-- Arrays are read by position, whatever their lower bounds.
SELECT count(*) FROM npc_scale.request_decisions('[0:1]={7001,7002}'::bigint[], 'build', '[5:6]={first,second}'::text[]);
SELECT npc_id, prompt FROM npc_scale.decision_queue WHERE npc_id IN (7001, 7002) ORDER BY id;
DELETE FROM npc_scale.decision_queue WHERE npc_id IN (7001, 7002);

-- Endpoints: URL and api are checked.
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (90, 'ftp://gpu.example');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, api) VALUES (90, 'http://gpu.example:8000', 'embeddings');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent) VALUES (90, 'http://gpu.example:8000', 0);
\echo :LAST_ERROR_SQLSTATE
-- Base URLs only: no credentials (the column is readable by everyone), no
-- query, no /v1 (appended by npc_scale), a port in range.
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (90, 'http://user:pw@gpu.example:8000');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (90, 'http://gpu.example:8000/v1/');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (90, 'http://gpu.example:99999');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (90, 'http://gpu example:8000');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (90, 'http://gpu.example:8000?x=1');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, weight) VALUES (90, 'http://gpu.example:8000', 'NaN');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, weight) VALUES (90, 'http://gpu.example:8000', 'Infinity');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, api_key) VALUES (90, 'http://gpu.example:8000', E'sk-secret\n');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, labels) VALUES (90, 'http://gpu.example:8000', '["rtx"]');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, labels) VALUES (90, 'http://gpu.example:8000', 'null');
\echo :LAST_ERROR_SQLSTATE
-- A proxy's path prefix, IPv6 addresses (with or without a port) and
-- Docker-style host names are fine.
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, enabled) VALUES
  (91, 'http://gateway.example/gpus/7/', false), (92, 'http://[::1]:8000', false),
  (93, 'http://[2001:0db8::1]', false), (94, 'https://vllm_0:8000', false);
SELECT gpu_id, endpoint FROM npc_scale.gpu_endpoints WHERE gpu_id BETWEEN 91 AND 94 ORDER BY gpu_id;
DELETE FROM npc_scale.gpu_endpoints WHERE gpu_id BETWEEN 91 AND 94;
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (90, 'http://gpu.example:8000/');
SELECT gpu_id, endpoint, model, api, max_concurrent, enabled FROM npc_scale.gpu_endpoints WHERE gpu_id = 90;
-- One row per server: its URL is written one way (host in lower case, no
-- default port, no trailing /), so another spelling of it is a duplicate.
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, enabled) VALUES (91, 'http://GPU.Example:08000', false);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, enabled) VALUES
  (91, 'http://Gateway.example:80/GPUs/7/', false), (92, 'https://[::ABCD]:443', false), (93, 'https://gpu.example:80', false);
SELECT gpu_id, endpoint FROM npc_scale.gpu_endpoints WHERE gpu_id BETWEEN 91 AND 93 ORDER BY gpu_id;
-- A seeding script's ON CONFLICT DO NOTHING passes over a server already there.
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, enabled) VALUES (94, 'http://GPU.example:8000/', false)
    ON CONFLICT DO NOTHING;
INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, enabled) VALUES (94, 'http://gpu.EXAMPLE:8000/', false)
    ON CONFLICT DO NOTHING;
SELECT count(*) AS rows_for_gpu_94 FROM npc_scale.gpu_endpoints WHERE gpu_id = 94;
DELETE FROM npc_scale.gpu_endpoints WHERE gpu_id BETWEEN 90 AND 94;

DELETE FROM npc_scale.decision_queue WHERE npc_id IN (501, 502, 601, 602, 603);
