-- The maintenance worker purges finished decisions older than
-- npc_scale.result_ttl (default 1 hour), in batches, and nothing else.
SELECT plan(4);
SELECT is(current_setting('npc_scale.result_ttl'), '1h', 'result_ttl is one hour by default');

SELECT coalesce((SELECT n_tup_del FROM pg_stat_user_tables WHERE relid = 'npc_scale.decision_queue'::regclass), 0) AS del0 \gset
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
SELECT 9000 + g, 'old', 'old decision', 'done', now() - interval '2 hours' FROM generate_series(1, 2500) g;
INSERT INTO npc_scale.decision_queue (npc_id, decision_type, prompt, status, finished_at)
SELECT 12000 + g, 'recent', 'recent decision', 'done', now() - interval '10 minutes' FROM generate_series(1, 10) g;

SELECT ok(npc_test.wait_for($$ NOT EXISTS (SELECT 1 FROM npc_scale.decision_queue WHERE npc_id BETWEEN 9001 AND 11500) $$, '20 s'),
  'all 2500 finished decisions older than result_ttl are purged (several batches)');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE npc_id BETWEEN 12001 AND 12010), 10,
  'recent finished decisions are kept');
-- Its deletes reach the statistics (autovacuum's input): a worker that never
-- calls pgstat_report_stat() would keep them to itself until it exits.
SELECT ok(npc_test.wait_for(format($$ (SELECT n_tup_del FROM pg_stat_user_tables
                                        WHERE relid = 'npc_scale.decision_queue'::regclass) >= %s + 2500 $$, :del0)),
  'the worker reports its 2500 deletes to the statistics system');

DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 12001 AND 12010;
SELECT * FROM finish();
