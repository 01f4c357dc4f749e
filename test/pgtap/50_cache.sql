-- The three-tier cache: promotion L3 → L2 → L1, TTL expiry, the L1 budget
-- under an overfill, cached decisions and generate() answers.
\ir setup/fresh.sql
SELECT plan(51);

SELECT npc_scale.cache_clear();
CREATE TEMP TABLE s0 AS SELECT * FROM npc_scale.cache_stats;
-- A shell command's output lines, run by the server (as its OS user).
CREATE OR REPLACE FUNCTION pg_temp.program_output(command text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE out text;
BEGIN
  CREATE TEMP TABLE IF NOT EXISTS program_out (line text);
  TRUNCATE program_out;
  EXECUTE format('COPY program_out FROM PROGRAM %L WITH (FORMAT csv, DELIMITER E''\x1f'', QUOTE E''\x1e'')', command);
  SELECT string_agg(line, E'\n') INTO out FROM program_out;
  RETURN out;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.redis(cmd text) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.program_output(format('redis-cli -p %s %s', current_setting('npc_scale.redis_port'), cmd))
$$;
-- Leaves the one cached generation only in Redis: park_generation() moves
-- the key outside the prefix, cache_clear() empties every layer (at its
-- COMMIT: hence a statement of its own), unpark_generation() puts it back.
-- park_generation() returns how many generations Redis held (the caller
-- expects one).
CREATE TEMP TABLE parked (key text);
CREATE OR REPLACE FUNCTION pg_temp.park_generation() RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  keys text := pg_temp.redis('--scan --pattern ''npc_scale:cache:gen:*''');
  deadline timestamptz := clock_timestamp() + interval '10 s';
BEGIN
  -- The dispatcher fills Redis after the answer's write has committed: the
  -- decision can be seen done a moment before its generation is there.
  WHILE coalesce(keys, '') = '' AND clock_timestamp() < deadline LOOP
    PERFORM pg_sleep(0.02);
    keys := pg_temp.redis('--scan --pattern ''npc_scale:cache:gen:*''');
  END LOOP;
  IF array_length(string_to_array(keys, E'\n'), 1) IS DISTINCT FROM 1 THEN
    RETURN coalesce(array_length(string_to_array(keys, E'\n'), 1), 0);
  END IF;
  TRUNCATE parked;
  INSERT INTO parked VALUES (keys);
  PERFORM pg_temp.redis('RENAME ' || keys || ' npc_scale_test:parked');
  RETURN 1;
END $$;
CREATE OR REPLACE FUNCTION pg_temp.unpark_generation() RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.redis('RENAME npc_scale_test:parked ' || key) FROM parked
$$;

-- Promotion: a row only in L3 …
INSERT INTO npc_scale.cache_store VALUES ('kv:promo', 'granary first', now() + interval '1 hour');
SELECT is(pg_temp.redis('EXISTS npc_scale:cache:kv:promo'), '0', 'the key is not in Redis yet');
SELECT is(npc_scale.cache_get('promo'), 'granary first', 'cache_get finds it in L3');
SELECT is((SELECT l3_hits - (SELECT l3_hits FROM s0) FROM npc_scale.cache_stats), 1::bigint, 'counted as an L3 hit');
SELECT is(pg_temp.redis('GET npc_scale:cache:kv:promo'), 'granary first', '… and promoted to L2 (Redis)');
SELECT cmp_ok(pg_temp.redis('TTL npc_scale:cache:kv:promo')::int, '>', 3000, 'with its remaining TTL');
SELECT is(npc_scale.cache_get('promo'), 'granary first', 'the next read …');
SELECT is((SELECT l1_hits - (SELECT l1_hits FROM s0) FROM npc_scale.cache_stats), 1::bigint, '… is an L1 hit');

-- cache_set writes L1 and L2, not L3 unless persist.
SELECT npc_scale.cache_set('plain', 'v1', '1 hour');
SELECT npc_scale.cache_set('kept', 'v2', '1 hour', true);
SELECT is((SELECT count(*)::int FROM npc_scale.cache_store WHERE key IN ('kv:plain', 'kv:kept')), 1,
  'only the persisted key reaches cache_store');
SELECT ok(npc_scale.cache_delete('kept'), 'cache_delete finds the key');
SELECT ok(npc_scale.cache_get('kept') IS NULL AND NOT EXISTS (SELECT 1 FROM npc_scale.cache_store WHERE key = 'kv:kept'),
  'and removes it from every layer');
-- A later cache_set without persist replaces a persisted value everywhere:
-- the old row must not come back from L3 once the new value expires.
SELECT npc_scale.cache_set('replaced', 'old and persisted', '1 hour', true);
SELECT npc_scale.cache_set('replaced', 'new', '1 hour');
SELECT is((SELECT count(*)::int FROM npc_scale.cache_store WHERE key = 'kv:replaced'), 0,
  'a cache_set without persist removes the key''s older L3 row');
-- A delete in a transaction that rolls back changes nothing the layers keep
-- for good: the value is still served afterwards (from L3, promoted again).
SELECT npc_scale.cache_set('undeleted', 'kept after a rollback', '1 hour', true);
BEGIN;
SELECT npc_scale.cache_delete('undeleted');
ROLLBACK;
SELECT l3_hits AS l3_undeleted FROM npc_scale.cache_stats \gset
SELECT is(npc_scale.cache_get('undeleted'), 'kept after a rollback', 'a rolled-back delete leaves the value served');
SELECT is((SELECT l3_hits - :l3_undeleted FROM npc_scale.cache_stats), 1::bigint,
  '… from L3: the delete took it out of L2 and L1, rollback or not');

-- cache_set is transactional for L1 and L2 too: another session sees the
-- value from COMMIT on, never after a rollback (of the transaction or a
-- savepoint); the transaction reads its own writes meanwhile.
-- cache_get(key) in another session.
CREATE OR REPLACE FUNCTION pg_temp.elsewhere(key text) RETURNS text LANGUAGE sql AS $$
  SELECT pg_temp.program_output(
    format('psql -X -A -t -v ON_ERROR_STOP=1 -h %s -p %s -d %s -c "SELECT npc_scale.cache_get(%s)"',
           current_setting('unix_socket_directories'), current_setting('port'),
           current_database(), quote_literal(key)))
$$;
BEGIN;
SELECT npc_scale.cache_set('tx:a', 'one', '1 hour');
SELECT is(npc_scale.cache_get('tx:a'), 'one', 'a transaction reads its own cache_set');
SELECT is(pg_temp.redis('EXISTS npc_scale:cache:kv:tx:a'), '0', 'which is not in Redis before COMMIT');
SELECT is(pg_temp.elsewhere('tx:a'), NULL, 'nor seen by another session');
ROLLBACK;
SELECT is(npc_scale.cache_get('tx:a'), NULL, 'a rolled-back cache_set leaves nothing');
SELECT is(pg_temp.redis('EXISTS npc_scale:cache:kv:tx:a'), '0', '… in Redis either');
BEGIN;
SELECT npc_scale.cache_set('tx:a', 'two', '1 hour');
COMMIT;
SELECT is(pg_temp.redis('GET npc_scale:cache:kv:tx:a'), 'two', 'at COMMIT the value reaches Redis');
SELECT is(pg_temp.elsewhere('tx:a'), 'two', '… and other sessions');
BEGIN;
SELECT npc_scale.cache_set('tx:b', 'kept', '1 hour');
SAVEPOINT s;
SELECT npc_scale.cache_set('tx:b', 'undone', '1 hour');
SELECT npc_scale.cache_set('tx:c', 'undone', '1 hour');
ROLLBACK TO SAVEPOINT s;
SELECT is(npc_scale.cache_get('tx:b'), 'kept', 'a rollback to a savepoint undoes the cache_set after it');
SAVEPOINT outer_s;
SAVEPOINT inner_s;
SELECT npc_scale.cache_set('tx:d', 'released, then rolled back', '1 hour');
RELEASE SAVEPOINT inner_s;
ROLLBACK TO SAVEPOINT outer_s;
SELECT npc_scale.cache_set('tx:e', 'set, then deleted', '1 hour');
SELECT ok(npc_scale.cache_delete('tx:e'), 'cache_delete finds the transaction''s own value');
SELECT is(npc_scale.cache_get('tx:e'), NULL, '… and removes it');
COMMIT;
SELECT results_eq($$ SELECT pg_temp.redis('GET npc_scale:cache:kv:tx:b'), pg_temp.redis('EXISTS npc_scale:cache:kv:tx:c'),
                            pg_temp.redis('EXISTS npc_scale:cache:kv:tx:d'), pg_temp.redis('EXISTS npc_scale:cache:kv:tx:e') $$,
  $$ VALUES ('kept', '0', '0', '0') $$,
  'at COMMIT only what no rollback undid reaches Redis (a released savepoint belongs to its parent)');
-- A set's TTL runs from cache_set(), as its L3 row's does, not from COMMIT:
-- one that expires inside its transaction reads as a miss there (not as
-- the older committed value) and the key ends as after a delete.
SELECT npc_scale.cache_set('tx:h', 'committed before', '1 hour');
BEGIN;
SELECT npc_scale.cache_set('tx:h', 'brief', '1 s');
SELECT ok(npc_test.wait_for($$ npc_scale.cache_get('tx:h') IS NULL $$, '5 s'),
  'an own cache_set that expired in its transaction is a miss there, not the older value');
COMMIT;
SELECT results_eq($$ SELECT pg_temp.redis('EXISTS npc_scale:cache:kv:tx:h'), pg_temp.elsewhere('tx:h') $$,
  $$ VALUES ('0', NULL::text) $$, 'and after its COMMIT the key is gone');
-- cache_clear takes effect at COMMIT: what reached Redis meanwhile is gone too.
BEGIN;
SELECT npc_scale.cache_set('tx:f', 'before the clear', '1 hour');
SELECT npc_scale.cache_clear();
SELECT is(npc_scale.cache_get('tx:f'), NULL, 'a clear hides the transaction''s own earlier cache_set');
SELECT pg_temp.redis('SET npc_scale:cache:kv:tx:g during-the-clear');
COMMIT;
SELECT results_eq($$ SELECT pg_temp.redis('EXISTS npc_scale:cache:kv:tx:f'), pg_temp.redis('EXISTS npc_scale:cache:kv:tx:g') $$,
  $$ VALUES ('0', '0') $$, 'after the clear''s COMMIT neither is in Redis');

-- Every set of a big transaction reaches Redis at COMMIT: past the bound on
-- replies left unread, COMMIT waits for Redis's replies rather than skip keys.
BEGIN;
SELECT count(npc_scale.cache_set('bulk:' || g, 'value ' || g, '1 hour')) AS bulk_sets FROM generate_series(1, 3000) g;
COMMIT;
SELECT is(pg_temp.program_output(format('redis-cli -p %s --scan --pattern %L | wc -l',
            current_setting('npc_scale.redis_port'), 'npc_scale:cache:kv:bulk:*')), '3000',
  'all 3000 cache_set() of one transaction are in Redis after its COMMIT');
SELECT is(pg_temp.redis('GET npc_scale:cache:kv:bulk:2999'), 'value 2999', '… with their values');

-- TTL: expired entries are misses in every layer.
SELECT npc_scale.cache_set('brief', 'gone soon', '1 s');
SELECT is(npc_scale.cache_get('brief'), 'gone soon', 'fresh entry is a hit');
SELECT ok(npc_test.wait_for($$ npc_scale.cache_get('brief') IS NULL $$, '5 s'), 'after its TTL it is a miss (L1 and L2)');
INSERT INTO npc_scale.cache_store VALUES ('kv:stale', 'old', now() - interval '1 s');
SELECT is(npc_scale.cache_get('stale'), NULL, 'an expired L3 row is a miss');

-- Overfill the L1 budget: it is never exceeded, CLOCK evicts.
SELECT count(*) AS filled FROM (SELECT npc_scale.cache_set('fill' || g, repeat(md5(g::text), 64), '1 hour') FROM generate_series(1, 3000) g) f;
SELECT ok((SELECT l1_bytes <= l1_budget_bytes AND l1_budget_bytes > 0 FROM npc_scale.cache_stats),
  'L1 bytes stay within npc_scale.cache_memory after writing ~6 MB into 4 MB');
SELECT cmp_ok((SELECT evictions - (SELECT evictions FROM s0) FROM npc_scale.cache_stats), '>', 0::bigint, 'by evicting');

-- Decisions: a repeated deterministic decision is answered by the cache.
SELECT npc_test.use_gpus(ARRAY['fast1']);
SELECT npc_scale.request_decision(9101, 'build', 'Cache me: what next?', 5, '{"temperature": 0, "max_tokens": 6}') AS d1 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :d1)), 'first decision answered');
SELECT npc_scale.request_decision(9102, 'build', 'Cache me: what next?', 5, '{"temperature": 0, "max_tokens": 6}') AS d2 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :d2)), 'second decision answered');
SELECT results_eq(format('SELECT status, cache_layer, response = (SELECT response FROM npc_scale.decision_queue WHERE id = %s) FROM npc_scale.decision_queue WHERE id = %s', :d1, :d2),
  $$ VALUES ('done'::text, 'l1'::text, true) $$, 'the repeat came from L1 with the same answer');

-- A decision whose answer is only in Redis (L1 lost, e.g. after a restart):
-- the hand-off sends it before asking Redis, and the L2 hit withdraws the
-- request; the table path answers from the promoted entry as an L2 hit.
SELECT 1 AS cleared FROM (SELECT npc_scale.cache_clear()) c \gset
SELECT npc_scale.request_decision(9103, 'build', 'Only in Redis: what next?', 5, '{"temperature": 0, "max_tokens": 6}') AS d3 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :d3)), 'a new deterministic decision answered (and cached)');
SELECT is(pg_temp.park_generation(), 1, 'its answer is the one generation in Redis');
SELECT npc_scale.cache_clear();
SELECT is(pg_temp.unpark_generation(), 'OK', '… and now only there');
SELECT l1_hits AS l1_a, l2_hits AS l2_a, misses AS miss_a FROM npc_scale.cache_stats \gset
SELECT npc_test.metric('handoff_unclaimed') AS hu_a \gset
SELECT npc_scale.request_decision(9104, 'build', 'Only in Redis: what next?', 5, '{"temperature": 0, "max_tokens": 6}') AS d4 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :d4)), 'the repeat is answered');
SELECT results_eq(format('SELECT status, cache_layer, response = (SELECT response FROM npc_scale.decision_queue WHERE id = %s) FROM npc_scale.decision_queue WHERE id = %s', :d3, :d4),
  $$ VALUES ('done'::text, 'l2'::text, true) $$, 'from L2, with the first answer');
SELECT results_eq(format('SELECT l1_hits - %s, l2_hits - %s, misses - %s FROM npc_scale.cache_stats', :l1_a, :l2_a, :miss_a),
  $$ VALUES (0::bigint, 1::bigint, 0::bigint) $$, 'counted once, as one L2 hit');
SELECT is(npc_test.metric('handoff_unclaimed') - :hu_a, 1::bigint, 'its GPU request, already sent, was withdrawn');

-- The same on the table path (a prompt over the 4 kB hand-off slot): the
-- claimed request is sent after an L1 read, L2 is asked without waiting,
-- and the hit answers the claimed row and withdraws the request (its GPU
-- answer, which comes about as fast, waits for Redis's and is dropped).
SELECT 1 AS cleared FROM (SELECT npc_scale.cache_clear()) c \gset
SELECT npc_scale.request_decision(9105, 'build', repeat('Only in Redis, the long way round. ', 160), 5,
  '{"temperature": 0, "max_tokens": 6}') AS d5 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :d5)), 'a big deterministic decision answered (and cached)');
SELECT is(pg_temp.park_generation(), 1, 'its answer is the one generation in Redis');
SELECT npc_scale.cache_clear();
SELECT is(pg_temp.unpark_generation(), 'OK', '… and now only there');
SELECT l1_hits AS l1_b, l2_hits AS l2_b, misses AS miss_b FROM npc_scale.cache_stats \gset
SELECT npc_scale.request_decision(9106, 'build', repeat('Only in Redis, the long way round. ', 160), 5,
  '{"temperature": 0, "max_tokens": 6}') AS d6 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :d6)), 'the big repeat is answered');
SELECT results_eq(format('SELECT status, cache_layer, attempts, response = (SELECT response FROM npc_scale.decision_queue WHERE id = %s) FROM npc_scale.decision_queue WHERE id = %s', :d5, :d6),
  $$ VALUES ('done'::text, 'l2'::text, 1, true) $$, 'from L2 after its claim, with the first answer');
SELECT results_eq(format('SELECT l1_hits - %s, l2_hits - %s, misses - %s FROM npc_scale.cache_stats', :l1_b, :l2_b, :miss_b),
  $$ VALUES (0::bigint, 1::bigint, 0::bigint) $$, 'counted once, as one L2 hit');

DELETE FROM npc_scale.decision_queue WHERE npc_id IN (9101, 9102, 9103, 9104, 9105, 9106);
SELECT * FROM finish();
