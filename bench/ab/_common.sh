# Sourced by the A/B scripts here: what each measurement shares.

# cpu_ticks PID: utime+stime clock ticks of the whole process and of its main (JS) thread.
cpu_ticks() {
  echo "$(awk '{print $14+$15}' /proc/$1/stat) $(awk '{print $14+$15}' /proc/$1/task/$1/stat)"
}

# report TAG RATE COUNT UNIT "TICKS BEFORE" "TICKS AFTER": the rate, and CPU µs per operation of
# all threads and of the JS thread (ticks of 10 ms).
report() {
  local before=($5) after=($6)
  awk -v t="$1" -v r="$2" -v n="$3" -v u="$4" -v a=$((after[0] - before[0])) -v b=$((after[1] - before[1])) \
    'BEGIN {printf "%-6s %9s %s/s  CPU %.2f us/%s  JS %.2f us/%s\n", t, r, u, a*10000/n, u, b*10000/n, u}'
}

# tls_pair: a throwaway EC key and self-signed certificate for 127.0.0.1 (made on first use);
# sets KEY and CERT.
tls_pair() {
  KEY=/tmp/bare-h2-key.pem; CERT=/tmp/bare-h2-cert.pem
  [ -f $CERT ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout $KEY -out $CERT 2>/dev/null
}

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../apps/koatty-native" && pwd)"

# start_koatty_app ROOT PORT [VAR=value …]: the bench Koatty app (bench/apps/koatty-native, `node
# bench/setup.js` first) loading koatty_serve from ROOT, listening on PORT; sets PID.
start_koatty_app() {
  local root=$1 port=$2
  shift 2
  ln -sfn "$root" "$APP_DIR/node_modules/koatty_serve"
  (cd "$APP_DIR" && env NODE_ENV=production BENCH_PORT=$port BENCH_LOGS_LEVEL=warning "$@" node app/main.js > /tmp/ab-koatty-$$.log 2>&1 &)
  for _ in $(seq 1 40); do ss -ltn | grep -q ":$port " && break; sleep 0.25; done
  PID=$(ss -ltnp | grep ":$port " | sed -E 's/.*pid=([0-9]+).*/\1/')
}

# stop_koatty_app: stops it and points the app back at this repository.
stop_koatty_app() {
  kill $PID; sleep 0.5
  ln -sfn ../../../.. "$APP_DIR/node_modules/koatty_serve"
}
