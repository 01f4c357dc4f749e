#!/usr/bin/env bash
# Identical concurrent generate() misses are coalesced: eight sessions ask the
# same deterministic question at once, the GPU sees one request, all eight get
# the same answer.
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
q() { npc_psql -tAc "$1"; }

q "SELECT npc_test.use_gpus(ARRAY['slow'])" >/dev/null
q "SELECT npc_scale.cache_clear()" >/dev/null
q "SELECT npc_test.gpu_reset('slow')" >/dev/null
out=$NPC_STATE/coalesce; rm -rf "$out"; mkdir -p "$out"
prompt="Coalesce: should all eight villages trade iron? $(date +%s%N)"
for i in 1 2 3 4 5 6 7 8; do
  npc_psql -tAc "SELECT npc_scale.generate('$prompt', 5, '{\"temperature\": 0, \"max_tokens\": 12}')" >"$out/$i" &
done
wait
answers=$(cat "$out"/* | sort -u | wc -l)
requests=$(q "SELECT npc_test.gpu_metric('slow', 'fake_gpu_requests_total')::int")
echo "distinct answers: $answers, requests at the GPU: $requests"
[ "$answers" = 1 ] || { echo "sessions got different answers"; exit 1; }
[ "$(wc -l <"$out/1")" = 1 ] && [ -s "$out/1" ] || { echo "empty answer"; exit 1; }
[ "$requests" = 1 ] || { echo "expected one request for eight identical calls"; exit 1; }
