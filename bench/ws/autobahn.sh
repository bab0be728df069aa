#!/usr/bin/env bash
# Autobahn|Testsuite fuzzing client against the WebSocket echo server (bench/ws/echo-server.js):
# this package's WsServer ("native") and, for comparison, the `ws` package's server ("ws").
#
# autobahntestsuite is Python 2 code: the PyPI release 25.10.1 installs on Python 3 but cannot run
# there (`from _version import __version__`, print statements, and no declared dependencies), so
# this uses a Python 2.7 interpreter (pyenv's 2.7.18 here) and installs the suite with its pinned
# dependencies (autobahn 0.10.9, Twisted 19.10) into a --target directory under /tmp.
#
#   bench/ws/autobahn.sh [native|ws|both]     (default: both)
#   env: PY27 (python2.7 binary), AB_DIR (/tmp/ab27), AB_OUT (/tmp/autobahn-reports),
#        AB_CASES (JSON list, default 1.* – 7.*, 9.*, 10.*; 12.*/13.* need permessage-deflate)
# Case summaries are written to docs/autobahn/index-<impl>.json; the HTML reports stay in AB_OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WHICH=${1:-both}
PY27=${PY27:-$(command -v python2.7 2>/dev/null || true)}
if [ -z "$PY27" ] || ! "$PY27" --version >/dev/null 2>&1; then
  if command -v pyenv >/dev/null 2>&1 && [ -x "$(pyenv root)/versions/2.7.18/bin/python" ]; then
    PY27="$(pyenv root)/versions/2.7.18/bin/python"
  else
    echo "no Python 2.7 found (set PY27=/path/to/python2.7); autobahntestsuite does not run on Python 3" >&2
    exit 2
  fi
fi
AB_DIR=${AB_DIR:-/tmp/ab27}
AB_OUT=${AB_OUT:-/tmp/autobahn-reports}
AB_CASES=${AB_CASES:-'["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]'}
if [ ! -d "$AB_DIR/autobahntestsuite" ]; then
  echo "installing autobahntestsuite into $AB_DIR with $PY27"
  "$PY27" -m pip install --quiet --target "$AB_DIR" autobahntestsuite
fi
wstest() {
  # site.addsitedir processes the .pth files (zope namespace package) that PYTHONPATH would not.
  "$PY27" -c "import site,sys; site.addsitedir('$AB_DIR'); sys.argv[0]='wstest'; from autobahntestsuite.wstest import run; run()" "$@"
}
wstest -a

run_one() {
  local impl=$1 agent
  case $impl in
    native) agent="koatty_serve-native-WsServer" ;;
    ws) agent="ws-$(node -p "require('./node_modules/ws/package.json').version")-WebSocketServer" ;;
  esac
  local info port pid
  exec 3< <(node bench/ws/echo-server.js "$impl" 0)
  read -r info <&3
  port=$(node -p "JSON.parse(process.argv[1]).port" "$info")
  pid=$(node -p "JSON.parse(process.argv[1]).pid" "$info")
  echo "$impl echo server: $info"
  mkdir -p "$AB_OUT/$impl"
  cat > "$AB_OUT/$impl/fuzzingclient.json" <<EOF
{
  "outdir": "$AB_OUT/$impl",
  "servers": [{ "agent": "$agent", "url": "ws://127.0.0.1:$port" }],
  "cases": $AB_CASES,
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF
  local t0=$SECONDS
  wstest -m fuzzingclient -s "$AB_OUT/$impl/fuzzingclient.json" > "$AB_OUT/$impl/wstest.log" 2>&1 || true
  echo "$impl: fuzzingclient finished in $((SECONDS - t0)) s (log $AB_OUT/$impl/wstest.log)"
  kill "$pid" 2>/dev/null || true
  exec 3<&-
  python3 - "$AB_OUT/$impl/index.json" "$ROOT/docs/autobahn/index-$impl.json" <<'EOF'
import json, sys, collections
src, dst = sys.argv[1], sys.argv[2]
d = json.load(open(src))
out = {a: {k: {kk: vv for kk, vv in v.items() if kk != 'reportfile'} for k, v in c.items()} for a, c in d.items()}
json.dump(out, open(dst, 'w'), indent=1, sort_keys=True)
key = lambda k: [int(x) for x in k.split('.')]
for agent, cases in out.items():
    count = collections.Counter(v['behavior'] for v in cases.values())
    print(f"{agent}: {len(cases)} cases: " + ', '.join(f"{b} {n}" for b, n in sorted(count.items())))
    for k in sorted(cases, key=key):
        v = cases[k]
        if v['behavior'] != 'OK' or v['behaviorClose'] != 'OK':
            print(f"  {k}: {v['behavior']} / close {v['behaviorClose']} (remote close code {v['remoteCloseCode']})")
EOF
}

mkdir -p docs/autobahn
case $WHICH in
  native) run_one native ;;
  ws) run_one ws ;;
  both) run_one native; run_one ws ;;
  *) echo "usage: $0 [native|ws|both]" >&2; exit 2 ;;
esac
