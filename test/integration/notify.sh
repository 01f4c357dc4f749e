#!/usr/bin/env bash
# Every finished decision is announced once with NOTIFY npc_scale_decisions,
# payload = its id, at the commit that finishes it (done, cancelled, expired
# and failed alike).
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
SELECT npc_scale.request_decision(8003, 'build', 'expire me', 5, '{}', '50 ms') AS expired_id \gset
SELECT status FROM npc_scale.await_decision(:expired_id, '10 s');
UPDATE npc_scale.gpu_endpoints SET enabled = true;
SELECT npc_scale.request_decision(8004, 'build', 'fail me', 5, '{"max_tokens": 32768}') AS failed_id \gset
SELECT status FROM npc_scale.await_decision(:failed_id, '10 s');
SELECT 'ids', :done_id, :cancelled_id, :expired_id, :failed_id;
SELECT 'status', string_agg(status, ',' ORDER BY npc_id) FROM npc_scale.decision_queue WHERE npc_id BETWEEN 8001 AND 8004;
SELECT 'end';
SQL
)
echo "$out"
read -r done_id cancelled_id expired_id failed_id < <(grep -oP '^ids\|\K[0-9|]+' <<<"$out" | tr '|' ' ')
for id in "$done_id" "$cancelled_id" "$expired_id" "$failed_id"; do
  n=$(grep -c "notification \"npc_scale_decisions\" with payload \"$id\" received" <<<"$out" || true)
  [ "$n" = 1 ] || { echo "decision $id: $n notifications, expected 1"; exit 1; }
done
grep -qx 'status|done,cancelled,expired,failed' <<<"$out" \
  || { echo "expected the four decisions done, cancelled, expired and failed"; exit 1; }
npc_psql -tAc "DELETE FROM npc_scale.decision_queue WHERE npc_id BETWEEN 8001 AND 8004" >/dev/null
echo "one notification per finished decision"
