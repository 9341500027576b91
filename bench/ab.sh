#!/usr/bin/env bash
# Alternating A/B runs of W2 (ai) or W3 (ai-rate) between builds of this project. One harness run
# puts each target in whatever phase the machine is in (this VM drifts by tens of percent for
# minutes at a time), so two builds are compared round by round, the order reversed every other
# round (A B, B A, A B, ...: the first run of a round tends to do worse), each on a fresh server,
# with the shared bench's mock LLM and the same load as ../shared/bench/run.sh.
#
#   bench/ab.sh NAME=TREE[,VAR=VALUE...] ...     e.g. bench/ab.sh base=/tmp/base new=.
#                                                      bench/ab.sh plain=. log=.,LUAGENT_LOG_LEVEL=info
#   env: WORKLOAD (ai | ai-rate), ROUNDS (3), DURATION (8 s measured), WARMUP (2 s), RATE (10000, ai-rate),
#        PORT (18600), UPSTREAM_PORT (18601), SERVER_CPU (0), LOAD_CPU (1), SHARED (../shared)
#
# Each TREE is a checkout with a built build/luagent, served by its bench/target.sh (so BENCH_VARIANT
# works too). Per run: req/s, share of the ceiling (W2: of 1000 / 50 ms; W3: of RATE), p50 and p99
# latency, server-core and load-core µs per request and busy %, peak RSS. Then each target's medians.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
WORKLOAD=${WORKLOAD:-ai} ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} WARMUP=${WARMUP:-2} RATE=${RATE:-10000}
PORT=${PORT:-18600} UPSTREAM_PORT=${UPSTREAM_PORT:-18601} SERVER_CPU=${SERVER_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
[ $# -ge 1 ] || { sed -n '6,9p' "$0" >&2; exit 2; }
case $WORKLOAD in ai | ai-rate) ;; *) echo "ab: WORKLOAD is ai or ai-rate" >&2; exit 2 ;; esac
for c in wrk h2load nginx curl taskset; do
  command -v $c >/dev/null || { echo "ab: needs $c (bash $SHARED/bench/setup.sh)" >&2; exit 2; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d)
MOCK="" SRV=""
stop() { # pid: the process group started by setsid
  [ -n "$1" ] || return 0
  kill -TERM -- "-$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 -- "-$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null || true
}
cleanup() { stop "$SRV"; stop "$MOCK"; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/mock"
sed -e "s#@PORT@#$UPSTREAM_PORT#g" -e "s#@WORKDIR@#$WORK/mock#g" "$SHARED/bench/mock/upstream.conf" >"$WORK/mock/nginx.conf"
setsid taskset -c "$LOAD_CPU" nginx -p "$WORK/mock" -e stderr -c "$WORK/mock/nginx.conf" 2>"$WORK/mock.log" &
MOCK=$!

URL=http://127.0.0.1:$PORT/api/v1/agents/ai/execute
BODY='{"task":{"prompt":"Why do event loops scale for I/O-bound servers? One sentence."},"context":{"session_id":"bench-0001","user":"bench"}}'
printf '%s' "$BODY" >"$WORK/body.json"
cpu_ticks() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
tree_hwm() { # peak RSS (KiB) of the process group $1 (the server, started by setsid)
  local sum=0 p
  for p in $(pgrep -g "$1" 2>/dev/null); do
    sum=$((sum + $(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo $sum
}

# one run: NAME TREE VARS -> one result line in $WORK/results
run_one() {
  local name=$1 tree=$2 vars=$3 out=$WORK/load.txt
  [ -x "$tree/build/luagent" ] || { echo "ab: $tree/build/luagent is not built" >&2; exit 2; }
  # shellcheck disable=SC2086 # VAR=VALUE words
  setsid env ${vars//,/ } UPSTREAM_URL=http://127.0.0.1:$UPSTREAM_PORT BENCH_WORKDIR=$WORK \
    taskset -c "$SERVER_CPU" "$tree/bench/target.sh" "$PORT" >"$WORK/server.log" 2>&1 </dev/null &
  SRV=$!
  local code=""
  for _ in $(seq 300); do
    code=$(curl -s -o "$WORK/reply" -w '%{http_code}' -H 'Content-Type: application/json' -d "$BODY" "$URL" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "ab: $name did not answer 200 (got '$code'); log: $(tail -3 "$WORK/server.log")" >&2; exit 1; }
  local s0 s1 l0 l1 n secs ceiling p50 p99
  if [ "$WORKLOAD" = ai ]; then
    taskset -c "$LOAD_CPU" wrk -t1 -c1000 --timeout 5s -d"${WARMUP}s" -s "$SHARED/bench/wrk/ai.lua" "$URL" >/dev/null 2>&1
    s0=$(cpu_ticks "$SERVER_CPU"); l0=$(cpu_ticks "$LOAD_CPU")
    taskset -c "$LOAD_CPU" wrk -t1 -c1000 --timeout 5s -d"${DURATION}s" -s "$SHARED/bench/wrk/ai.lua" "$URL" >"$out" 2>&1
    s1=$(cpu_ticks "$SERVER_CPU"); l1=$(cpu_ticks "$LOAD_CPU")
    read -r n secs p50 p99 < <(awk '/^BENCH/ {for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
      print v["requests"], v["duration_us"] / 1e6, v["p50_us"] / 1000, v["p99_us"] / 1000}' "$out") || true # none: reported below
    ceiling=20000
  else
    local conns=500
    rm -f "$out.log"
    taskset -c "$LOAD_CPU" h2load --h1 -c$conns --rps=$(((RATE + conns - 1) / conns)) -H 'Content-Type: application/json' \
      -d "$WORK/body.json" -D "$DURATION" --warm-up-time="$WARMUP" --log-file="$out.log" "$URL" >"$out" 2>&1 &
    local h=$!
    sleep "$WARMUP"
    s0=$(cpu_ticks "$SERVER_CPU"); l0=$(cpu_ticks "$LOAD_CPU")
    wait $h
    s1=$(cpu_ticks "$SERVER_CPU"); l1=$(cpu_ticks "$LOAD_CPU")
    read -r n p50 p99 < <(sort -n -k3,3 "$out.log" | awk '{lat[NR] = $3} END {
      i50 = int(NR * 0.5); i99 = int(NR * 0.99); if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1
      print NR, lat[i50] / 1000, lat[i99] / 1000}')
    secs=$DURATION
    ceiling=$RATE
  fi
  local hwm
  hwm=$(tree_hwm "$SRV")
  stop "$SRV"; SRV=""
  [ "${n:-0}" -gt 0 ] || { echo "ab: $name completed no request" >&2; exit 1; }
  set -- $s0 $s1 $l0 $l1
  awk -v name="$name" -v n="$n" -v secs="$secs" -v ceil="$ceiling" -v p50="$p50" -v p99="$p99" -v hwm="$hwm" \
      -v sb="$(($3 - $1))" -v st="$(($4 - $2))" -v lb="$(($7 - $5))" -v lt="$(($8 - $6))" 'BEGIN {
    rps = n / secs
    printf "%-10s %8.0f %6.1f%% %7.2f %7.2f %7.1f %5.1f%% %7.1f %5.1f%% %6.1f\n", name, rps, 100 * rps / ceil, p50, p99,
      sb * 10000 / n, 100 * sb / st, lb * 10000 / n, 100 * lb / lt, hwm / 1024 }' | tee -a "$WORK/results"
}

echo "$WORKLOAD: $ROUNDS rounds of ${DURATION}s after ${WARMUP}s, server on CPU $SERVER_CPU, load + mock on CPU $LOAD_CPU"
printf '%-10s %8s %7s %7s %7s %7s %6s %7s %6s %6s\n' target req/s share p50_ms p99_ms srv_us srv% load_us load% RSS_MiB
targets=("$@")
for r in $(seq "$ROUNDS"); do
  order=("${targets[@]}")
  if [ $((r % 2)) -eq 0 ]; then # every other round in reverse (A B, B A, ...): the first run of a round tends to do worse
    order=()
    for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[i]}"); done
  fi
  for t in "${order[@]}"; do
    name=${t%%=*} spec=${t#*=}
    tree=${spec%%,*} vars=""
    [ "$spec" = "$tree" ] || vars=${spec#*,}
    run_one "$name" "$(cd "$tree" && pwd)" "$vars"
  done
done
echo "medians:"
for t in "$@"; do
  name=${t%%=*}
  awk -v name="$name" '$1 == name {for (i = 2; i <= 10; i++) v[i, ++c[i]] = $i + 0}
    END {printf "%-10s", name
         for (i = 2; i <= 10; i++) {n = c[i]; for (a = 1; a <= n; a++) for (b = a + 1; b <= n; b++) if (v[i, b] < v[i, a]) {x = v[i, a]; v[i, a] = v[i, b]; v[i, b] = x}
           m = n % 2 ? v[i, (n + 1) / 2] : (v[i, n / 2] + v[i, n / 2 + 1]) / 2
           printf(i == 2 ? " %8.0f" : i == 3 || i == 7 || i == 9 ? " %6.1f%%" : " %7.2f", m)}
         printf "\n"}' "$WORK/results"
done
