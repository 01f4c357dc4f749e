-- The decision queue: wake at COMMIT (not on rollback), answers written back,
-- cancel, await_decision timeouts, api_key privacy. Commits (the dispatcher
-- must see the rows) and cleans up after itself.
\ir setup/fresh.sql
SELECT plan(43);
SELECT npc_scale.cache_clear();  -- answers cached by an earlier run of this file would skip the GPU
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1']);

-- Rollback: no row, no wake-up.
SELECT npc_test.metric('queue_wakeups') AS w0 \gset
BEGIN;
SELECT npc_scale.request_decision(1001, 'build', 'rolled back', 5) AS rolled_back_id \gset
ROLLBACK;
SELECT is(npc_test.metric('queue_wakeups'), :w0::bigint, 'a rolled-back request does not wake the dispatcher');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE id = :rolled_back_id), 0,
  'and leaves no row');

-- Commit: one wake-up per committing transaction, and the decision is answered.
BEGIN;
SELECT npc_scale.request_decision(1001, 'build', 'What should village 7 build next?', 5,
                                  '{"temperature": 0, "max_tokens": 6}') AS id1 \gset
SELECT npc_scale.request_decision(1002, 'build', 'And village 8?', 5, '{"temperature": 0}') AS id2 \gset
SELECT is(npc_test.metric('queue_wakeups'), :w0::bigint, 'no wake-up before COMMIT');
COMMIT;
SELECT is(npc_test.metric('queue_wakeups'), :w0::bigint + 1, 'one wake-up at COMMIT for the whole transaction');
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s, %s]::bigint[])', :id1, :id2)),
  'both decisions are finished');
SELECT results_eq(
  format('SELECT status, attempts, cardinality(regexp_split_to_array(response, '' '')) FROM npc_scale.decision_queue WHERE id = %s', :id1),
  $$ VALUES ('done'::text, 1, 6) $$,
  'done after one attempt, with max_tokens words from the GPU');
SELECT ok((SELECT gpu_id IN (1, 2) AND started_at >= created_at AND finished_at >= started_at
             AND leased_until IS NULL AND error IS NULL
             FROM npc_scale.decision_queue WHERE id = :id1), 'bookkeeping columns are filled in');
SELECT is((SELECT status FROM npc_scale.await_decision(:id1, '1 s')), 'done',
  'await_decision returns a finished row at once');
SELECT is((SELECT response FROM npc_scale.await_decision(:id1)),
          (SELECT response FROM npc_scale.decision_queue WHERE id = :id1), 'with its response');

-- The same prompt at temperature 0 gets the same answer (here from the cache).
SELECT npc_scale.request_decision(1003, 'build', 'What should village 7 build next?', 5,
                                  '{"temperature": 0, "max_tokens": 6}') AS id3 \gset
SELECT is((SELECT response FROM npc_scale.await_decision(:id3, '10 s')),
          (SELECT response FROM npc_scale.decision_queue WHERE id = :id1), 'a repeated temperature-0 decision gets the same answer');
-- The row says why the answer ended: the first was cut at its max_tokens
-- (the server's finish_reason); the cache keeps only the text.
SELECT results_eq(
  format('SELECT id, finish_reason, cache_layer IS NOT NULL FROM npc_scale.decision_queue WHERE id IN (%s, %s) ORDER BY id', :id1, :id3),
  format('VALUES (%s::bigint, %L::text, false), (%s, NULL, true)', :id1, 'length', :id3),
  'finish_reason: length for the answer cut at max_tokens, NULL for the cache''s');
SELECT is((SELECT finish_reason FROM npc_scale.decision_queue WHERE id = :id2), 'length',
  'and length for one cut at the default max_tokens');
-- queue_stats: one row per status with its count, over the whole table.
SELECT results_eq(
  $$ SELECT status, decisions, avg_latency_ms IS NOT NULL FROM npc_scale.queue_stats WHERE status IN ('done', 'queued') ORDER BY 1 $$,
  $$ SELECT status, count(*), bool_or(finished_at IS NOT NULL) FROM npc_scale.decision_queue WHERE status IN ('done', 'queued') GROUP BY 1 ORDER BY 1 $$,
  'queue_stats counts decisions by status, with a latency for finished ones');

-- Cancel: a decision waiting for capacity (no enabled endpoint).
UPDATE npc_scale.gpu_endpoints SET enabled = false;
SELECT npc_test.wait_for('npc_test.fleet_loaded()') AS fleet_loaded \gset
SELECT npc_scale.request_decision(1004, 'trade', 'Sell wheat?', 5) AS id4 \gset
SELECT ok(npc_scale.cancel_decision(:id4), 'cancel_decision on a queued decision returns true');
SELECT ok(NOT npc_scale.cancel_decision(:id4), 'a second cancel returns false');
SELECT is((SELECT status FROM npc_scale.await_decision(:id4, '1 s')), 'cancelled',
  'await_decision returns the cancelled row');
SELECT throws_ok(format('SELECT npc_scale.await_decision(%s, ''1 s'')', :id4 + 100000), 'P0002',
  format('decision %s does not exist', :id4 + 100000), 'await_decision on an unknown id names it');

-- A queued decision's attempt ends inside its lease (lease_timeout less
-- 5 s): a longer timeout_ms would be cut short at every attempt, so it is
-- refused, naming both; generate() has no lease and takes it.
SELECT throws_ok($$ SELECT npc_scale.request_decision(1006, 'plan', 'A long plan?', 5, '{"timeout_ms": 300000}') $$, '22023',
  format('params.timeout_ms 300000 is longer than a queued decision''s attempt may take (%s ms: npc_scale.lease_timeout less 5 s)',
         (extract(epoch FROM current_setting('npc_scale.lease_timeout')::interval)::int - 5) * 1000),
  'a timeout_ms longer than a lease allows is refused, naming it');
SELECT throws_like($$ SELECT npc_scale.request_decisions(ARRAY[1006], 'plan', ARRAY['A long plan?'], 5, '{"timeout_ms": 300000}') $$,
  'params.timeout_ms 300000 is longer than%', 'by request_decisions() too');
SELECT lives_ok(format($$ SELECT npc_scale.cancel_decision(npc_scale.request_decision(1006, 'plan', 'A long plan?', 5, '{"timeout_ms": %s}')) $$,
                       (extract(epoch FROM current_setting('npc_scale.lease_timeout')::interval)::int - 5) * 1000),
  'one that fits the lease is taken');

-- A decision that cannot finish: await_decision times out with a clear error.
SELECT npc_scale.request_decision(1005, 'trade', 'Buy iron?', 5) AS id5 \gset
SELECT is(npc_test.error_of(format('SELECT npc_scale.await_decision(%s, ''200 ms'')', :id5)),
  format('57014: await_decision timed out after 200 ms: decision %s is not finished', :id5),
  'await_decision raises a timeout (query_canceled) naming the decision');
SELECT ok(npc_scale.cancel_decision(:id5), 'cleanup: cancel it');
-- Awaiting a decision this transaction requested cannot succeed before it
-- commits: an error at once, not a wait to the timeout.
SELECT matches(npc_test.error_of($$ SELECT npc_scale.await_decision(
                 npc_scale.request_decision(1006, 'trade', 'Same transaction?', 5), '5 s') $$),
  '^55000: decision \d+ was requested in this transaction, which must commit before it can be answered$',
  'await_decision on a decision of the same open transaction is an error at once');

-- api_key is for admins only.
CREATE ROLE npc_test_game_role;
SET ROLE npc_test_game_role;
SELECT throws_ok('SELECT api_key FROM npc_scale.gpu_endpoints', '42501', NULL,
  'a non-admin cannot read api_key');
RESET ROLE;
DROP ROLE npc_test_game_role;
-- Nor does any error about a row show it: a NOT NULL violation's DETAIL
-- lists the whole row, and the server log keeps it.
CREATE FUNCTION pg_temp.endpoint_error(cols text, vals text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE state text; msg text; detail text;
BEGIN
  EXECUTE format('INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, api_key, %s) VALUES (91, %L, %L, %s)',
                 cols, 'http://gpu.example:8000', 'sk-npc-secret', vals);
  RETURN 'inserted';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
  RETURN state || ': ' || msg || coalesce(' / ' || nullif(detail, ''), '');
END $f$;
SELECT is(pg_temp.endpoint_error('model', 'NULL'), '22004: model of gpu 91 must not be null',
  'a NULL model is refused naming the column, not showing the row and its api_key');
SELECT is(pg_temp.endpoint_error('enabled, send_priority', 'true, NULL'), '22004: send_priority of gpu 91 must not be null',
  'a NULL send_priority likewise');
SELECT results_eq($$ SELECT pg_temp.endpoint_error(c, 'NULL') FROM unnest('{api,max_concurrent,weight,labels}'::text[]) c $$,
  $$ VALUES ('22004: api of gpu 91 must not be null'), ('22004: max_concurrent of gpu 91 must not be null'),
            ('22004: weight of gpu 91 must not be null'), ('22004: labels of gpu 91 must not be null') $$,
  'every NULL column is the same error (22004) naming the column');
SELECT throws_ok($$ INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint) VALUES (91, NULL) $$,
  '22004', 'endpoint of gpu 91 must not be null', 'a NULL endpoint likewise');

-- The SECURITY DEFINER functions run their SQL as the extension's owner:
-- no name in it may resolve through the caller's search_path.
CREATE SCHEMA npc_test_evil;
CREATE FUNCTION npc_test_evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'npc_test_evil.now() ran'; END $$;
CREATE FUNCTION npc_test_evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'npc_test_evil.clock_timestamp() ran'; END $$;
CREATE FUNCTION npc_test_evil.make_interval(years int DEFAULT 0, months int DEFAULT 0, weeks int DEFAULT 0,
    days int DEFAULT 0, hours int DEFAULT 0, mins int DEFAULT 0, secs double precision DEFAULT 0)
  RETURNS interval LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'npc_test_evil.make_interval() ran'; END $$;
SET search_path = npc_test_evil, pg_catalog, public;
SELECT lives_ok($$ SELECT npc_scale.request_decision(1007, 'build', 'search_path probe', 5, '{}', '5 s') $$,
  'request_decision() resolves nothing through the caller''s search_path');
SELECT lives_ok($$ SELECT npc_scale.cache_set('path-probe', 'v', '1 hour', true), npc_scale.cache_get('path-probe'),
                          npc_scale.cache_delete('path-probe') $$,
  'nor do cache_set(), cache_get() and cache_delete()');
-- Nor may it resolve names in what that statement fires as the owner: a
-- game's trigger on the queue that uses a bare operator.
CREATE FUNCTION npc_test_evil.int8_int4_eq(bigint, integer) RETURNS boolean LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'npc_test_evil.= ran as %', current_user; END $$;
CREATE OPERATOR npc_test_evil.= (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = npc_test_evil.int8_int4_eq);
CREATE TABLE npc_test.path_seen (search_path text, npc_is_1008 boolean);
CREATE FUNCTION npc_test.path_probe() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO npc_test.path_seen VALUES (current_setting('search_path'), NEW.npc_id = 1008);
  RETURN NEW;
END $f$;
CREATE TRIGGER path_probe BEFORE INSERT ON npc_scale.decision_queue
  FOR EACH ROW EXECUTE FUNCTION npc_test.path_probe();
SELECT lives_ok($$ SELECT npc_scale.request_decision(1008, 'build', 'search_path probe 2', 5) $$,
  'a game trigger that request_decision() fires does not run the caller''s operators');
SELECT lives_ok($$ SELECT npc_scale.request_decisions(ARRAY[1008], 'build', ARRAY['search_path probe 3'], 5) $$,
  'nor one that request_decisions() fires');
DROP TRIGGER path_probe ON npc_scale.decision_queue;
SELECT set_eq($$ SELECT search_path, npc_is_1008 FROM npc_test.path_seen $$,
  $$ VALUES ('pg_catalog, pg_temp', true) $$, 'the trigger ran under the function''s own search_path, twice');
SELECT is((SELECT count(*) FROM npc_test.path_seen), 2::bigint, 'once per call');
DROP TABLE npc_test.path_seen;
DROP FUNCTION npc_test.path_probe();
RESET search_path;
DROP SCHEMA npc_test_evil CASCADE;

-- A game role with no privileges of its own uses the whole API: the
-- functions run their SQL as the extension's owner. generate()'s cacheable
-- call reads cache_store, which the role cannot (it was an error).
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1']);  -- enabled again
DROP ROLE IF EXISTS npc_test_player;  -- left by an interrupted run
CREATE ROLE npc_test_player;
SET ROLE npc_test_player;
SELECT npc_scale.request_decision(1008, 'build', 'Asked by a plain role', 5, '{"max_tokens": 3}') AS role_id \gset
SELECT is((SELECT status FROM npc_scale.await_decision(:role_id, '10 s')), 'done',
  'a plain role requests a decision and awaits it');
SELECT is((SELECT count(*)::int FROM npc_scale.request_decisions(ARRAY[1008, 1008], 'build', ARRAY['a', 'b'])), 2,
  'and requests a batch');
SELECT lives_ok(format('SELECT npc_scale.cancel_decision(%s)', :role_id), 'and may cancel');
SELECT ok(npc_scale.generate('A plain role asks ' || clock_timestamp(), 5, '{"temperature": 0, "max_tokens": 3}') <> '',
  'and calls generate() with a cacheable request');
SELECT throws_ok('SELECT npc_scale._wake_dispatcher_at_commit()', '42501', NULL,
  'but not the internal helpers (waking the dispatcher at will)');
SELECT throws_ok('SELECT npc_scale._wake_maintenance_at_commit()', '42501', NULL,
  'nor waking the maintenance worker');
RESET ROLE;
DROP ROLE npc_test_player;

-- A deadline is checked as now() + deadline lands, by the calendar: a year
-- is 365 or 366 days, not 12 x 30, so this one is in the past.
SELECT throws_like($$ SELECT npc_scale.request_decision(1009, 'build', 'x', 5, '{}', '-1 year 362 days') $$,
  'deadline of -% s must be a positive interval', 'a deadline in the past by the calendar is refused');
SELECT throws_like($$ SELECT npc_scale.request_decisions(ARRAY[1009], 'build', ARRAY['x'], 5, '{}', '-1 year 362 days') $$,
  'deadline of -% s must be a positive interval', 'by request_decisions() too');
-- ... and one in the future by the calendar is taken, though 12 x 30 days
-- would put it 4 days in the past.
SELECT lives_ok($$ SELECT npc_scale.request_decision(1009, 'build', 'x', 5, '{}', '1 year -364 days') $$,
  'a deadline in the future by the calendar is taken');

DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 1001 AND 1009;
SELECT * FROM finish();
