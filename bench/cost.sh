#!/usr/bin/env bash
# What one W2 request costs a running server: user and system CPU µs per request (from
# /proc/PID/stat), then, in a second window with perf attached, system calls per request by name
# (perf's syscall tracepoints, when perf can read them). Works for any target (this project,
# h2o-raw, nginx-lua), so their costs can be set side by side. Start the shared bench's mock LLM and
# the server, pinned to a core of its own, first; e.g. with the mock on port 18081:
#
#   mkdir -p /tmp/mock && sed -e 's#@PORT@#18081#g' -e 's#@WORKDIR@#/tmp/mock#g' \
#     ../shared/bench/mock/upstream.conf >/tmp/mock/nginx.conf && taskset -c 1 nginx -p /tmp/mock -c /tmp/mock/nginx.conf &
#   taskset -c 0 ../shared/bench/targets/h2o_raw/h2o_raw 18600 18081 &   bench/cost.sh $! 18600
#   UPSTREAM_URL=http://127.0.0.1:18081 taskset -c 0 bench/target.sh 18600 &   bench/cost.sh $! 18600
#
#   bench/cost.sh PID PORT        env: DURATION (8 s), WARMUP (2 s), CONNS (1000), LOAD_CPU (1), SHARED (../shared)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
PID=${1:?usage: bench/cost.sh PID PORT} PORT=${2:?usage: bench/cost.sh PID PORT}
DURATION=${DURATION:-8} WARMUP=${WARMUP:-2} CONNS=${CONNS:-1000} LOAD_CPU=${LOAD_CPU:-1}
URL=http://127.0.0.1:$PORT/api/v1/agents/ai/execute
load() { taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" --timeout 5s -d"$1s" -s "$SHARED/bench/wrk/ai.lua" "$URL" 2>&1; }
ticks() { awk '{print $14, $15}' "/proc/$PID/stat"; } # utime stime, in clock ticks
requests() { awk '/^BENCH/ {for (i = 2; i <= NF; i++) {split($i, kv, "="); if (kv[1] == "requests") print kv[2]}}' "$OUT"; } # of the last load

OUT=$(mktemp) && trap 'rm -f "$OUT" "$OUT.perf"' EXIT
load "$WARMUP" >/dev/null
read -r u0 s0 < <(ticks) # the CPU window, without perf attached (its tracepoints cost the server too)
load "$DURATION" >"$OUT"
read -r u1 s1 < <(ticks)
n=$(requests)
[ "${n:-0}" -gt 0 ] || { echo "cost: no request completed: $(tail -3 "$OUT")" >&2; exit 1; }
awk -v n="$n" -v d="$DURATION" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
  printf "%.0f req/s   user %.1f µs/req   system %.1f µs/req\n", n / d, u / hz * 1e6 / n, s / hz * 1e6 / n }'
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -p "$PID" -- true >/dev/null 2>&1; then
  events=raw_syscalls:sys_enter
  for s in read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_ctl accept4 connect \
           close socket setsockopt getsockopt fcntl ioctl futex mmap munmap madvise brk; do
    events+=,syscalls:sys_enter_$s
  done
  perf stat -x, -o "$OUT.perf" -e "$events" -p "$PID" -- sleep "$DURATION" &
  load "$DURATION" >"$OUT"
  wait
  n=$(requests)
  awk -F, -v n="${n:-0}" 'n > 0 && $1 + 0 > 0 {sub(/^(raw_)?syscalls:sys_enter_?/, "", $3)
    printf "  %-12s %6.2f per request\n", $3 == "" ? "all syscalls" : $3, $1 / n}' "$OUT.perf"
else
  echo "  (no system call counts: perf cannot read syscall tracepoints here)"
fi
exit 0
