#!/bin/bash
# kcmp.sh TAG ROOT: koatty-native app loading koatty_serve from ROOT; wrk -c64 4s
TAG=$1; ROOT=$2
cd "$(dirname "$0")/../apps/koatty-native"
ln -sfn $ROOT node_modules/koatty_serve
NODE_ENV=production BENCH_PORT=39558 BENCH_LOGS_LEVEL=warning node app/main.js > /tmp/kcmp-$$.log 2>&1 &
for i in $(seq 1 40); do ss -ltn | grep -q ':39558 ' && break; sleep 0.25; done
PID=$(ss -ltnp | grep ':39558 ' | sed -E 's/.*pid=([0-9]+).*/\1/')
wrk -t1 -c64 -d2s http://127.0.0.1:39558/ >/dev/null 2>&1
t0=$(awk '{print $14+$15}' /proc/$PID/stat); j0=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
out=$(wrk -t1 -c64 -d4s http://127.0.0.1:39558/ 2>&1)
t1=$(awk '{print $14+$15}' /proc/$PID/stat); j1=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
req=$(echo "$out" | awk '/requests in/{print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
awk -v t=$TAG -v r=$rps -v a=$((t1-t0)) -v b=$((j1-j0)) -v n=$req 'BEGIN {printf "%-6s %9s req/s  CPU %.2f us/req  JS %.2f us/req\n", t, r, a*10000/n, b*10000/n}'
kill $PID; sleep 0.5
ln -sfn /work/main node_modules/koatty_serve
