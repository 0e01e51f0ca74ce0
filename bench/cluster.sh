#!/usr/bin/env bash
# Three Tidings nodes on one PostgreSQL database and one Redis, on this
# machine, measured with tidings-bench:
#   notify  streams on node 1, every notification published on node 2, so
#           every event crosses nodes (tail reader + Redis doorbell);
#   ingest  durable publishes per second through node 3.
#   open    (with --open N) instead of the two above: N streams on each of
#           the three nodes, all opened at once at full speed, the way
#           clients come back after a deploy; then R notifications/s in
#           total, each published on the next node (1 -> 2 -> 3 -> 1), so
#           every delivery crosses nodes. Reports the streams each node
#           ended (must be 0) and the cross-node latency per node.
# Usage: bench/cluster.sh [--users N] [--rate R] [--duration S]
#        bench/cluster.sh --open 17000 [--rate 100] [--duration 30]
# Needs PostgreSQL (BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432)
# and Redis (BENCH_REDIS, default redis://127.0.0.1:6379). BENCH_TIDINGS_BIN
# measures that binary instead of building one; BENCH_TIDINGS_ENV adds
# VAR=value words to the nodes' environment; BENCH_BIN (with
# BENCH_TIDINGS_BIN) a tidings-bench binary, so nothing is built;
# BENCH_OUT a folder that keeps --open's reports and the nodes' logs.
# Creates a database
# of its own and drops it, stops every process it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
PG=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS:-redis://127.0.0.1:6379}
USERS=5000 RATE=500 DURATION=15 OPEN="" RATE_SET=""
while [ $# -gt 0 ]; do
  case "$1" in
    --users) USERS=$2; shift 2 ;;
    --open) OPEN=$2; shift 2 ;;
    --rate) RATE=$2; RATE_SET=1; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "cluster.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
ulimit -n "$(ulimit -Hn)"
if [ -n "$OPEN" ] && [ -z "$RATE_SET" ]; then RATE=100; fi
read -r -a NODE_ENV <<<"${BENCH_TIDINGS_ENV:-}"

if [ -n "${BENCH_TIDINGS_BIN:-}" ] && [ -n "${BENCH_BIN:-}" ]; then
  echo "cluster.sh: measuring $BENCH_TIDINGS_BIN with $BENCH_BIN (nothing built)" >&2
  TIDINGS=$BENCH_TIDINGS_BIN
elif [ -n "${BENCH_TIDINGS_BIN:-}" ]; then
  echo "cluster.sh: building tidings-bench (release); measuring $BENCH_TIDINGS_BIN" >&2
  (cd "$ROOT" && cargo build --release -q -p tidings-bench)
  TIDINGS=$BENCH_TIDINGS_BIN
else
  echo "cluster.sh: building tidings and tidings-bench (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p tidings -p tidings-bench)
  TIDINGS=$TARGET_DIR/release/tidings
fi
BENCH=${BENCH_BIN:-$TARGET_DIR/release/tidings-bench}

DB=tidings_cluster_bench_$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  if [ -n "$OPEN" ] && [ -n "${BENCH_OUT:-}" ]; then cp "$WORK"/open-* "$WORK"/node-*.log "$BENCH_OUT"/ 2>/dev/null || true; fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  # The nodes' presence keys (about 100,000 a run of --open 17000) would
  # otherwise stay in the shared Redis for good.
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS" --scan --pattern "bench-$$:*" | xargs -r -n 1000 redis-cli -u "$REDIS" DEL >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q "$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null

SECRET="tidings-cluster-bench-$$-$(date +%s)"
wait_port() {
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "cluster.sh: node on port $1 did not start" >&2; exit 1
}
start_node() {
  env TIDINGS_BIND="127.0.0.1:$1" TIDINGS_DATABASE_URL="$PG/$DB" TIDINGS_REDIS_URL="$REDIS" \
    TIDINGS_REDIS_NAMESPACE="bench-$$" TIDINGS_JWT_SECRET="$SECRET" RUST_LOG=warn \
    TIDINGS_RECIPIENT_RATE_PER_MINUTE=1000000 TIDINGS_EVENTS_PER_USER=1000000 \
    TIDINGS_MAX_STREAMS=$(( $(ulimit -n) - 200 )) ${NODE_ENV[@]+"${NODE_ENV[@]}"} \
    "$TIDINGS" serve >"$WORK/node-$1.log" 2>&1 &
  PIDS+=($!)
  wait_port "$1"
}
start_node 18091   # first alone: it applies the migrations
start_node 18092
start_node 18093
NOTE="three nodes on one PostgreSQL $(psql -tA "$PG/postgres" -c 'show server_version' | cut -d' ' -f1) database and one Redis, all on this 2-core machine"

if [ -n "$OPEN" ]; then
  echo "== open: $OPEN streams on each of 3 nodes at once, then $RATE notifications/s in total for $DURATION s, each published on the next node"
  BENCH_PIDS=()
  for i in 0 1 2; do
    port=$((18091 + i)) next=$((18091 + (i + 1) % 3))
    "$BENCH" notify --tidings "http://127.0.0.1:$port" --tidings-publish "http://127.0.0.1:$next" --secret "$SECRET" \
      --server-pid "${PIDS[$i]}" --note "$NOTE; streams on node $((i + 1)), publishes on node $(( (i + 1) % 3 + 1 ))" \
      --name "node$((i + 1))" --run-id "open$$n$i" --source-base "127.0.$((i * 4 + 1)).2" --connect-concurrency 500 \
      --connect-timeout 120 --hold-streams 5 --users "$OPEN" --rate "$(echo "$RATE / 3" | bc -l)" --duration "$DURATION" \
      --json "$WORK/open-$i.json" >"$WORK/open-$i.txt" 2>&1 &
    BENCH_PIDS+=($!)
  done
  STATUS=0
  for pid in "${BENCH_PIDS[@]}"; do wait "$pid" || STATUS=1; done
  for i in 0 1 2; do echo "-- streams on node $((i + 1))"; cat "$WORK/open-$i.txt"; done
  "$BENCH" table "$WORK/open-0.json" "$WORK/open-1.json" "$WORK/open-2.json"
  for port in 18091 18092 18093; do
    echo "node on $port: $(grep -c 'stream ended' "$WORK/node-$port.log" || true) streams ended by the server (log lines 'stream ended')"
    grep -o 'stream ended[^"]*' "$WORK/node-$port.log" | sort | uniq -c | sort -rn | head -5 || true
  done
  exit "$STATUS"
fi
echo "== notify: $USERS users on node 1, $RATE notifications/s published on node 2 for $DURATION s"
"$BENCH" notify --tidings http://127.0.0.1:18091 --tidings-publish http://127.0.0.1:18092 --secret "$SECRET" \
  --server-pid "${PIDS[0]}" --note "$NOTE; streams on node 1, publishes on node 2" \
  --users "$USERS" --rate "$RATE" --duration "$DURATION" --strict
echo "== ingest: durable publishes through node 3"
"$BENCH" ingest --tidings http://127.0.0.1:18093 --secret "$SECRET" --server-pid "${PIDS[2]}" \
  --note "$NOTE; PostgreSQL appends serialized by one advisory lock" --duration 10 --strict
