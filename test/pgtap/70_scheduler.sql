-- Scheduled materialized-view refreshes in the maintenance worker: pg_cron
-- syntax, run history, failures recorded without stopping the worker, no run
-- overlapping itself, clear errors at schedule time, decisions flowing
-- while a slow refresh runs (asserted by the order of events), and a cancel
-- during a refresh failing that run only.
\ir setup/fresh.sql
SELECT plan(49);
-- What a run of this file that failed half-way left (a view's job goes with it).
SET client_min_messages = warning;
DROP MATERIALIZED VIEW IF EXISTS public.sched_ok, public.sched_nokey, public.sched_bad, public.sched_slow,
  public.sched_empty, public.sched_gone, public.sched_clock, public.sched_gate1, public.sched_gate2, public.sched_hand;
DROP FUNCTION IF EXISTS public.sched_wait_for_gate();
DROP FUNCTION IF EXISTS public.sched_gate(int);
DROP TABLE IF EXISTS public.sched_src;
RESET client_min_messages;

CREATE TABLE public.sched_src (id int PRIMARY KEY, x int NOT NULL);
INSERT INTO public.sched_src SELECT g, 1 FROM generate_series(1, 100) g;
CREATE MATERIALIZED VIEW public.sched_ok AS SELECT id, x FROM public.sched_src;
CREATE UNIQUE INDEX ON public.sched_ok (id);
CREATE MATERIALIZED VIEW public.sched_hand AS SELECT id, x FROM public.sched_src;
CREATE UNIQUE INDEX ON public.sched_hand (id);
CREATE MATERIALIZED VIEW public.sched_nokey AS SELECT id FROM public.sched_src;
CREATE MATERIALIZED VIEW public.sched_bad AS SELECT id, 10 / x AS v FROM public.sched_src;
CREATE UNIQUE INDEX ON public.sched_bad (id);
-- Its refresh waits at a gate: an advisory lock this session holds while
-- the test needs the refresh held (a session that ends, failing half-way,
-- lets go of it: the worker is never left waiting). Without a lock timeout
-- of its own, it would fail after maintenance_lock_timeout.
CREATE FUNCTION public.sched_wait_for_gate() RETURNS text LANGUAGE plpgsql VOLATILE SET lock_timeout = 0 AS $f$
BEGIN
  PERFORM pg_advisory_lock_shared(707070);
  PERFORM pg_advisory_unlock_shared(707070);
  RETURN 'passed';
END $f$;
CREATE MATERIALIZED VIEW public.sched_slow AS SELECT 1 AS id, public.sched_wait_for_gate() AS slept;
CREATE UNIQUE INDEX ON public.sched_slow (id);

-- Bad input, said at schedule time.
SELECT throws_ok($$ SELECT npc_scale.schedule_refresh('public.sched_src', '* * * * *') $$, '42809',
  'relation sched_src is not a materialized view', 'a table is refused');
SELECT throws_ok($$ SELECT npc_scale.schedule_refresh('public.sched_nokey', '* * * * *') $$, '55000',
  'REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on sched_nokey',
  'CONCURRENTLY without a unique index is refused at schedule time');
SELECT throws_like($$ SELECT npc_scale.schedule_refresh('public.sched_ok', '61 * * * *') $$,
  '%"61 * * * *"%', 'an invalid schedule is named');
SELECT lives_ok($$ SELECT npc_scale.unschedule(npc_scale.schedule_refresh('public.sched_nokey', '@hourly', false)) $$,
  'without CONCURRENTLY no unique index is needed; unschedule removes it');

-- A good job runs and records its history.
SELECT npc_scale.schedule_refresh('public.sched_ok', '1 second') AS ok_job \gset
SELECT is((SELECT schedule FROM npc_scale.maintenance_jobs WHERE job = :ok_job), '1 second', 'canonical schedule stored');
-- Jobs are also changed by hand (pause, a new schedule): checked the same way.
SELECT throws_like(format($$ UPDATE npc_scale.maintenance_jobs SET schedule = 'every 5 min' WHERE job = %s $$, :ok_job),
  '%"every 5 min"%', 'a bad schedule written by hand is refused, naming it');
-- One job per view: scheduled again (a deploy script at every release),
-- the view's job takes the new schedule, and is active again.
SELECT npc_scale.schedule_refresh('public.sched_hand', '0 4 * * *') AS hand_job \gset
UPDATE npc_scale.maintenance_jobs SET active = false WHERE job = :hand_job;
-- Each change and its check in one transaction: the same now() for both,
-- however long the machine stalls between them.
BEGIN;
SELECT is(npc_scale.schedule_refresh('public.sched_hand', '0 5 * * *', false), :hand_job::bigint,
  'scheduling a view again returns its job');
SELECT results_eq(format($$ SELECT schedule, concurrent_refresh, active, next_run_at = npc_scale._cron_next('0 5 * * *', now())
                              FROM npc_scale.maintenance_jobs WHERE job = %s $$, :hand_job),
  $$ VALUES ('0 5 * * *'::text, false, true, true) $$, 'with the new schedule and settings, active, next due by the new schedule');
COMMIT;
SELECT is((SELECT count(*)::int FROM npc_scale.maintenance_jobs WHERE target = 'public.sched_hand'::regclass), 1,
  'and no second job');
SELECT npc_scale.schedule_refresh('public.sched_hand', '0 4 * * *') AS hand_again \gset
BEGIN;
UPDATE npc_scale.maintenance_jobs SET schedule = '*/5  * * * *' WHERE job = :hand_job;
SELECT is((SELECT schedule || ' ' || (next_run_at = npc_scale._cron_next('*/5 * * * *', now()))::text
             FROM npc_scale.maintenance_jobs WHERE job = :hand_job), '*/5 * * * * true',
  'a new schedule by hand is stored canonical and its next run follows it');
COMMIT;
UPDATE npc_scale.maintenance_jobs SET active = false, next_run_at = now() - interval '1 day' WHERE job = :hand_job;
BEGIN;
UPDATE npc_scale.maintenance_jobs SET active = true WHERE job = :hand_job;
SELECT ok((SELECT next_run_at > now() FROM npc_scale.maintenance_jobs WHERE job = :hand_job),
  'a resumed job is due at its next time from now, not at a time left from before');
COMMIT;
SELECT throws_ok(format($$ UPDATE npc_scale.maintenance_jobs SET target = 'public.sched_src' WHERE job = %s $$, :hand_job),
  '42809', 'relation sched_src is not a materialized view', 'a target by hand must be a materialized view');
SELECT throws_ok(format($$ UPDATE npc_scale.maintenance_jobs SET target = 'public.sched_nokey' WHERE job = %s $$, :hand_job),
  '55000', 'REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on sched_nokey',
  'a CONCURRENTLY job by hand needs the unique index too');
-- A job row inserted as it stands (pg_restore loads the jobs before the
-- view's indexes) is kept, with a warning, whatever the index.
SELECT lives_ok($$ INSERT INTO npc_scale.maintenance_jobs (kind, target, schedule, active, next_run_at)
                   VALUES ('refresh', 'public.sched_nokey', '@daily', false, now() + interval '1 day') $$,
  'a job row inserted without the unique index yet (as by pg_restore) is kept');
DELETE FROM npc_scale.maintenance_jobs WHERE target = 'public.sched_nokey'::regclass;
SELECT npc_scale.unschedule(:hand_job) AS hand_gone \gset
UPDATE public.sched_src SET x = 2;
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'succeeded') $$, :ok_job), '15 s'),
  'the refresh job runs');
SELECT ok(npc_test.wait_for($$ (SELECT bool_and(x = 2) FROM public.sched_ok) $$, '15 s'), 'and the view shows the new data');
SELECT ok((SELECT rows = 100 AND duration IS NOT NULL AND finished_at >= started_at AND error IS NULL
             FROM npc_scale.maintenance_runs WHERE job = :ok_job AND status = 'succeeded' ORDER BY run LIMIT 1),
  'a run records rows, duration, start and finish');

-- A failing job records its error; the worker goes on with the others.
UPDATE public.sched_src SET x = 0 WHERE id = 7;
SELECT npc_scale.schedule_refresh('public.sched_bad', '1 second') AS bad_job \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'failed') $$, :bad_job), '15 s'),
  'the failing job records a failed run');
SELECT matches((SELECT error FROM npc_scale.maintenance_runs WHERE job = :bad_job AND status = 'failed' ORDER BY run LIMIT 1),
  'division by zero', 'with the error');
SELECT ok(npc_test.wait_for(format($$ (SELECT count(*) FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'succeeded'
                                        AND started_at > (SELECT min(started_at) FROM npc_scale.maintenance_runs WHERE job = %s)) > 0 $$,
                                   :ok_job, :bad_job), '15 s'),
  'the good job keeps running after the failure');

-- A run's rows count the view as refreshed: a CONCURRENTLY refresh's count
-- once read it as it was before, one refresh behind.
INSERT INTO public.sched_src SELECT g, 2 FROM generate_series(101, 150) g;
SELECT clock_timestamp() AS grown_at \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'succeeded'
                                                AND started_at > %L) $$, :ok_job, :'grown_at'), '15 s'),
  'a refresh runs after the view''s source grew');
SELECT is((SELECT rows FROM npc_scale.maintenance_runs WHERE job = :ok_job AND status = 'succeeded'
            AND started_at > :'grown_at' ORDER BY run LIMIT 1), 150::bigint,
  'its run counts the 150 rows the view has now');

-- CONCURRENTLY on a view created WITH NO DATA would fail on every run: its
-- first refresh is a plain one.
CREATE MATERIALIZED VIEW public.sched_empty AS SELECT id FROM public.sched_src WITH NO DATA;
CREATE UNIQUE INDEX ON public.sched_empty (id);
SELECT npc_scale.schedule_refresh('public.sched_empty', '1 second') AS empty_job \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'succeeded') $$,
                                   :empty_job), '15 s'),
  'a CONCURRENTLY job on a view created WITH NO DATA succeeds');
SELECT is((SELECT count(*)::int FROM public.sched_empty), 150, 'and fills it');
SELECT npc_scale.unschedule(:empty_job) AS empty_gone \gset

-- Run history is purged after npc_scale.maintenance_run_ttl.
ALTER SYSTEM SET npc_scale.maintenance_run_ttl = '60s';
SELECT pg_reload_conf() AS reloaded \gset
INSERT INTO npc_scale.maintenance_runs (job, started_at, finished_at, status, duration, rows)
VALUES (:ok_job, now() - interval '2 hours', now() - interval '2 hours', 'succeeded', '1 s', 1) RETURNING run AS old_run \gset
-- One finished 5 s ago, inside the TTL: a purge ignoring the TTL takes it too.
INSERT INTO npc_scale.maintenance_runs (job, started_at, finished_at, status, duration, rows)
VALUES (:ok_job, now() - interval '6 s', now() - interval '5 s', 'succeeded', '1 s', 1) RETURNING run AS recent_run \gset
SELECT ok(npc_test.wait_for(format('NOT EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE run = %s)', :old_run), '30 s'),
  'a run older than maintenance_run_ttl is purged');
SELECT ok(EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE run = :recent_run),
  'a run inside it is kept');
ALTER SYSTEM RESET npc_scale.maintenance_run_ttl;
SELECT pg_reload_conf() AS reloaded \gset

-- A slow job never overlaps itself, and decisions flow while it runs.
SELECT npc_scale.unschedule(:bad_job) AS unscheduled \gset
SELECT pg_advisory_lock(707070) AS gate_shut \gset
SELECT npc_scale.schedule_refresh('public.sched_slow', '1 second') AS slow_job \gset
-- Held past two of its 1 s periods: long enough for an overlapping run to have started.
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'running'
                                                AND started_at < clock_timestamp() - interval '2.5 s') $$, :slow_job), '15 s'),
  'the slow refresh is running, for over two of its periods');
SELECT npc_test.use_gpus(ARRAY['fast2']);
SELECT npc_scale.request_decision(9901, 'build', 'During a slow refresh?', 5) AS d \gset
SELECT ok(npc_test.wait_for(format('npc_test.all_finished(ARRAY[%s]::bigint[])', :d)), 'a decision finishes');
SELECT is((SELECT array_agg(status) FROM npc_scale.maintenance_runs WHERE job = :slow_job), ARRAY['running'],
  'while the first slow refresh still runs, and no second one has started');
SELECT pg_advisory_unlock(707070) AS gate_open \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT count(*) FROM npc_scale.maintenance_runs WHERE job = %s AND status <> 'running') >= 2 $$, :slow_job), '20 s'),
  'two slow refreshes have finished once the gate opened');
SELECT ok(NOT EXISTS (SELECT 1 FROM npc_scale.maintenance_runs a JOIN npc_scale.maintenance_runs b
                        ON a.job = b.job AND a.run < b.run
                       WHERE a.job = :slow_job AND b.started_at < a.finished_at),
  'no two runs of the job overlapped');

-- A cancel of the maintenance worker during a refresh fails that run, with
-- the cancel as its error; the worker goes on (same process), and its loop
-- does not count it: the run failed, not the loop. (The gate holds the
-- refresh until the cancel has landed.)
CREATE TEMP TABLE maintenance_before AS
  SELECT pid, errors FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance';
SELECT pg_advisory_lock(707070) AS gate_shut \gset
-- Its REFRESH itself, not a run still waiting behind another due job's.
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'running')
                                      AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = npc_test.worker_pid('maintenance')
                                                     AND state = 'active' AND query = 'npc_scale: REFRESH MATERIALIZED VIEW public.sched_slow'
                                                AND wait_event = 'advisory') $$,
                                   :slow_job), '15 s'),
  'a slow refresh has just started');
SELECT ok(pg_cancel_backend(npc_test.worker_pid('maintenance')), 'cancel sent to the maintenance worker');
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'failed'
                                                AND error LIKE '%%canceling statement due to user request%%') $$, :slow_job), '15 s'),
  'the cancelled run is recorded as failed, with the cancel as its error');
SELECT pg_advisory_unlock(707070) AS gate_open \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs r WHERE job = %1$s AND status = 'succeeded'
                                                AND started_at > (SELECT max(started_at) FROM npc_scale.maintenance_runs
                                                                   WHERE job = %1$s AND status = 'failed')) $$, :slow_job), '20 s'),
  'the next run succeeds');
SELECT results_eq($$ SELECT pid, errors FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance' $$,
                  $$ SELECT pid, errors FROM maintenance_before $$,
  'the same worker process, and no error counted by its loop');

-- A worker that dies during a run (here SIGTERM while the refresh waits at
-- the gate) cannot record its end: its successor marks the run failed, as
-- pg_cron does, instead of leaving it 'running' for ever.
SELECT pg_advisory_lock(707070) AS gate_shut \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = npc_test.worker_pid('maintenance')
                                                AND state = 'active' AND query = 'npc_scale: REFRESH MATERIALIZED VIEW public.sched_slow'
                                                AND wait_event = 'advisory')
                                      AND EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'running') $$,
                                   :slow_job), '15 s'),
  'a slow refresh is held at the gate again');
SELECT run AS orphan_run FROM npc_scale.maintenance_runs WHERE job = :slow_job AND status = 'running' \gset
SELECT npc_test.worker_pid('maintenance') AS dying_pid \gset
SELECT ok(pg_terminate_backend(:dying_pid), 'SIGTERM sent to the maintenance worker during the run');
SELECT pg_advisory_unlock(707070) AS gate_open \gset
SELECT ok(npc_test.wait_for(format($$ npc_test.worker_pid('maintenance') IS DISTINCT FROM %s
                                      AND npc_test.worker_pid('maintenance') IS NOT NULL
                                      AND (SELECT status <> 'running' FROM npc_scale.maintenance_runs WHERE run = %s) $$,
                                   :dying_pid, :orphan_run), '30 s'),
  'a new maintenance worker has started, and the run is over');
SELECT results_eq(format($$ SELECT status, error, finished_at IS NOT NULL AND duration IS NOT NULL
                              FROM npc_scale.maintenance_runs WHERE run = %s $$, :orphan_run),
  $$ VALUES ('failed'::text, 'the maintenance worker restarted during this run'::text, true) $$,
  'the run its predecessor died in is failed, saying so');

-- A refresh that runs past npc_scale.refresh_timeout fails, and the worker
-- goes on: one worker runs every job in turn.
SELECT config_reloads AS maint_reloads FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance' \gset
ALTER SYSTEM SET npc_scale.refresh_timeout = '1s';
SELECT pg_reload_conf() AS reloaded \gset
SELECT npc_test.wait_for(format($$ (SELECT config_reloads > %s FROM npc_scale.worker_status()
                                     WHERE name = 'npc_scale maintenance') $$, :maint_reloads)) AS applied \gset
SELECT coalesce(max(run), 0) AS run_before_timeout FROM npc_scale.maintenance_runs WHERE job = :slow_job \gset
SELECT pg_advisory_lock(707070) AS gate_shut \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND run > %s AND status = 'failed'
                                                AND error LIKE '%%canceling statement due to statement timeout%%') $$,
                                   :slow_job, :run_before_timeout), '15 s'),
  'a refresh held past refresh_timeout fails with a statement timeout');
SELECT max(run) AS timed_out_run FROM npc_scale.maintenance_runs WHERE job = :slow_job AND status = 'failed' \gset
SELECT errors AS maint_errors FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance' \gset
SELECT pg_advisory_unlock(707070) AS gate_open \gset
-- Through the open gate, runs are quick, each armed and disarmed: a timer
-- left armed would fire into the worker's next statement or wait.
SELECT ok(npc_test.wait_for(format($$ (SELECT count(*) FROM npc_scale.maintenance_runs WHERE job = %s AND run > %s
                                        AND status = 'succeeded') >= 3 $$, :slow_job, :timed_out_run), '20 s'),
  'the next runs, through the open gate, succeed');
SELECT results_eq(format($$ SELECT (SELECT count(*) FROM npc_scale.maintenance_runs WHERE job = %s AND run > %s AND status = 'failed'),
                                   (SELECT errors FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance') - %s $$,
                         :slow_job, :timed_out_run, :maint_errors),
  $$ VALUES (0::bigint, 0::bigint) $$, 'with no run failed and no error in the worker''s loop since');
ALTER SYSTEM RESET npc_scale.refresh_timeout;
SELECT pg_reload_conf() AS reloaded \gset

-- A wall clock stepped back (NTP, a restored VM) leaves a job's next run
-- further ahead than its schedule puts it from now (modelled here by moving
-- it an hour ahead): it is due at its next time from now again, not an
-- hour later.
CREATE MATERIALIZED VIEW public.sched_clock AS SELECT 1 AS id;
SELECT npc_scale.schedule_refresh('public.sched_clock', '1 second', false) AS clock_job \gset
UPDATE npc_scale.maintenance_jobs SET next_run_at = now() + interval '1 hour' WHERE job = :clock_job;
SELECT count(*) AS clock_runs0 FROM npc_scale.maintenance_runs WHERE job = :clock_job \gset
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.maintenance_runs WHERE job = $$ || :clock_job || $$) > $$
                            || :clock_runs0),
  'a job whose next run lies beyond its schedule from now (the clock went back) runs at its next time from now');
SELECT npc_scale.unschedule(:clock_job) AS clock_gone \gset
DROP MATERIALIZED VIEW public.sched_clock;

-- The purges run between one refresh of a round and the next: a round of
-- long refreshes holds them back for one refresh at most, not for all of
-- them. Two jobs due at the same time (scheduled in one statement), each
-- held at a gate of its own; the first is let go once it has run longer
-- than the purges' 1 s period (the premise: a long refresh).
CREATE FUNCTION public.sched_gate(k int) RETURNS int LANGUAGE plpgsql VOLATILE SET lock_timeout = 0 AS $f$
BEGIN
  PERFORM pg_advisory_lock_shared(k);
  PERFORM pg_advisory_unlock_shared(k);
  RETURN k;
END $f$;
CREATE MATERIALIZED VIEW public.sched_gate1 AS SELECT 1 AS id, public.sched_gate(707071) AS k;
CREATE MATERIALIZED VIEW public.sched_gate2 AS SELECT 1 AS id, public.sched_gate(707072) AS k;
SELECT pg_advisory_lock(707071) AS gate1_shut, pg_advisory_lock(707072) AS gate2_shut \gset
SELECT npc_scale.schedule_refresh('public.sched_gate1', '1 second', false) AS gate1_job,
       npc_scale.schedule_refresh('public.sched_gate2', '1 second', false) AS gate2_job \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs
                                               WHERE job IN (%s, %s) AND status = 'running'
                                                 AND started_at < clock_timestamp() - interval '1.5 s') $$,
                                   :gate1_job, :gate2_job), '15 s'),
  'the first of two refreshes due together is held at its gate, for longer than the purges'' period');
SELECT CASE WHEN job = :gate1_job THEN 707071 ELSE 707072 END AS first_gate,
       CASE WHEN job = :gate1_job THEN :gate2_job ELSE :gate1_job END AS second_job
  FROM npc_scale.maintenance_runs WHERE job IN (:gate1_job, :gate2_job) AND status = 'running' \gset
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
VALUES (9902, 'old', 'purged between two refreshes', 'done', now() - interval '2 hours');
SELECT pg_advisory_unlock(:first_gate) AS first_open \gset
SELECT ok(npc_test.wait_for($$ NOT EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE npc_id = 9902) $$, '15 s'),
  'once it ends, a finished decision past result_ttl is purged');
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM npc_scale.maintenance_runs WHERE job = %s AND status = 'running') $$,
                                   :second_job), '15 s'),
  'and the second refresh of the round runs, held at its own gate');
SELECT pg_advisory_unlock_all() AS gates_open \gset
SELECT npc_scale.unschedule(:gate1_job) AS gate1_gone, npc_scale.unschedule(:gate2_job) AS gate2_gone \gset
DROP MATERIALIZED VIEW public.sched_gate1, public.sched_gate2;
DROP FUNCTION public.sched_gate(int);

-- Dropping a scheduled view takes its job (and run history) with it: a job
-- left behind would fail every run naming a bare OID.
CREATE MATERIALIZED VIEW public.sched_gone AS SELECT 1 AS id;
SELECT npc_scale.schedule_refresh('public.sched_gone', '@daily', false) AS gone_job \gset
DROP MATERIALIZED VIEW public.sched_gone;
SELECT is((SELECT count(*)::int FROM npc_scale.maintenance_jobs WHERE job = :gone_job), 0, 'a dropped view''s job goes with it');
CREATE ROLE pm_nobody;
SET ROLE pm_nobody;
CREATE TABLE pg_temp.some_table (x int);
SELECT lives_ok('DROP TABLE pg_temp.some_table', 'a role without rights on npc_scale''s tables still drops its own');
RESET ROLE;
DROP ROLE pm_nobody;

SELECT npc_scale.unschedule(job) FROM npc_scale.maintenance_jobs;
DROP MATERIALIZED VIEW public.sched_ok, public.sched_nokey, public.sched_bad, public.sched_slow, public.sched_empty, public.sched_hand;
DROP FUNCTION public.sched_wait_for_gate();
DROP TABLE public.sched_src;
DELETE FROM npc_scale.decision_queue WHERE npc_id = 9901;
SELECT * FROM finish();
