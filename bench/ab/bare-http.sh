#!/bin/bash
# httpcmp.sh TAG CMD... : start server on port 39100, measure wrk -c64 3s: req/s, CPU µs/req (all threads, JS thread)
TAG=$1; shift
"$@" 39100 > /tmp/httpcmp.out 2>&1 &
sleep 1.2
PID=$(pgrep -f "$* 39100" | head -1)
wrk -t1 -c64 -d1s http://127.0.0.1:39100/ >/dev/null 2>&1
t0=$(awk '{print $14+$15}' /proc/$PID/stat); j0=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
out=$(wrk -t1 -c64 -d3s http://127.0.0.1:39100/ 2>&1)
t1=$(awk '{print $14+$15}' /proc/$PID/stat); j1=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
req=$(echo "$out" | awk '/requests in/{print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
awk -v t=$TAG -v r=$rps -v a=$((t1-t0)) -v b=$((j1-j0)) -v n=$req 'BEGIN {printf "%-6s %9s req/s  CPU %.2f us/req  JS %.2f us/req\n", t, r, a*10000/n, b*10000/n}'
kill $PID; sleep 0.3
