#!/bin/bash
# bare-h2.sh TAG ROOT: bench/servers/native-h2-bare.js loading the package at ROOT under
# `h2load -t1 -c16 -m32 -D3` (after a 1 s warm-up): req/s and CPU µs per request, all threads and
# the JS thread, from /proc. Makes a throwaway key and certificate on first use.
TAG=$1; ROOT=$2
DIR=$(cd "$(dirname "$0")/../.." && pwd)
KEY=/tmp/bare-h2-key.pem; CERT=/tmp/bare-h2-cert.pem
[ -f $CERT ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout $KEY -out $CERT 2>/dev/null
OUT=/tmp/bare-h2-$$.out
BENCH_TLS_KEY=$KEY BENCH_TLS_CERT=$CERT BENCH_NATIVE_ROOT=$ROOT node $DIR/bench/servers/native-h2-bare.js > $OUT 2>&1 &
sleep 1.2
PORT=$(head -1 $OUT | node -e "console.log(JSON.parse(require('fs').readFileSync(0,'utf8')).port)")
PID=$(head -1 $OUT | node -e "console.log(JSON.parse(require('fs').readFileSync(0,'utf8')).pid)")
h2load -t1 -c16 -m32 -D1 https://127.0.0.1:$PORT/ >/dev/null 2>&1
t0=$(awk '{print $14+$15}' /proc/$PID/stat); j0=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
out=$(h2load -t1 -c16 -m32 -D3 https://127.0.0.1:$PORT/ 2>&1)
t1=$(awk '{print $14+$15}' /proc/$PID/stat); j1=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
req=$(echo "$out" | awk '/^requests:/{print $8}')
rps=$(echo "$out" | awk '/^finished in/{print $4}')
awk -v t=$TAG -v r=$rps -v a=$((t1-t0)) -v b=$((j1-j0)) -v n=$req 'BEGIN {printf "%-6s %9s req/s  CPU %.2f us/req  JS %.2f us/req\n", t, r, a*10000/n, b*10000/n}'
kill $PID; rm -f $OUT; sleep 0.3
