#!/bin/bash
# kws.sh TAG ROOT: koatty-native app (ws) loading koatty_serve from ROOT; ws-load -c64 4s on /ws/echo
TAG=$1; ROOT=$2
cd "$(dirname "$0")/../apps/koatty-native"
ln -sfn $ROOT node_modules/koatty_serve
NODE_ENV=production BENCH_PORT=39559 BENCH_PROTOCOL=ws BENCH_LOGS_LEVEL=warning node app/main.js > /tmp/kws-$$.log 2>&1 &
for i in $(seq 1 40); do ss -ltn | grep -q ':39559 ' && break; sleep 0.25; done
PID=$(ss -ltnp | grep ':39559 ' | sed -E 's/.*pid=([0-9]+).*/\1/')
L=${WS_LOAD:-../../../target/loadgen/release/ws-load}
$L -c 64 -d 2 -w 0 -t 1 -m 12345 ws://127.0.0.1:39559/ws/echo >/dev/null 2>&1
t0=$(awk '{print $14+$15}' /proc/$PID/stat); j0=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
out=$($L -c 64 -d 4 -w 0 -t 1 -m 12345 ws://127.0.0.1:39559/ws/echo 2>&1 | tail -1)
t1=$(awk '{print $14+$15}' /proc/$PID/stat); j1=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
n=$(echo $out | sed -E 's/.* msgs=([0-9]+).*/\1/'); rate=$(echo $out | sed -E 's/.*msgs_per_sec=([0-9.]+).*/\1/')
awk -v t=$TAG -v r=$rate -v a=$((t1-t0)) -v b=$((j1-j0)) -v n=$n 'BEGIN {printf "%-6s %9s msg/s  CPU %.2f us/msg  JS %.2f us/msg\n", t, r, a*10000/n, b*10000/n}'
kill $PID; sleep 0.5
ln -sfn ../../../.. node_modules/koatty_serve
