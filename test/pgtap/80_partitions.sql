-- Native partition management: bad input, premake with pg_partman-style
-- names, UTC bounds whatever the session time zone, the default partition's
-- rows moved when their range is created, retention (drop or detach),
-- indexes and privileges reaching new partitions, and bound parity with
-- pg_partman 4.7 itself.
BEGIN;
SELECT plan(25);
SET LOCAL TimeZone = 'America/New_York';  -- bounds must still be UTC month starts

CREATE TABLE public.pm_mem (id bigint, npc_id bigint, occurred_at timestamptz NOT NULL, note text)
  PARTITION BY RANGE (occurred_at);
CREATE INDEX pm_mem_npc ON public.pm_mem (npc_id, occurred_at DESC);
CREATE ROLE pm_reader;
GRANT SELECT ON public.pm_mem TO pm_reader;
CREATE TABLE public.pm_plain (occurred_at timestamptz);
CREATE TABLE public.pm_int (n int) PARTITION BY RANGE (n);
CREATE TABLE public.pm_list (t timestamptz) PARTITION BY LIST (t);

-- Bad input, each named.
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_plain', 'occurred_at', '1 month') $$, '42809',
  'relation pm_plain is not partitioned', 'a plain table is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_list', 't', '1 month') $$, '42809',
  'pm_list is not partitioned by RANGE on column "t"', 'LIST partitioning is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_int', 'n', '1 month') $$, '42804',
  'column "n" of pm_int has type integer, not timestamptz, timestamp or date', 'a non-time column is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '-1 day') $$, '22023',
  'partition_interval -1 days must be positive', 'a negative interval is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 0) $$, '22023',
  'premake 0 is out of range', 'premake < 1 is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 1001) $$, '22023',
  'premake 1001 is out of range', 'premake > 1000 is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 4, '1 day') $$, '22023',
  'retention 1 day is shorter than partition_interval 1 mon', 'retention shorter than the interval is refused');

-- A row far in the future lands in the default partition first.
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 2) $$, 'monthly, premake 2');
SELECT is((SELECT count(*)::int FROM pg_inherits WHERE inhparent = 'public.pm_mem'::regclass), 2 + 1 + 2 + 1,
  '2 back, the current month, 2 ahead, and a default partition');
SELECT ok(to_regclass('public.pm_mem_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')) IS NOT NULL,
  'named like pg_partman: pm_mem_pYYYY_MM');
SELECT is((SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c
            WHERE c.oid = to_regclass('public.pm_mem_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM'))),
          format('FOR VALUES FROM (%L) TO (%L)',
                 date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                 (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'),
  'bounds are UTC month starts even in America/New_York');
INSERT INTO public.pm_mem VALUES (1, 42, now() + interval '4 months', 'far ahead');
SELECT is((SELECT count(*)::int FROM public.pm_mem_default), 1, 'a row beyond the premade range sits in the default partition');
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 5) $$, 'premake raised to 5');
SELECT is((SELECT count(*)::int FROM public.pm_mem_default), 0, 'the default partition was emptied …');
SELECT is((SELECT tableoid::regclass::text FROM public.pm_mem WHERE id = 1),
          'pm_mem_p' || to_char((now() + interval '4 months') AT TIME ZONE 'UTC', 'YYYY_MM'), '… into the new partition');
SELECT ok((SELECT bool_and(EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = i.inhrelid AND NOT x.indisprimary))
             FROM pg_inherits i WHERE i.inhparent = 'public.pm_mem'::regclass),
  'the parent''s index reaches every partition');
SELECT ok(has_table_privilege('pm_reader', 'public.pm_mem_p' || to_char((now() + interval '5 months') AT TIME ZONE 'UTC', 'YYYY_MM'), 'SELECT'),
  'the parent''s grants reach new partitions');

-- Retention: partitions entirely older than it go (or are detached).
SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 5, '1 month', true) AS kept \gset
SELECT ok(to_regclass('public.pm_mem_p' || to_char((now() - interval '2 months') AT TIME ZONE 'UTC', 'YYYY_MM')) IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass('public.pm_mem_p' || to_char((now() - interval '2 months') AT TIME ZONE 'UTC', 'YYYY_MM'))),
  'retention with keep_table detaches an old partition and keeps the table');
CREATE TABLE public.pm_drop (occurred_at timestamptz NOT NULL) PARTITION BY RANGE (occurred_at);
SELECT npc_scale.manage_partitions('public.pm_drop', 'occurred_at', '1 month', 3, '1 month') AS dropped \gset
SELECT ok(to_regclass('public.pm_drop_p' || to_char((now() - interval '2 months') AT TIME ZONE 'UTC', 'YYYY_MM')) IS NULL
          AND to_regclass('public.pm_drop_p' || to_char((now() - interval '3 months') AT TIME ZONE 'UTC', 'YYYY_MM')) IS NULL
          AND to_regclass('public.pm_drop_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')) IS NOT NULL,
  'retention without keep_table drops partitions entirely older than it, and keeps the current one');
SELECT is(npc_scale.run_maintenance('public.pm_mem'), 0, 'run_maintenance has nothing more to do');
-- The config table is checked however it is written: a bad row written by
-- hand would otherwise fail in the worker every cycle.
SELECT throws_ok($$ UPDATE npc_scale.partition_configs SET partition_interval = '2 mons 3 days'
                     WHERE parent = 'public.pm_mem'::regclass $$, '22023', NULL,
  'an UPDATE of partition_configs to an interval it cannot partition by is refused');

-- Parents whose names fill NAMEDATALEN: a name cut to fit the 63 bytes may
-- collide with another parent's; that is an error, never a range silently
-- left in the default partition.
-- (Both names share their first 46 characters, all an hourly name keeps.)
CREATE TABLE public.pm_clash_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_one (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
CREATE TABLE public.pm_clash_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_two (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pm_clash_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_one', 'ts', '1 hour', 2) AS clash1 \gset
SELECT throws_like($$ SELECT npc_scale.manage_partitions('public.pm_clash_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_two', 'ts', '1 hour', 2) $$,
  '%exists but is not a partition of pm_clash_%_two: it belongs to pm_clash_%_one',
  'a partition name shared with another parent is an error naming both');
-- A plain table of a partition's name (here one detached by retention) is
-- kept, with a warning: setting retention off again is not an error.
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 5) $$,
  'a detached partition in the premade range is left alone, not an error');

-- Parity with pg_partman 4.7: same parent, same config, same bounds (in UTC).
SET LOCAL TimeZone = 'UTC';
CREATE SCHEMA partman;
CREATE EXTENSION pg_partman SCHEMA partman;
CREATE TABLE public.pm_theirs (id bigint, ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
CREATE TABLE public.pm_ours (id bigint, ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT partman.create_parent('public.pm_theirs', 'ts', 'native', 'monthly', p_premake := 4) AS partman_done \gset
SELECT npc_scale.manage_partitions('public.pm_ours', 'ts', '1 month', 4) AS ours_done \gset
SELECT set_eq(
  $$ SELECT replace(c.relname, 'pm_ours', 'pm_x') || ' ' || pg_get_expr(c.relpartbound, c.oid)
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.pm_ours'::regclass $$,
  $$ SELECT replace(c.relname, 'pm_theirs', 'pm_x') || ' ' || pg_get_expr(c.relpartbound, c.oid)
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'public.pm_theirs'::regclass $$,
  'npc_scale creates the same partitions (names and bounds, default included) as pg_partman');
-- Hourly partitions of a parent with a 60-character name: the name is cut
-- so the suffix survives, as pg_partman does (Postgres would otherwise cut
-- the suffix, and every hour of a day would get one name).
CREATE TABLE public.pm_ours_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx (id bigint, ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
CREATE TABLE public.pm_theirxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx (id bigint, ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT partman.create_parent('public.pm_theirxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', 'ts', 'native', 'hourly', p_premake := 3) AS partman_hourly \gset
SELECT npc_scale.manage_partitions('public.pm_ours_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx', 'ts', '1 hour', 3) AS ours_hourly \gset
SELECT set_eq(
  $$ SELECT substr(c.relname, 9) || ' ' || pg_get_expr(c.relpartbound, c.oid)
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'public.pm_ours_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'::regclass $$,
  $$ SELECT substr(c.relname, 9) || ' ' || pg_get_expr(c.relpartbound, c.oid)
       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'public.pm_theirxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'::regclass $$,
  'long parent names: the same hourly partitions, names cut the same way, as pg_partman');

SELECT * FROM finish();
ROLLBACK;
