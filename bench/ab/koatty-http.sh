#!/bin/bash
# koatty-http.sh TAG ROOT: the bench Koatty app loading koatty_serve from ROOT under
# `wrk -t1 -c64 -d4s` (after a 2 s warm-up): req/s and CPU µs per request.
source "$(dirname "$0")/_common.sh"
TAG=$1; ROOT=$2
start_koatty_app "$ROOT" 39558
wrk -t1 -c64 -d2s http://127.0.0.1:39558/ >/dev/null 2>&1
before=$(cpu_ticks $PID)
out=$(wrk -t1 -c64 -d4s http://127.0.0.1:39558/ 2>&1)
after=$(cpu_ticks $PID)
report $TAG "$(echo "$out" | awk '/Requests\/sec/{print $2}')" "$(echo "$out" | awk '/requests in/{print $1}')" req "$before" "$after"
stop_koatty_app
