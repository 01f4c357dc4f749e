-- The C++/Postgres bridge: exceptions become clean ERRORs with SQLSTATEs,
-- Postgres ERRORs unwind C++ frames, and the session keeps working.
\ir setup/fresh.sql
BEGIN;
SELECT plan(11);

SELECT throws_ok($$ SELECT npc_scale._bridge_selftest('npc_error') $$, '22023',
  'bridge self-test: npc_scale::Error thrown in C++',
  'npc_scale::Error becomes an ERROR with its SQLSTATE and message');
SELECT throws_ok($$ SELECT npc_scale._bridge_selftest('std_error') $$, 'XX000',
  'bridge self-test: std::runtime_error', 'std::exception becomes internal_error');
SELECT throws_ok($$ SELECT npc_scale._bridge_selftest('pg_error') $$, '22012',
  'division by zero', 'a Postgres ERROR inside C++ keeps its SQLSTATE and message');
SELECT is(npc_scale._bridge_selftest('pg_error_caught'), 'caught 22012: division by zero',
  'C++ catches a Postgres ERROR as PgError');
-- An ERROR caught inside HOLD_INTERRUPTS() (a commit callback) leaves the
-- holdoff count as it was (zeroed, the RESUME after it would wrap it around
-- and the backend would ignore cancel and terminate for good).
SELECT is(npc_scale._bridge_selftest('pg_error_held'), 'caught 22012, interrupts still held',
  'a Postgres ERROR caught with interrupts held leaves them held');
SELECT throws_ok($$ SELECT npc_scale._bridge_selftest('bogus') $$, '22023',
  'unknown bridge self-test mode "bogus"', 'bad input is named in the error');

-- Destructors run when a Postgres ERROR crosses C++ frames (2 frames own one).
CREATE TEMP TABLE d AS SELECT npc_scale._bridge_destructor_count() AS n;
SELECT throws_ok($$ SELECT npc_scale._bridge_selftest('pg_error') $$, '22012');
SELECT is(npc_scale._bridge_destructor_count() - (SELECT n FROM d), 2::bigint,
  'both C++ frames between Postgres and the ERROR ran their destructors');

-- Repeated errors leave no residue: the error stack is flushed each time.
SELECT lives_ok($$ SELECT count(*) FROM generate_series(1, 200) g,
                   LATERAL (SELECT npc_scale._bridge_selftest('pg_error_caught')) s $$,
  '200 caught Postgres errors in one statement');
SELECT is(npc_scale._bridge_selftest('ok'), 'ok', 'the session still works');
SELECT is(1 + 1, 2, 'plain SQL still works');

SELECT * FROM finish();
ROLLBACK;
