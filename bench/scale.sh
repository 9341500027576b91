#!/usr/bin/env bash
# Scale run: N (10,000) concurrent executions of the `ai` agent on ONE worker, each waiting on the
# mock LLM (the shared bench's nginx mock with its delay raised to DELAY s so they are all in flight
# together). Reports how many completed with 2xx and the server's RSS per in-flight call:
# (peak RSS - RSS before the run) / N.
#   bench/scale.sh          env: N (10000), DELAY (2), PORT (18090), UPSTREAM_PORT (18091), SHARED (../shared)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
N=${N:-10000} DELAY=${DELAY:-2} PORT=${PORT:-18090} UPSTREAM_PORT=${UPSTREAM_PORT:-18091}
command -v h2load >/dev/null || { echo "scale: needs h2load (nghttp2-client; bash $SHARED/bench/setup.sh)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d)
cleanup() { kill "$SRV" "$MOCK" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/mock"
sed -e "s#@PORT@#$UPSTREAM_PORT#g" -e "s#@WORKDIR@#$WORK/mock#g" -e "s#echo_sleep 0.05;#echo_sleep $DELAY;#" \
    "$SHARED/bench/mock/upstream.conf" >"$WORK/mock/nginx.conf"
taskset -c 1 nginx -p "$WORK/mock" -e stderr -c "$WORK/mock/nginx.conf" 2>"$WORK/mock.log" &
MOCK=$!
UPSTREAM_URL=http://127.0.0.1:$UPSTREAM_PORT BENCH_WORKDIR=$WORK taskset -c 0 "$ROOT/bench/target.sh" "$PORT" 2>"$WORK/server.log" &
SRV=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done
BODY='{"task":{"prompt":"Why do event loops scale for I/O-bound servers? One sentence."},"context":{}}'
curl -s -o /dev/null -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$PORT/api/v1/agents/ai/execute"
pid=$(pgrep -P "$SRV" luagent || echo "$SRV")
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
base=$(rss_kb)
printf '%s' "$BODY" >"$WORK/body.json"
( peak=0; while kill -0 "$pid" 2>/dev/null; do r=$(rss_kb || echo 0); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$WORK/peak"; sleep 0.05; done ) &
WATCH=$!
taskset -c 1 h2load --h1 -n "$N" -c "$N" -m 1 -t 1 -T 60 -H 'Content-Type: application/json' -d "$WORK/body.json" \
  "http://127.0.0.1:$PORT/api/v1/agents/ai/execute" >"$WORK/h2load.out" 2>&1 || true
kill "$WATCH" 2>/dev/null || true
peak=$(cat "$WORK/peak")
ok=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' "$WORK/h2load.out")
grep -E "^finished in|^requests:|^status codes:" "$WORK/h2load.out"
echo "scale: $N in flight on one worker: ${ok:-0} x 2xx; RSS before ${base} KiB, peak ${peak} KiB," \
     "$(( (peak - base) * 1024 / N )) bytes per in-flight call"
[ "${ok:-0}" = "$N" ]
