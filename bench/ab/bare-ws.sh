#!/bin/bash
# usage: wscmp.sh ROOT IMPL -> msgs/s and CPU per message by thread for one 5 s run
ROOT=$1; IMPL=$2; TAG=$3
OUTF=/tmp/wscmp-$$.out
(node $ROOT/bench/ws/echo-server.js $IMPL 0 > $OUTF 2>&1 &) ; sleep 1.5
PORT=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$OUTF','utf8').split('\n')[0]).port)")
PID=$(node -e "console.log(JSON.parse(require('fs').readFileSync('$OUTF','utf8').split('\n')[0]).pid)")
${WS_LOAD:-ws-load} -c 64 -d 2 -w 0 -t 1 -m hello ws://127.0.0.1:$PORT/ >/dev/null 2>&1
snap() { for t in /proc/$PID/task/*; do echo "$(cat $t/comm | tr ' ' _) $(grep -E '^(voluntary|nonvoluntary)_ctxt' $t/status | awk '{s+=$2} END {print s}') $(awk '{print $14+$15}' $t/stat)"; done | awk '{c[$1]+=$2; u[$1]+=$3} END {for (k in c) print k, c[k], u[k]}' | sort; }
snap > $OUTF.a
OUT=$(${WS_LOAD:-ws-load} -c 64 -d 5 -w 0 -t 1 -m hello ws://127.0.0.1:$PORT/ 2>&1 | tail -1)
snap > $OUTF.b
MSGS=$(echo $OUT | sed -E 's/.* msgs=([0-9]+).*/\1/')
RATE=$(echo $OUT | sed -E 's/.*msgs_per_sec=([0-9.]+).*/\1/')
P99=$(echo $OUT | sed -E 's/.*p99_ms=([0-9.]+).*/\1/')
join $OUTF.a $OUTF.b | awk -v m=$MSGS -v tag=$TAG -v r=$RATE -v p=$P99 '{cpu+=($5-$3); cs+=($4-$2); line=line sprintf(" %s %.2fus/%.2fcs", $1, ($5-$3)*10000/m, ($4-$2)/m)} END {printf "%-8s %8.0f msg/s p99 %s ms total %.2f us/msg%s\n", tag, r, p, cpu*10000/m, line}'
kill $PID; rm -f $OUTF $OUTF.a $OUTF.b
