#!/usr/bin/env bash
# request_decision() hands its row to the dispatcher at PRE_COMMIT, so the
# request can go out while the commit record is flushed. A commit can still
# fail after that point: here a SERIALIZABLE transaction is doomed by a
# write-skew partner and fails at COMMIT. Its decision must never be answered
# (no row, no NOTIFY), whatever the dispatcher had sent is dropped, and the
# next decision is served as usual.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"

cleanup() {
  sessions_close
  npc_psql -c "DROP TABLE IF EXISTS public.handoff_skew" >/dev/null 2>&1 || true
}
trap cleanup EXIT

npc_psql -tAc "SELECT npc_test.use_gpus(ARRAY['slow'])" >/dev/null
npc_psql -c "DROP TABLE IF EXISTS public.handoff_skew" \
  -c "CREATE TABLE public.handoff_skew (k int PRIMARY KEY, v int)" \
  -c "INSERT INTO public.handoff_skew VALUES (1, 0), (2, 0)" >/dev/null
read -r sent0 dropped0 < <(npc_psql -tA -F ' ' -c \
  "SELECT npc_test.metric('handoff_sent'), npc_test.metric('handoff_unclaimed')")

# Two interactive sessions (lib/sessions.sh): every step runs to its end
# before the next starts.
sessions_open a b listener
# Listening from before the failed commit: a NOTIFY sent before a LISTEN is
# never delivered, so a listener opened later could not see one for it.
run_in listener "LISTEN npc_scale_decisions;"

run_in a "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT v FROM public.handoff_skew WHERE k = 1;"
run_in b "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT v FROM public.handoff_skew WHERE k = 2;"
run_in a "UPDATE public.handoff_skew SET v = v + 1 WHERE k = 2;"
run_in b "UPDATE public.handoff_skew SET v = v + 1 WHERE k = 1;"
run_in b "SELECT 'id=' || npc_scale.request_decision(9101, 'build', 'handoff: doomed at commit', 5);"
run_in a "COMMIT;"
run_in b "COMMIT;"
cat "$(session_out b)"

grep -q "could not serialize access" "$(session_out b)" \
  || { echo "session b's COMMIT was expected to fail with a serialization failure"; exit 1; }
id=$(grep -oP '^id=\K[0-9]+' "$(session_out b)")
echo "decision $id was requested in the transaction that failed to commit"

# It was handed off at PRE_COMMIT, so the dispatcher sends it; the request is
# dropped once the dispatcher sees the abort.
npc_wait_sql "SELECT npc_test.metric('handoff_sent') - $sent0 >= 1
                 AND npc_test.metric('handoff_sent') - $sent0 = npc_test.metric('handoff_unclaimed') - $dropped0" 10
rows=$(npc_psql -tAc "SELECT count(*) FROM npc_scale.decision_queue WHERE id = $id")
[ "$rows" = 0 ] || { echo "decision $id has $rows rows after its transaction aborted"; exit 1; }

# The dispatcher goes on as usual, and never wrote an answer for the lost id:
# the next decision is answered, and its NOTIFY is the only one heard.
out=$(npc_psql -tA <<SQL
SELECT npc_scale.request_decision(9102, 'build', 'handoff: after the failed commit', 5) AS next_id \gset
SELECT 'next=' || :next_id;
SELECT 'status=' || status FROM npc_scale.await_decision(:next_id, '10 s');
SQL
)
echo "$out"
grep -q '^status=done$' <<<"$out" || { echo "the next decision was not answered"; exit 1; }
next=$(grep -oP '^next=\K[0-9]+' <<<"$out")
# The listener has been listening all along: it hears the next decision's
# NOTIFY (psql prints notifications after a command), never the lost one's.
run_in listener "SELECT 1;"
grep -q "payload \"$next\"" "$(session_out listener)" \
  || { echo "the listener did not hear decision $next"; cat "$(session_out listener)"; exit 1; }
if grep -q "payload \"$id\"" "$(session_out listener)"; then echo "decision $id was announced"; exit 1; fi
npc_psql -tAc "DELETE FROM npc_scale.decision_queue WHERE npc_id IN (9101, 9102)" >/dev/null
echo "a decision whose commit failed after PRE_COMMIT is never answered"
