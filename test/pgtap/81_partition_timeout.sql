-- npc_scale.partition_timeout bounds one partition maintenance call of the
-- maintenance worker: a game trigger that never returns while rows move out
-- of a default partition (ENABLE ALWAYS, so it fires even then) fails that
-- call, and the worker goes on to the next parent; the rows move at a later
-- run, once the trigger returns. A partition_maintenance_interval lowered
-- by a reload applies at once (the worker ran its partition maintenance
-- when it started, and would otherwise wait out the hour it scheduled).
\ir setup/fresh.sql
SELECT plan(7);
-- What a run of this file that failed half-way left (a dropped parent's settings go with it).
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.pt_slow, public.pt_zother;
DROP FUNCTION IF EXISTS public.pt_wait_for_gate() CASCADE;
RESET client_min_messages;

-- Waits for the gate (advisory lock 818181) before each row leaves.
CREATE FUNCTION public.pt_wait_for_gate() RETURNS trigger LANGUAGE plpgsql VOLATILE SET lock_timeout = 0 AS $f$
BEGIN
  PERFORM pg_advisory_lock_shared(818181);
  PERFORM pg_advisory_unlock_shared(818181);
  RETURN OLD;
END $f$;
-- Two parents with a row each in the default partition, six months back
-- (premake makes only this month and two ahead, and the two behind it).
-- pt_slow comes first (parents run in name order); its rows pass the gate.
CREATE TABLE public.pt_slow (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts);
CREATE TABLE public.pt_zother (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pt_slow', 'ts', '1 month', 2) AS slow_made \gset
SELECT npc_scale.manage_partitions('public.pt_zother', 'ts', '1 month', 2) AS other_made \gset
CREATE TRIGGER pt_slow_gate BEFORE DELETE ON public.pt_slow FOR EACH ROW EXECUTE FUNCTION public.pt_wait_for_gate();
ALTER TABLE public.pt_slow ENABLE ALWAYS TRIGGER pt_slow_gate;
INSERT INTO public.pt_slow VALUES (now() - interval '6 months', 1);
INSERT INTO public.pt_zother VALUES (now() - interval '6 months', 2);
SELECT is((SELECT count(*)::int FROM public.pt_slow_default) + (SELECT count(*)::int FROM public.pt_zother_default), 2,
  'each parent has a row in its default partition');

SELECT errors AS maint_errors, config_reloads AS maint_reloads
  FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance' \gset
SELECT pg_advisory_lock(818181) AS gate_shut \gset
ALTER SYSTEM SET npc_scale.partition_timeout = '1s';
ALTER SYSTEM SET npc_scale.partition_maintenance_interval = '1s';
SELECT pg_reload_conf() AS reloaded \gset
SELECT ok(npc_test.wait_for(format($$ EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = npc_test.worker_pid('maintenance')
                                                AND state = 'active' AND wait_event = 'advisory') $$), '15 s'),
  'with the interval lowered, the worker runs partition maintenance, and a row of pt_slow waits at the gate');
-- Without the bound, the worker would wait there for ever: pt_zother never
-- done. (Watched in the catalog: wait_for's one transaction would hold a
-- lock on a default partition it read, and the move's ATTACH wait for it.
-- A partition made for a row commits with the row's move.)
CREATE FUNCTION pg_temp.has_past_partition(parent text) RETURNS boolean LANGUAGE sql AS $$
  SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                  WHERE i.inhparent = parent::regclass
                    AND c.relname = parent || '_p' || to_char((now() - interval '6 months') AT TIME ZONE 'UTC', 'YYYY_MM')) $$;
-- (And in a statement of its own: one that names the default partition
-- locks it when planned.)
SELECT npc_test.wait_for($$ pg_temp.has_past_partition('pt_zother') $$, '15 s') AS other_moved \gset
SELECT ok(:'other_moved'::boolean AND (SELECT count(*) = 0 FROM public.pt_zother_default),
  'the call past partition_timeout fails, and the next parent''s row moves while the gate is still shut');
SELECT ok((SELECT errors > :maint_errors FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance')
          AND (SELECT count(*) = 1 FROM public.pt_slow_default),
  'the timeout is counted as an error of the worker, and pt_slow''s row is still in its default partition');
SELECT pg_advisory_unlock(818181) AS gate_open \gset
SELECT npc_test.wait_for($$ pg_temp.has_past_partition('pt_slow') $$, '15 s') AS slow_moved \gset
SELECT ok(:'slow_moved'::boolean AND (SELECT count(*) = 0 FROM public.pt_slow_default),
  'once the gate opens, a later run moves pt_slow''s row too');
SELECT is((SELECT tableoid::regclass::text FROM public.pt_slow),
          'pt_slow_p' || to_char((now() - interval '6 months') AT TIME ZONE 'UTC', 'YYYY_MM'),
  'into the partition made for it');
-- Each call is armed and disarmed: a timer left armed would fire into the
-- worker's next statement, failing runs with nothing slow in them.
SELECT errors AS errors_after, wakeups AS wakeups_after
  FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance' \gset
SELECT ok(npc_test.wait_for(format($$ (SELECT wakeups >= %s + 3 FROM npc_scale.worker_status()
                                        WHERE name = 'npc_scale maintenance') $$, :wakeups_after), '15 s')
          AND (SELECT errors = :errors_after FROM npc_scale.worker_status() WHERE name = 'npc_scale maintenance'),
  'three more ticks of the worker (each with partition maintenance), none with an error');

ALTER SYSTEM RESET npc_scale.partition_timeout;
ALTER SYSTEM RESET npc_scale.partition_maintenance_interval;
SELECT pg_reload_conf() AS reloaded \gset
DROP TABLE public.pt_slow, public.pt_zother;
DROP FUNCTION public.pt_wait_for_gate();
SELECT * FROM finish();
