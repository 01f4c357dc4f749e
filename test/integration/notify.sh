#!/usr/bin/env bash
# Every finished decision is announced once with NOTIFY npc_scale_decisions,
# payload = its id, at the commit that finishes it (done and cancelled alike).
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"

npc_psql -tAc "SELECT npc_test.use_gpus(ARRAY['fast0'])" >/dev/null
out=$(npc_psql -tA <<'SQL'
LISTEN npc_scale_decisions;
SELECT npc_scale.request_decision(8001, 'build', 'notify me', 5) AS done_id \gset
SELECT status FROM npc_scale.await_decision(:done_id, '10 s');
UPDATE npc_scale.gpu_endpoints SET enabled = false;
SELECT npc_scale.request_decision(8002, 'build', 'cancel me', 5) AS cancelled_id \gset
SELECT npc_scale.cancel_decision(:cancelled_id);
UPDATE npc_scale.gpu_endpoints SET enabled = true;
SELECT 'ids', :done_id, :cancelled_id;
SELECT 'end';
SQL
)
echo "$out"
read -r done_id cancelled_id < <(grep -oP '^ids\|\K[0-9]+\|[0-9]+' <<<"$out" | tr '|' ' ')
for id in "$done_id" "$cancelled_id"; do
  n=$(grep -c "notification \"npc_scale_decisions\" with payload \"$id\" received" <<<"$out" || true)
  [ "$n" = 1 ] || { echo "decision $id: $n notifications, expected 1"; exit 1; }
done
npc_psql -tAc "DELETE FROM npc_scale.decision_queue WHERE npc_id IN (8001, 8002)" >/dev/null
echo "one notification per finished decision"
