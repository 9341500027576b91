#!/usr/bin/env bash
# bench/rate.sh VARIANT RATE: W1 (echo) at a fixed open-loop rate (h2load --rps, 64 connections,
# 10 s after a 3 s warm-up) against bench/target.sh's VARIANT ("" for the baseline), the server on
# CPU 0 and h2load on CPU 1 as ../shared/bench/run.sh places them. Prints CPU 0's busy share and
# the server-core µs per request: two variants compared at the same throughput, which run.sh's
# closed loop cannot do when one of them (recording: PostgreSQL on the load core) caps it.
set -u
variant=$1; total=$2; port=${PORT:-18090}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BENCH_VARIANT=$variant BENCH_WORKDIR=${BENCH_WORKDIR:-/tmp/luagent-rate}
mkdir -p "$BENCH_WORKDIR"
setsid taskset -c 0 bash "$ROOT/bench/target.sh" $port > "$BENCH_WORKDIR/server.log" 2>&1 &
pid=$!
for i in $(seq 100); do curl -s localhost:$port/health >/dev/null && break; sleep 0.2; done
body='{"task":{"kind":"echo","input":"hello from the bench","params":{"n":1,"tags":["a","b"]}},"context":{"session_id":"bench-0001","user":"bench","trace":true}}'
echo "$body" > "$BENCH_WORKDIR/body"
taskset -c 1 h2load --h1 -c 64 -D 3 --rps $((total / 64)) -d "$BENCH_WORKDIR/body" -H 'Content-Type: application/json' http://127.0.0.1:$port/api/v1/agents/echo/execute >/dev/null 2>&1
read -r _ u1 n1 s1 i1 w1 q1 sq1 st1 _ < <(grep '^cpu0 ' /proc/stat)
out=$(taskset -c 1 h2load --h1 -c 64 -D 10 --rps $((total / 64)) -d "$BENCH_WORKDIR/body" -H 'Content-Type: application/json' http://127.0.0.1:$port/api/v1/agents/echo/execute 2>&1)
read -r _ u2 n2 s2 i2 w2 q2 sq2 st2 _ < <(grep '^cpu0 ' /proc/stat)
busy=$(( (u2+n2+s2+q2+sq2+st2) - (u1+n1+s1+q1+sq1+st1) )); idle=$(( (i2+w2) - (i1+w1) ))
done_=$(echo "$out" | awk '/^requests:/ {print $8}')
pct=$(echo "scale=3; $busy*100/($busy+$idle)" | bc)
echo "${variant:-baseline} rate=$total done=$done_ busy=${pct}% us/req=$(echo "scale=2; $pct*10000/($done_/10)" | bc)"
echo "$out" | grep -E "^requests:|status codes" 
kill -TERM -$pid 2>/dev/null; kill -TERM $pid 2>/dev/null; sleep 2
