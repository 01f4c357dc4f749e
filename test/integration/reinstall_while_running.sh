#!/usr/bin/env bash
# Installing npc_scale again while a cluster runs it (the demo's stack beside
# the tests, another clone's) replaces the files by rename: the running
# workers keep the copy they mapped (now unlinked) and go on serving, where
# an in-place rewrite would truncate code pages under them (SIGBUS).
set -euo pipefail
source "$NPC_ROOT/scripts/stack.sh"
so=$("$PG_BIN/pg_config" --pkglibdir)/npc_scale.so
q() { npc_psql -tAc "$1"; }
pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'npc_scale dispatcher' AND datname = current_database()")
[ -n "$pid" ] || { echo "no dispatcher running"; exit 1; }
# The inode of the copy the dispatcher runs (maps: address perms offset dev inode path).
mapped() { awk -v so="$so" '$6 == so { print $5; exit }' "/proc/$pid/maps"; }
running=$(mapped)
[ -n "$running" ] || { echo "dispatcher $pid does not map $so"; exit 1; }
inode=$(stat -c %i "$so")

npc_install_files

[ "$(stat -c %i "$so")" != "$inode" ] || { echo "$so was rewritten in place (inode $inode kept)"; exit 1; }
[ "$(mapped)" = "$running" ] || { echo "dispatcher $pid should still map its own copy (inode $running)"; exit 1; }
grep -q " $so (deleted)\$" "/proc/$pid/maps" \
  || { echo "the copy dispatcher $pid runs should be unlinked now"; grep npc_scale "/proc/$pid/maps"; exit 1; }
ls "$so".npc_new 2>/dev/null && { echo "a staging copy was left beside $so"; exit 1; }
cmp -s "$so" "$NPC_ROOT/npc_scale.so" || { echo "the installed $so is not the one built"; exit 1; }
# The running dispatcher, the same process, still answers.
q "SELECT npc_test.use_gpus(ARRAY['fast0'])" >/dev/null
id=$(q "SELECT npc_scale.request_decision(8101, 'build', 'after reinstall')")
status=$(q "SELECT status FROM npc_scale.await_decision($id, '10 s')")
[ "$status" = done ] || { echo "decision after the reinstall: $status"; exit 1; }
[ "$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'npc_scale dispatcher' AND datname = current_database()")" = "$pid" ] \
  || { echo "the dispatcher restarted"; exit 1; }
q "DELETE FROM npc_scale.decision_queue WHERE npc_id = 8101" >/dev/null
echo "reinstalled by rename; dispatcher $pid kept its copy and answered"
