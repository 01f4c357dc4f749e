-- The commit handoff: request_decision() hands its row to the dispatcher in
-- shared memory at COMMIT, which sends it before claiming it by id. Rows of a
-- rolled-back savepoint are never sent, nothing is sent twice, and what the
-- handoff does not carry (big prompts, cache hits) takes the table
-- path. Commits (the dispatcher must see the rows) and cleans up after itself.
\ir setup/fresh.sql
SELECT plan(56);
-- An earlier run's answers would be cache hits.
SELECT npc_scale.cache_clear() \gset
SELECT npc_test.use_gpus(ARRAY['fast1']);
SELECT npc_test.gpu_reset('fast1') IS NOT NULL AS reset \gset
SELECT npc_test.metric('handoff_sent') AS hs0, npc_test.metric('handoff_unclaimed') AS hu0 \gset

BEGIN;
SELECT npc_scale.request_decision(2001, 'build', 'handoff: kept before the savepoint', 5) AS id_a \gset
SAVEPOINT s;
SELECT npc_scale.request_decision(2002, 'build', 'handoff: rolled back with the savepoint', 5) AS id_b \gset
ROLLBACK TO SAVEPOINT s;
SELECT npc_scale.request_decision(2003, 'build', 'handoff: kept after the savepoint', 5) AS id_c \gset
COMMIT;
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s, %s]::bigint[])', :id_a, :id_c)),
  'both committed decisions are finished');
SELECT results_eq(
  format('SELECT status, attempts FROM npc_scale.decision_queue WHERE id IN (%s, %s) ORDER BY id', :id_a, :id_c),
  $$ VALUES ('done'::text, 1), ('done'::text, 1) $$,
  'each is done after one attempt');
SELECT is(npc_test.metric('handoff_sent') - :hs0, 2::bigint,
  'both were sent straight from the handoff');
SELECT is(npc_test.gpu_metric('fast1', 'fake_gpu_requests_total'), 2::numeric,
  'the GPU saw two requests: the rolled-back one was never sent, none twice');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE id = :id_b), 0,
  'the rolled-back decision left no row');

-- A prompt too big for a handoff slot (4 kB) takes the table path.
SELECT npc_scale.request_decision(2004, 'build', repeat('big prompt ', 500), 5) AS id_big \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_big)),
  'a 5.5 kB prompt is answered');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE id = :id_big), 'done', 'done');
-- A cacheable request that misses the cache is sent from the handoff and
-- fills the cache; the same request again is a hit, answered on the table path.
SELECT l1_hits AS l1_0, misses AS miss_0 FROM npc_scale.cache_stats \gset
SELECT npc_scale.request_decision(2005, 'build', 'handoff: cacheable', 5, '{"temperature": 0}') AS id_miss \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_miss)),
  'a cacheable decision is answered');
SELECT npc_scale.request_decision(2006, 'build', 'handoff: cacheable', 5, '{"temperature": 0}') AS id_hit \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_hit)),
  'the same request again is answered');
SELECT results_eq(
  format('SELECT status, cache_layer IS NOT NULL, response FROM npc_scale.decision_queue WHERE id IN (%s, %s) ORDER BY id', :id_miss, :id_hit),
  format('VALUES (''done''::text, false, %L::text), (''done''::text, true, %L::text)',
         (SELECT response FROM npc_scale.decision_queue WHERE id = :id_miss),
         (SELECT response FROM npc_scale.decision_queue WHERE id = :id_miss)),
  'the first from the GPU, the second from the cache, the same answer');
SELECT results_eq(format('SELECT l1_hits - %s, misses - %s FROM npc_scale.cache_stats', :l1_0, :miss_0),
  $$ VALUES (1::bigint, 1::bigint) $$,
  'cache_stats: one miss and one L1 hit (the hand-off looks without counting; the table path counts)');
SELECT is(npc_test.metric('handoff_sent') - :hs0, 3::bigint,
  'the big one and the cache hit did not come through the handoff, the miss did');
SELECT is(npc_test.gpu_metric('fast1', 'fake_gpu_requests_total'), 4::numeric,
  'one GPU request per decision sent, none for the hit');
SELECT is(npc_test.metric('handoff_unclaimed') - :hu0, 0::bigint,
  'no handed-off request had to be cancelled');

-- Answered within 5 ms (instant GPU), a handed-off decision is never
-- claimed separately: the answer's write takes it from queued to done, and
-- still records its attempt and start.
SELECT results_eq(
  format('SELECT attempts, started_at IS NOT NULL AND started_at <= finished_at FROM npc_scale.decision_queue WHERE id = %s', :id_a),
  $$ VALUES (1, true) $$,
  'answered before its claim: attempt 1, started_at set by the answer''s write');
-- In flight for longer (here held at the GPU until the test releases it), it
-- is claimed: running, with a lease, as a decision from the table path would be.
SELECT npc_test.use_gpus(ARRAY['faulty']);
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1}') IS NOT NULL AS held \gset
SELECT npc_scale.request_decision(2007, 'build', 'handoff: slow enough to be claimed', 5) AS id_slow \gset
SELECT ok(npc_test.wait_for(format(
  'SELECT status = ''running'' AND leased_until IS NOT NULL FROM npc_scale.decision_queue WHERE id = %s', :id_slow)),
  'in flight past 5 ms: claimed (running, leased)');
SELECT ok(npc_test.gpu_release('faulty'), 'its request is released');
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_slow)),
  'and then answered');
SELECT results_eq(
  format('SELECT status, attempts FROM npc_scale.decision_queue WHERE id = %s', :id_slow),
  $$ VALUES ('done'::text, 1) $$,
  'done after one attempt');

-- Identical cacheable decisions in one transaction: the first is sent from
-- the handoff, the others join its request in flight (held at the GPU until
-- all three are claimed) and all three answers are written by one
-- transaction (the several-rows form of the write; a lone answer uses the
-- one-row form).
SELECT npc_test.gpu_reset('faulty') IS NOT NULL AS reset \gset
SELECT npc_test.gpu_faults('faulty', '{"hang_rate": 1}') IS NOT NULL AS held \gset
SELECT l1_hits AS l1_s, l2_hits AS l2_s, misses AS miss_s FROM npc_scale.cache_stats \gset
SELECT 'handoff: the same question ' || clock_timestamp() AS same_q \gset
BEGIN;
SELECT array_agg(id) AS same_ids FROM npc_scale.request_decisions(ARRAY[2011, 2012, 2013], 'build',
  ARRAY[:'same_q', :'same_q', :'same_q'], 5, '{"temperature": 0, "max_tokens": 5}') AS id \gset
COMMIT;
SELECT ok(npc_test.wait_for(format($$ (SELECT count(*) = 3 FROM npc_scale.decision_queue WHERE id = ANY(%L::bigint[]) AND status = 'running')
                                      AND npc_test.gpu_metric('faulty', 'fake_gpu_inflight') = 1 $$, :'same_ids')),
  'the three are claimed, with one request held at the GPU');
SELECT ok(npc_test.gpu_release('faulty'), 'which is released');
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(%L::bigint[])', :'same_ids')),
  'three identical decisions are finished');
SELECT results_eq(
  format('SELECT count(*)::int, count(DISTINCT response)::int, count(DISTINCT xmin::text)::int,
                 bool_and(status = ''done'' AND attempts = 1)
            FROM npc_scale.decision_queue WHERE id = ANY(%L::bigint[])', :'same_ids'),
  $$ VALUES (3, 1, 1, true) $$,
  'done after one attempt each, with one answer, written by one transaction');
SELECT is(npc_test.gpu_metric('faulty', 'fake_gpu_requests_total'), 1::numeric,
  'the GPU answered one request for the three');
SELECT results_eq(format('SELECT l1_hits - %s, l2_hits - %s, misses - %s FROM npc_scale.cache_stats', :l1_s, :l2_s, :miss_s),
  $$ VALUES (0::bigint, 0::bigint, 3::bigint) $$,
  'each counted once, as a cache miss (the two that joined the request in flight too)');

-- A decision answered straight from the hand-off (before any claim) is still
-- queued in the table until its answer is written. A commit that also woke
-- the table path (a big prompt in the same transaction) must not claim it
-- and send it again: twenty such transactions, forty GPU requests.
SELECT npc_test.use_gpus(ARRAY['fast1']);
SELECT npc_test.gpu_reset('fast1') IS NOT NULL AS reset \gset
CREATE PROCEDURE pg_temp.pairs(n int) LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1..n LOOP
    PERFORM npc_scale.request_decision(2100 + i, 'build', 'handoff pair ' || i, 5);
    PERFORM npc_scale.request_decision(2200 + i, 'build', repeat('handoff pair, the long one ' || i || ' ', 200), 5);
    COMMIT;
  END LOOP;
END $$;
CALL pg_temp.pairs(20);
SELECT ok(npc_test.wait_for($$ (SELECT count(*) = 40 FROM npc_scale.decision_queue
                                 WHERE npc_id BETWEEN 2101 AND 2220 AND status = 'done' AND attempts = 1) $$),
  'forty decisions done, each after one attempt');
SELECT is(npc_test.gpu_metric('fast1', 'fake_gpu_requests_total'), 40::numeric,
  'forty GPU requests: none sent twice');

-- Answers are written as text arrays: multi-byte UTF-8 arrives intact.
SELECT npc_scale.request_decision(2008, 'build', 'handoff: which mill?', 5,
  '{"choices": ["Mühle bauen 🏰 — 水車"]}') AS id_utf8 \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_utf8)), 'answered');
SELECT is((SELECT response FROM npc_scale.decision_queue WHERE id = :id_utf8), 'Mühle bauen 🏰 — 水車',
  'a multi-byte UTF-8 answer is stored as sent');

-- A savepoint rolled back takes back what was asked inside it: its request
-- wakes nobody at COMMIT (the commit itself asks nothing else).
SELECT npc_test.metric('queue_wakeups') AS qw0 \gset
BEGIN;
SAVEPOINT s;
SELECT npc_scale.request_decision(2009, 'build', 'handoff: asked, then rolled back', 5) IS NOT NULL AS asked \gset
SELECT npc_scale.request_decisions(ARRAY[2009], 'build', ARRAY['handoff: a batch, rolled back']) IS NOT NULL AS asked \gset
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT is(npc_test.metric('queue_wakeups'), :qw0::bigint,
  'requests in a rolled-back savepoint do not wake the dispatcher at COMMIT');

-- A decision cancelled in the transaction that requested it is not sent.
SELECT npc_test.gpu_reset('fast1') IS NOT NULL AS reset \gset
SELECT npc_test.metric('handoff_sent') AS hs1 \gset
BEGIN;
SELECT npc_scale.request_decision(2010, 'build', 'handoff: cancelled before its commit', 5) AS id_cx \gset
SELECT npc_scale.cancel_decision(:id_cx) AS cancelled \gset
COMMIT;
-- ... while one whose cancel was in a savepoint rolled back is sent.
BEGIN;
SELECT npc_scale.request_decision(2011, 'build', 'handoff: its cancel rolled back', 5) AS id_kept \gset
SAVEPOINT s;
SELECT npc_scale.cancel_decision(:id_kept) AS cancelled \gset
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_kept)), 'the kept one is answered');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE id = :id_kept), 'done', 'done');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE id = :id_cx), 'cancelled', 'the other stays cancelled');
SELECT is(npc_test.metric('handoff_sent') - :hs1, 1::bigint, 'one hand-off sent, not two');
SELECT is(npc_test.gpu_metric('fast1', 'fake_gpu_requests_total'), 1::numeric,
  'and one GPU request: the decision cancelled before its commit never went out');

-- A game's BEFORE INSERT trigger on the queue: the hand-off sends the row
-- as stored (a rewritten prompt), and a row the trigger skips makes
-- request_decision() return NULL (it read a row never returned, and could
-- crash the server).
CREATE FUNCTION public.handoff_game_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  IF NEW.npc_id = 2021 THEN RETURN NULL; END IF;
  IF NEW.npc_id = 2022 THEN NEW.prompt := NEW.prompt || ' (rewritten by the game)'; END IF;
  RETURN NEW;
END $f$;
CREATE TRIGGER handoff_game_trigger BEFORE INSERT ON npc_scale.decision_queue
  FOR EACH ROW EXECUTE FUNCTION public.handoff_game_trigger();
SELECT npc_test.metric('handoff_sent') AS hs2 \gset
SELECT is(npc_scale.request_decision(2021, 'build', 'handoff: skipped by the game', 5), NULL::bigint,
  'a row the game''s trigger skips: request_decision() returns NULL');
SELECT npc_scale.request_decision(2022, 'build', 'handoff: ' || gen_random_uuid(), 5, '{"temperature": 0, "cache": false}') AS id_rw \gset
DROP TRIGGER handoff_game_trigger ON npc_scale.decision_queue;
DROP FUNCTION public.handoff_game_trigger();
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_rw)), 'the rewritten one is answered');
SELECT is(npc_test.metric('handoff_sent') - :hs2, 1::bigint, 'from the hand-off');
SELECT is((SELECT response FROM npc_scale.decision_queue WHERE id = :id_rw),
          npc_scale.generate((SELECT prompt FROM npc_scale.decision_queue WHERE id = :id_rw), 5, '{"temperature": 0, "cache": false}'),
  'with the answer to the prompt as stored, not as passed');

-- What the hand-off carries, changed by an UPDATE later in the same
-- transaction: the row goes through the table and is sent as committed.
SELECT npc_test.gpu_reset('fast1') IS NOT NULL AS reset \gset
SELECT npc_test.metric('handoff_sent') AS hs3, npc_test.metric('table_wakeups') AS tw3 \gset
SELECT 'handoff: asked ' || gen_random_uuid() AS p_old \gset
BEGIN;
SELECT npc_scale.request_decision(2031, 'build', :'p_old', 5, '{"temperature": 0, "cache": false}') AS id_up \gset
UPDATE npc_scale.decision_queue SET prompt = prompt || ', then changed by the game' WHERE id = :id_up;
COMMIT;
-- Its params (fewer tokens) ...
BEGIN;
SELECT npc_scale.request_decision(2032, 'build', 'handoff: ' || gen_random_uuid(), 5,
  '{"temperature": 0, "cache": false, "max_tokens": 12}') AS id_par \gset
UPDATE npc_scale.decision_queue SET params = params || '{"max_tokens": 3}' WHERE id = :id_par;
COMMIT;
-- ... its deadline (already passed: expired, never sent).
BEGIN;
SELECT npc_scale.request_decision(2033, 'build', 'handoff: ' || gen_random_uuid(), 5) AS id_dl \gset
UPDATE npc_scale.decision_queue SET deadline = now() - interval '1 second' WHERE id = :id_dl;
COMMIT;
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s, %s, %s]::bigint[])', :id_up, :id_par, :id_dl)),
  'the three changed decisions are finished');
SELECT is((SELECT response FROM npc_scale.decision_queue WHERE id = :id_up),
          npc_scale.generate((SELECT prompt FROM npc_scale.decision_queue WHERE id = :id_up), 5, '{"temperature": 0, "cache": false}'),
  'a prompt changed after request_decision() in its transaction: the answer is to the prompt as committed');
SELECT isnt((SELECT response FROM npc_scale.decision_queue WHERE id = :id_up),
            npc_scale.generate(:'p_old', 5, '{"temperature": 0, "cache": false}'),
  'not to the prompt as first inserted');
SELECT is((SELECT response FROM npc_scale.decision_queue WHERE id = :id_par),
          npc_scale.generate((SELECT prompt FROM npc_scale.decision_queue WHERE id = :id_par), 5,
                             '{"temperature": 0, "cache": false, "max_tokens": 3}'),
  'params changed in the transaction: answered with the params as committed (3 tokens, not 12)');
SELECT results_eq(format('SELECT status, attempts FROM npc_scale.decision_queue WHERE id = %s', :id_dl),
  $$ VALUES ('expired'::text, 0) $$,
  'a deadline moved into the past in the transaction: expired without being sent');
SELECT is(npc_test.metric('handoff_sent') - :hs3, 0::bigint, 'none of the three came through the hand-off');
SELECT is(npc_test.metric('table_wakeups') - :tw3, 3::bigint,
  'each of the three commits woke the dispatcher for the table (not left to its periodic look)');
-- Only the GPU requests above: two decisions, and the three generate() calls.
SELECT is(npc_test.gpu_metric('fast1', 'fake_gpu_requests_total'), 5::numeric,
  'the GPU saw the two changed decisions once each (and the three generate() calls)');
-- An UPDATE of a column the hand-off does not carry, or one rolled back
-- with its savepoint, leaves the hand-off as it was.
SELECT 'handoff: kept ' || gen_random_uuid() AS p_kept \gset
BEGIN;
SELECT npc_scale.request_decision(2034, 'build', :'p_kept', 5, '{"temperature": 0, "cache": false}') AS id_kept2 \gset
UPDATE npc_scale.decision_queue SET world_id = 7 WHERE id = :id_kept2;
SAVEPOINT s;
UPDATE npc_scale.decision_queue SET prompt = 'handoff: rolled back' WHERE id = :id_kept2;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_kept2)), 'it is answered');
SELECT is(npc_test.metric('handoff_sent') - :hs3, 1::bigint, 'from the hand-off');
SELECT is((SELECT response FROM npc_scale.decision_queue WHERE id = :id_kept2),
          npc_scale.generate(:'p_kept', 5, '{"temperature": 0, "cache": false}'),
  'with its prompt as inserted (the rolled-back UPDATE did not count)');

-- A game's AFTER INSERT trigger that updates the new row runs inside
-- request_decision()'s INSERT: the row is sent as the trigger left it.
CREATE FUNCTION public.handoff_after_insert() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  UPDATE npc_scale.decision_queue SET prompt = prompt || ' (and its village state)'
   WHERE id = NEW.id AND npc_id = 2035;
  RETURN NULL;
END $f$;
CREATE TRIGGER handoff_after_insert AFTER INSERT ON npc_scale.decision_queue
  FOR EACH ROW EXECUTE FUNCTION public.handoff_after_insert();
SELECT npc_test.metric('handoff_sent') AS hs4 \gset
SELECT npc_scale.request_decision(2035, 'build', 'handoff: ' || gen_random_uuid(), 5,
  '{"temperature": 0, "cache": false}') AS id_ai \gset
DROP TRIGGER handoff_after_insert ON npc_scale.decision_queue;
DROP FUNCTION public.handoff_after_insert();
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :id_ai)), 'it is answered');
SELECT is(npc_test.metric('handoff_sent') - :hs4, 0::bigint, 'through the table, not the hand-off');
SELECT is((SELECT response FROM npc_scale.decision_queue WHERE id = :id_ai),
          npc_scale.generate((SELECT prompt FROM npc_scale.decision_queue WHERE id = :id_ai), 5, '{"temperature": 0, "cache": false}'),
  'with the prompt as the game''s AFTER INSERT trigger left it');

-- One transaction's rows take at most a quarter of the 512 hand-off slots
-- (one queuing thousands must not push every other backend onto the table
-- path): 128 of 200 are handed off, the rest go by the table; all answered.
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1'], ARRAY[500, 500]);
SELECT npc_test.wait_for('npc_test.fleet_loaded()') AS fleet_loaded \gset
SELECT npc_test.metric('handoff_sent') AS hs5 \gset
BEGIN;
CREATE TEMP TABLE big_txn AS
  SELECT npc_scale.request_decision(2100 + g % 100, 'build', 'handoff: ' || gen_random_uuid(), 5,
                                    '{"temperature": 0, "cache": false}') AS id
    FROM generate_series(1, 200) g;
COMMIT;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM big_txn))'),
  'a transaction of 200 requests is answered');
SELECT is(npc_test.metric('handoff_sent') - :hs5, 128::bigint, '128 of them from the hand-off');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE id IN (SELECT id FROM big_txn) AND status = 'done'), 200,
  'all 200 done');

DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 2001 AND 2220;
SELECT 1 AS cleared FROM (SELECT npc_scale.cache_clear()) c \gset
SELECT * FROM finish();
