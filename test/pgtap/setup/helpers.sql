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

-- The simulated GPUs test/run started (name → base URL), filled by test/run.
CREATE TABLE IF NOT EXISTS npc_test.gpus (name text PRIMARY KEY, url text NOT NULL);

CREATE OR REPLACE FUNCTION npc_test.gpu_url(gpu text) RETURNS text LANGUAGE sql AS $$
  SELECT url FROM npc_test.gpus WHERE name = gpu
$$;

-- HTTP to a simulated GPU's admin and metrics routes, with curl (superuser:
-- COPY FROM PROGRAM). Returns the response body.
CREATE OR REPLACE FUNCTION npc_test.http(method text, url text, body text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  cmd text := format('curl -s -m 10 -X %s', method);
  out text;
BEGIN
  IF body IS NOT NULL THEN
    cmd := cmd || ' -H ''Content-Type: application/json'' --data-binary '
               || '''' || replace(body, '''', '''\''''') || '''';
  END IF;
  cmd := cmd || ' ' || '''' || replace(url, '''', '''\''''') || '''';
  IF to_regclass('pg_temp.npc_test_http_out') IS NULL THEN
    CREATE TEMP TABLE npc_test_http_out (n serial, line text);
  END IF;
  TRUNCATE npc_test_http_out;
  EXECUTE format('COPY npc_test_http_out (line) FROM PROGRAM %L WITH (FORMAT csv, DELIMITER E''\x1f'', QUOTE E''\x1e'')', cmd);
  SELECT string_agg(line, E'\n' ORDER BY n) INTO out FROM npc_test_http_out;
  RETURN out;
END $$;

-- One sample of a simulated GPU's /metrics (summed over label sets).
CREATE OR REPLACE FUNCTION npc_test.gpu_metric(gpu text, metric text) RETURNS numeric
LANGUAGE sql AS $$
  SELECT coalesce(sum(split_part(line, ' ', 2)::numeric), 0)
    FROM regexp_split_to_table(npc_test.http('GET', npc_test.gpu_url(gpu) || '/metrics'), E'\n') AS line
   WHERE line ~ ('^' || regexp_replace(metric, '([:.])', '\\\1', 'g') || '(\{| )')
$$;

CREATE OR REPLACE FUNCTION npc_test.gpu_faults(gpu text, faults jsonb) RETURNS text
LANGUAGE sql AS $$ SELECT npc_test.http('POST', npc_test.gpu_url(gpu) || '/admin/faults', faults::text) $$;

-- Lets go of what a simulated GPU holds: no new request hangs, and every one
-- hanging now is served at once (hang_ms is an hour: tests hold requests in
-- flight this way for exactly as long as they need).
CREATE OR REPLACE FUNCTION npc_test.gpu_release(gpu text) RETURNS boolean LANGUAGE sql AS $$
  SELECT npc_test.gpu_faults(gpu, '{"hang_rate": 0}') IS NOT NULL
     AND npc_test.http('POST', npc_test.gpu_url(gpu) || '/admin/release', '{}') IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION npc_test.gpu_reset(gpu text) RETURNS text
LANGUAGE sql AS $$ SELECT npc_test.http('POST', npc_test.gpu_url(gpu) || '/admin/reset', '{}') $$;

-- Points the fleet at exactly the given simulated GPUs (name, max_concurrent).
CREATE OR REPLACE FUNCTION npc_test.use_gpus(names text[], caps int[] DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM npc_scale.gpu_endpoints;
  INSERT INTO npc_scale.gpu_endpoints (gpu_id, endpoint, max_concurrent)
  SELECT i, npc_test.gpu_url(names[i]), coalesce(caps[i], 16)
    FROM generate_subscripts(names, 1) AS i;
END $$;

CREATE OR REPLACE FUNCTION npc_test.metric(metric text) RETURNS bigint LANGUAGE sql AS $$
  SELECT value FROM npc_scale.metrics() WHERE name = metric
$$;

-- The dispatcher has loaded every committed change to gpu_endpoints. Waited
-- for after disabling one: until then a decision requested next may still be
-- sent by the fleet as it was.
CREATE OR REPLACE FUNCTION npc_test.fleet_loaded() RETURNS boolean LANGUAGE sql AS $$
  SELECT npc_test.metric('endpoints_loaded') >= npc_test.metric('endpoints_generation')
$$;

-- Decisions among `ids` done in one attempt, counted by the row (gpu_id) that answered them.
CREATE OR REPLACE FUNCTION npc_test.done_once_by_gpu(ids bigint[], OUT gpu_id int, OUT n int) RETURNS SETOF record
LANGUAGE sql AS $$
  SELECT gpu_id, count(*)::int FROM npc_scale.decision_queue
   WHERE id = ANY(ids) AND status = 'done' AND attempts = 1 GROUP BY gpu_id ORDER BY gpu_id
$$;

-- Waits until every given decision is finished.
CREATE OR REPLACE FUNCTION npc_test.all_finished(ids bigint[]) RETURNS boolean LANGUAGE sql AS $$
  SELECT count(*) = cardinality(ids) FROM npc_scale.decision_queue
   WHERE id = ANY(ids) AND status NOT IN ('queued', 'running')
$$;

-- Queues `n` 'move' decisions at priority 5 in one call, for NPCs
-- first_npc + 1 .. first_npc + n, prompts '<label> 1' .. '<label> n'.
CREATE OR REPLACE FUNCTION npc_test.burst(first_npc bigint, n int, label text) RETURNS SETOF bigint
LANGUAGE sql AS $$
  SELECT npc_scale.request_decisions(ARRAY(SELECT first_npc + g FROM generate_series(1, n) g),
                                     'move', ARRAY(SELECT label || ' ' || g FROM generate_series(1, n) g))
$$;

-- SQLSTATE and message of the error `sql` raises ('' if none). Unlike
-- pgTAP's throws_*, this also catches query_canceled (statement_timeout).
CREATE OR REPLACE FUNCTION npc_test.error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN '';
EXCEPTION WHEN OTHERS OR query_canceled THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- What every pgTAP file starts from (test/pgtap/setup/fresh.sql), whatever
-- an earlier file left behind when it failed half-way: no decision waiting
-- or in flight, every simulated GPU healthy, without faults and holding no
-- request.
CREATE OR REPLACE FUNCTION npc_test.reset_fixtures() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t record;
BEGIN
  -- Triggers and indexes a file put on the queue and did not drop (it failed
  -- half-way): they would refuse this cancel, and fail every file after it.
  FOR t IN SELECT tgname FROM pg_trigger
            WHERE tgrelid = 'npc_scale.decision_queue'::regclass AND NOT tgisinternal
              AND tgname <> 'handoff_rows_changed' LOOP
    EXECUTE format('DROP TRIGGER %I ON npc_scale.decision_queue', t.tgname);
  END LOOP;
  DROP INDEX IF EXISTS npc_scale.one_running_per_npc;
  PERFORM npc_scale.cancel_decision(id) FROM npc_scale.decision_queue WHERE status IN ('queued', 'running');
  PERFORM npc_test.gpu_faults(name, '{"error_rate": 0, "error_status": 500, "retry_after": 1, "hang_rate": 0,
                                      "hang_ms": 3600000, "slow_rate": 0, "slow_ms": 2000, "malformed_rate": 0,
                                      "drop_rate": 0, "ignore_structured_outputs": false}'),
          npc_test.http('POST', url || '/admin/health', '{"healthy": true}'),
          npc_test.gpu_release(name)  -- requests an earlier file left held
     FROM npc_test.gpus WHERE name <> 'down';
END $$;
