-- Native partition management: bad input, premake with pg_partman-style
-- names, UTC bounds whatever the session time zone, the default partition's
-- rows moved when their range is created, retention (drop or detach),
-- indexes and privileges reaching new partitions, and bound parity with
-- pg_partman 4.7 itself.
\ir setup/fresh.sql
BEGIN;
SELECT plan(77);
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
-- Bounds are computed for years 0001-9999: values reaching beyond are named
-- here, not failed on in every maintenance run.
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '1 month', 4, '3000 years') $$, '22023',
  'retention 3000 years is more than 1000 years', 'a retention of millennia is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '3650 days', 1000) $$, '22023',
  'premake 1000 x partition_interval 3650 days reaches more than 1000 years ahead', 'premake reaching past the millennium is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '200 years') $$, '22023',
  'partition_interval 200 years is more than 100 years', 'a partition of centuries is refused');
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_mem', 'occurred_at', '3000000 days', 1000) $$, '22023',
  'partition_interval 3000000 days is more than 100 years', 'an interval whose premake product would overflow is named, not an overflow');
CREATE TEMP TABLE pm_tmp (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('pm_tmp', 'ts', '1 day') $$, '42809',
  'relation pm_tmp is a temporary table: the maintenance worker cannot maintain it', 'a temporary parent is refused');
SELECT throws_ok($$ SELECT npc_scale._child_name('pm_mem', repeat('s', 62)) $$, '42622',
  'partition suffix "' || repeat('s', 62) || '" is longer than 61 bytes', 'a name with no room for its suffix is an error, not an endless loop');
SELECT throws_ok($$ SELECT * FROM npc_scale._partition_bounds('1 day', now(), 1, 2147483647) $$, '22023',
  'partition counts before=1, after=2147483647 are out of range', 'partition counts whose sum overflows are refused');

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

-- A managed parent's owner and grants reach the partitions maintenance
-- makes (the worker runs as the bootstrap superuser): PUBLIC's and grant
-- options included.
CREATE ROLE pm_owner;
CREATE TABLE public.pm_owned (id bigint GENERATED ALWAYS AS IDENTITY, ts timestamptz NOT NULL, a int,
                              twice int GENERATED ALWAYS AS (a * 2) STORED) PARTITION BY RANGE (ts);
ALTER TABLE public.pm_owned OWNER TO pm_owner;
GRANT SELECT ON public.pm_owned TO PUBLIC;
GRANT INSERT ON public.pm_owned TO pm_reader WITH GRANT OPTION;
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_owned', 'ts', '1 month', 2) $$,
  'a parent granted to PUBLIC is managed');
SELECT is((SELECT count(*)::int FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'public.pm_owned'::regclass AND c.relowner = 'pm_owner'::regrole), 6,
  'every partition, the default one too, belongs to the parent''s owner');
SELECT ok((SELECT bool_and(has_table_privilege('public', i.inhrelid, 'SELECT')
                           AND has_table_privilege('pm_reader', i.inhrelid, 'INSERT WITH GRANT OPTION'))
             FROM pg_inherits i WHERE i.inhparent = 'public.pm_owned'::regclass),
  'and has the parent''s grants');

-- Rows in the default partition for a range before the premade ones
-- (written while no partition covered it) get their partition too, with
-- generated columns computed again and identities kept.
INSERT INTO public.pm_owned (ts, a) VALUES (now() - interval '6 months', 21), (now() + interval '5 months', 4);
SELECT is((SELECT count(*)::int FROM public.pm_owned_default), 2, 'two rows outside the premade range are in the default partition');
SELECT is(npc_scale.run_maintenance('public.pm_owned'), 1, 'run_maintenance makes one partition');
SELECT is((SELECT tableoid::regclass::text || ' ' || twice || ' ' || id FROM public.pm_owned WHERE a = 21),
          'pm_owned_p' || to_char((now() - interval '6 months') AT TIME ZONE 'UTC', 'YYYY_MM') || ' 42 1',
  'the older row''s, into which it moved');
SELECT is((SELECT count(*)::int FROM public.pm_owned_default), 1, 'the row beyond the premade range waits for its own');

-- Moving rows out of the default partition is not a delete: the game's row
-- triggers (here one that forbids deletes) do not fire.
CREATE FUNCTION pg_temp.no_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'rows of pm_owned are never deleted'; END $$;
CREATE TRIGGER pm_owned_no_deletes BEFORE DELETE ON public.pm_owned FOR EACH ROW EXECUTE FUNCTION pg_temp.no_deletes();
INSERT INTO public.pm_owned (ts, a) VALUES (now() - interval '9 months', 5);
SELECT is(npc_scale.run_maintenance('public.pm_owned'), 1, 'a row is moved out of the default partition past a delete trigger');
-- A long history in the default partition is taken out one partition per
-- call (each call one transaction: ATTACH holds the default partition's
-- ACCESS EXCLUSIVE lock to COMMIT); -infinity stays where it is.
CREATE TABLE public.pm_long (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pm_long', 'ts', '1 month', 2) AS long_made \gset
INSERT INTO public.pm_long SELECT date_trunc('month', now()) - make_interval(months => g) + interval '3 days'
  FROM generate_series(3, 32) g;
INSERT INTO public.pm_long VALUES ('-infinity'), ('0001-01-01 00:00:00+00'::timestamptz - interval '1 hour');
CREATE FUNCTION pg_temp.calls_until_done(parent regclass, OUT calls int, OUT made int) LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
  calls := 0; made := 0;
  LOOP
    n := npc_scale.run_maintenance(parent);
    EXIT WHEN n = 0 OR calls > 100;
    calls := calls + 1; made := made + n;
  END LOOP;
END $$;
SELECT is(npc_scale.run_maintenance('public.pm_long'), 1, 'a call makes one of the 30 past partitions');
SELECT is((SELECT (calls, made)::text FROM pg_temp.calls_until_done('public.pm_long')), '(29,29)',
  'the next 29 calls one each');
SELECT is((SELECT string_agg(coalesce(to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24 BC'), ts::text), ',' ORDER BY ts)
             FROM public.pm_long_default),
  '-infinity,0001-12-31 23 BC', 'only -infinity and a row before year 1 (no partition has a name for it) are left in the default partition');
-- A MINVALUE partition made by hand counts as overlapping too.
CREATE TABLE public.pm_min (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
DO $$ BEGIN
  EXECUTE format('CREATE TABLE public.pm_min_old PARTITION OF public.pm_min FOR VALUES FROM (MINVALUE) TO (%L)',
                 (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month' + interval '10 days') AT TIME ZONE 'UTC');
END $$;
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_min', 'ts', '1 month', 2) $$,
  'a MINVALUE partition overlapping the first premade months is no error');
SELECT is((SELECT count(*)::int FROM pg_inherits WHERE inhparent = 'public.pm_min'::regclass), 1 + 1 + 3 + 1,
  'the two months it overlaps are not made, but what it leaves of the second is; this one, two ahead and the default are');

-- With retention, rows of the default partition older than it go, as
-- their partition would have.
CREATE TABLE public.pm_ret (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pm_ret', 'ts', '1 month', 2, '3 months') AS ret \gset
INSERT INTO public.pm_ret VALUES (now() - interval '12 months', 1), ((date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 months' + interval '10 days') AT TIME ZONE 'UTC', 2);
SELECT npc_scale.run_maintenance('public.pm_ret') AS ret_run \gset
SELECT results_eq($$ SELECT v, tableoid::regclass::text LIKE '%default' FROM public.pm_ret $$, $$ VALUES (2, false) $$,
  'the default partition''s row past retention is gone, the other is in a partition of its own');

-- The game's code on a managed table (triggers, and what they call) runs as
-- the table's owner, never as the worker's superuser: a trigger's owner
-- could otherwise make itself superuser at the next run. Here a delete
-- trigger, and one ENABLE ALWAYS (which fires even while rows move).
CREATE TABLE public.pm_sec_log (who text, what text);
GRANT INSERT ON public.pm_sec_log TO pm_owner;
CREATE FUNCTION public.pm_sec_who() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    RESET ROLE;  -- back to the session's superuser, if it could
  EXCEPTION WHEN OTHERS THEN
    INSERT INTO public.pm_sec_log VALUES ('refused ' || SQLSTATE, 'reset role');
  END;
  INSERT INTO public.pm_sec_log VALUES (current_user, TG_ARGV[0]);
  RETURN OLD;
END $$;
CREATE TABLE public.pm_sec (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts);
ALTER TABLE public.pm_sec OWNER TO pm_owner;
SELECT npc_scale.manage_partitions('public.pm_sec', 'ts', '1 month', 2, '3 months') AS sec \gset
CREATE TRIGGER pm_sec_delete BEFORE DELETE ON public.pm_sec FOR EACH ROW EXECUTE FUNCTION public.pm_sec_who('delete');
CREATE TRIGGER pm_sec_always BEFORE DELETE ON public.pm_sec FOR EACH ROW EXECUTE FUNCTION public.pm_sec_who('always');
ALTER TABLE public.pm_sec ENABLE ALWAYS TRIGGER pm_sec_always;
INSERT INTO public.pm_sec VALUES (now() - interval '12 months', 1), ((date_trunc('month', now() AT TIME ZONE 'UTC') - interval '3 months' + interval '10 days') AT TIME ZONE 'UTC', 2);
SELECT npc_scale.run_maintenance('public.pm_sec') AS sec_run \gset
SELECT results_eq($$ SELECT who, what, count(*)::int FROM public.pm_sec_log GROUP BY 1, 2 ORDER BY 2, 1 $$,
  $$ VALUES ('pm_owner'::text, 'always'::text, 2), ('pm_owner', 'delete', 1),
            ('refused 42501', 'reset role', 3) $$,
  'the retention delete and the move fire the game''s triggers as the table''s owner, who cannot RESET ROLE to the superuser');
-- Acting as a table's owner is for whoever has its rights already: no role
-- becomes another through it.
SET ROLE pm_reader;
SELECT throws_ok($$ SELECT npc_scale._as_owner_of('public.pm_sec', 'SELECT 1') $$, '42501',
  'must be a member of the owner of relation "pm_sec" to change its rows as the owner',
  'another role cannot act as a table''s owner');
RESET ROLE;
SELECT throws_ok($$ SELECT npc_scale._as_owner_of(0, 'SELECT 1') $$, '42P01',
  'relation with OID 0 does not exist', 'acting as the owner of no relation is named');
SELECT throws_ok($$ SELECT npc_scale._as_owner_of('public.pm_sec', 'COMMIT') $$, '0A000',
  format('npc_scale: statement as the owner of relation %s refused by SPI (SPI_ERROR_TRANSACTION)', 'public.pm_sec'::regclass::oid),
  'a statement SPI refuses is named, not an internal error');
-- The table's owner may run its maintenance itself (it failed at the end,
-- on recording the run, for want of rights on partition_configs).
SET ROLE pm_owner;
SELECT lives_ok($$ SELECT npc_scale.run_maintenance('public.pm_sec') $$, 'the parent''s owner runs its maintenance');
RESET ROLE;

-- A retention step that fails (here a view depends on the old partition)
-- is a WARNING: the partitions premade in the same run are kept.
CREATE TABLE public.pm_keep (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pm_keep', 'ts', '1 month', 2, '3 months') AS keep \gset
DO $$ BEGIN
  EXECUTE format('CREATE TABLE public.pm_keep_old PARTITION OF public.pm_keep FOR VALUES FROM (%L) TO (%L)',
                 now() - interval '12 months', now() - interval '11 months');
END $$;
CREATE VIEW public.pm_keep_view AS SELECT * FROM public.pm_keep_old;
SELECT format('public.pm_keep_p%s', to_char((now() + interval '2 months') AT TIME ZONE 'UTC', 'YYYY_MM')) AS keep_ahead \gset
DROP TABLE :keep_ahead;
SELECT is(npc_scale.run_maintenance('public.pm_keep'), 1, 'a run whose retention fails still makes the missing partition');
SELECT ok(to_regclass(:'keep_ahead') IS NOT NULL AND to_regclass('public.pm_keep_old') IS NOT NULL,
  'it is there, and the partition the view depends on is left in place');

-- A partition made by hand (or by pg_partman, or under another interval)
-- whose range overlaps one to be made is left alone, not an error; what it
-- leaves of that range is made as partitions of its own, so no row there
-- stays in the default partition.
CREATE TABLE public.pm_hand (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
DO $$ BEGIN
  EXECUTE format('CREATE TABLE public.pm_hand_mine PARTITION OF public.pm_hand FOR VALUES FROM (%L) TO (%L)',
                 (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 day') AT TIME ZONE 'UTC',
                 (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '10 days') AT TIME ZONE 'UTC');
END $$;
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_hand', 'ts', '1 month', 2) $$,
  'a partition made by hand across this month''s start is no error');
SELECT is((SELECT count(*)::int FROM pg_inherits WHERE inhparent = 'public.pm_hand'::regclass), 7,
  'it is kept; the two months it overlaps are not made but what it leaves of them is, the other three and the default are');
INSERT INTO public.pm_hand VALUES ((date_trunc('month', now() AT TIME ZONE 'UTC') + interval '15 days') AT TIME ZONE 'UTC'),
                                  ((date_trunc('month', now() AT TIME ZONE 'UTC') - interval '5 days') AT TIME ZONE 'UTC');
SELECT is((SELECT string_agg(tableoid::regclass::text, ',' ORDER BY ts) FROM public.pm_hand),
  'pm_hand_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month', 'YYYY_MM') || '_from_'
    || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '1 month', 'YYYYMMDD') || '_0000,'
    || 'pm_hand_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM') || '_from_'
    || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '10 days', 'YYYYMMDD') || '_0000',
  'rows on either side of it land in the partitions made for the rest of their months, not the default');

-- A partition that has the very name npc_scale gives a range but other
-- bounds (pg_partman's at a local midnight east of UTC; a finer interval's
-- of the same name format) is such a partition too: what it leaves of the
-- range is made, not taken as covered because the name is.
CREATE TABLE public.pm_named (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' AS named_next \gset
DO $$ BEGIN
  EXECUTE format('CREATE TABLE public.%I PARTITION OF public.pm_named FOR VALUES FROM (%L) TO (%L)',
                 'pm_named_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM'),
                 (date_trunc('month', now() AT TIME ZONE 'UTC') - interval '2 hours') AT TIME ZONE 'UTC',
                 (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month' - interval '2 hours') AT TIME ZONE 'UTC');
END $$;
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_named', 'ts', '1 month', 2) $$,
  'a partition by hand with this month''s name, two hours early, is no error');
INSERT INTO public.pm_named VALUES (:'named_next'::timestamptz - interval '1 hour');
SELECT is((SELECT tableoid::regclass::text FROM public.pm_named),
  'pm_named_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM') || '_from_'
    || to_char(:'named_next'::timestamptz AT TIME ZONE 'UTC' - interval '2 hours', 'YYYYMMDD_HH24MI'),
  'a row in the two hours it leaves of the month lands in a partition made for them, not the default');
SELECT is(npc_scale.run_maintenance('public.pm_named'), 0, 'and the next run makes nothing more');
DROP TABLE public.pm_named;
-- The same name on a range that does not overlap this one at all (named in
-- another time zone): this month gets a partition under a name of its own.
CREATE TABLE public.pm_elsewhere (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
DO $$ BEGIN
  EXECUTE format('CREATE TABLE public.%I PARTITION OF public.pm_elsewhere FOR VALUES FROM (%L) TO (%L)',
                 'pm_elsewhere_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM'),
                 '2000-01-01 00:00+00', '2000-02-01 00:00+00');
END $$;
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_elsewhere', 'ts', '1 month', 2) $$,
  'this month''s name taken by a partition of another range is no error');
INSERT INTO public.pm_elsewhere VALUES (now());
SELECT is((SELECT tableoid::regclass::text FROM public.pm_elsewhere),
  'pm_elsewhere_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM') || '_from_'
    || to_char(date_trunc('month', now() AT TIME ZONE 'UTC'), 'YYYYMMDD') || '_0000',
  'a row of this month lands in its partition, named for its start');
DROP TABLE public.pm_elsewhere;

-- Dropping a managed parent takes its settings with it (else maintenance
-- would fail on it every run, naming a bare OID).
SELECT 'public.pm_hand'::regclass::oid AS hand_oid \gset
DROP TABLE public.pm_hand;
SELECT is((SELECT count(*)::int FROM npc_scale.partition_configs WHERE parent::oid = :hand_oid), 0,
  'a dropped parent''s partition settings go with it');

-- Premade partitions must outlast two runs of maintenance.
CREATE TABLE public.pm_short (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_short', 'ts', '15 minutes', 2) $$, '22023',
  'premake 2 x partition_interval 00:15:00 covers less than two runs of partition maintenance (every 01:00:00)',
  'premake x interval shorter than two maintenance runs is refused');
SELECT lives_ok($$ INSERT INTO npc_scale.partition_configs (parent, control, partition_interval, premake)
                   VALUES ('public.pm_short', 'ts', '15 minutes', 2) $$,
  'a row inserted as it stands (as by pg_restore onto a server with a longer interval) is kept, with a warning');
SELECT throws_ok($$ UPDATE npc_scale.partition_configs SET premake = 3 WHERE parent = 'public.pm_short'::regclass $$, '22023',
  'premake 3 x partition_interval 00:15:00 covers less than two runs of partition maintenance (every 01:00:00)',
  'an UPDATE that still leaves a gap is refused');

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

-- A date column needs whole days: bounds between midnights cannot be
-- written in a date, and a row would never find its partition.
CREATE TABLE public.pm_date (d date NOT NULL) PARTITION BY RANGE (d);
SELECT throws_ok($$ SELECT npc_scale.manage_partitions('public.pm_date', 'd', '36 hours') $$, '22023',
  'partition_interval 36:00:00 is not a whole number of days, as date column "d" needs',
  'a date column refuses an interval that is not whole days');
SELECT lives_ok($$ SELECT npc_scale.manage_partitions('public.pm_date', 'd', '2 days', 4) $$,
  'and takes whole days');

-- A row the game will not let go (here: past retention, with a trigger
-- refusing its delete) does not stop the premade partitions: the run warns
-- and still makes the partition that was missing.
CREATE TABLE public.pm_stuck (ts timestamptz NOT NULL, v int) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pm_stuck', 'ts', '1 month', 2, '3 months') AS stuck_made \gset
CREATE TRIGGER pm_stuck_no_deletes BEFORE DELETE ON public.pm_stuck FOR EACH ROW EXECUTE FUNCTION pg_temp.no_deletes();
INSERT INTO public.pm_stuck VALUES (now() - interval '2 years', 1);
SELECT 'public.pm_stuck_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months', 'YYYY_MM')
  AS stuck_last \gset
DROP TABLE :stuck_last;
SELECT lives_ok($$ SELECT npc_scale.run_maintenance('public.pm_stuck') $$,
  'maintenance of a parent whose old row refuses its retention delete does not fail');
SELECT ok(to_regclass(:'stuck_last') IS NOT NULL, 'the missing premade partition is made all the same');
SELECT is((SELECT count(*)::int FROM public.pm_stuck_default), 1, 'the refused row stays in the default partition');

-- With retention_keep_table, a row past retention that sits in the default
-- partition (written while nothing covered its range) gets its partition,
-- which retention then detaches: gone from the parent like its peers, kept.
CREATE TABLE public.pm_keep2 (ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pm_keep2', 'ts', '1 month', 2, '3 months', true) AS keep2 \gset
INSERT INTO public.pm_keep2 VALUES (now() - interval '1 year');
SELECT 'public.pm_keep2_p' || to_char((now() - interval '1 year') AT TIME ZONE 'UTC', 'YYYY_MM') AS keep2_old \gset
SELECT is((SELECT made FROM pg_temp.calls_until_done('public.pm_keep2')), 2,
  'with retention_keep_table, an old row of the default partition gets its partition, then detached');
SELECT results_eq($$ SELECT (SELECT count(*)::int FROM public.pm_keep2), (SELECT count(*)::int FROM $$ || :'keep2_old' || $$),
                            (SELECT count(*)::int FROM pg_inherits WHERE inhrelid = $$ || quote_literal(:'keep2_old') || $$::regclass) $$,
  $$ VALUES (0, 1, 0) $$, 'the row is gone from the parent and kept in the detached table');

-- The key column renamed (Postgres allows it): maintenance follows the key
-- by its number, so premake and retention go on, and the settings follow.
CREATE TABLE public.pm_renamed (id bigint, ts timestamptz NOT NULL) PARTITION BY RANGE (ts);
SELECT npc_scale.manage_partitions('public.pm_renamed', 'ts', '1 day', 2, '10 days') AS renamed_made \gset
CREATE TABLE public.pm_renamed_old PARTITION OF public.pm_renamed
  FOR VALUES FROM ('2001-01-01 00:00+00') TO ('2001-01-02 00:00+00');
ALTER TABLE public.pm_renamed RENAME COLUMN ts TO happened_at;
SELECT 'public.pm_renamed_p' || to_char(date_trunc('day', now() AT TIME ZONE 'UTC') + interval '2 days', 'YYYY_MM_DD')
  AS renamed_last \gset
SELECT ok(to_regclass(:'renamed_last') IS NOT NULL, 'the last premade partition was made (before the rename)');
DROP TABLE :renamed_last;
SELECT is(npc_scale.run_maintenance('public.pm_renamed'), 2,
  'with its key column renamed, run_maintenance makes the missing partition and drops the old one');
SELECT ok(to_regclass(:'renamed_last') IS NOT NULL AND to_regclass('public.pm_renamed_old') IS NULL,
  'the missing partition is back and the one past retention is gone');
SELECT is((SELECT control::text FROM npc_scale.partition_configs WHERE parent = 'public.pm_renamed'::regclass), 'happened_at',
  'the settings name the renamed column');

-- The sql_drop event trigger does not stand in the way of dropping the
-- extension itself (its tables go in the same command; rolled back below).
SELECT lives_ok('DROP EXTENSION npc_scale', 'DROP EXTENSION npc_scale works, event trigger included');

SELECT * FROM finish();
ROLLBACK;
