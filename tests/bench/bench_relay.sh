#!/bin/sh
# Relay client throughput vs smtp-source's raw rate, same smtp-sink, same run.
#   tests/bench/bench_relay.sh [BUILD_DIR] [SESSIONS] [MESSAGES]
# Both send 2 KiB messages over SESSIONS persistent sessions (smtp-source -d).
set -eu
BUILD=${1:-build}
SESS=${2:-2}
MSGS=${3:-20000}
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
U=""; [ "$(id -u)" = 0 ] && U="-u nobody"
/usr/sbin/smtp-sink $U 127.0.0.1:$PORT 256 &
SINK=$!
trap 'kill $SINK 2>/dev/null' EXIT
for i in 1 2 3 4 5 6 7 8 9 10; do
	python3 -c "import socket;socket.create_connection(('127.0.0.1',$PORT),1)" 2>/dev/null && break
	sleep 0.2
done
t0=$(date +%s.%N)
/usr/sbin/smtp-source -d -s $SESS -m $MSGS -l 2048 127.0.0.1:$PORT
t1=$(date +%s.%N)
RAW=$(echo "$MSGS / ($t1 - $t0)" | bc -l)
OUT=$("$BUILD/bench_relay" 127.0.0.1 $PORT $SESS $MSGS 2048)
echo "$OUT"
OURS=$(echo "$OUT" | sed -n 's/.*: \([0-9]*\) msg\/s.*/\1/p')
printf 'smtp-source -d -s %s -m %s -l 2048: %.0f msg/s\n' $SESS $MSGS $RAW
printf 'bench_relay (pickupd smtpc+conn):  %s msg/s = %.0f%% of raw\n' $OURS $(echo "100 * $OURS / $RAW" | bc -l)
