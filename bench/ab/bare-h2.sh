#!/bin/bash
# bare-h2.sh TAG ROOT: bench/servers/native-h2-bare.js loading the package at ROOT under
# `h2load -t1 -c16 -m32 -D3` (after a 1 s warm-up): req/s and CPU µs per request.
source "$(dirname "$0")/_common.sh"
TAG=$1; ROOT=$2
DIR=$(cd "$(dirname "$0")/../.." && pwd)
tls_pair
OUT=/tmp/bare-h2-$$.out
BENCH_TLS_KEY=$KEY BENCH_TLS_CERT=$CERT BENCH_NATIVE_ROOT=$ROOT node $DIR/bench/servers/native-h2-bare.js > $OUT 2>&1 &
sleep 1.2
PORT=$(head -1 $OUT | node -e "console.log(JSON.parse(require('fs').readFileSync(0,'utf8')).port)")
PID=$(head -1 $OUT | node -e "console.log(JSON.parse(require('fs').readFileSync(0,'utf8')).pid)")
h2load -t1 -c16 -m32 -D1 https://127.0.0.1:$PORT/ >/dev/null 2>&1
before=$(cpu_ticks $PID)
out=$(h2load -t1 -c16 -m32 -D3 https://127.0.0.1:$PORT/ 2>&1)
after=$(cpu_ticks $PID)
report $TAG "$(echo "$out" | awk '/^finished in/{print $4}')" "$(echo "$out" | awk '/^requests:/{print $8}')" req "$before" "$after"
kill $PID; rm -f $OUT; sleep 0.3
