#!/usr/bin/env bash
# Counts the server's user-space instructions under callgrind: repeatable
# where seconds on this machine are not (the kernel's work is not counted).
#
#   bench/callgrind.sh opens BINDIR OUTDIR [STREAMS]   STREAMS opens (2,000)
#       after as many warm-up opens, measured from the first measured open
#       to the last
#   bench/callgrind.sh storm BINDIR OUTDIR [STREAMS]   a small reconnect storm
#       (1,000 streams, 20 publishes/s), measured from about 2 s before the
#       drop until the run ends
#
# BINDIR holds `tidings` and `tidings-bench` (release builds); OUTDIR gets the
# database, the logs and callgrind's `cg.out.*` (the measured part is
# `cg.out.1`). Prints callgrind's total; read the rest with
# `callgrind_annotate --inclusive=yes OUTDIR/cg.out.1`.
set -euo pipefail

MODE=${1:?opens or storm}; BIN=${2:?BINDIR}; D=${3:?OUTDIR}
case "$MODE" in
  opens) N=${4:-2000} ;;
  storm) N=${4:-1000} ;;
  *) echo "callgrind.sh: opens or storm" >&2; exit 2 ;;
esac
PORT=${CALLGRIND_PORT:-18097}
URL=http://127.0.0.1:$PORT
S=callgrind-secret-0123456789abcdef
rm -rf "$D"; mkdir -p "$D"
ulimit -n 20000
TIDINGS_BIND=127.0.0.1:$PORT TIDINGS_DATABASE_URL="sqlite://$D/t.db?mode=rwc" TIDINGS_JWT_SECRET=$S RUST_LOG=warn \
  TIDINGS_RECIPIENT_RATE_PER_MINUTE=1000000 TIDINGS_EVENTS_PER_USER=1000000 TIDINGS_CLIENT_BURST=1000000 \
  TIDINGS_CLIENT_RATE_PER_SECOND=1000000 TIDINGS_MAX_STREAMS=19000 \
  valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" --instr-atstart=no "$BIN/tidings" serve >"$D/server.log" 2>&1 &
VP=$!
trap 'kill -INT $VP 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -s -o /dev/null "$URL/healthz" && break; sleep 0.2; done
callgrind_control -i on $VP >/dev/null
if [ "$MODE" = opens ]; then
  "$BIN/tidings-bench" idle --tidings "$URL" --secret $S --streams "$N" --settle 1 --source-base 127.0.$((RANDOM % 100 + 20)).2 >"$D/warm.log" 2>&1
  sleep 2
  callgrind_control -z $VP >/dev/null
  "$BIN/tidings-bench" idle --tidings "$URL" --secret $S --streams "$N" --settle 1 --source-base 127.0.$((RANDOM % 100 + 130)).2 >"$D/bench.log" 2>&1
else
  "$BIN/tidings-bench" storm --tidings "$URL" --secret $S --streams "$N" --rate 20 --warmup 10 --after 2 --drain 5 \
    --source-base 127.0.$((RANDOM % 100 + 20)).2 >"$D/bench.log" 2>&1 &
  BP=$!
  until grep -q 'the drop in' "$D/bench.log" 2>/dev/null; do sleep 0.2; done
  sleep 8
  callgrind_control -z $VP >/dev/null
  wait $BP
fi
callgrind_control -d $VP >/dev/null
kill -INT $VP; wait $VP || true
trap - EXIT
grep -E "streams open |time until all live" "$D/bench.log" || true
grep -E "^totals:" "$D/cg.out.1"
