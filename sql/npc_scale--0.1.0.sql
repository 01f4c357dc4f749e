-- npc_scale 0.1.0
\echo Use "CREATE EXTENSION npc_scale" to load this file. \quit

-- The schema npc_scale is created by CREATE EXTENSION (control file).
GRANT USAGE ON SCHEMA npc_scale TO PUBLIC;

-- One row per background worker, from shared memory.
CREATE FUNCTION npc_scale.worker_status(
    OUT name text,
    OUT pid integer,
    OUT state text,
    OUT started_at timestamptz,
    OUT starts bigint,
    OUT config_reloads bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'npc_scale_worker_status'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION npc_scale.worker_status() IS
'npc_scale background workers: name, pid (NULL when down), state, started_at, starts since server start, config reloads';

-- Bridge self-tests (C++ exception <-> Postgres error); for the test suite.
CREATE FUNCTION npc_scale._bridge_selftest(mode text) RETURNS text
AS 'MODULE_PATHNAME', 'npc_scale_bridge_selftest'
LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION npc_scale._bridge_destructor_count() RETURNS bigint
AS 'MODULE_PATHNAME', 'npc_scale_bridge_destructor_count'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION npc_scale._bridge_selftest(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION npc_scale._bridge_destructor_count() FROM PUBLIC;
