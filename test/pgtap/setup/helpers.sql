-- Helpers for the pgTAP files, installed once by test/run in the test database.
CREATE SCHEMA IF NOT EXISTS npc_test;

-- Wait for a condition instead of sleeping: evaluate `condition` (a boolean
-- SQL expression or query) every 20 ms until it is true; raise after `timeout`.
-- Clears the statistics snapshot each round so pg_stat_activity is live even
-- inside one transaction.
CREATE OR REPLACE FUNCTION npc_test.wait_for(condition text, timeout interval DEFAULT '10 s')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  deadline timestamptz := clock_timestamp() + timeout;
  ok boolean;
BEGIN
  LOOP
    PERFORM pg_stat_clear_snapshot();
    EXECUTE 'SELECT (' || condition || ')::boolean' INTO ok;
    IF ok THEN RETURN true; END IF;
    IF clock_timestamp() > deadline THEN
      RAISE EXCEPTION 'timed out after % waiting for: %', timeout, condition
        USING ERRCODE = 'query_canceled';
    END IF;
    PERFORM pg_sleep(0.02);
  END LOOP;
END $$;

-- pid of a running npc_scale worker by short name ('dispatcher' | 'maintenance').
CREATE OR REPLACE FUNCTION npc_test.worker_pid(short_name text) RETURNS integer
LANGUAGE sql AS $$
  SELECT pid FROM npc_scale.worker_status() WHERE name = 'npc_scale ' || short_name
$$;
