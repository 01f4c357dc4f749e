-- The two background workers, as worker_status() and pg_stat_activity see them.
SELECT name, pid IS NOT NULL AS running, state IN ('idle', 'busy') AS alive,
       started_at <= now() AS started_in_past, starts >= 1 AS started_once
  FROM npc_scale.worker_status() ORDER BY name;

SELECT backend_type, datname = current_database() AS in_this_database
  FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %' ORDER BY backend_type;

-- worker_status() and pg_stat_activity agree on the pids.
SELECT count(*) AS matching_pids
  FROM npc_scale.worker_status() w
  JOIN pg_stat_activity a ON a.pid = w.pid AND a.backend_type = w.name;

-- The functions live in schema npc_scale, created by CREATE EXTENSION.
SELECT nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'npc_scale';
