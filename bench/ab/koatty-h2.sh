#!/bin/bash
# koatty-h2.sh TAG ROOT: the bench Koatty app over HTTP/2 (TLS) loading koatty_serve from ROOT under
# `h2load -t1 -c16 -m32 -D4` (after a 2 s warm-up): req/s and CPU µs per request.
source "$(dirname "$0")/_common.sh"
TAG=$1; ROOT=$2
tls_pair
start_koatty_app "$ROOT" 39559 BENCH_PROTOCOL=http2 BENCH_TLS_KEY=$KEY BENCH_TLS_CERT=$CERT
h2load -t1 -c16 -m32 -D2 https://127.0.0.1:39559/ >/dev/null 2>&1
before=$(cpu_ticks $PID)
out=$(h2load -t1 -c16 -m32 -D4 https://127.0.0.1:39559/ 2>&1)
after=$(cpu_ticks $PID)
report $TAG "$(echo "$out" | awk '/^finished in/{print $4}')" "$(echo "$out" | awk '/^requests:/{print $8}')" req "$before" "$after"
stop_koatty_app
