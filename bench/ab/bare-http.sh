#!/bin/bash
# bare-http.sh TAG CMD…: starts `CMD… 39100` (hello-native.js ROOT / hello-node.js), then
# `wrk -t1 -c64 -d3s` (after a 1 s warm-up): req/s and CPU µs per request.
source "$(dirname "$0")/_common.sh"
TAG=$1; shift
"$@" 39100 > /tmp/httpcmp.out 2>&1 &
sleep 1.2
PID=$(pgrep -f "$* 39100" | head -1)
wrk -t1 -c64 -d1s http://127.0.0.1:39100/ >/dev/null 2>&1
before=$(cpu_ticks $PID)
out=$(wrk -t1 -c64 -d3s http://127.0.0.1:39100/ 2>&1)
after=$(cpu_ticks $PID)
report $TAG "$(echo "$out" | awk '/Requests\/sec/{print $2}')" "$(echo "$out" | awk '/requests in/{print $1}')" req "$before" "$after"
kill $PID; sleep 0.3
