#!/bin/bash
# usage: cg.sh BINDIR NAME STREAMS  (warm-up run of STREAMS uninstrumented, then STREAMS measured)
BIN=$1; NAME=$2; N=${3:-2000}
D=/tmp/s9/cg-$NAME; rm -rf $D; mkdir -p $D; cd $D
ulimit -n 20000
S=cgsecret-0123456789abcdef
TIDINGS_BIND=127.0.0.1:18097 TIDINGS_DATABASE_URL="sqlite://$D/t.db?mode=rwc" TIDINGS_JWT_SECRET=$S RUST_LOG=warn \
 TIDINGS_RECIPIENT_RATE_PER_MINUTE=1000000 TIDINGS_EVENTS_PER_USER=1000000 TIDINGS_CLIENT_BURST=1000000 TIDINGS_CLIENT_RATE_PER_SECOND=1000000 TIDINGS_MAX_STREAMS=19000 \
 valgrind --tool=callgrind --callgrind-out-file=$D/cg.out --instr-atstart=no $BIN/tidings serve > $D/server.log 2>&1 &
VP=$!
for i in $(seq 1 300); do curl -s -o /dev/null http://127.0.0.1:18097/healthz && break; sleep 0.2; done
callgrind_control -i on $VP >/dev/null
$BIN/tidings-bench idle --tidings http://127.0.0.1:18097 --secret $S --streams $N --settle 1 --source-base 127.0.$((RANDOM%100+20)).2 > $D/warm.log 2>&1
sleep 2
callgrind_control -z $VP >/dev/null
$BIN/tidings-bench idle --tidings http://127.0.0.1:18097 --secret $S --streams $N --settle 1 --source-base 127.0.$((RANDOM%100+130)).2 > $D/bench.log 2>&1
callgrind_control -d $VP >/dev/null
kill -INT $VP; wait $VP
grep -E "streams open " $D/warm.log $D/bench.log | head -2
for f in $D/cg.out.*; do grep -E "^totals:" $f; done
