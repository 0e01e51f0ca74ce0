#!/bin/bash
# usage: threadcpu.sh BINDIR [N] [extra env...]: per-thread CPU (ticks) over N opens after a warm-up
BIN=$1; N=${2:-5000}; shift 2
cd /tmp/s10 && rm -rf st && mkdir st && ulimit -n 20000 && S=callgrind-secret-0123456789abcdef
env "$@" TIDINGS_BIND=127.0.0.1:18111 TIDINGS_DATABASE_URL="sqlite:///tmp/s10/st/t.db?mode=rwc" TIDINGS_JWT_SECRET=$S RUST_LOG=warn TIDINGS_MAX_STREAMS=19000 TIDINGS_CLIENT_RATE_PER_SECOND=1000000 TIDINGS_CLIENT_BURST=1000000 $BIN/tidings serve > st/server.log 2>&1 &
sleep 2; P=$!
$BIN/tidings-bench idle --tidings http://127.0.0.1:18111 --secret $S --streams 2000 --settle 1 --source-base 127.0.$((RANDOM % 50 + 20)).2 > st/warm.log 2>&1
sleep 2
snap() { for t in /proc/$P/task/*; do echo "$(basename $t) $(cat $t/comm | tr ' ' _) $(awk '{print $14+$15}' $t/stat)"; done; }
snap > st/before
$BIN/tidings-bench idle --tidings http://127.0.0.1:18111 --secret $S --streams $N --settle 0 --source-base 127.0.$((RANDOM % 50 + 120)).2 > st/b.log 2>&1
snap > st/after
kill -INT $P; wait $P 2>/dev/null
join st/before st/after | awk '{d=$5-$3; split($2,a,"_"); s[$2]+=d; t+=d} END {for (k in s) print k, s[k]; print "total", t}'
grep "open," st/b.log
