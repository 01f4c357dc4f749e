-- A row that refuses the dispatcher's write (a trigger or constraint the game
-- put on the queue) holds back no other answer: the batch is written one row
-- per transaction, the refused row is written as failed saying why, and a
-- row that refuses that too is given up (counted), while the rest go on.
-- The same for a row that refuses its claim.
\ir setup/fresh.sql
SELECT plan(12);
SELECT npc_scale.cache_clear();
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1']);
DROP TRIGGER IF EXISTS refuse_some ON npc_scale.decision_queue;  -- left by an interrupted run
CREATE OR REPLACE FUNCTION npc_test.refuse_some() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.npc_id = 3601 AND NEW.status = 'done' THEN
    RAISE EXCEPTION 'the game refuses an answer for npc 3601';
  END IF;
  IF NEW.npc_id = 3611 AND NEW.status IN ('done', 'failed') THEN
    RAISE EXCEPTION 'the game refuses any end for npc 3611';
  END IF;
  IF NEW.npc_id = 3621 AND NEW.status = 'running' THEN
    RAISE EXCEPTION 'the game refuses to run npc 3621';
  END IF;
  IF NEW.npc_id = 3631 THEN
    RAISE EXCEPTION 'the game refuses any change for npc 3631' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_some BEFORE UPDATE ON npc_scale.decision_queue
  FOR EACH ROW EXECUTE FUNCTION npc_test.refuse_some();
SELECT npc_test.metric('results_refused') AS refused0 \gset

-- One transaction, so their answers come back together.
SELECT array_agg(id) AS ids FROM npc_scale.request_decisions(
  ARRAY[3601, 3602, 3603, 3604, 3605, 3611, 3606, 3607, 3608, 3609], 'build',
  ARRAY['a1', 'a2', 'a3', 'a4', 'a5', 'b1', 'a6', 'a7', 'a8', 'a9'], 5, '{"max_tokens": 3}') AS r(id) \gset
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.decision_queue
                                 WHERE npc_id BETWEEN 3602 AND 3609 AND status = 'done') = 8 $$),
  'the other answers are written');
SELECT ok(npc_test.wait_for($$ (SELECT status FROM npc_scale.decision_queue WHERE npc_id = 3601) = 'failed' $$),
  'the refused one is written as failed');
SELECT is((SELECT error FROM npc_scale.decision_queue WHERE npc_id = 3601),
  'the answer could not be recorded: the game refuses an answer for npc 3601',
  'saying why');
SELECT ok(npc_test.wait_for($$ npc_test.metric('results_refused') >= $$ || :refused0 || $$ + 3 $$),
  'the row that refuses every end is given up after two tries (three refusals counted in all)');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE npc_id = 3611), 'running',
  'and left as it is');

-- Claims: prompts over 4 kB take the table path, whose claim is one UPDATE
-- over the best queued rows. A row that refuses it is failed, saying why; one
-- that refuses that too is left queued; the others are claimed and answered.
SELECT npc_test.metric('results_refused') AS refused1 \gset
SELECT array_agg(id) AS claim_ids FROM npc_scale.request_decisions(
  ARRAY[3621, 3622, 3623, 3631, 3624, 3625], 'build',
  ARRAY(SELECT repeat('a long prompt for the table path ' || i || ' ', 150) FROM generate_series(1, 6) i),
  5, '{"max_tokens": 3}') AS r(id) \gset
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.decision_queue
                                 WHERE npc_id BETWEEN 3622 AND 3625 AND status = 'done') = 4 $$),
  'the others are claimed and answered');
SELECT ok(npc_test.wait_for($$ (SELECT status FROM npc_scale.decision_queue WHERE npc_id = 3621) = 'failed' $$),
  'the row that refuses its claim is failed');
SELECT is((SELECT error FROM npc_scale.decision_queue WHERE npc_id = 3621),
  'the decision could not be claimed: the game refuses to run npc 3621', 'saying why');
SELECT ok(npc_test.wait_for($$ npc_test.metric('results_refused') >= $$ || :refused1 || $$ + 2 $$),
  'both refusals are counted');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE npc_id = 3631), 'queued',
  'the row that refuses every change is left as it is');

-- The dispatcher goes on answering.
SELECT npc_scale.request_decision(3610, 'build', 'after the refusals', 5, '{"max_tokens": 3}') AS after_id \gset
SELECT is((SELECT status FROM npc_scale.await_decision(:after_id, '10 s')), 'done',
  'later decisions are answered');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE npc_id BETWEEN 3601 AND 3611 AND status = 'queued'), 0,
  'nothing went back to the queue');

DROP TRIGGER refuse_some ON npc_scale.decision_queue;
DROP FUNCTION npc_test.refuse_some();
DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 3601 AND 3631;
SELECT * FROM finish();
