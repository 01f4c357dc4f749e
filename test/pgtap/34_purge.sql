-- The maintenance worker purges finished decisions older than
-- npc_scale.result_ttl (default 1 hour), in batches, and nothing else.
\ir setup/fresh.sql
SELECT plan(11);
SELECT is(current_setting('npc_scale.result_ttl'), '1h', 'result_ttl is one hour by default');

SELECT coalesce((SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'npc_scale.decision_queue'::regclass), 0) AS del0 \gset
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
SELECT 9000 + g, 'old', 'old decision', 'done', now() - interval '2 hours' FROM generate_series(1, 2500) g;
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
SELECT 12000 + g, 'recent', 'recent decision', 'done', now() - interval '10 minutes' FROM generate_series(1, 10) g;

SELECT ok(npc_test.wait_for($$ NOT EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE npc_id BETWEEN 9001 AND 11500) $$, '20 s'),
  'all 2500 finished decisions older than result_ttl are purged (several batches)');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE npc_id BETWEEN 12001 AND 12010), 10,
  'recent finished decisions are kept');
-- Its deletes reach the statistics (autovacuum's input): a worker that never
-- calls pgstat_report_stat() would keep them to itself until it exits.
SELECT ok(npc_test.wait_for(format($$ (SELECT n_tup_del FROM pg_stat_user_tables
                                        WHERE relid = 'npc_scale.decision_queue'::regclass) >= %s + 2500 $$, :del0)),
  'the worker reports its 2500 deletes to the statistics system');

DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 12001 AND 12010;

-- A row put back in the queue by hand (an admin's requeue after an outage)
-- keeps the finished_at of its earlier end: it is not purged while it waits
-- (not_before keeps the dispatcher off it here).
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at, not_before) VALUES
  (12011, 'requeued', 'requeued by hand', 'queued', now() - interval '2 hours', now() + interval '1 hour'),
  (12012, 'old', 'old decision', 'done', now() - interval '2 hours', NULL);
SELECT ok(npc_test.wait_for($$ NOT EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE npc_id = 12012) $$, '20 s'),
  'a finished decision past result_ttl is purged');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE npc_id = 12011), 'queued',
  'one queued again by hand, with the finished_at of its earlier end, is not');
DELETE FROM npc_scale.decision_queue WHERE npc_id = 12011;

-- A finished decision the game keeps (a foreign key of its own without ON
-- DELETE CASCADE) is passed over, with a WARNING, and the purge goes on past
-- it: it used to stop for good (every batch began with that row, and failed).
CREATE TABLE public.purge_keep (decision_id bigint REFERENCES npc_scale.decision_queue (id));
BEGIN;  -- the row and its reference at once: the purge must not come between
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
VALUES (13000, 'kept', 'kept decision', 'done', now() - interval '3 hours') RETURNING id AS kept_id \gset
INSERT INTO public.purge_keep VALUES (:kept_id);
COMMIT;
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
SELECT 13000 + g, 'old', 'old decision', 'done', now() - interval '2 hours' FROM generate_series(1, 20) g;
SELECT ok(npc_test.wait_for($$ NOT EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE npc_id BETWEEN 13001 AND 13020) $$, '20 s'),
  'the purge goes on past a finished decision the game''s foreign key keeps');
SELECT ok(EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE id = :kept_id), 'and that one is kept');
-- Once the game lets go of it, it is purged after another result_ttl,
-- without a restart (it used to wait for one). A short ttl for this.
ALTER SYSTEM SET npc_scale.result_ttl = '1s';
SELECT pg_reload_conf() AS reloaded \gset
DROP TABLE public.purge_keep;
SELECT ok(npc_test.wait_for(format('NOT EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE id = %s)', :kept_id), '20 s'),
  'a passed-over decision is purged again once nothing keeps it');
ALTER SYSTEM RESET npc_scale.result_ttl;
SELECT pg_reload_conf() AS reloaded \gset
DELETE FROM npc_scale.decision_queue WHERE id = :kept_id;

-- The worker is a superuser: a function in public (any role may create one
-- there on PostgreSQL 14 and older, or in its own "$user" schema) that
-- matches a call of its SQL better than pg_catalog's must never be what it
-- runs. The purge's make_interval(secs => int) would pick this one on the
-- default search_path. (A new worker, so that it plans its SQL afresh.)
DROP FUNCTION IF EXISTS public.make_interval(integer);  -- left by a run that failed half-way
DROP TABLE IF EXISTS public.shadow_calls;
CREATE TABLE public.shadow_calls (who text);
CREATE FUNCTION public.make_interval(secs integer) RETURNS interval LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO public.shadow_calls VALUES (current_user);
  RETURN pg_catalog.make_interval(secs => secs::double precision);
END $f$;
SELECT npc_test.worker_pid('maintenance') AS old_maintenance \gset
SELECT pg_terminate_backend(:old_maintenance) AS terminated \gset
SELECT npc_test.wait_for(format('npc_test.worker_pid(''maintenance'') IS DISTINCT FROM %s AND npc_test.worker_pid(''maintenance'') IS NOT NULL', :old_maintenance), '30 s') AS restarted \gset
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
VALUES (13100, 'old', 'purged by the new worker', 'done', now() - interval '2 hours');
SELECT ok(npc_test.wait_for('NOT EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE npc_id = 13100)', '20 s'),
  'the new maintenance worker purges');
SELECT is((SELECT count(*)::int FROM public.shadow_calls), 0,
  'without calling a function of public''s that shadows one of pg_catalog''s');
DROP FUNCTION public.make_interval(integer);
DROP TABLE public.shadow_calls;
SELECT * FROM finish();
