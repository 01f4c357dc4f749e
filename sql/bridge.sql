-- The C++/Postgres bridge (src/pg/guard.hpp).
SELECT npc_scale._bridge_selftest('ok');
SELECT npc_scale._bridge_destructor_count() AS before \gset

-- A C++ npc_scale::Error becomes an ERROR with its SQLSTATE, detail and hint.
SELECT npc_scale._bridge_selftest('npc_error');
\echo :LAST_ERROR_SQLSTATE
-- Any other C++ exception becomes an internal error, never a crash.
SELECT npc_scale._bridge_selftest('std_error');
\echo :LAST_ERROR_SQLSTATE
-- A Postgres ERROR inside guarded C++ keeps its SQLSTATE and message …
SELECT npc_scale._bridge_selftest('pg_error');
\echo :LAST_ERROR_SQLSTATE
-- … and C++ can catch it as an exception.
SELECT npc_scale._bridge_selftest('pg_error_caught');
-- Destructors ran on every path: 1 (npc_error) + 1 (std_error) + 2 (pg_error) + 2 (caught).
SELECT npc_scale._bridge_destructor_count() - :before AS destructors_run;

-- A bad mode names the value.
SELECT npc_scale._bridge_selftest('no such mode');
\echo :LAST_ERROR_SQLSTATE

-- The session is still healthy after all of that.
SELECT npc_scale._bridge_selftest('ok'), 1 + 1 AS two;
