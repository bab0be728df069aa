#!/bin/bash
# koatty-h2.sh TAG ROOT: koatty-native app over HTTP/2 (TLS) loading koatty_serve from ROOT; h2load -c16 -m32 4s
TAG=$1; ROOT=$2
cd "$(dirname "$0")/../apps/koatty-native"
ln -sfn $ROOT node_modules/koatty_serve
KEY=/tmp/bare-h2-key.pem; CERT=/tmp/bare-h2-cert.pem
[ -f $CERT ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout $KEY -out $CERT 2>/dev/null
NODE_ENV=production BENCH_TLS_KEY=$KEY BENCH_TLS_CERT=$CERT BENCH_PORT=39559 BENCH_PROTOCOL=http2 BENCH_LOGS_LEVEL=warning node app/main.js > /tmp/kh2-$$.log 2>&1 &
for i in $(seq 1 40); do ss -ltn | grep -q ':39559 ' && break; sleep 0.25; done
PID=$(ss -ltnp | grep ':39559 ' | sed -E 's/.*pid=([0-9]+).*/\1/')
h2load -t1 -c16 -m32 -D2 https://127.0.0.1:39559/ >/dev/null 2>&1
t0=$(awk '{print $14+$15}' /proc/$PID/stat); j0=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
out=$(h2load -t1 -c16 -m32 -D4 https://127.0.0.1:39559/ 2>&1)
t1=$(awk '{print $14+$15}' /proc/$PID/stat); j1=$(awk '{print $14+$15}' /proc/$PID/task/$PID/stat)
n=$(echo "$out" | awk '/^requests:/{print $8}'); rate=$(echo "$out" | awk '/^finished in/{print $4}')
awk -v t=$TAG -v r=$rate -v a=$((t1-t0)) -v b=$((j1-j0)) -v n=$n 'BEGIN {printf "%-6s %9s req/s  CPU %.2f us/req  JS %.2f us/req\n", t, r, a*10000/n, b*10000/n}'
kill $PID; sleep 0.5
ln -sfn ../../../.. node_modules/koatty_serve
