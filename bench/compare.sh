#!/usr/bin/env bash
# Runs one benchmark scenario against Tidings and its peers, on loopback,
# and prints the results side by side with Tidings' ratio to each peer.
#
#   bench/compare.sh SCENARIO [--peers nchan,node] [--profile release|dev]
#                             [--out DIR] [--streams N]
#                             [-- TIDINGS_BENCH_OPTIONS...]
#   bench/compare.sh smoke    every scenario, Tidings only, tiny sizes, a few
#                             seconds; exits non-zero if Tidings lost,
#                             duplicated or misrouted an event
#
# SCENARIO is idle, notify, fanout, topic, announce, ingest, catchup, batch,
# webhook, chat, storm, or all. topic is fanout over one broadcast topic (Tidings'
# /v1/topics); the peers run it exactly as fanout, one channel.
# announce is fanout by announcements to `all` (one POST /v1/notifications
# each, every user on their plain stream), with the publish latency and the
# rows Tidings stored; the peers run it exactly as topic.
# Options after `--` go to every `tidings-bench SCENARIO` run (e.g.
# `-- --streams 2000`). batch, webhook and chat use Tidings' own API (batch
# publishing, the outbox's webhooks to a receiver started by the bench,
# conversations), which no peer has, and storm (a reconnect
# storm) measures Tidings' resume: they run against Tidings alone, whatever
# --peers says. --streams N (idle and storm) opens N streams instead of
# 10,000, e.g. `bench/compare.sh idle --streams 19000` for one process's
# ceiling here (20,000 open files).
#
# Each hub is started fresh for each scenario on 127.0.0.1 and stopped
# after it; every process started here is stopped on exit. Peers install
# from Debian (nginx, libnginx-mod-nchan, nodejs, npm) and npm (better-sse,
# from bench/node-hub/package-lock.json) when absent.
#
# Environment: CARGO_TARGET_DIR (default: target/ in the workspace),
# BENCH_TIDINGS_PORT / BENCH_NCHAN_PORT / BENCH_NODE_PORT (18080-18082),
# BENCH_TIDINGS_BIN (a tidings binary to measure instead of building one),
# BENCH_BIN (with BENCH_TIDINGS_BIN: a tidings-bench binary, so nothing is
# built, e.g. while another build of the workspace runs),
# BENCH_TIDINGS_ENV (VAR=value words set for the Tidings server only, e.g.
# "MALLOC_ARENA_MAX=2" or "_RJEM_MALLOC_CONF=background_thread:true").
#
# Tidings runs with its defaults except the limits a benchmark would trip:
# TIDINGS_RECIPIENT_RATE_PER_MINUTE (120 a minute per user and type),
# TIDINGS_EVENTS_PER_USER (10,000 events of history per user) and
# TIDINGS_CLIENT_BURST / TIDINGS_CLIENT_RATE_PER_SECOND (a user token's
# writes: burst 50, 10/s; chat's senders send faster), and
# TIDINGS_MAX_STREAMS (the open-file limit less 1,024 by default; here the
# limit less 200, so that 19,000 streams fit in one process).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PORT_TIDINGS=${BENCH_TIDINGS_PORT:-18080}
PORT_NCHAN=${BENCH_NCHAN_PORT:-18081}
PORT_NODE=${BENCH_NODE_PORT:-18082}
SECRET="tidings-bench-secret-$(date +%s)-$$"

usage() { sed -n '2,46p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[ $# -ge 1 ] || usage
SCENARIO=$1
shift
SMOKE=""
PEERS="nchan,node"
PROFILE=release
OUT=""
STREAMS=""
case "$SCENARIO" in
  smoke) SMOKE=1; PEERS=""; PROFILE=dev ;;
  idle|notify|fanout|topic|announce|ingest|catchup|batch|webhook|chat|storm|all) ;;
  -h|--help) usage ;;
  *) echo "compare.sh: unknown scenario '$SCENARIO'" >&2; usage ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --peers) PEERS=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "compare.sh: unknown option '$1'" >&2; usage ;;
  esac
done
EXTRA=("$@")
if [ -n "$STREAMS" ]; then
  case "$SCENARIO" in
    idle|storm) EXTRA=(--streams "$STREAMS" "${EXTRA[@]}") ;;
    *) echo "compare.sh: --streams is for idle and storm" >&2; exit 2 ;;
  esac
fi
# Extra environment of the Tidings server alone (an allocator's settings).
read -r -a TIDINGS_ENV <<<"${BENCH_TIDINGS_ENV:-}"

log() { echo "compare.sh: $*" >&2; }

# Sockets: one process may hold up to the hard limit (20,000 here).
ulimit -n "$(ulimit -Hn)"

# --- what the peers need -------------------------------------------------
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [[ ",$PEERS," == *",nchan,"* ]]; then
  if ! command -v nginx >/dev/null || [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    log "installing nginx and libnginx-mod-nchan"
    apt_install nginx libnginx-mod-nchan
  fi
fi
if [[ ",$PEERS," == *",node,"* ]]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "installing nodejs and npm"
    apt_install nodejs npm
  fi
  if [ ! -d "$ROOT/bench/node-hub/node_modules/better-sse" ]; then
    (cd "$ROOT/bench/node-hub" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

# --- build ---------------------------------------------------------------
case "$PROFILE" in
  release) BIN_DIR=$TARGET_DIR/release; PROFILE_FLAG=(--release) ;;
  dev|debug) BIN_DIR=$TARGET_DIR/debug; PROFILE_FLAG=() ;;
  *) echo "compare.sh: --profile is release or dev" >&2; exit 2 ;;
esac
if [ -n "${BENCH_TIDINGS_BIN:-}" ] && [ -n "${BENCH_BIN:-}" ]; then
  log "measuring $BENCH_TIDINGS_BIN with $BENCH_BIN (nothing built)"
  TIDINGS=$BENCH_TIDINGS_BIN
elif [ -n "${BENCH_TIDINGS_BIN:-}" ]; then
  log "building tidings-bench ($PROFILE); measuring $BENCH_TIDINGS_BIN"
  (cd "$ROOT" && cargo build --quiet "${PROFILE_FLAG[@]}" -p tidings-bench)
  TIDINGS=$BENCH_TIDINGS_BIN
else
  log "building tidings and tidings-bench ($PROFILE)"
  (cd "$ROOT" && cargo build --quiet "${PROFILE_FLAG[@]}" -p tidings -p tidings-bench)
  TIDINGS=$BIN_DIR/tidings
fi
BENCH=${BENCH_BIN:-$BIN_DIR/tidings-bench}

# --- processes we start, and their cleanup -------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tidings-bench.XXXXXX")
RESULTS=${OUT:-$WORK/results}
mkdir -p "$RESULTS"
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$name exited at start:"; tail -20 "$WORK/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  log "$name did not listen on $port within 10 s"; exit 1
}
port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    log "port $1 is already in use: set BENCH_*_PORT"; exit 1
  fi
}

# Each start_* sets SERVER_PID and TARGET_ARGS.
start_tidings() {
  port_free "$PORT_TIDINGS"
  local dir=$WORK/tidings-$1
  mkdir -p "$dir"
  (cd "$dir" && exec env TIDINGS_BIND="127.0.0.1:$PORT_TIDINGS" \
      TIDINGS_DATABASE_URL="sqlite://$dir/tidings.db?mode=rwc" \
      TIDINGS_JWT_SECRET="$SECRET" RUST_LOG=warn \
      TIDINGS_RECIPIENT_RATE_PER_MINUTE=1000000 TIDINGS_EVENTS_PER_USER=1000000 \
      TIDINGS_CLIENT_BURST=1000000 TIDINGS_CLIENT_RATE_PER_SECOND=1000000 \
      TIDINGS_MAX_STREAMS=$(( $(ulimit -n) - 200 )) \
      ${TIDINGS_ENV[@]+"${TIDINGS_ENV[@]}"} \
      "$TIDINGS" serve >"$WORK/tidings.log" 2>&1) &
  SERVER_PID=$!
  wait_port "$PORT_TIDINGS" tidings
  TARGET_ARGS=(--tidings "http://127.0.0.1:$PORT_TIDINGS" --secret "$SECRET" --server-pid "$SERVER_PID"
    --note "Tidings stores every event in SQLite (WAL, synchronous=NORMAL) before sending it")
  # announce counts the rows it stored in this file.
  TARGET_ARGS+=(--tidings-db "$dir/tidings.db")
}
start_nchan() {
  port_free "$PORT_NCHAN"
  local dir=$WORK/nchan-$1
  mkdir -p "$dir/tmp"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$PORT_NCHAN|g" "$ROOT/bench/nchan.conf.template" >"$dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' >"$WORK/nchan.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$PORT_NCHAN" nchan
  TARGET_ARGS=(--name nchan --publish-url "http://127.0.0.1:$PORT_NCHAN/pub/{channel}"
    --subscribe-url "http://127.0.0.1:$PORT_NCHAN/sub/{channel}" --ids opaque --server-pid "$SERVER_PID"
    --note "Nchan (nginx $(nginx -v 2>&1 | sed 's|.*/||'), 2 workers) keeps messages in shared memory only: nothing is written to disk")
}
start_node() {
  port_free "$PORT_NODE"
  node "$ROOT/bench/node-hub/server.js" --port "$PORT_NODE" >"$WORK/node.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$PORT_NODE" node
  TARGET_ARGS=(--name node --publish-url "http://127.0.0.1:$PORT_NODE/pub/{channel}"
    --subscribe-url "http://127.0.0.1:$PORT_NODE/sub/{channel}" --ids none --server-pid "$SERVER_PID"
    --note "Node $(node --version) + better-sse $(node -p "require('$ROOT/bench/node-hub/node_modules/better-sse/package.json').version"), one process, memory only, no history")
}

STATUS=0
RUN_INDEX=0
run_bench() {
  local scenario=$1 name=$2
  shift 2
  local rc=0
  # Each run connects from its own 127.0.N.x, so that no run inherits the
  # previous one's sockets in TIME_WAIT on the same source address.
  RUN_INDEX=$((RUN_INDEX % 250 + 1))
  "$BENCH" "$scenario" "${TARGET_ARGS[@]}" --json "$RESULTS/$scenario-$name.json" \
    --source-base "127.0.$RUN_INDEX.2" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    log "$scenario against $name exited with $rc"
    if [ -n "$SMOKE" ] || [ "$name" = tidings ] || [ "$rc" -ge 2 ]; then STATUS=1; fi
  fi
}

# --- smoke: every scenario against Tidings, tiny, strict ----------------
if [ -n "$SMOKE" ]; then
  start_tidings smoke
  common=(--strict --workers 2 --connect-timeout 10)
  run_bench idle tidings "${common[@]}" --streams 40 --settle 1 "${EXTRA[@]}"
  run_bench notify tidings "${common[@]}" --users 40 --rate 200 --duration 2 --drain 5 "${EXTRA[@]}"
  run_bench fanout tidings "${common[@]}" --members 1100 --rate 4 --duration 2 --drain 10 "${EXTRA[@]}"
  run_bench topic tidings "${common[@]}" --subscribers 20 --rate 5 --duration 2 --drain 5 "${EXTRA[@]}"
  run_bench ingest tidings "${common[@]}" --concurrency 4 --duration 1 --users 20 "${EXTRA[@]}"
  run_bench catchup tidings "${common[@]}" --events 300 --repeat 2 --timeout 20 "${EXTRA[@]}"
  run_bench batch tidings "${common[@]}" --items 50 --concurrency 2 --duration 2 "${EXTRA[@]}"
  run_bench webhook tidings "${common[@]}" --items 50 --concurrency 2 --duration 2 --drain 20 "${EXTRA[@]}"
  run_bench chat tidings "${common[@]}" --conversations 20 --concurrency 4 --duration 2 --drain 5 "${EXTRA[@]}"
  run_bench storm tidings "${common[@]}" --streams 50 --rate 20 --warmup 2 --after 2 --storm-timeout 30 --drain 5 "${EXTRA[@]}"
  # Last: an announcement to `all` reaches every user, so no later scenario
  # on this server may see one.
  run_bench announce tidings "${common[@]}" --subscribers 20 --rate 5 --duration 2 --drain 5 "${EXTRA[@]}"
  stop_server
  if [ "$STATUS" -eq 0 ]; then echo "smoke: 11 passed, 0 failed"; else echo "smoke: FAILED (see PROBLEM lines above)"; fi
  exit "$STATUS"
fi

# --- comparison -----------------------------------------------------------
if [ "$SCENARIO" = all ]; then SCENARIOS=(idle notify fanout topic announce ingest catchup batch webhook chat storm); else SCENARIOS=("$SCENARIO"); fi
# Scenarios of Tidings' own API: no peer has an equivalent.
TIDINGS_ONLY=" batch webhook chat storm "
IFS=, read -r -a PEER_LIST <<<"$PEERS"
for scenario in "${SCENARIOS[@]}"; do
  files=()
  for name in tidings "${PEER_LIST[@]}"; do
    [ -n "$name" ] || continue
    case "$name" in
      tidings|nchan|node) ;;
      *) echo "compare.sh: unknown peer '$name' (nchan, node)" >&2; exit 2 ;;
    esac
    if [ "$name" != tidings ] && [[ "$TIDINGS_ONLY" == *" $scenario "* ]]; then
      log "$scenario: Tidings only (no equivalent on $name); skipping $name"
      continue
    fi
    log "$scenario: starting $name"
    "start_$name" "$scenario"
    run_bench "$scenario" "$name" "${EXTRA[@]}"
    stop_server
    [ -f "$RESULTS/$scenario-$name.json" ] && files+=("$RESULTS/$scenario-$name.json")
    sleep 1
  done
  if [ "${#files[@]}" -gt 0 ]; then
    "$BENCH" table "${files[@]}" --markdown "$RESULTS/$scenario.md"
  fi
done
[ -n "$OUT" ] && log "reports and Markdown tables in $OUT"
exit "$STATUS"
