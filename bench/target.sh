#!/usr/bin/env bash
# luagent as a target of ../shared/bench (see its README, "Adding a target"): one worker on
# 127.0.0.1:PORT serving this repository's agents. Variants (BENCH_VARIANT):
#   (none)      recording off (no history, no database), access log off, metrics and tracing off
#               (LUAGENT_METRICS=off LUAGENT_TRACING=off), like the nginx-lua anchor
#   metrics     as (none) with metrics and tracing on (the production default): /metrics counters and
#               W3C traceparent handling on every request
#   accesslog   one JSON access-log line per request (LUAGENT_LOG_LEVEL=info), the production default
#   history     every execution recorded in the in-memory history (the default without DATABASE_URL)
#   recording   every execution recorded to PostgreSQL (and the in-memory history): a PostgreSQL 15
#               is started here in BENCH_WORKDIR, on the load core
#   apikey      authentication on, BENCH_AUTH's API key ("Bearer lg_" + 43 URL-safe characters, e.g.
#               BENCH_AUTH="Bearer lg_$(head -c 33 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-43)")
#               provisioned as an operator key (its SHA-256 in a keys file)
#   jwt         authentication on, BENCH_AUTH an ES256 JWT verified with BENCH_JWT_PUBLIC_KEY (a PEM):
#               eval "$(bash bench/jwt-token.sh)" makes both
set -euo pipefail
PORT=${1:?usage: bench/target.sh PORT}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -x "$ROOT/build/luagent" ]; then
  (cd "$ROOT" && { [ -f build/build.ninja ] || meson setup build; } && meson compile -C build) >&2
fi
WORK=${BENCH_WORKDIR:-/tmp}
export LUAGENT_LISTEN=127.0.0.1:$PORT LUAGENT_WORKERS=1 LUAGENT_AUTH=off LUAGENT_LOG_LEVEL=warn
export LUAGENT_AGENTS_DIR=${BENCH_AGENTS_DIR:-$ROOT/agents} LUAGENT_PROVIDERS_DIR=$ROOT/providers
unset LUAGENT_API_KEYS_FILE
export OPENAI_BASE_URL=${UPSTREAM_URL:-http://127.0.0.1:18081}/v1 LUAGENT_DEFAULT_MODEL=gpt-4o-mini
export LUAGENT_HISTORY_SIZE=0 LUAGENT_METRICS=off LUAGENT_TRACING=off

# A throwaway PostgreSQL in $WORK/pg on a free port, on the load core (LOAD_CPU, default 1, as
# run.sh uses), outside this process tree: the harness measures the server's own CPU and memory.
# A detached watcher stops it when the server (this pid, after exec) exits. As root it runs as the
# postgres user (it refuses root).
start_postgres() {
  local bin dir=$WORK/pg port=$((PORT + 1000)) as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  [ "$(id -u)" = 0 ] && as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
  rm -rf "$dir" && mkdir -p "$dir" && { [ "$(id -u)" != 0 ] || chown postgres: "$dir"; }
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U luagent --auth=trust --no-sync >/dev/null
  setsid -f taskset -c "${LOAD_CPU:-1}" "${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off >"$dir/log" 2>&1 </dev/null
  for _ in $(seq 100); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.1; done
  setsid -f bash -c "while kill -0 $$ 2>/dev/null; do sleep 0.5; done; kill -INT \$(head -1 '$dir/data/postmaster.pid')" \
    >/dev/null 2>&1 </dev/null
  export DATABASE_URL=postgresql://luagent@127.0.0.1:$port/postgres LUAGENT_SPILL_DIR=$WORK/spill
  rm -rf "$LUAGENT_SPILL_DIR"
}

case "${BENCH_VARIANT:-}" in
  "") ;;
  accesslog) export LUAGENT_LOG_LEVEL=info ;;
  metrics) export LUAGENT_METRICS=on LUAGENT_TRACING=on ;;
  history) unset LUAGENT_HISTORY_SIZE ;;
  recording) unset LUAGENT_HISTORY_SIZE; start_postgres ;;
  apikey)
    key=${BENCH_AUTH#Bearer }
    [[ $key =~ ^lg_[A-Za-z0-9_-]{43}$ ]] || { echo "bench/target.sh: apikey needs BENCH_AUTH='Bearer lg_...'" >&2; exit 2; }
    export LUAGENT_AUTH=required LUAGENT_API_KEYS_FILE=$WORK/api_keys
    printf '%s\toperator\t%s\t0\t0\t0\t0\t0\t*\tbench\n' "$(cat /proc/sys/kernel/random/uuid)" \
      "$(printf %s "$key" | sha256sum | cut -c1-64)" >"$LUAGENT_API_KEYS_FILE" ;;
  jwt)
    [ -r "${BENCH_JWT_PUBLIC_KEY:-}" ] || { echo "bench/target.sh: jwt needs BENCH_JWT_PUBLIC_KEY (bench/jwt-token.sh)" >&2; exit 2; }
    export LUAGENT_AUTH=required LUAGENT_JWT_PUBLIC_KEY=$BENCH_JWT_PUBLIC_KEY ;;
  *) echo "bench/target.sh: unknown BENCH_VARIANT '$BENCH_VARIANT'" >&2; exit 2 ;;
esac
cd "$WORK"   # no stray .env
exec "$ROOT/build/luagent" serve
