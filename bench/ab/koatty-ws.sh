#!/bin/bash
# koatty-ws.sh TAG ROOT: the bench Koatty app over WebSocket loading koatty_serve from ROOT under
# `ws-load -c 64 -d 4` on /ws/echo (after a 2 s warm-up; WS_LOAD = the ws-load binary): msgs/s and
# CPU µs per message.
source "$(dirname "$0")/_common.sh"
TAG=$1; ROOT=$2
L=${WS_LOAD:-$(cd "$(dirname "$0")/../.." && pwd)/target/loadgen/release/ws-load}
start_koatty_app "$ROOT" 39559 BENCH_PROTOCOL=ws
$L -c 64 -d 2 -w 0 -t 1 -m 12345 ws://127.0.0.1:39559/ws/echo >/dev/null 2>&1
before=$(cpu_ticks $PID)
out=$($L -c 64 -d 4 -w 0 -t 1 -m 12345 ws://127.0.0.1:39559/ws/echo 2>&1 | tail -1)
after=$(cpu_ticks $PID)
report $TAG "$(echo $out | sed -E 's/.*msgs_per_sec=([0-9.]+).*/\1/')" "$(echo $out | sed -E 's/.* msgs=([0-9]+).*/\1/')" msg "$before" "$after"
stop_koatty_app
