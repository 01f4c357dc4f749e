-- A row that refuses the dispatcher's write (a trigger or constraint the game
-- put on the queue) holds back no other answer: the batch is written one row
-- per transaction, the refused row is written as failed saying why, and a
-- row that refuses that too is given up (counted), while the rest go on.
-- The same for a row that refuses its claim.
\ir setup/fresh.sql
SELECT plan(30);
SELECT npc_scale.cache_clear();
SELECT npc_test.use_gpus(ARRAY['fast0', 'fast1']);
DROP TRIGGER IF EXISTS refuse_some ON npc_scale.decision_queue;  -- left by an interrupted run
DROP TRIGGER IF EXISTS refuse_at_commit ON npc_scale.decision_queue;
DROP FUNCTION IF EXISTS npc_test.refuse_at_commit();
DROP INDEX IF EXISTS npc_scale.one_running_per_npc;
DROP TRIGGER IF EXISTS note_first_answer ON npc_scale.decision_queue;
DROP TABLE IF EXISTS npc_test.first_answer;
DROP FUNCTION IF EXISTS npc_test.note_first_answer();
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
  IF NEW.npc_id = 3641 AND NEW.status = 'done' THEN
    RAISE EXCEPTION 'the game refuses an answer for npc 3641';
  END IF;
  IF NEW.npc_id = 3641 AND NEW.status = 'failed' THEN
    PERFORM pg_advisory_xact_lock_shared(3641);  -- waits while the test holds it
  END IF;
  -- Inside the dispatcher's own write: waiting for the dispatcher there
  -- would stop it for good (generate) or for the whole timeout (await).
  IF NEW.npc_id = 3651 AND NEW.status = 'done' THEN
    PERFORM npc_scale.generate('asked from a trigger');
  END IF;
  IF NEW.npc_id = 3652 AND NEW.status = 'done' THEN
    PERFORM npc_scale.await_decision(NEW.id, '1 hour');
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

-- A refused answer whose failure waits out its lock_timeout (a game session
-- holding what the game's trigger needs) is failed once the lock is free:
-- not forgotten, and left running until its lease lapsed.
SELECT pg_advisory_lock(3641);
-- Over 4 kB: the table path, so the row is claimed (running) when its answer comes.
SELECT npc_scale.request_decision(3641, 'build', repeat('behind a lock ', 400), 5, '{"max_tokens": 3}') AS held_id \gset
SELECT ok(npc_test.wait_for($$ EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 3641
                                        AND NOT granted AND pid = npc_test.worker_pid('dispatcher')) $$),
  'its refused answer is being failed, behind a lock the game holds');
SELECT ok(npc_test.wait_for($$ NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 3641
                                            AND NOT granted) $$),
  'the failure gives up waiting (lock_timeout) while the lock is still held');
SELECT is((SELECT status FROM npc_scale.decision_queue WHERE id = :held_id), 'running', 'the row is not failed yet');
SELECT pg_advisory_unlock(3641);
SELECT ok(npc_test.wait_for($$ (SELECT status FROM npc_scale.decision_queue WHERE id = $$ || :held_id || $$) = 'failed' $$),
  'once the lock is free it is failed, well before its lease lapses');
SELECT is((SELECT error FROM npc_scale.decision_queue WHERE id = :held_id),
  'the answer could not be recorded: the game refuses an answer for npc 3641', 'saying why');
SELECT is((SELECT attempts FROM npc_scale.decision_queue WHERE id = :held_id), 1, 'after one attempt: not sent again');

-- A trigger that waits for the dispatcher from inside its write: refused at
-- once, so the answer is refused and the decision failed saying why.
SELECT npc_scale.request_decision(3651, 'build', 'trigger calls generate', 5, '{"max_tokens": 3}') AS gen_id \gset
SELECT npc_scale.request_decision(3652, 'build', 'trigger calls await', 5, '{"max_tokens": 3}') AS await_id \gset
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.decision_queue
                                 WHERE id IN ($$ || :gen_id || $$, $$ || :await_id || $$) AND status = 'failed') = 2 $$),
  'a trigger calling generate() or await_decision() in the dispatcher fails its decision');
SELECT matches((SELECT error FROM npc_scale.decision_queue WHERE id = :gen_id),
  '^the answer could not be recorded: generate\(\) cannot be called by the npc_scale dispatcher itself',
  'generate() says it would wait for itself');
SELECT matches((SELECT error FROM npc_scale.decision_queue WHERE id = :await_id),
  '^the answer could not be recorded: await_decision\(\) cannot be called by the npc_scale dispatcher itself',
  'await_decision() too');

-- A deferred constraint trigger refuses at COMMIT, not in the statement:
-- the row-by-row look for the refusing row fires it too (else the claim,
-- failing as a batch every round, would hold back every table-path
-- decision, and lease recovery and expiry likewise).
CREATE FUNCTION npc_test.refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.npc_id = 3661 AND NEW.status = 'running' THEN
    RAISE EXCEPTION 'the game refuses at commit to run npc 3661';
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER UPDATE ON npc_scale.decision_queue
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION npc_test.refuse_at_commit();
SELECT array_agg(id) AS deferred_ids FROM npc_scale.request_decisions(
  ARRAY[3661, 3662, 3663], 'build',
  ARRAY(SELECT repeat('a long prompt refused at commit ' || i || ' ', 150) FROM generate_series(1, 3) i),
  5, '{"max_tokens": 3}') AS r(id) \gset
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.decision_queue
                                 WHERE npc_id IN (3662, 3663) AND status = 'done') = 2 $$),
  'beside a row a deferred trigger refuses, the others are claimed and answered');
SELECT ok(npc_test.wait_for($$ (SELECT status FROM npc_scale.decision_queue WHERE npc_id = 3661) = 'failed' $$),
  'the refused one is failed');
SELECT is((SELECT error FROM npc_scale.decision_queue WHERE npc_id = 3661),
  'the decision could not be claimed: the game refuses at commit to run npc 3661', 'saying why');
DROP TRIGGER refuse_at_commit ON npc_scale.decision_queue;
DROP FUNCTION npc_test.refuse_at_commit();

-- A unique index of the game's, "one running decision per NPC": two queued
-- decisions of one NPC cannot be claimed in one batch, nor the second while
-- the first runs. Each is claimed in its turn (else the claim, failing as a
-- batch every round, would hold back every table-path decision).
CREATE UNIQUE INDEX one_running_per_npc ON npc_scale.decision_queue (npc_id) WHERE status = 'running';
SELECT array_agg(id) AS unique_ids FROM npc_scale.request_decisions(
  ARRAY[3671, 3671, 3672, 3671, 3673], 'build',
  ARRAY(SELECT repeat('a long prompt, one running per npc ' || i || ' ', 150) FROM generate_series(1, 5) i),
  5, '{"max_tokens": 3}') AS r(id) \gset
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.decision_queue
                                 WHERE npc_id BETWEEN 3671 AND 3673 AND status = 'done') = 5 $$),
  'under a unique index on running decisions per NPC, all five are answered, three of one NPC among them');
SELECT is((SELECT sum(attempts)::int FROM npc_scale.decision_queue WHERE npc_id BETWEEN 3671 AND 3673), 5,
  'each in one attempt');
DROP INDEX npc_scale.one_running_per_npc;

-- A game trigger whose own write breaks a unique constraint when two
-- answers are written: the answers go one per transaction, and the one that
-- conflicts alone is failed saying why (not retried for ever, holding back
-- the answers batched with it).
CREATE TABLE npc_test.first_answer (npc_id bigint PRIMARY KEY, decision bigint);
CREATE FUNCTION npc_test.note_first_answer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.npc_id = 3681 AND NEW.status = 'done' THEN
    INSERT INTO npc_test.first_answer VALUES (NEW.npc_id, NEW.id);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER note_first_answer AFTER UPDATE ON npc_scale.decision_queue
  FOR EACH ROW EXECUTE FUNCTION npc_test.note_first_answer();
SELECT array_agg(id) AS conflict_ids FROM npc_scale.request_decisions(
  ARRAY[3681, 3682, 3681, 3683], 'build', ARRAY['c1 ' || gen_random_uuid(), 'c2 ' || gen_random_uuid(),
                                                'c3 ' || gen_random_uuid(), 'c4 ' || gen_random_uuid()],
  5, '{"max_tokens": 3}') AS r(id) \gset
SELECT ok(npc_test.wait_for($$ (SELECT count(*) FROM npc_scale.decision_queue
                                 WHERE npc_id BETWEEN 3681 AND 3683 AND status IN ('done', 'failed')) = 4 $$),
  'answers whose game trigger conflicts are all written');
SELECT set_eq($$ SELECT npc_id, status FROM npc_scale.decision_queue WHERE npc_id BETWEEN 3681 AND 3683 $$,
  $$ VALUES (3681::bigint, 'done'), (3681, 'failed'), (3682, 'done'), (3683, 'done') $$,
  'one of npc 3681 and the others done, the other of npc 3681 failed');
SELECT matches((SELECT error FROM npc_scale.decision_queue WHERE npc_id = 3681 AND status = 'failed'),
  '^the answer could not be recorded: duplicate key value violates unique constraint "first_answer_pkey"',
  'saying why');
SELECT is((SELECT decision FROM npc_test.first_answer), (SELECT id FROM npc_scale.decision_queue WHERE npc_id = 3681 AND status = 'done'),
  'the game''s table holds the one that was recorded');
DROP TRIGGER note_first_answer ON npc_scale.decision_queue;
DROP FUNCTION npc_test.note_first_answer();
DROP TABLE npc_test.first_answer;

-- The dispatcher goes on answering.
SELECT npc_scale.request_decision(3610, 'build', 'after the refusals', 5, '{"max_tokens": 3}') AS after_id \gset
SELECT is((SELECT status FROM npc_scale.await_decision(:after_id, '10 s')), 'done',
  'later decisions are answered');
SELECT is((SELECT count(*)::int FROM npc_scale.decision_queue WHERE npc_id BETWEEN 3601 AND 3611 AND status = 'queued'), 0,
  'nothing went back to the queue');

DROP TRIGGER refuse_some ON npc_scale.decision_queue;
DROP FUNCTION npc_test.refuse_some();
DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 3601 AND 3683;
SELECT * FROM finish();
