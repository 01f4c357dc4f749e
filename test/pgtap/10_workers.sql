-- Background workers: registered, connected, waiting on their latch,
-- restarted after SIGTERM (pg_terminate_backend), and neither ended nor
-- restarted by a cancel (pg_cancel_backend): their loop logs it and goes on.
\ir setup/fresh.sql
BEGIN;
SELECT plan(22);

SELECT has_function('npc_scale', 'worker_status', 'worker_status() exists');
SELECT set_eq(
  $$ SELECT name FROM npc_scale.worker_status() $$,
  ARRAY['npc_scale dispatcher', 'npc_scale maintenance'],
  'worker_status() has one row per worker');
SELECT set_eq(
  $$ SELECT backend_type::text FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %' AND datname = current_database() $$,
  ARRAY['npc_scale dispatcher', 'npc_scale maintenance'],
  'both workers are in pg_stat_activity with their backend_type, connected to this database');

-- Idle workers sleep on their latch (wait event Extension), not in a busy loop.
SELECT ok(npc_test.wait_for($$
  (SELECT count(*) FROM pg_stat_activity
    WHERE backend_type LIKE 'npc_scale %' AND wait_event_type = 'Extension' AND wait_event = 'Extension') = 2 $$),
  'both workers wait on their latch when idle');
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.worker_status() WHERE state = 'idle') = 2 $$),
  'both report state idle');  -- waited for too: a worker just started may still be setting up

-- SIGTERM: the worker exits cleanly and the postmaster restarts it.
CREATE TEMP TABLE before AS SELECT name, pid, starts, started_at FROM npc_scale.worker_status();
SELECT ok(pg_terminate_backend(npc_test.worker_pid('dispatcher')), 'SIGTERM sent to the dispatcher');
SELECT ok(npc_test.wait_for($$
  npc_test.worker_pid('dispatcher') IS DISTINCT FROM (SELECT pid FROM before WHERE name = 'npc_scale dispatcher')
  AND npc_test.worker_pid('dispatcher') IS NOT NULL $$),
  'the dispatcher is restarted with a new pid');
SELECT is((SELECT starts FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher'),
          (SELECT starts + 1 FROM before WHERE name = 'npc_scale dispatcher'),
          'the dispatcher''s start count went up by one');
SELECT is(npc_test.worker_pid('maintenance'), (SELECT pid FROM before WHERE name = 'npc_scale maintenance'),
  'the maintenance worker was not touched');

SELECT ok(pg_terminate_backend(npc_test.worker_pid('maintenance')), 'SIGTERM sent to the maintenance worker');
SELECT ok(npc_test.wait_for($$
  npc_test.worker_pid('maintenance') IS DISTINCT FROM (SELECT pid FROM before WHERE name = 'npc_scale maintenance')
  AND npc_test.worker_pid('maintenance') IS NOT NULL $$),
  'the maintenance worker is restarted with a new pid');
SELECT ok(npc_test.wait_for($$
  (SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %' AND datname = current_database()) = 2 $$),
  'both restarted workers are connected again');
SELECT ok(npc_test.wait_for($$ (SELECT bool_and(state = 'idle') FROM npc_scale.worker_status()) $$),
  'both restarted workers are idle again');
SELECT cmp_ok((SELECT started_at FROM npc_scale.worker_status() WHERE name = 'npc_scale dispatcher'), '>',
              (SELECT started_at FROM before WHERE name = 'npc_scale dispatcher'),
              'the restarted dispatcher has a later started_at');

-- SIGINT (pg_cancel_backend): an error the worker's loop catches, counts and
-- recovers from; the process (and so every request it has in flight) stays.
CREATE TEMP TABLE before_cancel AS SELECT name, pid, starts, errors FROM npc_scale.worker_status();
SELECT ok(pg_cancel_backend(npc_test.worker_pid('dispatcher')) AND pg_cancel_backend(npc_test.worker_pid('maintenance')),
  'a cancel sent to each worker');
SELECT ok(npc_test.wait_for($$
  (SELECT bool_and(w.errors = b.errors + 1) FROM npc_scale.worker_status() w JOIN before_cancel b USING (name)) $$),
  'each worker caught the cancel as one error');
SELECT results_eq($$ SELECT name, pid, starts FROM npc_scale.worker_status() ORDER BY name $$,
                  $$ SELECT name, pid, starts FROM before_cancel ORDER BY name $$,
  'and both go on in the same process, not restarted');
SELECT ok(npc_test.wait_for($$
  (SELECT count(*) FROM pg_stat_activity
    WHERE backend_type LIKE 'npc_scale %' AND wait_event_type = 'Extension' AND wait_event = 'Extension') = 2 $$),
  'both wait on their latch again');
CREATE TEMP TABLE after_cancel AS SELECT name, wakeups FROM npc_scale.worker_status();
SELECT ok(npc_test.wait_for($$
  (SELECT bool_and(w.wakeups > a.wakeups) FROM npc_scale.worker_status() w JOIN after_cancel a USING (name)) $$),
  'and both keep running their loop');
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.worker_status() WHERE state = 'idle') = 2 $$), 'both idle');

-- Idle workers sleep until their next timer (the maintenance tick is 1 s; the
-- dispatcher also scrapes each endpoint's /metrics once a second): a handful
-- of wake-ups a second, where a spinning loop makes thousands. The window is
-- a measurement, not a synchronisation.
CREATE TEMP TABLE w0 AS SELECT name, wakeups, clock_timestamp() AS t FROM npc_scale.worker_status();
SELECT pg_sleep(2);
CREATE TEMP TABLE w1 AS
  SELECT w.name, (w.wakeups - w0.wakeups) / extract(epoch FROM clock_timestamp() - w0.t) AS per_s
    FROM npc_scale.worker_status() w JOIN w0 USING (name);
SELECT cmp_ok((SELECT per_s FROM w1 WHERE name = 'npc_scale maintenance')::numeric, '<', 10::numeric,
  'the idle maintenance worker wakes a few times a second, not in a loop');
SELECT cmp_ok((SELECT per_s FROM w1 WHERE name = 'npc_scale dispatcher')::numeric, '<', 200::numeric,
  'the idle dispatcher wakes for its timers only, not in a loop');

SELECT * FROM finish();
ROLLBACK;
