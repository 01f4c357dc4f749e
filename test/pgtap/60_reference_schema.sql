-- The seed's reference game schema (create_reference_schema) and the world
-- generator (generate_world): tables, monthly npc_memory partitions, the six
-- hot-query indexes, the resource matview, idempotency, input errors, and that
-- each hot query's plan on a 500-NPC world uses its index.
-- Everything happens in schema game_t and is rolled back.
\ir setup/fresh.sql
BEGIN;
SELECT plan(57);

-- Month helpers (UTC month starts, offset from the current month).
CREATE FUNCTION pg_temp.month_start(off integer) RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => off)) AT TIME ZONE 'UTC'
$$;
CREATE FUNCTION pg_temp.month_part(off integer) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT 'npc_memory_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => off), 'YYYY_MM')
$$;
-- The plan of a query, as EXPLAIN (FORMAT JSON) text, and the indexes it uses.
CREATE FUNCTION pg_temp.plan(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE p json;
BEGIN
  EXECUTE 'EXPLAIN (FORMAT JSON) ' || q INTO p;
  RETURN p::text;
END $$;
CREATE FUNCTION pg_temp.plan_indexes(q text) RETURNS text[] LANGUAGE sql AS $$
  SELECT coalesce(array_agg(DISTINCT i #>> '{}'), '{}')
    FROM jsonb_path_query(pg_temp.plan(q)::jsonb, 'strict $.**."Index Name"') i
$$;

SELECT has_function('npc_scale', 'create_reference_schema', ARRAY['name'], 'create_reference_schema(name) exists');
SELECT has_function('npc_scale', 'generate_world', ARRAY['name', 'integer', 'integer', 'integer'],
  'generate_world(name, int, int, int) exists');

-- Bad targets.
SELECT throws_ok($$ SELECT npc_scale.create_reference_schema(NULL) $$, '22023',
  'create_reference_schema: target schema name must not be NULL or empty (got NULL)', 'NULL target is rejected');
SELECT throws_ok($$ SELECT npc_scale.create_reference_schema('') $$, '22023',
  'create_reference_schema: target schema name must not be NULL or empty (got '''')', 'empty target is rejected');
SELECT throws_ok($$ SELECT npc_scale.create_reference_schema('npc_scale') $$, '22023',
  'create_reference_schema: target schema npc_scale is reserved', 'the extension''s own schema is rejected');

SELECT lives_ok($$ SELECT npc_scale.create_reference_schema('game_t') $$, 'create_reference_schema(''game_t'')');
SELECT is(
  (SELECT array_agg(relname::text ORDER BY relname) FROM pg_class
    WHERE relnamespace = 'game_t'::regnamespace AND relkind IN ('r', 'p') AND NOT relispartition),
  ARRAY['npc_battle_history', 'npc_memory', 'npc_relationships', 'npc_village_config', 'npc_world_state',
        'village_resources', 'villages'],
  'the seven tables exist');

-- npc_memory: RANGE on occurred_at, DEFAULT + this and next month.
SELECT is(pg_get_partkeydef('game_t.npc_memory'::regclass), 'RANGE (occurred_at)',
  'npc_memory is partitioned by RANGE (occurred_at)');
SELECT is((SELECT partdefid::regclass::text FROM pg_partitioned_table WHERE partrelid = 'game_t.npc_memory'::regclass),
  'game_t.npc_memory_default', 'with a DEFAULT partition');
SELECT is(
  (SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'game_t.npc_memory'::regclass AND NOT c.relpartbound IS NULL
      AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'),
  ARRAY[pg_temp.month_part(0), pg_temp.month_part(1)],
  'and this month''s and next month''s partitions');
INSERT INTO game_t.npc_memory (world_id, npc_id, memory_type, content, importance, occurred_at)
SELECT 1, 0, 'observation', 'routing probe', 0.1, t
  FROM unnest(ARRAY[pg_temp.month_start(0) - interval '1 microsecond', pg_temp.month_start(0),
                    pg_temp.month_start(1) - interval '1 microsecond', pg_temp.month_start(1),
                    pg_temp.month_start(2)]) t;
SELECT is(
  (SELECT array_agg(tableoid::regclass::text ORDER BY occurred_at) FROM game_t.npc_memory WHERE npc_id = 0),
  ARRAY['game_t.npc_memory_default', 'game_t.' || pg_temp.month_part(0), 'game_t.' || pg_temp.month_part(0),
        'game_t.' || pg_temp.month_part(1), 'game_t.npc_memory_default'],
  'partition bounds are UTC month starts');

-- The six hot-query indexes.
SELECT has_index('game_t', 'villages', 'idx_villages_player_active', ARRAY['player_id', 'active'],
  'idx_villages_player_active (player_id, active)');
SELECT has_index('game_t', 'villages', 'idx_villages_coordinates', ARRAY['x', 'y'], 'idx_villages_coordinates (x, y)');
SELECT has_index('game_t', 'npc_world_state', 'idx_npc_world_state_lookup', ARRAY['world_id', 'npc_id'],
  'idx_npc_world_state_lookup (world_id, npc_id)');
SELECT has_index('game_t', 'npc_relationships', 'idx_relationships_composite',
  ARRAY['npc_id', 'world_id', 'relationship_type'], 'idx_relationships_composite (npc_id, world_id, relationship_type)');
SELECT has_index('game_t', 'npc_memory', 'idx_memory_recent', ARRAY['npc_id', 'occurred_at'],
  'idx_memory_recent (npc_id, occurred_at DESC)');
SELECT has_index('game_t', 'npc_battle_history', 'idx_battle_recent', ARRAY['npc_id', 'occurred_at'],
  'idx_battle_recent (npc_id, occurred_at DESC)');
SELECT is(
  (SELECT array_agg(c.relname::text || ' ' || coalesce(pg_get_expr(i.indpred, i.indrelid), '-')
                    || CASE WHEN pg_get_indexdef(i.indexrelid) ~ 'occurred_at DESC' THEN ' DESC' ELSE '' END
                    ORDER BY c.relname)
     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relname IN ('idx_villages_player_active', 'idx_villages_coordinates', 'idx_npc_world_state_lookup',
                        'idx_relationships_composite', 'idx_memory_recent', 'idx_battle_recent')
      AND c.relnamespace = 'game_t'::regnamespace),
  ARRAY['idx_battle_recent - DESC',
        'idx_memory_recent (importance > (0.5)::double precision) DESC',
        'idx_npc_world_state_lookup -',
        'idx_relationships_composite -',
        'idx_villages_coordinates (active = true)',
        'idx_villages_player_active (active = true)'],
  'partial where the seed says WHERE, DESC where it says DESC');

SELECT has_materialized_view('game_t', 'npc_resource_summary', 'the npc_resource_summary matview exists');
SELECT index_is_unique('game_t', 'npc_resource_summary', 'npc_resource_summary_npc_id_idx',
  'with a unique index on npc_id');

-- Idempotent.
CREATE TEMP TABLE objs0 AS
  SELECT format('%s', relname) AS name, relkind::text AS kind FROM pg_class WHERE relnamespace = 'game_t'::regnamespace
  UNION ALL SELECT format('%s', conname), 'constraint' FROM pg_constraint WHERE connamespace = 'game_t'::regnamespace;
SELECT lives_ok($$ SELECT npc_scale.create_reference_schema('game_t') $$, 'a second call succeeds');
SELECT bag_eq(
  $$ SELECT format('%s', relname), relkind::text FROM pg_class WHERE relnamespace = 'game_t'::regnamespace
     UNION ALL SELECT format('%s', conname), 'constraint' FROM pg_constraint WHERE connamespace = 'game_t'::regnamespace $$,
  $$ SELECT name, kind FROM objs0 $$,
  'and creates nothing new (relations, indexes, constraints)');

-- generate_world: bad input.
CREATE SCHEMA game_t_empty;
SELECT throws_ok($$ SELECT npc_scale.generate_world('game_t', 0) $$, '22023',
  'generate_world: npcs must be at least 1 (got 0)', 'npcs < 1 is rejected');
SELECT throws_ok($$ SELECT npc_scale.generate_world('game_t', 10, 0) $$, '22023',
  'generate_world: villages_per_npc must be at least 1 (got 0)', 'villages_per_npc < 1 is rejected');
SELECT throws_ok($$ SELECT npc_scale.generate_world('game_t', NULL) $$, '22004',
  'generate_world: npcs, villages_per_npc and seed must not be NULL (got npcs=NULL, villages_per_npc=3, seed=1)',
  'NULL npcs is rejected');
SELECT throws_ok($$ SELECT npc_scale.generate_world('no_such_game', 10) $$, '3F000',
  'generate_world: schema no_such_game does not exist', 'a missing schema is rejected');
SELECT throws_ok($$ SELECT npc_scale.generate_world('game_t_empty', 10) $$, '42P01',
  'generate_world: game_t_empty.villages does not exist', 'a schema without the tables is rejected');
SELECT throws_ok($$ SELECT npc_scale.generate_world('game_t', 100000, 3) $$, '22023',
  'generate_world: 100000 NPCs with 3 villages each do not fit on the 401x401 map', 'an overfull map is rejected');

-- Deterministic per seed (now() is fixed within this transaction).
CREATE FUNCTION pg_temp.world_digest() RETURNS text LANGUAGE sql AS $$
  SELECT md5(string_agg(d, '|' ORDER BY d)) FROM (
    SELECT v::text AS d FROM game_t.villages v
    UNION ALL SELECT r::text FROM game_t.village_resources r
    UNION ALL SELECT c::text FROM game_t.npc_village_config c
    UNION ALL SELECT w::text FROM game_t.npc_world_state w
    UNION ALL SELECT concat_ws(',', npc_id, target_npc_id, relationship_type, trust, interaction_count,
                               last_interaction_at) FROM game_t.npc_relationships
    UNION ALL SELECT concat_ws(',', npc_id, memory_type, content, importance, related_npc_id, occurred_at)
                FROM game_t.npc_memory
    UNION ALL SELECT concat_ws(',', report_id, npc_id, role, village_id, opponent_npc_id, opponent_village_id,
                               battle_type, outcome, troops_sent, troops_lost, loot_wood, occurred_at)
                FROM game_t.npc_battle_history) s
$$;
SELECT npc_scale.generate_world('game_t', 60, 3, 7);
CREATE TEMP TABLE digest7 AS SELECT pg_temp.world_digest() AS d;
SELECT npc_scale.generate_world('game_t', 60, 3, 7);
SELECT is(pg_temp.world_digest(), (SELECT d FROM digest7), 'the same seed generates the same world');
SELECT npc_scale.generate_world('game_t', 60, 3, 8);
SELECT isnt(pg_temp.world_digest(), (SELECT d FROM digest7), 'another seed another one');

-- The 500-NPC world.
SELECT lives_ok($$ SELECT npc_scale.generate_world('game_t', 500) $$, 'generate_world(''game_t'', 500)');
SELECT is((SELECT count(*) FROM game_t.villages), 1500::bigint, '1500 villages');
SELECT is((SELECT count(*) FROM game_t.village_resources), 1500::bigint, 'with resources');
SELECT is((SELECT count(*) FROM game_t.npc_village_config), 1500::bigint, 'and NPC village config');
SELECT is((SELECT count(*) FROM game_t.npc_world_state), 500::bigint, 'one world state per NPC');
SELECT is(
  (SELECT count(*) FROM (SELECT player_id FROM game_t.villages GROUP BY player_id
                          HAVING count(*) = 3 AND count(*) FILTER (WHERE is_capital) = 1) p),
  500::bigint, 'each NPC has 3 villages, one of them its capital');
SELECT ok(
  (SELECT count(DISTINCT (x, y)) = 1500 AND min(least(x, y)) >= -200 AND max(greatest(x, y)) <= 200
     FROM game_t.villages),
  'villages are on distinct tiles of the 401x401 map');
SELECT ok(
  (SELECT count(*) FILTER (WHERE NOT active) BETWEEN 1 AND 150 FROM game_t.villages),
  'a few villages are abandoned (inactive)');
SELECT ok(
  (SELECT count(*) = 500 AND sum(village_count) = 1500
          AND sum(total_wood) = (SELECT sum(wood) FROM game_t.village_resources)
          AND sum(wheat_per_hour) = (SELECT sum(wheat_production) FROM game_t.village_resources)
          AND sum(total_population) = (SELECT sum(population) FROM game_t.villages)
     FROM game_t.npc_resource_summary),
  'npc_resource_summary is refreshed: one row per NPC, totals match');
SELECT ok(
  (SELECT count(*) BETWEEN 1000 AND 3500 AND count(DISTINCT npc_id) >= 450
          AND count(DISTINCT relationship_type) = 5
     FROM game_t.npc_relationships),
  'relationships: a handful per NPC, of five types');
SELECT ok(
  (SELECT bool_and(sqrt((a.x - b.x) ^ 2 + (a.y - b.y) ^ 2) < 60)
     FROM game_t.npc_relationships r
     JOIN game_t.villages a ON a.player_id = r.npc_id AND a.is_capital
     JOIN game_t.villages b ON b.player_id = r.target_npc_id AND b.is_capital),
  'between nearby NPCs');
SELECT ok(
  (SELECT count(*) BETWEEN 10000 AND 30000 AND count(DISTINCT npc_id) = 500
          AND count(*) FILTER (WHERE importance > 0.5) BETWEEN count(*) / 5 AND count(*) / 2
          AND count(*) FILTER (WHERE importance >= 0.7) > 0
          AND min(occurred_at) < now() - interval '90 days' AND min(occurred_at) >= now() - interval '120 days'
          AND max(occurred_at) <= now()
     FROM game_t.npc_memory),
  'memories: 20..60 per NPC over four months, some important');
SELECT ok(
  (SELECT count(*) > 1000 AND count(*) = 2 * count(DISTINCT report_id)
          AND count(*) FILTER (WHERE role = 'attacker') = count(DISTINCT report_id)
          AND min(occurred_at) >= now() - interval '21 days' AND max(occurred_at) <= now()
     FROM game_t.npc_battle_history),
  'battles over the past three weeks, recorded for both sides');
SELECT ok(
  (SELECT array_agg(DISTINCT tablename::text) FROM pg_stats WHERE schemaname = 'game_t')
    @> ARRAY['npc_battle_history', 'npc_memory', 'npc_memory_default', 'npc_relationships', 'npc_resource_summary',
             'npc_village_config', 'npc_world_state', 'village_resources', 'villages'],
  'the tables are analyzed (planner statistics)');
SELECT lives_ok($$ REFRESH MATERIALIZED VIEW CONCURRENTLY game_t.npc_resource_summary $$,
  'REFRESH MATERIALIZED VIEW CONCURRENTLY works (unique index)');

-- The seed's six hot queries use their indexes: realistic data, ANALYZEd, is
-- enough; no enable_seqscan = off needed.
SELECT matches(pg_temp.plan($$ SELECT id, name, x, y FROM game_t.villages WHERE player_id = 17 AND active = TRUE $$),
  '"Index Name": "idx_villages_player_active"', '1. villages of a player: idx_villages_player_active');
SELECT matches(pg_temp.plan($$ SELECT id, player_id, x, y FROM game_t.villages
                                 WHERE active = TRUE AND x BETWEEN -20 AND 20 AND y BETWEEN -20 AND 20 $$),
  '"Index Name": "idx_villages_coordinates"', '2. villages in a box: idx_villages_coordinates');
SELECT matches(pg_temp.plan($$ SELECT * FROM game_t.npc_world_state WHERE world_id = 1 AND npc_id = 17 $$),
  '"Index Name": "idx_npc_world_state_lookup"', '3. NPC state: idx_npc_world_state_lookup');
SELECT matches(pg_temp.plan($$ SELECT target_npc_id, trust FROM game_t.npc_relationships
                                 WHERE npc_id = 17 AND world_id = 1 AND relationship_type = 'enemy' $$),
  '"Index Name": "idx_relationships_composite"', '4. relationships: idx_relationships_composite');
SELECT ok(
  pg_temp.plan_indexes($$ SELECT * FROM game_t.npc_memory
                           WHERE npc_id = 17 AND importance > 0.5
                             AND occurred_at > now() - interval '30 days' AND occurred_at <= now()
                           ORDER BY occurred_at DESC LIMIT 10 $$)
    <@ (SELECT array_agg(c.relname::text) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'game_t.idx_memory_recent'::regclass)
  AND cardinality(pg_temp.plan_indexes($$ SELECT * FROM game_t.npc_memory
                           WHERE npc_id = 17 AND importance > 0.5
                             AND occurred_at > now() - interval '30 days' AND occurred_at <= now()
                           ORDER BY occurred_at DESC LIMIT 10 $$)) > 0,
  '5. recent important memories: the partitions'' idx_memory_recent');
SELECT doesnt_match(pg_temp.plan($$ SELECT * FROM game_t.npc_memory
                                     WHERE npc_id = 17 AND importance > 0.5
                                       AND occurred_at > now() - interval '30 days' AND occurred_at <= now()
                                     ORDER BY occurred_at DESC LIMIT 10 $$),
  'Seq Scan', '   and no partition is scanned sequentially');
SELECT matches(pg_temp.plan($$ SELECT * FROM game_t.npc_battle_history WHERE npc_id = 17
                                 ORDER BY occurred_at DESC LIMIT 20 $$),
  '"Index Name": "idx_battle_recent"', '6. recent battles: idx_battle_recent');

-- A later call creates a missing month partition and moves that month's rows
-- out of the DEFAULT partition.
DO $$ BEGIN EXECUTE format('DROP TABLE game_t.%I', pg_temp.month_part(1)); END $$;
INSERT INTO game_t.npc_memory (world_id, npc_id, memory_type, content, importance, occurred_at)
VALUES (1, 0, 'observation', 'next month', 0.9, pg_temp.month_start(1) + interval '1 hour');
SELECT is((SELECT tableoid::regclass::text FROM game_t.npc_memory WHERE npc_id = 0), 'game_t.npc_memory_default',
  'without next month''s partition its rows land in DEFAULT');
SELECT lives_ok($$ SELECT npc_scale.create_reference_schema('game_t') $$, 'create_reference_schema again');
SELECT is((SELECT tableoid::regclass::text FROM game_t.npc_memory WHERE npc_id = 0), 'game_t.' || pg_temp.month_part(1),
  'recreates the partition and moves them into it');

-- Without a DEFAULT partition, older memories have nowhere to go.
ALTER TABLE game_t.npc_memory DETACH PARTITION game_t.npc_memory_default;
SELECT throws_like($$ SELECT npc_scale.generate_world('game_t', 20) $$,
  'generate_world: game_t.npc_memory has no partition for memories between %',
  'without a DEFAULT partition generate_world says which memories have no partition');
SELECT throws_ok($$ SELECT npc_scale.generate_world('game_t', 20) $$, '23514', NULL, '   (check_violation)');

SELECT * FROM finish();
ROLLBACK;
