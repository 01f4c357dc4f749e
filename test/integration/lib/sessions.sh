# Interactive psql sessions for the integration scripts, each fed through a
# fifo. Every step ends with a marker line, and the next step starts only once
# the marker is printed: the order between sessions is the script's, not the
# scheduler's.
#   sessions_open a b ...   start one session per name, in a temporary directory
#   session_out NAME        the file holding that session's output
#   run_in NAME SQL         run SQL in that session; wait until it has finished
#   send_to NAME SQL        start SQL there without waiting; sets SENT_STEP
#   wait_step NAME STEP [S] wait up to S seconds (10) until that step has finished
#   sessions_close          end them and remove the directory (call it from an EXIT trap)
_session_dir=
declare -A _session_fd=()
_session_pids=()
_session_step=0

sessions_open() {
  _session_dir=$(mktemp -d)
  local name fd
  for name in "$@"; do
    mkfifo "$_session_dir/$name.in"
    "$PG_BIN/psql" -X -q -tA -v ON_ERROR_STOP=0 <"$_session_dir/$name.in" >"$_session_dir/$name.out" 2>&1 &
    _session_pids+=($!)
    exec {fd}>"$_session_dir/$name.in"
    _session_fd[$name]=$fd
  done
}

session_out() {
  printf '%s/%s.out' "$_session_dir" "$1"
}

send_to() {
  _session_step=$((_session_step + 1))
  SENT_STEP=$_session_step
  printf '%s\n\\echo step-%d-done\n' "$2" "$_session_step" >&"${_session_fd[$1]}"
}

wait_step() {
  local who=$1 step=$2 deadline=$(( $(date +%s) + ${3:-10} ))
  until grep -q "^step-$step-done$" "$_session_dir/$who.out"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "session $who: step $step did not finish"; cat "$_session_dir/$who.out"; exit 1; }
    sleep 0.01
  done
}

run_in() {
  send_to "$1" "$2"
  wait_step "$1" "$SENT_STEP"
}

sessions_close() {
  local p fd
  for fd in "${_session_fd[@]}"; do exec {fd}>&- 2>/dev/null || true; done
  for p in "${_session_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  _session_fd=()
  _session_pids=()
  [ -n "$_session_dir" ] && rm -rf "$_session_dir"
  _session_dir=
}
