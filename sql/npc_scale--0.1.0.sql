-- npc_scale 0.1.0
\echo Use "CREATE EXTENSION npc_scale" to load this file. \quit

-- Prompts, params and answers travel to the GPU servers as UTF-8 JSON: in
-- another encoding a prompt would be accepted and fail later in the worker.
DO $$
BEGIN
  IF current_setting('server_encoding') <> 'UTF8' THEN
    RAISE EXCEPTION 'npc_scale needs a UTF8 database; database "%" is %', current_database(),
      current_setting('server_encoding') USING ERRCODE = 'feature_not_supported',
      HINT = 'Create the database with ENCODING ''UTF8''.';
  END IF;
END $$;

-- The schema npc_scale is created by CREATE EXTENSION (control file).
GRANT USAGE ON SCHEMA npc_scale TO PUBLIC;

-- One row per background worker, from shared memory.
CREATE FUNCTION npc_scale.worker_status(
    OUT name text,
    OUT pid integer,
    OUT state text,
    OUT started_at timestamptz,
    OUT starts bigint,
    OUT config_reloads bigint,
    OUT wakeups bigint,
    OUT errors bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'npc_scale_worker_status'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION npc_scale.worker_status() IS
'npc_scale background workers: name, pid (NULL when down), state, started_at, starts since server start, config reloads, wakeups (returns from its wait; an idle worker wakes about once a second), errors (caught, logged and gone on from, e.g. a pg_cancel_backend())';

-- Bridge self-tests (C++ exception <-> Postgres error); for the test suite.
CREATE FUNCTION npc_scale._bridge_selftest(mode text) RETURNS text
AS 'MODULE_PATHNAME', 'npc_scale_bridge_selftest'
LANGUAGE C STRICT VOLATILE;
CREATE FUNCTION npc_scale._bridge_destructor_count() RETURNS bigint
AS 'MODULE_PATHNAME', 'npc_scale_bridge_destructor_count'
LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION npc_scale._bridge_selftest(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION npc_scale._bridge_destructor_count() FROM PUBLIC;

------------------------------------------------------------------------------
-- The GPU fleet
------------------------------------------------------------------------------
CREATE TABLE npc_scale.gpu_endpoints (
    gpu_id          integer PRIMARY KEY,
    endpoint        text NOT NULL,                 -- base URL, e.g. http://10.0.0.5:8000
    model           text NOT NULL DEFAULT 'npc-llm',
    api             text NOT NULL DEFAULT 'completions',  -- completions | chat
    max_concurrent  integer NOT NULL DEFAULT 16,
    enabled         boolean NOT NULL DEFAULT true,
    weight          real NOT NULL DEFAULT 1,
    api_key         text,                          -- never shown to non-admins, never logged
    labels          jsonb NOT NULL DEFAULT '{}',
    send_priority   boolean NOT NULL DEFAULT false, -- server runs vLLM --scheduling-policy priority
    -- One row per server (the trigger writes each URL one way): two rows for
    -- one server would each get its max_concurrent. Not deferrable: a
    -- seeding script's INSERT ... ON CONFLICT DO NOTHING needs it as an arbiter.
    CONSTRAINT gpu_endpoints_one_row_per_server UNIQUE (endpoint)
);
COMMENT ON TABLE npc_scale.gpu_endpoints IS
'GPU inference servers (vLLM OpenAI API). Changes reach the dispatcher at COMMIT.';
REVOKE ALL ON npc_scale.gpu_endpoints FROM PUBLIC;
GRANT SELECT (gpu_id, endpoint, model, api, max_concurrent, enabled, weight, labels, send_priority)
    ON npc_scale.gpu_endpoints TO PUBLIC;

CREATE FUNCTION npc_scale._check_endpoint() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  port text;
  url text[];
BEGIN
  IF NEW.gpu_id IS NULL THEN
    RAISE EXCEPTION 'gpu_id must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  -- Checked here, before the NOT NULL constraints: their error's DETAIL
  -- ("Failing row contains ...") would write the api_key to the server log.
  -- Every NULL is the same error (22004) naming its column.
  IF NEW.endpoint IS NULL OR NEW.model IS NULL OR NEW.api IS NULL OR NEW.max_concurrent IS NULL
     OR NEW.enabled IS NULL OR NEW.weight IS NULL OR NEW.labels IS NULL OR NEW.send_priority IS NULL THEN
    RAISE EXCEPTION '% of gpu % must not be null',
      CASE WHEN NEW.endpoint IS NULL THEN 'endpoint' WHEN NEW.model IS NULL THEN 'model'
           WHEN NEW.api IS NULL THEN 'api' WHEN NEW.max_concurrent IS NULL THEN 'max_concurrent'
           WHEN NEW.enabled IS NULL THEN 'enabled' WHEN NEW.weight IS NULL THEN 'weight'
           WHEN NEW.labels IS NULL THEN 'labels' ELSE 'send_priority' END, NEW.gpu_id
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  -- A base URL: scheme, host (name, Docker-style names with _ too, IPv4 or
  -- [IPv6]), optional port and path
  -- prefix (a reverse proxy's); no credentials (the column is readable by
  -- everyone: keys go in api_key), query, fragment or spaces.
  IF NEW.endpoint !~
       '^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&''()*+,;=:@/-]*)?$' THEN
    RAISE EXCEPTION 'endpoint URL % of gpu % is not an http(s) base URL', quote_literal(NEW.endpoint), NEW.gpu_id
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use the server''s base URL, e.g. http://10.0.0.5:8000 (no user:password@, query or fragment).';
  END IF;
  port := substring(NEW.endpoint FROM '^https?://(?:\[[^]]*\]|[^:/\[]*):([0-9]+)(?:/|$)');
  IF port IS NOT NULL AND (port::int < 1 OR port::int > 65535) THEN
    RAISE EXCEPTION 'endpoint URL % of gpu % has port % out of range', quote_literal(NEW.endpoint), NEW.gpu_id, port
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a port from 1 to 65535.';
  END IF;
  -- One spelling per server for the unique constraint: host names are
  -- case-insensitive, and :80 / :443 are the schemes' own ports.
  url := regexp_match(NEW.endpoint, '^(https?)://(\[[^]]*\]|[^:/\[]*)(?::([0-9]+))?(.*)$');
  port := CASE WHEN url[3] IS NULL OR (url[1] = 'http' AND url[3]::int = 80)
                    OR (url[1] = 'https' AND url[3]::int = 443) THEN ''
               ELSE ':' || url[3]::int END;
  -- COLLATE "C": the host is ASCII, and a Turkish locale's lower('I') is not 'i'.
  NEW.endpoint := rtrim(url[1] || '://' || lower(url[2] COLLATE "C") || port || url[4], '/');
  -- OpenAI clients take ".../v1"; npc_scale appends /v1/completions itself.
  IF NEW.endpoint ~ '/v1$' THEN
    RAISE EXCEPTION 'endpoint URL % of gpu % ends in /v1', quote_literal(NEW.endpoint), NEW.gpu_id
      USING ERRCODE = 'invalid_parameter_value',
            HINT = format('Use %s: npc_scale appends /v1/completions or /v1/chat/completions.',
                          quote_literal(left(NEW.endpoint, -3)));
  END IF;
  IF NEW.api NOT IN ('completions', 'chat') THEN
    RAISE EXCEPTION 'endpoint api "%" is not known', NEW.api
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use completions or chat.';
  END IF;
  IF NEW.max_concurrent < 1 OR NEW.max_concurrent > 4096 THEN
    RAISE EXCEPTION 'max_concurrent % is out of range', NEW.max_concurrent
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Use 1 to 4096.';
  END IF;
  -- NaN compares above every number in Postgres: > 0 alone would let it in.
  IF NOT (NEW.weight > 0 AND NEW.weight < 'Infinity'::real) THEN
    RAISE EXCEPTION 'weight % of gpu % must be a positive finite number', NEW.weight, NEW.gpu_id
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Sent as "Authorization: Bearer <key>": a line break would split the
  -- header. The key itself is never shown.
  IF NEW.api_key ~ '[[:cntrl:][:space:]]' THEN
    RAISE EXCEPTION 'api_key of gpu % contains a space or control character', NEW.gpu_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Store the bare token, without "Bearer " or a trailing newline.';
  END IF;
  IF jsonb_typeof(NEW.labels) <> 'object' THEN
    RAISE EXCEPTION 'labels % of gpu % must be a JSON object', NEW.labels, NEW.gpu_id
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER check_endpoint BEFORE INSERT OR UPDATE ON npc_scale.gpu_endpoints
    FOR EACH ROW EXECUTE FUNCTION npc_scale._check_endpoint();

-- Wakes the dispatcher at COMMIT (never on rollback) to reload the fleet.
CREATE FUNCTION npc_scale._endpoints_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'npc_scale_endpoints_changed' LANGUAGE C;
CREATE TRIGGER endpoints_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON npc_scale.gpu_endpoints FOR EACH STATEMENT EXECUTE FUNCTION npc_scale._endpoints_changed();

------------------------------------------------------------------------------
-- The decision queue (logged: a crash loses nothing that was committed)
------------------------------------------------------------------------------
CREATE TABLE npc_scale.decision_queue (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    npc_id         bigint NOT NULL,
    world_id       bigint,
    decision_type  text NOT NULL,
    prompt         text NOT NULL,
    params         jsonb NOT NULL DEFAULT '{}',
    priority       smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 10),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'done', 'failed', 'expired', 'cancelled')),
    attempts       integer NOT NULL DEFAULT 0,   -- attempts started (counted when claimed)
    leased_until   timestamptz,                  -- while running: the claim lapses after this
    not_before     timestamptz,                  -- retry back-off
    deadline       timestamptz,                  -- not sent after this: expired
    gpu_id         integer,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    response       text,
    error          text,
    cache_layer    text,                         -- l1 | l2 | l3: the cache answered
    finish_reason  text                          -- the server's: stop, or length (cut at max_tokens);
                                                 -- NULL when the cache answered (it keeps the text only)
) WITH (fillfactor = 80);  -- room on the page for the row's next versions (queued → running →
                           -- done); not HOT updates: status is in the partial indexes' predicates
COMMENT ON TABLE npc_scale.decision_queue IS
'NPC decisions: queued by the game, sent to the GPU fleet by the dispatcher worker.';
-- The claim: best priority first, then oldest.
CREATE INDEX decision_queue_claim ON npc_scale.decision_queue (priority, id) WHERE status = 'queued';
-- Aging: the oldest queued decisions, whatever their priority.
CREATE INDEX decision_queue_queued_age ON npc_scale.decision_queue (id) WHERE status = 'queued';
-- Lease recovery.
CREATE INDEX decision_queue_running ON npc_scale.decision_queue (leased_until) WHERE status = 'running';
-- Deadline expiry of queued work.
CREATE INDEX decision_queue_deadline ON npc_scale.decision_queue (deadline)
    WHERE status = 'queued' AND deadline IS NOT NULL;
-- Purge of finished rows after npc_scale.result_ttl.
CREATE INDEX decision_queue_finished ON npc_scale.decision_queue (finished_at)
    WHERE finished_at IS NOT NULL;
ALTER TABLE npc_scale.decision_queue SET (autovacuum_vacuum_scale_factor = 0.02,
                                          autovacuum_vacuum_insert_scale_factor = 0.05);
REVOKE ALL ON npc_scale.decision_queue FROM PUBLIC;
GRANT SELECT ON npc_scale.decision_queue TO PUBLIC;

-- C helpers for the SQL API.
-- request_decisions()' checks: the same rules, in the same code, as request_decision().
CREATE FUNCTION npc_scale._check_batch(npc_ids bigint[], decision_type text, prompts text[], priority integer,
    params jsonb, deadline interval) RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_check_batch' LANGUAGE C;
CREATE FUNCTION npc_scale._wake_dispatcher_at_commit() RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_wake_dispatcher_at_commit' LANGUAGE C;
CREATE FUNCTION npc_scale._cancelled_at_commit(id bigint) RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_cancelled_at_commit' LANGUAGE C;
CREATE FUNCTION npc_scale._handoff_rows_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'npc_scale_handoff_rows_changed' LANGUAGE C;
-- Called by the SECURITY DEFINER API functions only: nobody else wakes the dispatcher.
REVOKE ALL ON FUNCTION npc_scale._check_batch(bigint[], text, text[], integer, jsonb, interval),
  npc_scale._wake_dispatcher_at_commit(), npc_scale._cancelled_at_commit(bigint),
  npc_scale._handoff_rows_changed() FROM PUBLIC;
-- request_decision() hands its row to the dispatcher at COMMIT as it was
-- inserted; an UPDATE of what that carries later in the same transaction
-- sends the transaction's rows through the table instead, as committed. Per
-- statement, on columns the dispatcher's own statements never set: a row
-- trigger would cost every claim and answer a fetch of the old row.
CREATE TRIGGER handoff_rows_changed
  AFTER UPDATE OF npc_id, decision_type, prompt, params, priority, deadline
  ON npc_scale.decision_queue FOR EACH STATEMENT
  EXECUTE FUNCTION npc_scale._handoff_rows_changed();
------------------------------------------------------------------------------
-- SQL API
------------------------------------------------------------------------------
CREATE FUNCTION npc_scale.request_decision(
    npc_id bigint, decision_type text, prompt text, priority integer DEFAULT 5,
    params jsonb DEFAULT '{}', deadline interval DEFAULT NULL, world_id bigint DEFAULT NULL)
RETURNS bigint AS 'MODULE_PATHNAME', 'npc_scale_request_decision'
LANGUAGE C VOLATILE SECURITY DEFINER
-- Its own statement qualifies every name; the SET is for what that statement
-- fires as the extension's owner (a game's trigger on decision_queue, the
-- functions of its constraints): a caller's path must not resolve their names.
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION npc_scale.request_decision(bigint, text, text, integer, jsonb, interval, bigint) IS
'Queues one NPC decision; the dispatcher is woken when the transaction commits. Returns its id.';

CREATE FUNCTION npc_scale.request_decisions(
    npc_ids bigint[], decision_type text, prompts text[], priority integer DEFAULT 5,
    params jsonb DEFAULT '{}', deadline interval DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM npc_scale._check_batch(npc_ids, decision_type, prompts, priority, params, deadline);
  RETURN QUERY
    INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, params, priority, deadline)
    SELECT n, decision_type, p, coalesce(params, '{}'), priority, now() + deadline
      FROM unnest(npc_ids, prompts) WITH ORDINALITY AS u(n, p, ord) ORDER BY ord
    RETURNING id;
  PERFORM npc_scale._wake_dispatcher_at_commit();
END $$;
COMMENT ON FUNCTION npc_scale.request_decisions(bigint[], text, text[], integer, jsonb, interval) IS
'Queues one decision per NPC in one call (all or nothing). Returns their ids in input order.';

CREATE FUNCTION npc_scale.cancel_decision(id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  found_id bigint;
BEGIN
  IF cancel_decision.id IS NULL THEN
    RAISE EXCEPTION 'decision id must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  UPDATE npc_scale.decision_queue q
     SET status = 'cancelled', finished_at = now(), leased_until = NULL, error = 'cancelled by cancel_decision()'
   WHERE q.id = cancel_decision.id AND q.status IN ('queued', 'running')
  RETURNING q.id INTO found_id;
  IF found_id IS NULL THEN
    RETURN false;
  END IF;
  PERFORM pg_notify('npc_scale_decisions', found_id::text);
  PERFORM npc_scale._cancelled_at_commit(found_id);  -- its request in flight is aborted, its awaiters woken
  RETURN true;
END $$;
COMMENT ON FUNCTION npc_scale.cancel_decision(bigint) IS
'Cancels a queued or running decision; false if it had already finished (or does not exist).';

CREATE FUNCTION npc_scale.await_decision(id bigint, timeout interval DEFAULT '30 s')
RETURNS npc_scale.decision_queue
AS 'MODULE_PATHNAME', 'npc_scale_await_decision' LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;  -- a caller's path must not resolve names in its SQL
COMMENT ON FUNCTION npc_scale.await_decision(bigint, interval) IS
'Waits (on a latch, not by polling) until the decision is finished and returns its row.';

-- SECURITY DEFINER: a cacheable call reads and fills cache_store, which game
-- roles cannot touch directly.
CREATE FUNCTION npc_scale.generate(prompt text, priority integer DEFAULT 5, params jsonb DEFAULT '{}')
RETURNS text AS 'MODULE_PATHNAME', 'npc_scale_generate' LANGUAGE C SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION npc_scale.generate(text, integer, jsonb) IS
'Synchronous generation through the dispatcher (shared-memory slot, no queue table).';

CREATE VIEW npc_scale.queue_stats AS
SELECT status, count(*) AS decisions, min(created_at) AS oldest,
       avg(extract(epoch FROM finished_at - created_at) * 1000)
           FILTER (WHERE finished_at IS NOT NULL) AS avg_latency_ms
  FROM npc_scale.decision_queue GROUP BY status;
GRANT SELECT ON npc_scale.queue_stats TO PUBLIC;

CREATE FUNCTION npc_scale.metrics(OUT name text, OUT value bigint) RETURNS SETOF record
AS 'MODULE_PATHNAME', 'npc_scale_metrics' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION npc_scale.metrics() IS 'npc_scale counters from shared memory';

CREATE FUNCTION npc_scale._endpoint_stats(
    OUT gpu_id integer, OUT draining boolean, OUT breaker text, OUT in_flight integer,
    OUT max_concurrent integer, OUT total_requests bigint, OUT errors bigint,
    OUT error_rate double precision, OUT avg_latency_ms double precision,
    OUT p50_latency_ms double precision, OUT p99_latency_ms double precision,
    OUT remote_running integer, OUT remote_waiting integer, OUT last_error text,
    OUT last_error_at timestamptz, OUT endpoint_hash integer)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'npc_scale_endpoint_stats' LANGUAGE C STRICT VOLATILE;

-- The fleet as the dispatcher sees it (refreshed every 100 ms). Never the api_key.
CREATE VIEW npc_scale.endpoint_stats AS
SELECT s.gpu_id, e.endpoint, e.model, coalesce(e.enabled, false) AS enabled, s.draining,
       s.breaker, s.in_flight, s.max_concurrent,
       round((s.in_flight::numeric / greatest(s.max_concurrent, 1)), 3) AS utilization,
       s.total_requests, s.errors, round(s.error_rate::numeric, 3) AS error_rate,
       round(s.avg_latency_ms::numeric, 2) AS avg_latency_ms,
       round(s.p50_latency_ms::numeric, 2) AS p50_latency_ms,
       round(s.p99_latency_ms::numeric, 2) AS p99_latency_ms,
       s.remote_running, s.remote_waiting, s.last_error, s.last_error_at
  FROM npc_scale._endpoint_stats() s
  -- A draining member is no row's: its row is gone, or names another server now;
  -- nor is a member whose row was pointed at another server the dispatcher has
  -- not loaded yet (its counters are the old server's).
  LEFT JOIN npc_scale.gpu_endpoints e
    ON e.gpu_id = s.gpu_id AND NOT s.draining AND pg_catalog.hashtext(e.endpoint) = s.endpoint_hash;
GRANT SELECT ON npc_scale.endpoint_stats TO PUBLIC;

-- Share of routed requests that went to their NPC's (or prompt prefix's) home endpoint.
CREATE VIEW npc_scale.affinity_stats AS
SELECT h.value AS hits, m.value AS misses,
       round(h.value::numeric / nullif(h.value + m.value, 0), 3) AS hit_rate
  FROM npc_scale.metrics() h, npc_scale.metrics() m
 WHERE h.name = 'affinity_hits' AND m.name = 'affinity_misses';
GRANT SELECT ON npc_scale.affinity_stats TO PUBLIC;

------------------------------------------------------------------------------
-- Cache: L1 shared memory, L2 Redis, L3 this table
------------------------------------------------------------------------------
CREATE TABLE npc_scale.cache_store (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    expires_at  timestamptz              -- NULL: no expiry
);
CREATE INDEX cache_store_expires ON npc_scale.cache_store (expires_at) WHERE expires_at IS NOT NULL;
REVOKE ALL ON npc_scale.cache_store FROM PUBLIC;

CREATE FUNCTION npc_scale.cache_get(key text) RETURNS text
AS 'MODULE_PATHNAME', 'npc_scale_cache_get' LANGUAGE C STRICT VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;  -- a caller's path must not resolve names in its SQL
CREATE FUNCTION npc_scale.cache_set(key text, value text, ttl interval, persist boolean DEFAULT false)
RETURNS void AS 'MODULE_PATHNAME', 'npc_scale_cache_set' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION npc_scale.cache_delete(key text) RETURNS boolean
AS 'MODULE_PATHNAME', 'npc_scale_cache_delete' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
CREATE FUNCTION npc_scale.cache_clear() RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_cache_clear' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION npc_scale.cache_clear() FROM PUBLIC;
COMMENT ON FUNCTION npc_scale.cache_get(text) IS 'L1 → L2 → L3 lookup with promotion; NULL on a miss';
COMMENT ON FUNCTION npc_scale.cache_set(text, text, interval, boolean) IS
'Writes L1 and L2 at COMMIT (and the cache_store table now when persist); ttl NULL = no expiry';

CREATE FUNCTION npc_scale._cache_stats(
    OUT l1_hits bigint, OUT l2_hits bigint, OUT l3_hits bigint, OUT misses bigint,
    OUT hit_rate double precision, OUT l1_entries bigint, OUT l1_bytes bigint,
    OUT l1_budget_bytes bigint, OUT evictions bigint, OUT redis_up boolean, OUT redis_errors bigint,
    OUT l2_doubted_keys bigint, OUT l2_doubts_all boolean)
RETURNS record AS 'MODULE_PATHNAME', 'npc_scale_cache_stats' LANGUAGE C STRICT VOLATILE;
CREATE VIEW npc_scale.cache_stats AS SELECT * FROM npc_scale._cache_stats();
GRANT SELECT ON npc_scale.cache_stats TO PUBLIC;

------------------------------------------------------------------------------
-- Native maintenance: scheduled materialized-view refreshes (pg_cron syntax)
------------------------------------------------------------------------------
CREATE FUNCTION npc_scale._cron_canonical(schedule text) RETURNS text
AS 'MODULE_PATHNAME', 'npc_scale_cron_canonical' LANGUAGE C STRICT IMMUTABLE;
CREATE FUNCTION npc_scale._cron_next(schedule text, after timestamptz) RETURNS timestamptz
AS 'MODULE_PATHNAME', 'npc_scale_cron_next' LANGUAGE C STRICT IMMUTABLE;
CREATE FUNCTION npc_scale._wake_maintenance_at_commit() RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_wake_maintenance_at_commit' LANGUAGE C;
-- Called by the job table's trigger only.
REVOKE ALL ON FUNCTION npc_scale._wake_maintenance_at_commit() FROM PUBLIC;
CREATE FUNCTION npc_scale._warn_unless_served(what text) RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_warn_unless_served' LANGUAGE C STRICT;

CREATE TABLE npc_scale.maintenance_jobs (
    job           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('refresh')),
    target        regclass NOT NULL,
    schedule      text NOT NULL,            -- canonical form of what was given
    concurrent_refresh boolean NOT NULL DEFAULT true,   -- REFRESH … CONCURRENTLY
    active        boolean NOT NULL DEFAULT true,
    next_run_at   timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- One job per view: schedule_refresh() again (a deploy script at every
    -- release) changes that job instead of adding another.
    CONSTRAINT maintenance_jobs_one_per_target UNIQUE (kind, target)
);
CREATE TABLE npc_scale.maintenance_runs (
    run          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job          bigint NOT NULL REFERENCES npc_scale.maintenance_jobs ON DELETE CASCADE,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    error        text,
    duration     interval,
    rows         bigint
);
CREATE INDEX maintenance_runs_job ON npc_scale.maintenance_runs (job, run);
CREATE INDEX maintenance_runs_finished ON npc_scale.maintenance_runs (finished_at);  -- the purge
GRANT SELECT ON npc_scale.maintenance_jobs, npc_scale.maintenance_runs TO PUBLIC;

-- What a scheduled refresh needs of its target, said when it is scheduled
-- (or changed by hand), not at 3 a.m.: a materialized view, and for
-- CONCURRENTLY a unique index on plain columns, without WHERE.
-- strict false (a job row inserted by hand, or by pg_restore, which loads
-- the jobs before it creates the view's indexes): a missing unique index is
-- a warning; until one exists, each run fails and records why.
CREATE FUNCTION npc_scale._check_refresh_target(matview regclass, "concurrently" boolean, strict boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF matview IS NULL THEN
    RAISE EXCEPTION 'the job''s target must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF (SELECT relkind FROM pg_class WHERE oid = matview) IS DISTINCT FROM 'm' THEN
    RAISE EXCEPTION 'relation % is not a materialized view', matview USING ERRCODE = 'wrong_object_type';
  END IF;
  IF "concurrently" AND NOT EXISTS (
       SELECT 1 FROM pg_index i
        WHERE i.indrelid = matview AND i.indisunique AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL) THEN
    IF strict THEN
      RAISE EXCEPTION 'REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on %', matview
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = format('CREATE UNIQUE INDEX ON %s (<key columns>), or schedule with concurrently => false.', matview);
    END IF;
    RAISE WARNING 'REFRESH MATERIALIZED VIEW CONCURRENTLY needs a unique index on %: its runs fail until one exists', matview
      USING HINT = format('CREATE UNIQUE INDEX ON %s (<key columns>), or set concurrent_refresh = false.', matview);
  END IF;
END $$;

-- Jobs are changed by hand too (pause: active = false; a new schedule): a
-- schedule is checked and made canonical here, and the next run follows it,
-- so a bad row cannot reach the maintenance worker's tick.
CREATE FUNCTION npc_scale._check_maintenance_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.schedule IS NULL THEN
    RAISE EXCEPTION 'schedule of job % must not be null', NEW.job USING ERRCODE = 'null_value_not_allowed';
  END IF;
  NEW.schedule := npc_scale._cron_canonical(NEW.schedule);  -- raises, naming the schedule, if invalid
  IF TG_OP = 'INSERT' THEN
    NEW.next_run_at := coalesce(NEW.next_run_at, npc_scale._cron_next(NEW.schedule, now()));
  ELSIF NEW.schedule IS DISTINCT FROM OLD.schedule OR (NEW.active AND NOT OLD.active) THEN
    -- A new schedule, or a job resumed: due at its next time from now, not
    -- at a time left over from before.
    NEW.next_run_at := npc_scale._cron_next(NEW.schedule, now());
  END IF;
  IF TG_OP = 'INSERT' OR NEW.target IS DISTINCT FROM OLD.target
     OR NEW.concurrent_refresh IS DISTINCT FROM OLD.concurrent_refresh THEN
    PERFORM npc_scale._check_refresh_target(NEW.target, NEW.concurrent_refresh, TG_OP = 'UPDATE');
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER check_maintenance_job BEFORE INSERT OR UPDATE OF schedule, active, target, concurrent_refresh
    ON npc_scale.maintenance_jobs
    FOR EACH ROW EXECUTE FUNCTION npc_scale._check_maintenance_job();
-- A change, by schedule_refresh() or by hand, reaches the worker at COMMIT.
-- SECURITY DEFINER: whoever may change the jobs may wake the worker, and
-- nobody else (the wake-up itself is not PUBLIC's).
CREATE FUNCTION npc_scale._maintenance_jobs_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM npc_scale._wake_maintenance_at_commit();
  RETURN NULL;
END $$;
CREATE TRIGGER maintenance_jobs_changed AFTER INSERT OR UPDATE OF schedule, active ON npc_scale.maintenance_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION npc_scale._maintenance_jobs_changed();

CREATE FUNCTION npc_scale.schedule_refresh(matview regclass, schedule text, "concurrently" boolean DEFAULT true)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  canonical text;
  new_job bigint;
BEGIN
  IF matview IS NULL OR schedule IS NULL OR "concurrently" IS NULL THEN
    RAISE EXCEPTION 'matview, schedule and concurrently must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM npc_scale._check_refresh_target(matview, "concurrently");
  canonical := npc_scale._cron_canonical(schedule);   -- raises, naming the schedule, if invalid
  -- Again for a view that has its job: that job takes the new schedule and
  -- is active again (a new schedule or a resumed job is next due from now).
  INSERT INTO npc_scale.maintenance_jobs AS j (kind, target, schedule, concurrent_refresh, next_run_at)
  VALUES ('refresh', matview, canonical, "concurrently", npc_scale._cron_next(canonical, now()))
  ON CONFLICT ON CONSTRAINT maintenance_jobs_one_per_target DO UPDATE
    SET schedule = excluded.schedule, concurrent_refresh = excluded.concurrent_refresh, active = true
  RETURNING job INTO new_job;  -- the table's trigger wakes the worker at COMMIT
  PERFORM npc_scale._warn_unless_served(format('the refresh of %s is scheduled, but runs nowhere', matview));
  RETURN new_job;
END $$;
COMMENT ON FUNCTION npc_scale.schedule_refresh(regclass, text, boolean) IS
'Refreshes a materialized view on a pg_cron-style schedule, in the maintenance worker (one job per view: called again, it changes that job). Returns the job id.';

CREATE FUNCTION npc_scale.unschedule(job bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF unschedule.job IS NULL THEN
    RAISE EXCEPTION 'job must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  DELETE FROM npc_scale.maintenance_jobs j WHERE j.job = unschedule.job;
  RETURN FOUND;
END $$;

------------------------------------------------------------------------------
-- Reference game schema: the seed's tables, hot-query indexes, resource
-- summary materialized view and monthly npc_memory partitions
-- (performance-scaling.md, "Database Optimization"), plus a deterministic
-- world generator to exercise them with realistic plans.
------------------------------------------------------------------------------

-- Deterministic pseudo-random number in [0, 1) for (seed, stream, key):
-- hashint8extended is stable within a major version (hash partitioning relies
-- on it), so a world is the same for the same seed. Inlined by the planner.
CREATE FUNCTION npc_scale._ref_rand(seed integer, stream integer, k bigint)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
  SELECT (hashint8extended(k, seed::bigint * 7919 + stream) & 9007199254740991)::double precision
         / 9007199254740992.0
$$;
COMMENT ON FUNCTION npc_scale._ref_rand(integer, integer, bigint) IS
'internal: deterministic pseudo-random double in [0,1) for (seed, stream, key); used by generate_world';

CREATE FUNCTION npc_scale.create_reference_schema(target name DEFAULT 'game')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning     -- no "already exists, skipping" notices on reruns
AS $fn$
DECLARE
  -- Month starts in UTC, as timestamps without time zone.
  m0 timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
  m timestamp;
  part text;
  defpart regclass;
BEGIN
  IF target IS NULL OR target = '' THEN
    RAISE EXCEPTION 'create_reference_schema: target schema name must not be NULL or empty (got %)',
      coalesce(quote_literal(target), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF target IN ('npc_scale', 'information_schema') OR target LIKE 'pg\_%' THEN
    RAISE EXCEPTION 'create_reference_schema: target schema % is reserved', quote_ident(target)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use a game schema such as ''game''.';
  END IF;

  EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', target);

  -- Tables. The game's own (per-world) tables carry no world_id; the NPC
  -- service's tables do, as in the seed's indexes.
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I.villages (
      id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      player_id   bigint NOT NULL,
      name        text NOT NULL,
      x           integer NOT NULL CHECK (x BETWEEN -200 AND 200),
      y           integer NOT NULL CHECK (y BETWEEN -200 AND 200),
      population  integer NOT NULL DEFAULT 0 CHECK (population >= 0),
      is_capital  boolean NOT NULL DEFAULT false,
      loyalty     smallint NOT NULL DEFAULT 100 CHECK (loyalty BETWEEN 0 AND 100),
      active      boolean NOT NULL DEFAULT true,
      founded_at  timestamptz NOT NULL DEFAULT now()
    ) $ddl$, target);

  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I.village_resources (
      village_id          bigint PRIMARY KEY REFERENCES %1$I.villages (id) ON DELETE CASCADE,
      wood                integer NOT NULL DEFAULT 0 CHECK (wood >= 0),
      clay                integer NOT NULL DEFAULT 0 CHECK (clay >= 0),
      iron                integer NOT NULL DEFAULT 0 CHECK (iron >= 0),
      wheat               integer NOT NULL DEFAULT 0 CHECK (wheat >= 0),
      wood_production     integer NOT NULL DEFAULT 0,   -- per hour
      clay_production     integer NOT NULL DEFAULT 0,
      iron_production     integer NOT NULL DEFAULT 0,
      wheat_production    integer NOT NULL DEFAULT 0,   -- net of crop upkeep, may be < 0
      warehouse_capacity  integer NOT NULL DEFAULT 800,
      granary_capacity    integer NOT NULL DEFAULT 800,
      updated_at          timestamptz NOT NULL DEFAULT now()
    ) $ddl$, target);

  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I.npc_village_config (
      village_id      bigint PRIMARY KEY REFERENCES %1$I.villages (id) ON DELETE CASCADE,
      npc_id          bigint NOT NULL,
      world_id        integer NOT NULL DEFAULT 1,
      role            text NOT NULL DEFAULT 'economy',       -- capital | economy | military | defense | support
      build_strategy  text NOT NULL DEFAULT 'balanced',
      troop_focus     text NOT NULL DEFAULT 'defense',
      auto_build      boolean NOT NULL DEFAULT true,
      auto_trade      boolean NOT NULL DEFAULT false,
      priority        smallint NOT NULL DEFAULT 3,
      settings        jsonb NOT NULL DEFAULT '{}',
      updated_at      timestamptz NOT NULL DEFAULT now()
    ) $ddl$, target);

  -- One row per NPC and world. The seed's lookup index (world_id, npc_id) is
  -- the primary key here, under the seed's name: the same index, unique, so
  -- the game server can upsert (ON CONFLICT (world_id, npc_id)).
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I.npc_world_state (
      world_id            integer NOT NULL,
      npc_id              bigint NOT NULL,
      tribe               text NOT NULL,                   -- romans | teutons | gauls
      personality         text NOT NULL,
      aggression          real NOT NULL DEFAULT 0.5 CHECK (aggression BETWEEN 0 AND 1),
      mood                real NOT NULL DEFAULT 0 CHECK (mood BETWEEN -1 AND 1),
      current_goal        text,
      capital_village_id  bigint,
      state               jsonb NOT NULL DEFAULT '{}',
      decisions_made      integer NOT NULL DEFAULT 0,
      last_decision_at    timestamptz,
      next_decision_at    timestamptz,
      updated_at          timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT idx_npc_world_state_lookup PRIMARY KEY (world_id, npc_id)
    ) $ddl$, target);

  -- The unique key starts with world_id, so it never competes with the seed's
  -- (npc_id, world_id, relationship_type) index for per-NPC lookups.
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I.npc_relationships (
      id                   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      world_id             integer NOT NULL,
      npc_id               bigint NOT NULL,
      target_npc_id        bigint NOT NULL,
      relationship_type    text NOT NULL,                  -- ally | trade_partner | neutral | rival | enemy
      trust                real NOT NULL DEFAULT 0 CHECK (trust BETWEEN -1 AND 1),
      interaction_count    integer NOT NULL DEFAULT 0,
      last_interaction_at  timestamptz,
      updated_at           timestamptz NOT NULL DEFAULT now(),
      CHECK (npc_id <> target_npc_id),
      UNIQUE (world_id, npc_id, target_npc_id)
    ) $ddl$, target);

  -- Partitioned by month on occurred_at; the primary key must contain it.
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I.npc_memory (
      id              bigint GENERATED BY DEFAULT AS IDENTITY,
      world_id        integer NOT NULL,
      npc_id          bigint NOT NULL,
      memory_type     text NOT NULL,      -- battle | trade | diplomacy | alliance | betrayal | threat | observation | construction
      content         text NOT NULL,
      importance      real NOT NULL CHECK (importance BETWEEN 0 AND 1),
      related_npc_id  bigint,
      occurred_at     timestamptz NOT NULL,
      PRIMARY KEY (id, occurred_at)
    ) PARTITION BY RANGE (occurred_at) $ddl$, target);
  EXECUTE format('CREATE TABLE IF NOT EXISTS %1$I.npc_memory_default PARTITION OF %1$I.npc_memory DEFAULT',
                 target);

  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %1$I.npc_battle_history (
      id                   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      world_id             integer NOT NULL,
      report_id            bigint NOT NULL,                -- both sides' rows share it
      npc_id               bigint NOT NULL,
      role                 text NOT NULL CHECK (role IN ('attacker', 'defender')),
      village_id           bigint,
      opponent_npc_id      bigint,
      opponent_village_id  bigint,
      battle_type          text NOT NULL,                  -- raid | attack | conquest
      outcome              text NOT NULL CHECK (outcome IN ('victory', 'defeat')),
      troops_sent          integer NOT NULL DEFAULT 0,
      troops_lost          integer NOT NULL DEFAULT 0,
      loot_wood            integer NOT NULL DEFAULT 0,    -- resources won (< 0: plundered from us)
      loot_clay            integer NOT NULL DEFAULT 0,
      loot_iron            integer NOT NULL DEFAULT 0,
      loot_wheat           integer NOT NULL DEFAULT 0,
      occurred_at          timestamptz NOT NULL
    ) $ddl$, target);

  -- The seed's hot-query indexes. The seed builds them with CREATE INDEX
  -- CONCURRENTLY, which cannot run inside a function (a transaction block):
  -- plain CREATE INDEX here, which blocks writes to the table while it builds.
  -- On a live, large game database build them concurrently by hand first;
  -- IF NOT EXISTS then leaves them alone.
  -- 1. an NPC's villages
  EXECUTE format('CREATE INDEX IF NOT EXISTS idx_villages_player_active ON %I.villages (player_id, active) WHERE active = TRUE', target);
  -- 2. nearby villages (target finding)
  EXECUTE format('CREATE INDEX IF NOT EXISTS idx_villages_coordinates ON %I.villages (x, y) WHERE active = TRUE', target);
  -- 3. idx_npc_world_state_lookup (world_id, npc_id): the primary key above.
  -- 4. relationships
  EXECUTE format('CREATE INDEX IF NOT EXISTS idx_relationships_composite ON %I.npc_relationships (npc_id, world_id, relationship_type)', target);
  -- 5. recent important memories (on the partitioned table: every partition gets it)
  EXECUTE format('CREATE INDEX IF NOT EXISTS idx_memory_recent ON %I.npc_memory (npc_id, occurred_at DESC) WHERE importance > 0.5', target);
  -- 6. battle history
  EXECUTE format('CREATE INDEX IF NOT EXISTS idx_battle_recent ON %I.npc_battle_history (npc_id, occurred_at DESC)', target);

  -- This month's and next month's partitions (UTC month starts), so the table
  -- is usable before the partition manager runs. Created standalone, filled
  -- with the rows of that month the DEFAULT partition already holds (else
  -- attaching would fail), then attached. A partition covering the month under
  -- another name (e.g. the seed's npc_memory_2025_03) is left alone.
  SELECT p.partdefid::regclass INTO defpart
    FROM pg_partitioned_table p
   WHERE p.partrelid = format('%I.npc_memory', target)::regclass AND p.partdefid <> 0;
  FOR i IN 0..1 LOOP
    m := m0 + make_interval(months => i);
    part := 'npc_memory_p' || to_char(m, 'YYYY_MM');
    CONTINUE WHEN to_regclass(format('%I.%I', target, part)) IS NOT NULL;
    BEGIN
      EXECUTE format('CREATE TABLE %1$I.%2$I (LIKE %1$I.npc_memory INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                     target, part);
      IF defpart IS NOT NULL THEN
        EXECUTE format('WITH moved AS (DELETE FROM %s WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *) '
                       'INSERT INTO %I.%I SELECT * FROM moved', defpart, target, part)
          USING m AT TIME ZONE 'UTC', (m + interval '1 month') AT TIME ZONE 'UTC';
      END IF;
      EXECUTE format('ALTER TABLE %1$I.npc_memory ATTACH PARTITION %1$I.%2$I FOR VALUES FROM (%3$L) TO (%4$L)',
                     target, part,
                     to_char(m, 'YYYY-MM-DD') || ' 00:00:00+00',
                     to_char(m + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
    EXCEPTION WHEN invalid_object_definition THEN   -- "would overlap partition"
      RAISE WARNING 'create_reference_schema: % not created: %', part, SQLERRM;
    END;
  END LOOP;

  -- Resources per NPC, verbatim from the seed (refresh every few minutes).
  -- Created only if missing (its definition is not replaced).
  EXECUTE format($ddl$
    CREATE MATERIALIZED VIEW IF NOT EXISTS %1$I.npc_resource_summary AS
    SELECT
        nv.npc_id,
        v.player_id,
        COUNT(v.id) AS village_count,
        SUM(vr.wood) AS total_wood,
        SUM(vr.clay) AS total_clay,
        SUM(vr.iron) AS total_iron,
        SUM(vr.wheat) AS total_wheat,
        SUM(vr.wood_production) AS wood_per_hour,
        SUM(vr.clay_production) AS clay_per_hour,
        SUM(vr.iron_production) AS iron_per_hour,
        SUM(vr.wheat_production) AS wheat_per_hour,
        SUM(v.population) AS total_population
    FROM %1$I.npc_village_config nv
    JOIN %1$I.villages v ON nv.village_id = v.id
    JOIN %1$I.village_resources vr ON v.id = vr.village_id
    GROUP BY nv.npc_id, v.player_id $ddl$, target);
  -- Unique index: required by REFRESH MATERIALIZED VIEW CONCURRENTLY. The name
  -- is the one the seed's unnamed CREATE UNIQUE INDEX would get.
  EXECUTE format('CREATE UNIQUE INDEX IF NOT EXISTS npc_resource_summary_npc_id_idx ON %I.npc_resource_summary (npc_id)',
                 target);
END
$fn$;
COMMENT ON FUNCTION npc_scale.create_reference_schema(name) IS
'Create (idempotently) the seed''s reference game schema in `target`: villages, village_resources, npc_village_config, npc_world_state, npc_relationships, npc_memory (monthly RANGE partitions + DEFAULT), npc_battle_history, the six hot-query indexes and the npc_resource_summary materialized view';

CREATE FUNCTION npc_scale.generate_world(target name, npcs integer, villages_per_npc integer DEFAULT 3,
                                         seed integer DEFAULT 1)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  t text;
  s integer;        -- side of each NPC's territory cell, in tiles
  s_min integer;
  s_fit integer;
  cps integer;      -- cells per map side
  radius integer;   -- neighbour search box half-width for relationships
  t0 timestamptz := now();
BEGIN
  IF target IS NULL OR target = '' THEN
    RAISE EXCEPTION 'generate_world: target schema name must not be NULL or empty (got %)',
      coalesce(quote_literal(target), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF npcs IS NULL OR villages_per_npc IS NULL OR seed IS NULL THEN
    RAISE EXCEPTION 'generate_world: npcs, villages_per_npc and seed must not be NULL (got npcs=%, villages_per_npc=%, seed=%)',
      coalesce(npcs::text, 'NULL'), coalesce(villages_per_npc::text, 'NULL'), coalesce(seed::text, 'NULL')
      USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF npcs < 1 THEN
    RAISE EXCEPTION 'generate_world: npcs must be at least 1 (got %)', npcs
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF villages_per_npc < 1 THEN
    RAISE EXCEPTION 'generate_world: villages_per_npc must be at least 1 (got %)', villages_per_npc
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = target) THEN
    RAISE EXCEPTION 'generate_world: schema % does not exist', quote_ident(target)
      USING ERRCODE = 'invalid_schema_name',
            HINT = format('Run SELECT npc_scale.create_reference_schema(%L) first.', target);
  END IF;
  FOREACH t IN ARRAY ARRAY['villages', 'village_resources', 'npc_village_config', 'npc_world_state',
                           'npc_relationships', 'npc_memory', 'npc_battle_history', 'npc_resource_summary'] LOOP
    IF to_regclass(format('%I.%I', target, t)) IS NULL THEN
      RAISE EXCEPTION 'generate_world: %.% does not exist', quote_ident(target), quote_ident(t)
        USING ERRCODE = 'undefined_table',
              HINT = format('Run SELECT npc_scale.create_reference_schema(%L) first.', target);
    END IF;
  END LOOP;

  -- Map layout, without collisions: the 401x401 map (-200..200) is cut into
  -- cells of s x s tiles; each NPC gets a distinct pseudo-random cell and its
  -- villages distinct tiles in it. Prefer ~5 tiles per village (villages of an
  -- NPC clustered but not packed), shrink the cells if the NPCs need more.
  s_min := ceil(sqrt(villages_per_npc::numeric));
  s_fit := 401 / ceil(sqrt(npcs::numeric))::integer;      -- largest s with (401/s)^2 >= npcs
  IF s_min > s_fit THEN
    RAISE EXCEPTION 'generate_world: % NPCs with % villages each do not fit on the 401x401 map',
      npcs, villages_per_npc
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  s := greatest(s_min, least(ceil(sqrt(villages_per_npc * 5.0))::integer, s_fit));
  cps := 401 / s;
  -- About 10 other NPCs' homes in a box of this half-width, on average.
  radius := greatest(10, ceil(sqrt(161201.0 / npcs) * 1.5)::integer);

  EXECUTE format('TRUNCATE %1$I.npc_battle_history, %1$I.npc_memory, %1$I.npc_relationships, '
                 '%1$I.npc_world_state, %1$I.npc_village_config, %1$I.village_resources, %1$I.villages '
                 'RESTART IDENTITY', target);

  -- Villages: ids (npc-1)*villages_per_npc + j, j = 1 the capital; player = NPC.
  -- ~3% of the non-capital villages are abandoned (inactive).
  EXECUTE format($q$
    INSERT INTO %1$I.villages (id, player_id, name, x, y, population, is_capital, loyalty, active, founded_at)
    WITH cells AS (
      SELECT c, row_number() OVER (ORDER BY npc_scale._ref_rand($3, 1, c), c) AS npc
        FROM generate_series(0, $5 * $5 - 1) c
    ), slots AS (
      SELECT h.npc, h.c / $5 AS cx, h.c %% $5 AS cy, sl,
             row_number() OVER (PARTITION BY h.npc ORDER BY npc_scale._ref_rand($3, 2, h.npc * 1000000 + sl), sl) AS j
        FROM cells h, generate_series(0, $4 * $4 - 1) sl
       WHERE h.npc <= $1
    ), v AS (
      SELECT (npc - 1) * $2 + j AS id, npc, j, cx, cy, sl FROM slots WHERE j <= $2
    )
    SELECT v.id, v.npc,
           (ARRAY['Oak','Iron','Stone','Raven','Wolf','Amber','Frost','Elder','Red','Grey','Black','Silver',
                  'Thorn','Ash','High','Deep'])[1 + floor(npc_scale._ref_rand($3, 3, v.id) * 16)::int]
           || (ARRAY['ford','burg','haven','field','stead','wick','holm','mere','gate','vale','crest','moor'])
              [1 + floor(npc_scale._ref_rand($3, 4, v.id) * 12)::int],
           -200 + v.cx * $4 + v.sl / $4,
           -200 + v.cy * $4 + v.sl %% $4,
           CASE WHEN v.j = 1 THEN 200 + floor(npc_scale._ref_rand($3, 5, v.id) * 700)::int
                ELSE 40 + floor(npc_scale._ref_rand($3, 5, v.id) * 450)::int END,
           v.j = 1,
           CASE WHEN v.j = 1 THEN 100 ELSE 70 + floor(npc_scale._ref_rand($3, 6, v.id) * 31)::int END,
           v.j = 1 OR npc_scale._ref_rand($3, 7, v.id) >= 0.03,
           $6 - make_interval(secs => CASE WHEN v.j = 1 THEN 150 ELSE 120 END * 86400.0
                                      * (0.3 + 0.7 * npc_scale._ref_rand($3, 8, v.id)))
      FROM v
  $q$, target) USING npcs, villages_per_npc, seed, s, cps, t0;
  EXECUTE format($q$SELECT setval(pg_get_serial_sequence(%L, 'id'), (SELECT max(id) FROM %I.villages))$q$,
                 format('%I.villages', target), target);

  -- Stock and production grow with population; wheat is net of upkeep.
  EXECUTE format($q$
    INSERT INTO %1$I.village_resources (village_id, wood, clay, iron, wheat,
                                        wood_production, clay_production, iron_production, wheat_production,
                                        warehouse_capacity, granary_capacity, updated_at)
    SELECT id,
           floor(npc_scale._ref_rand($1, 11, id) * cap)::int,
           floor(npc_scale._ref_rand($1, 12, id) * cap)::int,
           floor(npc_scale._ref_rand($1, 13, id) * cap)::int,
           floor(npc_scale._ref_rand($1, 14, id) * cap)::int,
           round(base * (0.8 + 0.4 * npc_scale._ref_rand($1, 15, id)))::int,
           round(base * (0.8 + 0.4 * npc_scale._ref_rand($1, 16, id)))::int,
           round(base * (0.8 + 0.4 * npc_scale._ref_rand($1, 17, id)))::int,
           round(base * (0.9 + 0.5 * npc_scale._ref_rand($1, 18, id)) - population / 3.0)::int,
           cap, cap,
           $2 - make_interval(secs => floor(npc_scale._ref_rand($1, 19, id) * 600))
      FROM (SELECT id, population, 20 + population / 2.0 AS base,
                   (800 + population * 90 / 100 * 100) AS cap
              FROM %1$I.villages) v
  $q$, target) USING seed, t0;

  EXECUTE format($q$
    INSERT INTO %1$I.npc_village_config (village_id, npc_id, world_id, role, build_strategy, troop_focus,
                                         auto_build, auto_trade, priority, settings, updated_at)
    SELECT id, player_id, 1,
           CASE WHEN is_capital THEN 'capital'
                ELSE (ARRAY['economy','military','defense','support'])[1 + floor(npc_scale._ref_rand($1, 21, id) * 4)::int] END,
           (ARRAY['resources_first','balanced','military_first','culture'])[1 + floor(npc_scale._ref_rand($1, 22, id) * 4)::int],
           (ARRAY['infantry','cavalry','defense','siege','scouts'])[1 + floor(npc_scale._ref_rand($1, 23, id) * 5)::int],
           active,
           active AND npc_scale._ref_rand($1, 24, id) < 0.6,
           CASE WHEN is_capital THEN 1 ELSE 2 + floor(npc_scale._ref_rand($1, 25, id) * 4)::int END,
           jsonb_build_object('min_wheat_reserve', 500 + floor(npc_scale._ref_rand($1, 26, id) * 20) * 100,
                              'raid_radius', 5 + floor(npc_scale._ref_rand($1, 27, id) * 20)),
           $2 - make_interval(secs => floor(npc_scale._ref_rand($1, 28, id) * 86400 * 7))
      FROM %1$I.villages
  $q$, target) USING seed, t0;

  EXECUTE format($q$
    INSERT INTO %1$I.npc_world_state (world_id, npc_id, tribe, personality, aggression, mood, current_goal,
                                      capital_village_id, state, decisions_made, last_decision_at,
                                      next_decision_at, updated_at)
    SELECT 1, player_id,
           (ARRAY['romans','teutons','gauls'])[1 + floor(npc_scale._ref_rand($1, 31, player_id) * 3)::int],
           (ARRAY['aggressive','economic','diplomatic','defensive','balanced','opportunist'])
             [1 + floor(npc_scale._ref_rand($1, 32, player_id) * 6)::int],
           round(npc_scale._ref_rand($1, 33, player_id)::numeric, 2),
           round((npc_scale._ref_rand($1, 34, player_id) * 2 - 1)::numeric, 2),
           (ARRAY['expand','build_economy','raid_neighbors','fortify','form_alliance','train_army','trade'])
             [1 + floor(npc_scale._ref_rand($1, 35, player_id) * 7)::int],
           id,
           jsonb_build_object('threat_level', round(npc_scale._ref_rand($1, 36, player_id)::numeric, 2),
                              'capital', jsonb_build_object('x', x, 'y', y),
                              'phase', (ARRAY['early','growth','mid','late'])[1 + floor(npc_scale._ref_rand($1, 37, player_id) * 4)::int]),
           floor(npc_scale._ref_rand($1, 38, player_id) * 5000)::int,
           ld, ld + make_interval(secs => 300 + floor(npc_scale._ref_rand($1, 39, player_id) * 600)), ld
      FROM (SELECT *, $2 - make_interval(secs => floor(npc_scale._ref_rand($1, 30, player_id) * 600)) AS ld
              FROM %1$I.villages WHERE is_capital) c
  $q$, target) USING seed, t0;

  -- The neighbour search below uses idx_villages_coordinates: statistics first.
  EXECUTE format('ANALYZE %I.villages', target);

  -- Relationships: each NPC knows 3..7 of the nearest other NPCs (villages in a
  -- box around its capital). The type is a property of the pair, so both
  -- directions agree when both know each other.
  EXECUTE format($q$
    INSERT INTO %1$I.npc_relationships (world_id, npc_id, target_npc_id, relationship_type, trust,
                                        interaction_count, last_interaction_at, updated_at)
    SELECT 1, n.npc_id, n.target_npc_id, n.rtype,
           CASE n.rtype WHEN 'ally' THEN 0.5 + 0.5 * n.r WHEN 'trade_partner' THEN 0.2 + 0.5 * n.r
                        WHEN 'neutral' THEN -0.2 + 0.4 * n.r WHEN 'rival' THEN -0.6 + 0.4 * n.r
                        ELSE -1.0 + 0.4 * n.r END,
           1 + floor(npc_scale._ref_rand($1, 42, n.pair) * 40)::int,
           $3 - make_interval(secs => floor(npc_scale._ref_rand($1, 43, n.pair * 2 + (n.npc_id > n.target_npc_id)::int) * 86400 * 30)),
           $3
      FROM (
        SELECT c.player_id AS npc_id, nb.player_id AS target_npc_id, nb.rn,
               least(c.player_id, nb.player_id) * 1000000 + greatest(c.player_id, nb.player_id) AS pair,
               CASE WHEN h < 0.15 THEN 'ally' WHEN h < 0.35 THEN 'trade_partner' WHEN h < 0.55 THEN 'neutral'
                    WHEN h < 0.75 THEN 'rival' ELSE 'enemy' END AS rtype,
               npc_scale._ref_rand($1, 41, c.player_id * 1000000 + nb.player_id) AS r
          FROM %1$I.villages c
          CROSS JOIN LATERAL (
            SELECT v.player_id, row_number() OVER (ORDER BY min((v.x - c.x) ^ 2 + (v.y - c.y) ^ 2), v.player_id) AS rn
              FROM %1$I.villages v
             WHERE v.active AND v.x BETWEEN c.x - $2 AND c.x + $2 AND v.y BETWEEN c.y - $2 AND c.y + $2
               AND v.player_id <> c.player_id
             GROUP BY v.player_id
             ORDER BY rn
             LIMIT 7) nb
          CROSS JOIN LATERAL (SELECT npc_scale._ref_rand($1, 40, least(c.player_id, nb.player_id) * 1000000
                                                              + greatest(c.player_id, nb.player_id)) AS h) p
         WHERE c.is_capital
           AND nb.rn <= 3 + floor(npc_scale._ref_rand($1, 44, c.player_id) * 5)
      ) n
  $q$, target) USING seed, radius, t0;

  -- Memories: 20..60 per NPC over the past ~4 months, denser recently; about a
  -- third with importance > 0.5 (the seed's partial index), betrayals,
  -- alliances, battles and threats weigh more. Older months land in the
  -- DEFAULT partition until the partition manager creates theirs.
  BEGIN
    EXECUTE format($q$
      INSERT INTO %1$I.npc_memory (world_id, npc_id, memory_type, content, importance, related_npc_id, occurred_at)
      WITH rel AS (
        SELECT npc_id, target_npc_id, row_number() OVER (PARTITION BY npc_id ORDER BY target_npc_id) AS rn,
               count(*) OVER (PARTITION BY npc_id) AS cnt
          FROM %1$I.npc_relationships
      ), rel_cnt AS (
        SELECT DISTINCT npc_id, cnt FROM rel
      ), m AS (
        SELECT n.npc, k, n.npc * 1000 + k AS key,
               (ARRAY['battle','trade','diplomacy','alliance','betrayal','threat','observation','construction',
                      'observation','trade'])[1 + floor(npc_scale._ref_rand($1, 51, n.npc * 1000 + k) * 10)::int] AS mtype,
               rc.cnt
          FROM generate_series(1, $2) n(npc)
          CROSS JOIN LATERAL generate_series(1, 20 + floor(npc_scale._ref_rand($1, 50, n.npc) * 41)::int) k
          LEFT JOIN rel_cnt rc ON rc.npc_id = n.npc
      )
      SELECT 1, m.npc, m.mtype,
             CASE m.mtype
               WHEN 'battle'       THEN format('Fought %%s; lost %%s troops', m.who, 5 + floor(npc_scale._ref_rand($1, 53, m.key) * 200))
               WHEN 'trade'        THEN format('Traded %%s wood for clay with %%s', 100 * (1 + floor(npc_scale._ref_rand($1, 53, m.key) * 30)), m.who)
               WHEN 'diplomacy'    THEN format('Received an envoy from %%s', m.who)
               WHEN 'alliance'     THEN format('Agreed a non-aggression pact with %%s', m.who)
               WHEN 'betrayal'     THEN format('%%s broke our agreement and raided us', m.who)
               WHEN 'threat'       THEN format('%%s is massing troops near our border', m.who)
               WHEN 'observation'  THEN format('Scouts report a new village at (%%s|%%s)',
                                               floor(npc_scale._ref_rand($1, 53, m.key) * 401)::int - 200,
                                               floor(npc_scale._ref_rand($1, 54, m.key) * 401)::int - 200)
               ELSE format('Upgraded the %%s to level %%s',
                           (ARRAY['granary','warehouse','barracks','wall','marketplace','main building'])
                             [1 + floor(npc_scale._ref_rand($1, 53, m.key) * 6)::int],
                           2 + floor(npc_scale._ref_rand($1, 54, m.key) * 18))
             END,
             round(least(1.0, npc_scale._ref_rand($1, 52, m.key) ^ 2 * 0.85
                              + CASE m.mtype WHEN 'betrayal' THEN 0.35 WHEN 'alliance' THEN 0.25
                                             WHEN 'battle' THEN 0.15 WHEN 'threat' THEN 0.15 ELSE 0 END)::numeric, 3),
             CASE WHEN m.mtype IN ('observation', 'construction') THEN NULL ELSE m.target_npc_id END,
             $3 - make_interval(secs => 120 * 86400.0 * npc_scale._ref_rand($1, 55, m.key) ^ 1.5)
        FROM (SELECT m.*, r.target_npc_id, coalesce('NPC ' || r.target_npc_id, 'a stranger') AS who
                FROM m
                LEFT JOIN rel r ON r.npc_id = m.npc AND r.rn = 1 + floor(npc_scale._ref_rand($1, 56, m.key) * m.cnt)) m
    $q$, target) USING seed, npcs, t0;
  EXCEPTION WHEN check_violation THEN
    IF SQLERRM LIKE 'no partition of relation%' THEN
      RAISE EXCEPTION 'generate_world: %.npc_memory has no partition for memories between % and % (%)',
        quote_ident(target), t0 - interval '120 days', t0, SQLERRM
        USING ERRCODE = 'check_violation',
              HINT = 'Attach a DEFAULT partition or monthly partitions covering the past four months.';
    END IF;
    RAISE;
  END;

  -- Battles over the past three weeks against known non-allied neighbours
  -- (0..11 attacks per NPC); each battle is recorded for both sides.
  EXECUTE format($q$
    INSERT INTO %1$I.npc_battle_history (world_id, report_id, npc_id, role, village_id, opponent_npc_id,
                                         opponent_village_id, battle_type, outcome, troops_sent, troops_lost,
                                         loot_wood, loot_clay, loot_iron, loot_wheat, occurred_at)
    WITH rel AS (
      SELECT npc_id, target_npc_id, row_number() OVER (PARTITION BY npc_id ORDER BY target_npc_id) AS rn,
             count(*) OVER (PARTITION BY npc_id) AS cnt
        FROM %1$I.npc_relationships WHERE relationship_type IN ('enemy', 'rival', 'neutral')
    ), att AS (
      SELECT n.npc, n.npc * 1000 + k AS key, rc.cnt
        FROM generate_series(1, $2) n(npc)
        CROSS JOIN LATERAL generate_series(1, floor(npc_scale._ref_rand($1, 60, n.npc) * 12)::int) k
        JOIN (SELECT DISTINCT npc_id, cnt FROM rel) rc ON rc.npc_id = n.npc
    ), b AS (
      SELECT row_number() OVER (ORDER BY a.key) AS report_id,
             a.npc AS attacker, r.target_npc_id AS defender,
             (a.npc - 1) * $3 + 1 + floor(npc_scale._ref_rand($1, 62, a.key) * $3)::bigint AS att_village,
             (r.target_npc_id - 1) * $3 + 1 + floor(npc_scale._ref_rand($1, 63, a.key) * $3)::bigint AS def_village,
             CASE WHEN npc_scale._ref_rand($1, 64, a.key) < 0.7 THEN 'raid'
                  WHEN npc_scale._ref_rand($1, 64, a.key) < 0.95 THEN 'attack' ELSE 'conquest' END AS btype,
             npc_scale._ref_rand($1, 65, a.key) < 0.6 AS att_won,
             20 + floor(npc_scale._ref_rand($1, 66, a.key) * 480)::int AS sent,
             npc_scale._ref_rand($1, 67, a.key) AS loss,
             npc_scale._ref_rand($1, 68, a.key) AS loot,
             $4 - make_interval(secs => 21 * 86400.0 * npc_scale._ref_rand($1, 69, a.key)) AS at
        FROM att a
        JOIN rel r ON r.npc_id = a.npc AND r.rn = 1 + floor(npc_scale._ref_rand($1, 61, a.key) * a.cnt)
    )
    SELECT 1, b.report_id, side.npc_id, side.role, side.village_id, side.opp, side.opp_village, b.btype,
           side.outcome, side.sent, side.lost,
           side.loot_each, side.loot_each, side.loot_each, side.loot_each, b.at
      FROM b
      CROSS JOIN LATERAL (VALUES
        (b.attacker, 'attacker', b.att_village, b.defender, b.def_village,
         CASE WHEN b.att_won THEN 'victory' ELSE 'defeat' END, b.sent,
         floor(b.sent * CASE WHEN b.att_won THEN 0.3 * b.loss ELSE 0.5 + 0.5 * b.loss END)::int,
         CASE WHEN b.att_won THEN floor(b.sent * 12 * b.loot)::int ELSE 0 END),
        (b.defender, 'defender', b.def_village, b.attacker, b.att_village,
         CASE WHEN b.att_won THEN 'defeat' ELSE 'victory' END, 0,
         floor(b.sent * 0.6 * b.loss)::int,
         CASE WHEN b.att_won THEN -floor(b.sent * 12 * b.loot)::int ELSE 0 END)
      ) AS side(npc_id, role, village_id, opp, opp_village, outcome, sent, lost, loot_each)
  $q$, target) USING seed, npcs, villages_per_npc, t0;

  EXECUTE format('ANALYZE %1$I.villages, %1$I.village_resources, %1$I.npc_village_config, %1$I.npc_world_state, '
                 '%1$I.npc_relationships, %1$I.npc_memory, %1$I.npc_battle_history', target);
  EXECUTE format('REFRESH MATERIALIZED VIEW %I.npc_resource_summary', target);
  EXECUTE format('ANALYZE %I.npc_resource_summary', target);
END
$fn$;
COMMENT ON FUNCTION npc_scale.generate_world(name, integer, integer, integer) IS
'Replace the contents of the reference schema `target` with a deterministic (per seed) world: npcs NPC players with villages_per_npc villages each on the 401x401 map, resources, village config, NPC state, relationships between neighbours, ~4 months of memories and ~3 weeks of battles; then ANALYZE and refresh npc_resource_summary';

------------------------------------------------------------------------------
-- Native partition management (time partitions; pg_partman-compatible names)
------------------------------------------------------------------------------
CREATE FUNCTION npc_scale._partition_bounds(partition_interval interval, around timestamptz,
    before integer, after integer, OUT suffix text, OUT lower_bound timestamptz, OUT upper_bound timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'npc_scale_partition_bounds' LANGUAGE C STRICT IMMUTABLE;

CREATE TABLE npc_scale.partition_configs (
    parent               regclass PRIMARY KEY,
    control              name NOT NULL,
    partition_interval   interval NOT NULL,
    premake              integer NOT NULL,
    retention            interval,
    retention_keep_table boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    last_run_at          timestamptz
);
GRANT SELECT ON npc_scale.partition_configs TO PUBLIC;

-- Checks a managed parent, whether it comes from manage_partitions() or is
-- written by hand: a bad row would otherwise fail in the worker, every cycle.
-- The premade partitions must outlast the time to the next run, one missed
-- run included: else rows land in the default partition between runs and
-- every run has to move them. An error when strict, else a warning.
CREATE FUNCTION npc_scale._check_premake_cover(premake integer, partition_interval interval, strict boolean)
RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
  every interval := coalesce(current_setting('npc_scale.partition_maintenance_interval', true), '1h')::interval;
  msg text;
BEGIN
  IF premake * partition_interval >= 2 * every THEN
    RETURN;
  END IF;
  msg := format('premake %s x partition_interval %s covers less than two runs of partition maintenance (every %s)',
                premake, partition_interval, every);
  IF strict THEN
    RAISE EXCEPTION '%', msg USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Raise premake, or lower npc_scale.partition_maintenance_interval.';
  END IF;
  RAISE WARNING '%: rows will land in the default partition between runs', msg
    USING HINT = 'Raise premake, or lower npc_scale.partition_maintenance_interval.';
END $$;

CREATE FUNCTION npc_scale._check_partition_config() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  strategy "char";
  key_cols int2vector;
  att int2;
  coltype regtype;
BEGIN
  SELECT partstrat, partattrs INTO strategy, key_cols FROM pg_partitioned_table WHERE partrelid = NEW.parent;
  IF strategy IS NULL THEN
    RAISE EXCEPTION 'relation % is not partitioned', NEW.parent USING ERRCODE = 'wrong_object_type',
      HINT = 'Create it with PARTITION BY RANGE (<timestamp column>).';
  END IF;
  -- The maintenance worker's session cannot see another session's
  -- temporary tables (and one dropped at that session's end fires no
  -- sql_drop: its settings would stay, for an OID that may be reused).
  IF (SELECT relpersistence FROM pg_class WHERE oid = NEW.parent) = 't' THEN
    RAISE EXCEPTION 'relation % is a temporary table: the maintenance worker cannot maintain it', NEW.parent
      USING ERRCODE = 'wrong_object_type';
  END IF;
  SELECT attnum, atttypid::regtype INTO att, coltype FROM pg_attribute
   WHERE attrelid = NEW.parent AND attname = NEW.control AND NOT attisdropped;
  IF att IS NULL THEN
    RAISE EXCEPTION 'column "%" does not exist in %', NEW.control, NEW.parent USING ERRCODE = 'undefined_column';
  END IF;
  IF strategy <> 'r' OR array_length(key_cols::int2[], 1) <> 1 OR key_cols[0] <> att THEN
    RAISE EXCEPTION '% is not partitioned by RANGE on column "%"', NEW.parent, NEW.control USING ERRCODE = 'wrong_object_type';
  END IF;
  IF coltype NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
    RAISE EXCEPTION 'column "%" of % has type %, not timestamptz, timestamp or date', NEW.control, NEW.parent, coltype
      USING ERRCODE = 'datatype_mismatch';
  END IF;
  IF NEW.partition_interval <= interval '0' THEN
    RAISE EXCEPTION 'partition_interval % must be positive', NEW.partition_interval USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- A date holds no time of day: bounds between midnights could not be
  -- written, and rows would never find their partition.
  IF coltype = 'date'::regtype AND (NEW.partition_interval < interval '1 day' OR
      EXTRACT(epoch FROM NEW.partition_interval - date_trunc('day', NEW.partition_interval)) % 86400 <> 0) THEN
    RAISE EXCEPTION 'partition_interval % is not a whole number of days, as date column "%" needs', NEW.partition_interval,
      NEW.control USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NEW.premake < 1 OR NEW.premake > 1000 THEN
    RAISE EXCEPTION 'premake % is out of range', NEW.premake USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use 1 to 1000 partitions ahead.';
  END IF;
  IF NEW.retention IS NOT NULL AND (NEW.retention <= interval '0' OR NEW.retention < NEW.partition_interval) THEN
    RAISE EXCEPTION 'retention % is shorter than partition_interval %', NEW.retention, NEW.partition_interval
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Partition bounds are computed for years 0001-9999: far beyond these,
  -- every maintenance run would fail on a bound instead of this naming the value.
  IF NEW.partition_interval > interval '100 years' THEN
    RAISE EXCEPTION 'partition_interval % is more than 100 years', NEW.partition_interval
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NEW.premake * NEW.partition_interval > interval '1000 years' THEN
    RAISE EXCEPTION 'premake % x partition_interval % reaches more than 1000 years ahead', NEW.premake, NEW.partition_interval
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF NEW.retention > interval '1000 years' THEN
    RAISE EXCEPTION 'retention % is more than 1000 years', NEW.retention USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Leave retention null to keep every partition.';
  END IF;
  PERFORM * FROM npc_scale._partition_bounds(NEW.partition_interval, now(), 0, 0);  -- raises on an unsupported interval
  -- An INSERT as it stands (pg_restore's, onto a server whose maintenance
  -- runs less often) is kept with a warning; an UPDATE, and
  -- manage_partitions(), are refused.
  PERFORM npc_scale._check_premake_cover(NEW.premake, NEW.partition_interval, TG_OP = 'UPDATE');
  RETURN NEW;
END $$;
CREATE TRIGGER check_partition_config
    BEFORE INSERT OR UPDATE OF parent, control, partition_interval, premake, retention, retention_keep_table
    ON npc_scale.partition_configs
    FOR EACH ROW EXECUTE FUNCTION npc_scale._check_partition_config();

-- A bound as a literal of the control column's type, always read as UTC.
CREATE FUNCTION npc_scale._bound_literal(ts timestamptz, coltype regtype) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT quote_literal(CASE coltype
    WHEN 'date'::regtype THEN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD')
    WHEN 'timestamp'::regtype THEN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
    ELSE to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00' END)
$$;

-- A partition's name: the parent's name cut to leave room for "_<suffix>"
-- within NAMEDATALEN (63 bytes), so Postgres never truncates the suffix away
-- (hourly names would all collapse into one).
CREATE FUNCTION npc_scale._child_name(rel name, suffix text) RETURNS name
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
  base text := rel;
BEGIN
  IF octet_length(suffix) > 61 THEN  -- no room for a name: cutting the base would never end
    RAISE EXCEPTION 'partition suffix "%" is longer than 61 bytes', suffix USING ERRCODE = 'name_too_long';
  END IF;
  WHILE octet_length(base) + 1 + octet_length(suffix) > 63 LOOP
    base := left(base, -1);  -- by characters: never half a multibyte one
  END LOOP;
  RETURN base || '_' || suffix;
END $$;

-- Whether a table named `child` is in the way of creating that partition
-- of `parent` (true: leave this range alone). Another parent's partition of
-- that name (names cut to the same 63 bytes) is an error, not a range
-- silently left to the default partition; a plain table of that name (one
-- detached by retention_keep_table, or by hand) is kept, with a warning.
CREATE FUNCTION npc_scale._child_exists(nsp name, child name, parent regclass) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
  existing regclass := to_regclass(format('%I.%I', nsp, child));
  other regclass;
BEGIN
  IF existing IS NULL THEN
    RETURN false;
  END IF;
  SELECT inhparent::regclass INTO other FROM pg_inherits WHERE inhrelid = existing;
  IF other IS DISTINCT FROM parent AND other IS NOT NULL THEN
    RAISE EXCEPTION 'table % exists but is not a partition of %: it belongs to %', existing, parent, other
      USING ERRCODE = 'duplicate_table',
            HINT = 'Rename one of the parents so their first characters differ.';
  END IF;
  IF other IS NULL THEN
    RAISE WARNING 'table % exists and is not a partition of %: its range is left to the default partition',
      existing, parent;
  END IF;
  RETURN true;
END $$;

-- A partition bound as written by pg_get_expr, read as the instant it is
-- (date and timestamp bounds are UTC: _bound_literal writes them so).
CREATE FUNCTION npc_scale._bound_value(bound text, coltype regtype) RETURNS timestamptz
LANGUAGE sql STABLE STRICT AS $$
  SELECT CASE WHEN coltype IN ('date'::regtype, 'timestamp'::regtype)
              THEN bound::timestamp AT TIME ZONE 'UTC' ELSE bound::timestamptz END
$$;

-- The partitions of `parent` with their bounds, MINVALUE and MAXVALUE as
-- -infinity and infinity (the default partition is left out).
CREATE FUNCTION npc_scale._partitions_of(parent regclass, coltype regtype,
    OUT part regclass, OUT lower_bound timestamptz, OUT upper_bound timestamptz)
RETURNS SETOF record LANGUAGE sql STABLE AS $$
  SELECT c.oid::regclass,
         CASE WHEN m[1] = 'MINVALUE' THEN '-infinity'::timestamptz ELSE npc_scale._bound_value(btrim(m[1], ''''), coltype) END,
         CASE WHEN m[2] = 'MAXVALUE' THEN 'infinity'::timestamptz ELSE npc_scale._bound_value(btrim(m[2], ''''), coltype) END
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
         LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                              'FROM \((MINVALUE|''[^'']+'')\) TO \((MAXVALUE|''[^'']+'')\)') AS m
   WHERE i.inhparent = parent AND m IS NOT NULL
$$;

-- A partition made by maintenance gets the parent's owner (the worker runs
-- as the bootstrap superuser; the game's role must still own its tables)
-- and the parent's grants (a partition does not inherit them), PUBLIC's too.
CREATE FUNCTION npc_scale._adopt_partition(part regclass, parent regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  parent_owner oid := (SELECT relowner FROM pg_class WHERE oid = parent);
  g record;
BEGIN
  IF (SELECT relowner FROM pg_class WHERE oid = part) <> parent_owner THEN
    EXECUTE format('ALTER TABLE %s OWNER TO %I', part, pg_get_userbyid(parent_owner));
  END IF;
  FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable
             FROM pg_class c, aclexplode(c.relacl) AS a
            WHERE c.oid = parent AND a.grantee <> parent_owner LOOP
    EXECUTE format('GRANT %s ON %s TO %s%s', g.privilege_type, part,
                   CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                   CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
END $$;

-- Runs a statement on a managed table's rows as that table's owner, as a
-- security-restricted operation (as REFRESH MATERIALIZED VIEW runs a view's
-- query): the game's triggers and constraints, and the functions they call,
-- never run with the maintenance worker's superuser rights, and cannot SET
-- or RESET ROLE their way back to them.
CREATE FUNCTION npc_scale._as_owner_of(rel regclass, statement text) RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_as_owner_of' LANGUAGE C;

-- Creates the partition [lower, upper) of cfg.parent named for `suffix`,
-- unless its partition is there or another partition (made by hand, by
-- pg_partman, or under an older interval) overlaps the range. Made as a
-- table of its own and then attached: ATTACH locks the parent SHARE UPDATE
-- EXCLUSIVE, where CREATE TABLE ... PARTITION OF would lock out the game's
-- reads and writes. Rows of the range already in the default partition are
-- moved into it first. Returns 1 if created.
CREATE FUNCTION npc_scale._create_partition(cfg npc_scale.partition_configs, def regclass,
    lower_bound timestamptz, upper_bound timestamptz, suffix text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  nsp name;
  rel name;
  coltype regtype := (SELECT atttypid::regtype FROM pg_attribute WHERE attrelid = cfg.parent AND attname = cfg.control);
  child_name text;
  overlapping regclass;
  lo text := npc_scale._bound_literal(lower_bound, coltype);
  hi text := npc_scale._bound_literal(upper_bound, coltype);
  cols text;
  has_rows boolean;
  replication_role text;
  covered record;
  gap_from timestamptz := lower_bound;
  made integer := 0;
BEGIN
  SELECT n.nspname, c.relname INTO nsp, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = cfg.parent;
  child_name := npc_scale._child_name(rel, suffix);
  -- A name taken by this range's own partition: done. Taken by a partition
  -- of other bounds (pg_partman's at a local midnight, a finer interval's
  -- of the same name format), it is one overlapping partition like any
  -- other: what it leaves of the range is made below.
  IF npc_scale._child_exists(nsp, child_name, cfg.parent)
     AND NOT EXISTS (SELECT FROM npc_scale._partitions_of(cfg.parent, coltype) p
                      WHERE p.part = to_regclass(format('%I.%I', nsp, child_name))
                        AND (p.lower_bound, p.upper_bound) IS DISTINCT FROM
                            (_create_partition.lower_bound, _create_partition.upper_bound)) THEN
    RETURN 0;
  END IF;
  SELECT p.part INTO overlapping FROM npc_scale._partitions_of(cfg.parent, coltype) p
   WHERE p.lower_bound < _create_partition.upper_bound AND p.upper_bound > _create_partition.lower_bound LIMIT 1;
  IF overlapping IS NOT NULL THEN
    -- Kept, and what it leaves of the range is made as partitions of its
    -- own (an interval changed from months to weeks, bounds pg_partman made
    -- at local midnight): rows there would stay in the default partition.
    RAISE NOTICE 'partition % of % not created: % already covers part of its range', child_name, cfg.parent, overlapping;
    -- The covered ranges in order, then the range's end: each gap before one is made.
    FOR covered IN SELECT * FROM (
                     SELECT p.lower_bound AS from_at, p.upper_bound AS to_at FROM npc_scale._partitions_of(cfg.parent, coltype) p
                      WHERE p.lower_bound < _create_partition.upper_bound AND p.upper_bound > _create_partition.lower_bound
                     UNION ALL SELECT _create_partition.upper_bound, _create_partition.upper_bound) c
                    ORDER BY from_at LOOP
      IF covered.from_at > gap_from THEN
        made := made + npc_scale._create_partition(cfg, def, gap_from, covered.from_at,
                                                   suffix || to_char(gap_from AT TIME ZONE 'UTC', '"_from_"YYYYMMDD"_"HH24MI'));
      END IF;
      gap_from := greatest(gap_from, covered.to_at);
    END LOOP;
    RETURN made;
  END IF;
  IF to_regclass(format('%I.%I', nsp, child_name)) IS NOT NULL THEN
    -- Its name is the partition of another range, none overlapping this one
    -- (pg_partman's, named in another time zone): this range gets a name of
    -- its own.
    RETURN npc_scale._create_partition(cfg, def, lower_bound, upper_bound,
                                       suffix || to_char(lower_bound AT TIME ZONE 'UTC', '"_from_"YYYYMMDD"_"HH24MI'));
  END IF;
  -- In the parent's tablespace, as CREATE TABLE ... PARTITION OF would put it.
  EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)',
                 nsp, child_name, cfg.parent)
          || coalesce((SELECT format(' TABLESPACE %I', t.spcname) FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace
                        WHERE c.oid = cfg.parent), '');
  -- The parent's owner and grants first: the move below runs as that owner.
  PERFORM npc_scale._adopt_partition(format('%I.%I', nsp, child_name)::regclass, cfg.parent);
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= %s AND %I < %s)', def, cfg.control, lo, cfg.control, hi)
    INTO has_rows;
  IF has_rows THEN
    -- Generated columns are computed again, not copied. A move is not a
    -- delete: the game's row triggers and the foreign keys pointing at the
    -- parent (ON DELETE CASCADE would delete their rows) must not fire, so
    -- a superuser (the worker) moves with triggers off. Another role's
    -- move fires them (documented).
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
     WHERE attrelid = cfg.parent AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
      replication_role := current_setting('session_replication_role');
      PERFORM set_config('session_replication_role', 'replica', true);
    END IF;
    PERFORM npc_scale._as_owner_of(cfg.parent,
      format('WITH moved AS (DELETE FROM %s WHERE %I >= %s AND %I < %s RETURNING %s) INSERT INTO %I.%I (%s) SELECT * FROM moved',
             def, cfg.control, lo, cfg.control, hi, cols, nsp, child_name, cols));
    IF replication_role IS NOT NULL THEN
      PERFORM set_config('session_replication_role', replication_role, true);
    END IF;
  END IF;
  EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%s) TO (%s)', cfg.parent, nsp, child_name, lo, hi);
  RETURN 1;
END $$;

-- Records a run of a parent's maintenance. SECURITY DEFINER: the parent's
-- owner may run it (run_maintenance()) without rights on the settings table;
-- it writes nothing but the time.
CREATE FUNCTION npc_scale._note_partition_run(parent regclass) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE npc_scale.partition_configs c SET last_run_at = now()
   WHERE c.parent = _note_partition_run.parent
     AND pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = _note_partition_run.parent), 'MEMBER')
$$;

-- The partition key column renamed since (ALTER TABLE ... RENAME COLUMN,
-- which Postgres allows): the settings follow it. For the parent's owner
-- (run_maintenance) or the worker, as _note_partition_run.
CREATE FUNCTION npc_scale._note_partition_key(parent regclass, key_name name) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE npc_scale.partition_configs c SET control = _note_partition_key.key_name
   WHERE c.parent = _note_partition_key.parent AND c.control <> _note_partition_key.key_name
     AND pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = _note_partition_key.parent), 'MEMBER')
$$;

-- One parent's maintenance: default partition, retention, the default
-- partition's rows, then premake. Returns partitions created +
-- dropped/detached. Locks are waited for at most
-- npc_scale.maintenance_lock_timeout: a long game query on the parent fails
-- this run (retried soon) instead of queueing the game's statements behind
-- maintenance's lock.
CREATE FUNCTION npc_scale._maintain_parent(cfg npc_scale.partition_configs, initial boolean)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  nsp name;
  rel name;
  coltype regtype;
  def regclass;
  b record;
  child record;
  n integer := 0;
  child_name text;
  lock_wait text := current_setting('npc_scale.maintenance_lock_timeout', true);
  caller_lock_timeout text := current_setting('lock_timeout');
  current_lower timestamptz;
  kept_from timestamptz;     -- rows before this are past retention
  retained_from timestamptz; -- partitions ending by this are past retention
  floor_at timestamptz;      -- the default partition's rows before this are dealt with
  oldest_text text;
  oldest timestamptz;
  has_rows boolean;
  backfilled integer := 0;
  failed_state text;
  failed_message text;
  key_name name;
BEGIN
  IF lock_wait IS NOT NULL THEN
    PERFORM set_config('lock_timeout', lock_wait, true);
  END IF;
  SELECT n.nspname, c.relname INTO nsp, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.oid = cfg.parent;
  -- The key by its number, not the name stored: a renamed column would
  -- otherwise stop retention (no bounds read) and fail every premake.
  SELECT a.attname INTO key_name FROM pg_partitioned_table p
    JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
   WHERE p.partrelid = cfg.parent;
  IF key_name IS NOT NULL AND key_name <> cfg.control THEN
    cfg.control := key_name;
    PERFORM npc_scale._note_partition_key(cfg.parent, key_name);
  END IF;
  SELECT atttypid::regtype INTO coltype FROM pg_attribute WHERE attrelid = cfg.parent AND attname = cfg.control;
  -- The default partition catches rows no partition covers yet.
  SELECT inhrelid::regclass INTO def FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
   WHERE i.inhparent = cfg.parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
  IF def IS NULL THEN
    child_name := npc_scale._child_name(rel, 'default');
    IF to_regclass(format('%I.%I', nsp, child_name)) IS NOT NULL THEN
      RAISE EXCEPTION 'table %.% exists but is not the default partition of %', nsp, child_name, cfg.parent
        USING ERRCODE = 'duplicate_table',
              HINT = 'Rename one of the parents so their first characters differ, or drop that table.';
    END IF;
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s DEFAULT', nsp, child_name, cfg.parent);
    def := format('%I.%I', nsp, child_name)::regclass;
    PERFORM npc_scale._adopt_partition(def, cfg.parent);
    n := n + 1;
  END IF;
  IF cfg.retention IS NOT NULL THEN
    -- In UTC, as the bounds: in the session's zone '7 days' back across a
    -- DST change is 167 or 169 hours, and a partition would go an hour early.
    retained_from := (now() AT TIME ZONE 'UTC' - cfg.retention) AT TIME ZONE 'UTC';
    SELECT lower_bound INTO kept_from FROM npc_scale._partition_bounds(cfg.partition_interval, retained_from, 0, 0);
  END IF;
  -- The default partition's rows, if any: the game's writes into it wait
  -- while they move (else a row landing between the move and the ATTACH
  -- fails the ATTACH). Those past retention go as their partition would
  -- have; ranges older than the premade ones (rows written while no
  -- partition covered them) get their partitions too, one per call: ATTACH
  -- scans the default partition under an ACCESS EXCLUSIVE lock (the game's
  -- reads of the parent wait) held to COMMIT, so a long history is taken
  -- out over many short transactions (the worker calls again while a call
  -- makes partitions).
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', def) INTO has_rows;
  -- A row the game will not let go (a trigger refusing the retention
  -- delete or the move, a constraint the new table enforces) must not stop
  -- the premade partitions below, run after run: every new row would end
  -- in the default partition. A WARNING, tried again next run. A lock not
  -- granted in time fails the run as before (premake would wait for it too).
  IF has_rows THEN
  BEGIN
    EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', def);
    IF kept_from IS NOT NULL AND NOT cfg.retention_keep_table THEN
      PERFORM npc_scale._as_owner_of(cfg.parent,
        format('DELETE FROM %s WHERE %I < %s', def, cfg.control, npc_scale._bound_literal(kept_from, coltype)));
    END IF;
    SELECT lower_bound INTO current_lower FROM npc_scale._partition_bounds(cfg.partition_interval, now(),
      CASE WHEN initial THEN cfg.premake ELSE 0 END, 0) ORDER BY lower_bound LIMIT 1;
    -- Rows before year 1 (UTC) have no partition name or bound either: like
    -- -infinity they stay in the default partition, instead of failing
    -- every run of this table's maintenance. (From a whole interval after
    -- its start: a partition of a grid not aligned to it, '3 days' say,
    -- that starts in year 1 could start before it.)
    -- Rows past retention were deleted above, unless their tables are to be
    -- kept: then they get their partitions too, which retention detaches
    -- as it would have (else they stayed visible through the parent).
    floor_at := coalesce(CASE WHEN NOT cfg.retention_keep_table THEN kept_from END,
                         '0001-01-01 00:00:00+00'::timestamptz + cfg.partition_interval);
    WHILE backfilled < 1 LOOP
      -- (-infinity has no range: it stays in the default partition.)
      EXECUTE format('SELECT min(%I)::text FROM %s WHERE isfinite(%I) AND %I < %s', cfg.control, def, cfg.control,
                     cfg.control, npc_scale._bound_literal(current_lower, coltype))
              || CASE WHEN floor_at IS NULL THEN ''
                      ELSE format(' AND %I >= %s', cfg.control, npc_scale._bound_literal(floor_at, coltype)) END
        INTO oldest_text;
      EXIT WHEN oldest_text IS NULL;
      oldest := npc_scale._bound_value(oldest_text, coltype);
      SELECT * INTO b FROM npc_scale._partition_bounds(cfg.partition_interval, oldest, 0, 0);
      backfilled := backfilled + npc_scale._create_partition(cfg, def, b.lower_bound, b.upper_bound, b.suffix);
      floor_at := b.upper_bound;  -- a range left alone (name taken) is not looked at again
    END LOOP;
    n := n + backfilled;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    IF failed_state = '55P03' THEN
      RAISE;
    END IF;
    RAISE WARNING 'rows of the default partition of % left in place: %: %', cfg.parent, failed_state, failed_message;
  END;
  END IF;
  -- Premake: the current interval and `premake` ahead (at set-up also
  -- `premake` back, as pg_partman does), each created only if missing.
  FOR b IN SELECT * FROM npc_scale._partition_bounds(cfg.partition_interval, now(),
                                                      CASE WHEN initial THEN cfg.premake ELSE 0 END, cfg.premake)
  LOOP
    -- Already past retention (a detached one keeps its name): not made again.
    CONTINUE WHEN cfg.retention IS NOT NULL AND b.upper_bound <= retained_from;
    n := n + npc_scale._create_partition(cfg, def, b.lower_bound, b.upper_bound, b.suffix);
  END LOOP;
  -- Retention last: a DROP or DETACH locks the parent ACCESS EXCLUSIVE
  -- until COMMIT, so nothing else of this run happens under that lock.
  -- One that fails (a view depends on the partition, a lock not granted in
  -- time) is a WARNING, tried again next run: it must not take back the
  -- partitions premade above, run after run.
  IF cfg.retention IS NOT NULL THEN
    FOR child IN SELECT * FROM npc_scale._partitions_of(cfg.parent, coltype) LOOP
      IF child.upper_bound <= retained_from THEN
        BEGIN
          IF cfg.retention_keep_table THEN
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', cfg.parent, child.part);
          ELSE
            EXECUTE format('DROP TABLE %s', child.part);
          END IF;
          n := n + 1;
        EXCEPTION WHEN OTHERS THEN
          GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
          RAISE WARNING 'retention of % left % in place: %: %', cfg.parent, child.part, failed_state, failed_message;
          -- A lock not granted: the next would wait as long for the same parent.
          EXIT WHEN failed_state = '55P03';
        END;
      END IF;
    END LOOP;
  END IF;
  PERFORM npc_scale._note_partition_run(cfg.parent);
  PERFORM set_config('lock_timeout', caller_lock_timeout, true);
  RETURN n;
END $$;

-- The per-parent lock two callers take, waited for no longer than any other
-- lock of maintenance: a person's open transaction that took it must not
-- hold the worker (and the purges and refreshes after it) for ever.
CREATE FUNCTION npc_scale._lock_parent(parent regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  lock_wait text := current_setting('npc_scale.maintenance_lock_timeout', true);
  caller_lock_timeout text := current_setting('lock_timeout');
BEGIN
  IF lock_wait IS NOT NULL THEN
    PERFORM set_config('lock_timeout', lock_wait, true);
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('npc_scale.partitions'), parent::oid::int);
  PERFORM set_config('lock_timeout', caller_lock_timeout, true);
END $$;

CREATE FUNCTION npc_scale.run_maintenance(parent regclass DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  cfg npc_scale.partition_configs;
  n integer := 0;
BEGIN
  FOR cfg IN SELECT * FROM npc_scale.partition_configs c
              WHERE run_maintenance.parent IS NULL OR c.parent = run_maintenance.parent ORDER BY c.parent::text
  LOOP
    -- Two callers (the worker, a person) never race on one parent; the
    -- settings are read again under the lock (a manage_partitions() that
    -- held it may have changed retention meanwhile).
    PERFORM npc_scale._lock_parent(cfg.parent);
    SELECT * INTO cfg FROM npc_scale.partition_configs c WHERE c.parent = cfg.parent;
    CONTINUE WHEN NOT FOUND;
    n := n + npc_scale._maintain_parent(cfg, false);
  END LOOP;
  RETURN n;
END $$;
COMMENT ON FUNCTION npc_scale.run_maintenance(regclass) IS
'Partition maintenance now (all managed parents, or one): default partition, retention, premake.';

CREATE FUNCTION npc_scale.manage_partitions(parent regclass, control text, partition_interval interval,
    premake integer DEFAULT 4, retention interval DEFAULT NULL, retention_keep_table boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  cfg npc_scale.partition_configs;
BEGIN
  IF parent IS NULL OR control IS NULL OR partition_interval IS NULL OR premake IS NULL THEN
    RAISE EXCEPTION 'parent, control, partition_interval and premake must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF retention_keep_table IS NULL THEN
    RAISE EXCEPTION 'retention_keep_table must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  -- Else the trigger says what is wrong (a product of out-of-range ones
  -- could overflow the interval type before it names them).
  IF premake BETWEEN 1 AND 1000 AND partition_interval > interval '0' AND partition_interval <= interval '100 years' THEN
    PERFORM npc_scale._check_premake_cover(premake, partition_interval, true);
  END IF;
  -- The rest is checked by the trigger on partition_configs (check_partition_config).
  -- The parent's lock before its row: a run holding the lock updates that
  -- row, and the other order deadlocks with it.
  PERFORM npc_scale._lock_parent(parent);
  INSERT INTO npc_scale.partition_configs AS c (parent, control, partition_interval, premake, retention, retention_keep_table)
  VALUES (parent, control, partition_interval, premake, retention, retention_keep_table)
  ON CONFLICT ON CONSTRAINT partition_configs_pkey DO UPDATE
    SET control = excluded.control, partition_interval = excluded.partition_interval, premake = excluded.premake,
        retention = excluded.retention, retention_keep_table = excluded.retention_keep_table
  RETURNING * INTO cfg;
  PERFORM npc_scale._maintain_parent(cfg, true);
  PERFORM npc_scale._warn_unless_served(format('the partitions of %s were made now, but nothing premakes more or applies retention', parent));
  RETURN parent::oid::bigint;
END $$;
COMMENT ON FUNCTION npc_scale.manage_partitions(regclass, text, interval, integer, interval, boolean) IS
'Manages time partitions of a RANGE-partitioned parent: premake ahead, a default partition, retention.';

-- A dropped view's refresh job, or a dropped parent's partition settings,
-- would otherwise fail every run, naming a bare OID, and could one day
-- point at whatever relation reuses that OID: they go with the relation.
-- SECURITY DEFINER: any role may drop its own tables, and its DROP must not
-- fail for lack of rights on these.
CREATE FUNCTION npc_scale._forget_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  -- DROP EXTENSION npc_scale drops these tables in the same command.
  IF to_regclass('npc_scale.maintenance_jobs') IS NULL OR to_regclass('npc_scale.partition_configs') IS NULL THEN
    RETURN;
  END IF;
  DELETE FROM npc_scale.maintenance_jobs j USING pg_event_trigger_dropped_objects() d
   WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = j.target::oid;
  DELETE FROM npc_scale.partition_configs c USING pg_event_trigger_dropped_objects() d
   WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = c.parent::oid;
END $$;
REVOKE ALL ON FUNCTION npc_scale._forget_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER npc_scale_forget_dropped ON sql_drop EXECUTE FUNCTION npc_scale._forget_dropped();

-- EXECUTE on a trigger function is checked when a trigger is created, not
-- when it fires: without it nobody else hangs these on a table of their
-- own (_endpoints_changed there would reload the fleet at every commit).
REVOKE ALL ON FUNCTION npc_scale._check_endpoint(), npc_scale._endpoints_changed(),
  npc_scale._check_maintenance_job(), npc_scale._maintenance_jobs_changed(),
  npc_scale._check_partition_config() FROM PUBLIC;

-- pg_dump: the tables above hold the game's data (its fleet, its queued and
-- answered decisions, its persisted cache, its schedules and partition
-- settings), not the extension's. Without this a dump would restore them
-- empty; with it their rows, and their identity sequences' positions (so
-- new ids do not collide with restored ones), are dumped and restored.
-- (One call per statement: each updates the extension's catalog row.)
SELECT pg_catalog.pg_extension_config_dump('npc_scale.gpu_endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('npc_scale.decision_queue', '');
SELECT pg_catalog.pg_extension_config_dump('npc_scale.cache_store', '');
SELECT pg_catalog.pg_extension_config_dump('npc_scale.maintenance_jobs', '');
SELECT pg_catalog.pg_extension_config_dump('npc_scale.maintenance_runs', '');
SELECT pg_catalog.pg_extension_config_dump('npc_scale.partition_configs', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('npc_scale.decision_queue', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('npc_scale.maintenance_jobs', 'job'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('npc_scale.maintenance_runs', 'run'), '');
