-- Settings that would do harm are refused when set, naming the value, and
-- the extension refuses a database whose encoding its prompts cannot travel in.
\set SHOW_CONTEXT never
\set ON_ERROR_STOP 0
-- An empty prefix would make cache_clear() and the sweeps after a Redis
-- restart delete every key of the Redis database.
ALTER SYSTEM SET npc_scale.redis_prefix = '';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET npc_scale.redis_host = '';
\echo :LAST_ERROR_SQLSTATE
ALTER SYSTEM SET npc_scale.database = '';
\echo :LAST_ERROR_SQLSTATE
-- Nothing was written to postgresql.auto.conf.
SELECT count(*) AS written FROM pg_file_settings
 WHERE sourcefile LIKE '%postgresql.auto.conf' AND name IN ('npc_scale.redis_prefix', 'npc_scale.redis_host', 'npc_scale.database');
-- A value that is not empty is taken (and taken out again).
ALTER SYSTEM SET npc_scale.redis_prefix = 'game:cache:';
SELECT setting, error FROM pg_file_settings WHERE name = 'npc_scale.redis_prefix';
ALTER SYSTEM RESET npc_scale.redis_prefix;

-- A database in another encoding is refused at CREATE EXTENSION.
SELECT current_database() AS regress_db \gset
CREATE DATABASE npc_scale_latin1 TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C';
\c npc_scale_latin1
CREATE EXTENSION npc_scale;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS installed FROM pg_extension WHERE extname = 'npc_scale';
\c :regress_db
DROP DATABASE npc_scale_latin1;
