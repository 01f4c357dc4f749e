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
    send_priority   boolean NOT NULL DEFAULT false -- server runs vLLM --scheduling-policy priority
);
COMMENT ON TABLE npc_scale.gpu_endpoints IS
'GPU inference servers (vLLM OpenAI API). Changes reach the dispatcher at COMMIT.';
REVOKE ALL ON npc_scale.gpu_endpoints FROM PUBLIC;
GRANT SELECT (gpu_id, endpoint, model, api, max_concurrent, enabled, weight, labels, send_priority)
    ON npc_scale.gpu_endpoints TO PUBLIC;

CREATE FUNCTION npc_scale._check_endpoint() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.endpoint IS NULL OR NEW.endpoint !~ '^https?://[^/\s]+' THEN
    RAISE EXCEPTION 'endpoint URL "%" is not an http(s) URL', NEW.endpoint
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use the server''s base URL, e.g. http://10.0.0.5:8000';
  END IF;
  NEW.endpoint := rtrim(NEW.endpoint, '/');
  IF NEW.api IS NULL OR NEW.api NOT IN ('completions', 'chat') THEN
    RAISE EXCEPTION 'endpoint api "%" is not known', NEW.api
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use completions or chat.';
  END IF;
  IF NEW.max_concurrent IS NULL OR NEW.max_concurrent < 1 OR NEW.max_concurrent > 4096 THEN
    RAISE EXCEPTION 'max_concurrent % is out of range', NEW.max_concurrent
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Use 1 to 4096.';
  END IF;
  IF NEW.weight IS NULL OR NEW.weight <= 0 THEN
    RAISE EXCEPTION 'weight % must be positive', NEW.weight USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF jsonb_typeof(NEW.labels) <> 'object' THEN
    RAISE EXCEPTION 'labels % must be a JSON object', NEW.labels USING ERRCODE = 'invalid_parameter_value';
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
    cache_layer    text
) WITH (fillfactor = 80);  -- room for HOT updates queued → running → done
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
CREATE FUNCTION npc_scale._check_params(params jsonb) RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_check_params' LANGUAGE C STRICT;
CREATE FUNCTION npc_scale._wake_dispatcher_at_commit() RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_wake_dispatcher_at_commit' LANGUAGE C;
CREATE FUNCTION npc_scale._check_request(npc_id bigint, decision_type text, prompt text, priority int)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF npc_id IS NULL THEN
    RAISE EXCEPTION 'npc_id must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF decision_type IS NULL OR btrim(decision_type) = '' THEN
    RAISE EXCEPTION 'decision_type must not be null or empty (got %)', coalesce(quote_literal(decision_type), 'NULL')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF prompt IS NULL OR prompt = '' THEN
    RAISE EXCEPTION 'prompt for npc % must not be null or empty', npc_id
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF octet_length(prompt) > current_setting('npc_scale.max_prompt_bytes')::int THEN
    RAISE EXCEPTION 'prompt for npc % is % bytes, more than npc_scale.max_prompt_bytes (%)',
      npc_id, octet_length(prompt), current_setting('npc_scale.max_prompt_bytes')
      USING ERRCODE = 'program_limit_exceeded';
  END IF;
  IF priority IS NULL OR priority < 0 OR priority > 10 THEN
    RAISE EXCEPTION 'priority % is out of range', coalesce(priority::text, 'NULL')
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Use 0 (most urgent) to 10.';
  END IF;
END $$;

------------------------------------------------------------------------------
-- SQL API
------------------------------------------------------------------------------
CREATE FUNCTION npc_scale.request_decision(
    npc_id bigint, decision_type text, prompt text, priority integer DEFAULT 5,
    params jsonb DEFAULT '{}', deadline interval DEFAULT NULL, world_id bigint DEFAULT NULL)
RETURNS bigint AS 'MODULE_PATHNAME', 'npc_scale_request_decision'
LANGUAGE C VOLATILE SECURITY DEFINER;  -- its SQL is schema-qualified and prepared
COMMENT ON FUNCTION npc_scale.request_decision(bigint, text, text, integer, jsonb, interval, bigint) IS
'Queues one NPC decision; the dispatcher is woken when the transaction commits. Returns its id.';

CREATE FUNCTION npc_scale.request_decisions(
    npc_ids bigint[], decision_type text, prompts text[], priority integer DEFAULT 5,
    params jsonb DEFAULT '{}', deadline interval DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  i integer;
BEGIN
  IF npc_ids IS NULL OR prompts IS NULL THEN
    RAISE EXCEPTION 'npc_ids and prompts must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF cardinality(npc_ids) <> cardinality(prompts) THEN
    RAISE EXCEPTION 'npc_ids has % elements but prompts has %', cardinality(npc_ids), cardinality(prompts)
      USING ERRCODE = 'array_subscript_error';
  END IF;
  IF deadline IS NOT NULL AND deadline <= interval '0' THEN
    RAISE EXCEPTION 'deadline % must be a positive interval', deadline USING ERRCODE = 'invalid_parameter_value';
  END IF;
  PERFORM npc_scale._check_params(coalesce(params, '{}'));
  FOR i IN 1 .. cardinality(npc_ids) LOOP
    PERFORM npc_scale._check_request(npc_ids[i], decision_type, prompts[i], priority);
  END LOOP;
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
  UPDATE npc_scale.decision_queue q
     SET status = 'cancelled', finished_at = now(), leased_until = NULL, error = 'cancelled by cancel_decision()'
   WHERE q.id = cancel_decision.id AND q.status IN ('queued', 'running')
  RETURNING q.id INTO found_id;
  IF found_id IS NULL THEN
    RETURN false;
  END IF;
  PERFORM pg_notify('npc_scale_decisions', found_id::text);
  RETURN true;
END $$;
COMMENT ON FUNCTION npc_scale.cancel_decision(bigint) IS
'Cancels a queued or running decision; false if it had already finished (or does not exist).';

CREATE FUNCTION npc_scale.await_decision(id bigint, timeout interval DEFAULT '30 s')
RETURNS npc_scale.decision_queue
AS 'MODULE_PATHNAME', 'npc_scale_await_decision' LANGUAGE C SECURITY DEFINER;
COMMENT ON FUNCTION npc_scale.await_decision(bigint, interval) IS
'Waits (on a latch, not by polling) until the decision is finished and returns its row.';

CREATE FUNCTION npc_scale.generate(prompt text, priority integer DEFAULT 5, params jsonb DEFAULT '{}')
RETURNS text AS 'MODULE_PATHNAME', 'npc_scale_generate' LANGUAGE C;
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
    OUT last_error_at timestamptz)
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
  LEFT JOIN npc_scale.gpu_endpoints e USING (gpu_id);
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
AS 'MODULE_PATHNAME', 'npc_scale_cache_get' LANGUAGE C STRICT VOLATILE SECURITY DEFINER;
CREATE FUNCTION npc_scale.cache_set(key text, value text, ttl interval, persist boolean DEFAULT false)
RETURNS void AS 'MODULE_PATHNAME', 'npc_scale_cache_set' LANGUAGE C VOLATILE SECURITY DEFINER;
CREATE FUNCTION npc_scale.cache_delete(key text) RETURNS boolean
AS 'MODULE_PATHNAME', 'npc_scale_cache_delete' LANGUAGE C STRICT VOLATILE SECURITY DEFINER;
CREATE FUNCTION npc_scale.cache_clear() RETURNS void
AS 'MODULE_PATHNAME', 'npc_scale_cache_clear' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION npc_scale.cache_clear() FROM PUBLIC;
COMMENT ON FUNCTION npc_scale.cache_get(text) IS 'L1 → L2 → L3 lookup with promotion; NULL on a miss';
COMMENT ON FUNCTION npc_scale.cache_set(text, text, interval, boolean) IS
'Writes L1 and L2 (and the cache_store table when persist); ttl NULL = no expiry';

CREATE FUNCTION npc_scale._cache_stats(
    OUT l1_hits bigint, OUT l2_hits bigint, OUT l3_hits bigint, OUT misses bigint,
    OUT hit_rate double precision, OUT l1_entries bigint, OUT l1_bytes bigint,
    OUT l1_budget_bytes bigint, OUT evictions bigint, OUT redis_up boolean, OUT redis_errors bigint)
RETURNS record AS 'MODULE_PATHNAME', 'npc_scale_cache_stats' LANGUAGE C STRICT VOLATILE;
CREATE VIEW npc_scale.cache_stats AS SELECT * FROM npc_scale._cache_stats();
GRANT SELECT ON npc_scale.cache_stats TO PUBLIC;
