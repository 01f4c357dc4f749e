-- Under a backlog, work is sent in priority order then age; an endpoint's
-- max_concurrent is never exceeded (the simulated GPU's observed peak says so).
SELECT plan(6);

-- Backlog: enqueue while no endpoint is enabled, then open one slot.
SELECT npc_test.use_gpus(ARRAY['slow'], ARRAY[1]);
UPDATE npc_scale.gpu_endpoints SET enabled = false;
CREATE TEMP TABLE backlog AS
SELECT npc_scale.request_decision(2000 + g, 'build', 'backlog ' || g, (g * 7) % 11) AS id, (g * 7) % 11 AS priority
  FROM generate_series(1, 30) g;
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue d JOIN backlog b USING (id) WHERE d.status = 'queued'), 30,
  'with no enabled endpoint everything waits in the queue');
UPDATE npc_scale.gpu_endpoints SET enabled = true;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM backlog))', '30 s'), 'the backlog drains');
SELECT is(
  (SELECT array_agg(d.id ORDER BY d.started_at, d.id) FROM npc_scale.decision_queue d JOIN backlog b USING (id)),
  (SELECT array_agg(id ORDER BY priority, id) FROM backlog),
  'decisions were started in priority order, then age');

-- Caps: 4 slots on a GPU that takes 40 ms per request, 60 decisions at once.
SELECT npc_test.gpu_reset('slow');
SELECT npc_test.use_gpus(ARRAY['slow'], ARRAY[4]);
CREATE TEMP TABLE burst AS
SELECT id FROM npc_scale.request_decisions(ARRAY(SELECT 3000 + g FROM generate_series(1, 60) g)::bigint[],
                                           'move', ARRAY(SELECT 'burst ' || g FROM generate_series(1, 60) g)) AS id;
SELECT ok(npc_test.wait_for('npc_test.all_finished(ARRAY(SELECT id FROM burst))', '30 s'), 'the burst drains');
SELECT is(npc_test.gpu_metric('slow', 'fake_gpu_peak_running'), 4::numeric,
  'the GPU never saw more than max_concurrent = 4 requests at once (and saw 4)');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue d JOIN burst USING (id) WHERE status = 'done' AND attempts = 1), 60,
  'all 60 done, each in one attempt');

DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 2000 AND 3100;
SELECT * FROM finish();
