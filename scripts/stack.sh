#!/usr/bin/env bash
# npc_scale local stack: packages, build, a throwaway PostgreSQL 15 cluster run
# by the unprivileged `postgres` user, Redis and simulated GPUs on loopback.
# Sourced by test/run and scripts/demo; every service it starts is recorded so
# npc_stack_stop (installed as an EXIT trap) stops it again, also on failure.

NPC_ROOT=${NPC_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# runuser, ldconfig (run by dpkg) live in the sbin directories, which a root
# shell reached by `su` without `-` leaves out of PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac
NPC_PROFILE=${NPC_PROFILE:-test}           # test | demo: separate ports and dirs
NPC_BUILD=${NPC_BUILD:-$NPC_ROOT/build}
NPC_STATE=$NPC_BUILD/$NPC_PROFILE
# Ports below the kernel's ephemeral range (32768+), so a busy client's
# outgoing connection can never hold one of them.
case "$NPC_PROFILE" in
  demo)  _pgport=15432 _redisport=16379 _gpubase=18001 ;;
  bench) _pgport=15434 _redisport=16381 _gpubase=18201 ;;
  *)     _pgport=15433 _redisport=16380 _gpubase=18101 ;;
esac
NPC_PGPORT=${NPC_PGPORT:-$_pgport}
NPC_REDIS_PORT=${NPC_REDIS_PORT:-$_redisport}
NPC_GPU_BASE_PORT=${NPC_GPU_BASE_PORT:-$_gpubase}
NPC_DB=${NPC_DB:-npc_test}
NPC_PGDATA=$NPC_STATE/pgdata
NPC_PGSOCK=$NPC_STATE/run
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
export NPC_ROOT NPC_PROFILE NPC_BUILD NPC_STATE NPC_PGPORT NPC_REDIS_PORT NPC_GPU_BASE_PORT \
       NPC_DB NPC_PGDATA NPC_PGSOCK PG_BIN
export PGHOST=$NPC_PGSOCK PGPORT=$NPC_PGPORT PGUSER=postgres PGDATABASE=$NPC_DB
# Everything here talks to loopback: never through a proxy the machine sets
# (the server, its workers' libcurl and the tests' curl inherit this).
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost

NPC_PACKAGES=(
  build-essential pkg-config make g++ curl procps
  postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
  postgresql-15-cron postgresql-15-partman redis-server redis-tools
  libcurl4-openssl-dev libhiredis-dev libevent-dev nlohmann-json3-dev libxxhash-dev
  libgtest-dev googletest libpq-dev
)

npc_log() { printf '[npc_scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
npc_die() { npc_log "error: $*"; exit 1; }

npc_install_deps() {
  [ "$(id -u)" = 0 ] || npc_die "run as root (packages are installed with apt-get)"
  local missing=() p
  for p in "${NPC_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  npc_log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Installing postgresql-15 creates and may start a default cluster on 5432;
  # we never use it (own port, own data directory), and leave it alone.
  # A fresh VM's first boot often runs unattended-upgrades: wait for its lock.
  # A changed configuration file of an upgraded package keeps its local
  # version instead of a prompt that would wait forever without a terminal.
  local wait_lock=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
  if ! apt-get "${wait_lock[@]}" install -y --no-install-recommends "${missing[@]}" >"$NPC_BUILD/apt.log" 2>&1; then
    apt-get "${wait_lock[@]}" update >>"$NPC_BUILD/apt.log" 2>&1
    apt-get "${wait_lock[@]}" install -y --no-install-recommends "${missing[@]}" >>"$NPC_BUILD/apt.log" 2>&1 \
      || { tail -20 "$NPC_BUILD/apt.log"; npc_die "apt-get install failed (see $NPC_BUILD/apt.log)"; }
  fi
}

# npc_install_files: `make install` into a staging directory, then each file
# into place by rename. PGXS's install rewrites npc_scale.so in place, and a
# cluster running it (the demo beside the tests, another clone's stack) would
# die of SIGBUS touching code pages it truncated; a rename leaves such a
# cluster its own copy until it restarts.
# One install at a time on the machine (other clones install the same files).
npc_install_files() {
  local stage=$NPC_STATE/stage f lock rc=0
  mkdir -p /run/lock "$NPC_STATE"
  exec {lock}>/run/lock/npc_scale.install.lock
  flock "$lock"
  rm -rf "$stage"
  make -C "$NPC_ROOT" -s install DESTDIR="$stage" || rc=1
  while [ $rc = 0 ] && IFS= read -r -d '' f; do
    f=${f#"$stage"}
    mkdir -p "$(dirname "$f")"
    cp -p "$stage$f" "$f.npc_new" && mv -f "$f.npc_new" "$f" || rc=1
  done < <(find "$stage" -type f -print0)
  rm -rf "$stage"
  exec {lock}>&-
  return $rc
}

npc_build() {
  # One build at a time in this clone (the demo, the tests and the benchmarks
  # share build/).
  local build_lock
  exec {build_lock}>"$NPC_BUILD/.build.lock"
  flock -n "$build_lock" || { npc_log "waiting for another build of this clone"; flock "$build_lock"; }
  npc_log "building the extension, unit tests and fake GPU"
  make -C "$NPC_ROOT" -s -j2 >"$NPC_BUILD/build.log" 2>&1 \
    || { tail -40 "$NPC_BUILD/build.log"; npc_die "build failed (see $NPC_BUILD/build.log)"; }
  npc_install_files >>"$NPC_BUILD/build.log" 2>&1 \
    || { tail -40 "$NPC_BUILD/build.log"; npc_die "install failed (see $NPC_BUILD/build.log)"; }
  make -C "$NPC_ROOT" -s -j2 unit fake_gpu npc_load >>"$NPC_BUILD/build.log" 2>&1 \
    || { tail -40 "$NPC_BUILD/build.log"; npc_die "build failed (see $NPC_BUILD/build.log)"; }
  exec {build_lock}>&-
}

# The postgres user must be able to reach the repository (e.g. under /root,
# mode 700): grant traversal (x only, no listing) on each ancestor that lacks it.
npc_grant_traversal() {
  local d=$NPC_ROOT
  while [ "$d" != / ]; do
    if ! runuser -u postgres -- test -x "$d"; then
      npc_log "granting o+x on $d so the postgres user can reach the build area"
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
}

npc_as_postgres() { runuser -u postgres -- "$@"; }

npc_psql() { "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -q "$@"; }

# Poll a SQL condition until it is true, every 20 ms, for at most $2 seconds.
npc_wait_sql() {
  local sql=$1 timeout=${2:-10} db=${3:-$NPC_DB}
  local deadline=$(( $(date +%s%N) + timeout * 1000000000 ))
  while [ "$(date +%s%N)" -lt "$deadline" ]; do
    [ "$(npc_psql -d "$db" -tAc "$sql" 2>/dev/null)" = t ] && return 0
    sleep 0.02
  done
  npc_log "timed out after ${timeout}s waiting for: $sql"
  return 1
}

npc_wait_port() {
  local port=$1 timeout=${2:-10}
  local deadline=$(( $(date +%s%N) + timeout * 1000000000 ))
  while [ "$(date +%s%N)" -lt "$deadline" ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.02
  done
  return 1
}

npc_pg_start() {
  # The server's socket file is $NPC_PGSOCK/.s.PGSQL.PORT and a Unix socket path
  # holds at most 107 bytes: say so plainly instead of "postgres did not start".
  [ $(( ${#NPC_PGSOCK} + 18 )) -le 107 ] \
    || npc_die "the socket directory $NPC_PGSOCK is too long for a Unix socket (max ~89 bytes): clone the repository to a shorter path"
  npc_grant_traversal
  # Under a umask of 077 the postgres user could reach none of these: the
  # build area (its state directory is postgres's own) and the regression
  # files pg_regress reads as postgres.
  chmod o+x "$NPC_BUILD"
  chmod -R o+rX "$NPC_ROOT/sql" "$NPC_ROOT/expected"
  "$NPC_ROOT/scripts/stop_stale.sh" "$NPC_STATE" 2>/dev/null || true
  # What an earlier run recorded is stopped or gone: this run records its own.
  : >"$NPC_STATE/started"
  # A fresh stack (the cluster first, then Redis): also no Redis snapshot
  # a killed run left behind (redis_lost_write.sh saves one), which the
  # stack's Redis would load.
  rm -rf "$NPC_PGDATA" "$NPC_PGSOCK" "$NPC_STATE/log" "$NPC_STATE/redis/dump.rdb"
  mkdir -p "$NPC_PGDATA" "$NPC_PGSOCK" "$NPC_STATE/log"
  chown -R postgres:postgres "$NPC_STATE"
  npc_log "initdb $NPC_PGDATA (as postgres), port $NPC_PGPORT"
  npc_as_postgres "$PG_BIN/initdb" -D "$NPC_PGDATA" -U postgres --auth=trust -E UTF8 \
    --locale=C.UTF-8 >"$NPC_STATE/log/initdb.log" 2>&1 || { cat "$NPC_STATE/log/initdb.log"; npc_die "initdb failed"; }
  cat >>"$NPC_PGDATA/postgresql.conf" <<CONF
# --- npc_scale $NPC_PROFILE stack ---
port = $NPC_PGPORT
listen_addresses = ''
unix_socket_directories = '$NPC_PGSOCK'
shared_preload_libraries = 'npc_scale'
npc_scale.database = '$NPC_DB'
npc_scale.redis_port = $NPC_REDIS_PORT
npc_scale.cache_memory = '${NPC_CACHE_MEMORY:-64MB}'
max_connections = 200
shared_buffers = 256MB
fsync = ${NPC_FSYNC:-on}
logging_collector = off
log_line_prefix = '%m [%p] %b '
CONF
  npc_as_postgres "$PG_BIN/pg_ctl" -D "$NPC_PGDATA" -l "$NPC_STATE/log/postgres.log" -w -t 60 start \
    >/dev/null || { tail -30 "$NPC_STATE/log/postgres.log"; npc_die "postgres did not start"; }
  echo pg >>"$NPC_STATE/started"
  npc_psql -d postgres -c "CREATE DATABASE $NPC_DB" >/dev/null || npc_die "could not create database $NPC_DB"
  # The workers connect to $NPC_DB: it exists now, so they come up (restart interval 1 s).
  npc_wait_sql "SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type LIKE 'npc_scale %' AND datname = '$NPC_DB'" 20 \
    || { tail -30 "$NPC_STATE/log/postgres.log"; npc_die "npc_scale workers did not start"; }
}

npc_pg_stop() {
  [ -f "$NPC_PGDATA/postmaster.pid" ] || return 0
  npc_as_postgres "$PG_BIN/pg_ctl" -D "$NPC_PGDATA" -m fast -w -t 30 stop >/dev/null 2>&1 \
    || npc_as_postgres "$PG_BIN/pg_ctl" -D "$NPC_PGDATA" -m immediate stop >/dev/null 2>&1 || true
}

# npc_wait_file FILE [TICKS]: until FILE is non-empty, every 20 ms, at most
# TICKS times (250: 5 s). npc_wait_gone PID [TICKS]: until PID has exited.
npc_wait_file() {
  local i
  for ((i = 0; i < ${2:-250}; i++)); do [ -s "$1" ] && return 0; sleep 0.02; done
  return 1
}
npc_wait_gone() {
  local i
  for ((i = 0; i < ${2:-250}; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.02; done
  return 1
}

# npc_need_free_port PORT: waits up to 5 s for nothing to listen on PORT (a
# server just stopped may still hold it), else dies naming it: a Redis or
# simulated GPU left there by another clone or a killed run would answer in
# place of ours.
npc_need_free_port() {
  local port=$1 i
  for i in $(seq 250); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 0
    sleep 0.02
  done
  npc_die "port $port is already in use by another program (a run of another clone?): see which: ss -ltnp 'sport = :$port'"
}

npc_redis_start() {
  npc_need_free_port "$NPC_REDIS_PORT"
  mkdir -p "$NPC_STATE/redis"
  redis-server --port "$NPC_REDIS_PORT" --bind 127.0.0.1 --daemonize yes --save '' --appendonly no \
    --dir "$NPC_STATE/redis" --pidfile "$NPC_STATE/redis/redis.pid" \
    --logfile "$NPC_STATE/log/redis.log" >/dev/null || npc_die "redis-server did not start"
  echo redis >>"$NPC_STATE/started"
  npc_wait_port "$NPC_REDIS_PORT" 10 || npc_die "redis did not listen on $NPC_REDIS_PORT"
  # Redis listens a moment before it writes its pid file.
  npc_wait_file "$NPC_STATE/redis/redis.pid" 100
  kill -0 "$(cat "$NPC_STATE/redis/redis.pid" 2>/dev/null)" 2>/dev/null \
    || { tail -5 "$NPC_STATE/log/redis.log"; npc_die "redis-server exited (see $NPC_STATE/log/redis.log)"; }
}

# Only the Redis this stack started (another clone's on the same port is
# not ours to stop), and never waiting on one a test left paused (SIGSTOP).
npc_redis_stop() {
  grep -qx redis "$NPC_STATE/started" 2>/dev/null || return 0
  local pid
  pid=$(cat "$NPC_STATE/redis/redis.pid" 2>/dev/null) || pid=
  [ -n "$pid" ] && kill -CONT "$pid" 2>/dev/null
  timeout 5 redis-cli -p "$NPC_REDIS_PORT" shutdown nosave >/dev/null 2>&1 \
    || { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; } || true
  # Gone, not going: its reply comes before it has exited.
  [ -n "$pid" ] && npc_wait_gone "$pid"
  return 0
}

# npc_gpu_start NAME PORT ARGS... — one simulated vLLM server on loopback,
# in a session of its own, as PostgreSQL and Redis are: the terminal's Ctrl-C
# or a signal to the script's process group (timeout(1)) reaches the script
# alone, which stops the GPUs once its NPCs' decisions have drained.
npc_gpu_start() {
  local name=$1 port=$2 pidfile; shift 2
  npc_need_free_port "$port"
  mkdir -p "$NPC_STATE/gpu"
  pidfile=$NPC_STATE/gpu/$name.pid
  rm -f "$pidfile"
  echo "gpu:$name" >>"$NPC_STATE/started"
  setsid -f "$NPC_BUILD/fake_gpu" --pid-file "$pidfile" --host 127.0.0.1 --port "$port" "$@" \
    </dev/null >"$NPC_STATE/log/gpu_$name.log" 2>&1
  # It writes its pid file once it listens.
  npc_wait_file "$pidfile" 500 && kill -0 "$(cat "$pidfile")" 2>/dev/null && npc_wait_port "$port" 10 \
    || { tail -5 "$NPC_STATE/log/gpu_$name.log"; npc_die "fake GPU $name did not listen on $port"; }
}

# The seed's fleet: one RTX 3090 Ti and two Tesla P40.
npc_fleet_start() {
  local extra=("$@")
  npc_gpu_start gpu0 "$NPC_GPU_BASE_PORT" --profile rtx3090ti --model npc-llm "${extra[@]}"
  npc_gpu_start gpu1 $((NPC_GPU_BASE_PORT + 1)) --profile p40 --model npc-llm "${extra[@]}"
  npc_gpu_start gpu2 $((NPC_GPU_BASE_PORT + 2)) --profile p40 --model npc-llm "${extra[@]}"
}

# Stops the recorded GPUs and waits (up to 5 s) until they are gone: they
# are not our children, and "stopped" should mean it.
npc_gpus_stop() {
  local f pid pids=()
  for f in "$NPC_STATE"/gpu/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null)
    rm -f "$f"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do npc_wait_gone "$pid"; done
  return 0
}

npc_stack_stop() {
  trap '' INT TERM HUP  # a second Ctrl-C must not leave the cluster running
  npc_gpus_stop
  npc_redis_stop
  npc_pg_stop
  rm -f "$NPC_STATE/started"
  [ "$(cat "$NPC_STATE/owner" 2>/dev/null)" = "$(npc_process_id $$)" ] && rm -f "$NPC_STATE/owner"
  return 0
}

# npc_process_id PID: "PID START" (start time in clock ticks since boot), so
# a pid the kernel gave to another process since is not taken for the same.
npc_process_id() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # past "pid (comm) ", whatever comm holds
  echo "$1 $(cut -d' ' -f20 <<<"$stat")"
}

# One run of a profile at a time per clone: a second would take the first's
# cluster, Redis and GPUs for an interrupted run's and stop them (refused,
# before anything is built or stopped). An owner that is gone (killed, the
# machine rebooted) leaves its stack to stop_stale.sh.
npc_claim_profile() {
  mkdir -p "$NPC_STATE"
  local owner pid
  owner=$(cat "$NPC_STATE/owner" 2>/dev/null) || owner=
  pid=${owner%% *}
  if [ -n "$owner" ] && [ "$(npc_process_id "$pid")" = "$owner" ] && [ "$pid" != $$ ]; then
    npc_die "another run of the $NPC_PROFILE stack of this clone is going on (pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)); wait for it to end or stop it"
  fi
  npc_process_id $$ >"$NPC_STATE/owner"
}

npc_stack_prepare() {
  mkdir -p "$NPC_BUILD"
  npc_claim_profile
  npc_install_deps
  npc_build
}
