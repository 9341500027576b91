#!/usr/bin/env bash
# Hot swap under load: W1 (echo, 64 connections) against one worker for DURATION seconds while the
# echo agent's file is rewritten SWAPS times (alternating in-place writes and write-then-rename).
# Prints wrk's BENCH line and a verdict: every response must be 2xx, with no socket errors.
#   bench/hotswap.sh [PORT]      env: SWAPS (100), DURATION (10), SHARED (../shared)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${1:-18090} SWAPS=${SWAPS:-100} DURATION=${DURATION:-10}
SHARED=${SHARED:-$ROOT/../shared}
WORK=$(mktemp -d)
trap 'kill $SRV 2>/dev/null; wait $SRV 2>/dev/null; rm -rf "$WORK"' EXIT
cp "$ROOT/agents/echo.lua" "$WORK/echo.lua"
BENCH_AGENTS_DIR=$WORK BENCH_WORKDIR=$WORK taskset -c 0 "$ROOT/bench/target.sh" "$PORT" 2>"$WORK/server.log" &
SRV=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break; sleep 0.1; done
taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --timeout 5s -s "$SHARED/bench/wrk/echo.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.out" &
WRK=$!
sleep 1
gap=$(awk -v d="$DURATION" -v n="$SWAPS" 'BEGIN { printf "%.3f", (d - 2) / n }')
for i in $(seq "$SWAPS"); do
  body="-- version $i
return { description = \"echo, version $i\", execute = function(task, ctx) return task end }"
  if ((i % 2)); then printf '%s\n' "$body" >"$WORK/echo.lua"
  else printf '%s\n' "$body" >"$WORK/.echo.tmp" && mv "$WORK/.echo.tmp" "$WORK/echo.lua"; fi
  sleep "$gap"
done
wait $WRK
line=$(grep '^BENCH' "$WORK/wrk.out")
final=$(curl -s "http://127.0.0.1:$PORT/api/v1/agents/echo" | grep -o '"echo, version [0-9]*"' || true)
echo "$line swaps=$SWAPS serving=$final"
eval "$(echo "$line" | sed 's/^BENCH //' | tr ' ' '\n' | grep -E '^(requests|status|connect|read|write|timeout)=')"
errors=$((connect + read + write + timeout))
if [ "$status" = 0 ] && [ "$errors" = 0 ] && [ "$requests" -gt 0 ] && [ "$final" = "\"echo, version $SWAPS\"" ]; then
  echo "hotswap: PASS ($requests requests, 0 non-2xx, 0 socket errors, serving the last version)"
else
  echo "hotswap: FAIL ($status non-2xx, $errors socket errors)"; exit 1
fi
