#!/usr/bin/env bash
# A game table may reference decisions by foreign key. A game session that
# inserts such a row holds a KEY SHARE lock on the decision until it ends:
# that must not keep the dispatcher from claiming and answering it (its
# writes never change the key, so they take no lock that conflicts).
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
source "$NPC_ROOT/test/integration/lib/sessions.sh"
q() { npc_psql -tAc "$1"; }
cleanup() {
  sessions_close
  q "DROP TABLE IF EXISTS public.npc_actions" >/dev/null 2>&1 || true
  q "UPDATE npc_scale.gpu_endpoints SET enabled = true" >/dev/null 2>&1 || true
}
trap cleanup EXIT
q "SELECT npc_test.use_gpus(ARRAY['fast0'])" >/dev/null
q "CREATE TABLE public.npc_actions (decision_id bigint REFERENCES npc_scale.decision_queue (id) ON DELETE CASCADE)" >/dev/null
# Queued and not claimed: no endpoint is enabled.
q "UPDATE npc_scale.gpu_endpoints SET enabled = false" >/dev/null
id=$(q "SELECT npc_scale.request_decision(9401, 'build', 'FK: what next? $(date +%s%N)', 5)")
sessions_open game
run_in game "BEGIN; INSERT INTO public.npc_actions VALUES ($id);"
q "UPDATE npc_scale.gpu_endpoints SET enabled = true" >/dev/null
# While the game's transaction is still open:
row=$(q "SELECT status FROM npc_scale.await_decision($id, '10 s')" 2>&1) || true
echo "decision $id, referenced by an open transaction: $row"
[ "$row" = done ] || { echo "the decision was not answered while a game row referenced it"; exit 1; }
run_in game "COMMIT;"
q "DELETE FROM npc_scale.decision_queue WHERE npc_id = 9401" >/dev/null
echo "ok: a decision referenced by foreign key from an open transaction is claimed and answered"
