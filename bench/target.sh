#!/usr/bin/env bash
# luagent as a target of ../shared/bench (see its README, "Adding a target"): one worker on
# 127.0.0.1:PORT serving this repository's agents. Variants (BENCH_VARIANT):
#   (none)      access log off, like the nginx-lua anchor (LUAGENT_LOG_LEVEL=warn)
#   accesslog   one JSON access-log line per request (LUAGENT_LOG_LEVEL=info), the production default
set -euo pipefail
PORT=${1:?usage: bench/target.sh PORT}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -x "$ROOT/build/luagent" ]; then
  (cd "$ROOT" && { [ -f build/build.ninja ] || meson setup build; } && meson compile -C build) >&2
fi
export LUAGENT_LISTEN=127.0.0.1:$PORT LUAGENT_WORKERS=1 LUAGENT_AUTH=off
export LUAGENT_AGENTS_DIR=${BENCH_AGENTS_DIR:-$ROOT/agents} LUAGENT_PROVIDERS_DIR=$ROOT/providers
export OPENAI_BASE_URL=${UPSTREAM_URL:-http://127.0.0.1:18081}/v1 LUAGENT_DEFAULT_MODEL=gpt-4o-mini
case "${BENCH_VARIANT:-}" in
  "") export LUAGENT_LOG_LEVEL=warn ;;
  accesslog) export LUAGENT_LOG_LEVEL=info ;;
  *) echo "bench/target.sh: unknown BENCH_VARIANT '$BENCH_VARIANT'" >&2; exit 2 ;;
esac
cd "${BENCH_WORKDIR:-/tmp}"   # no stray .env
exec "$ROOT/build/luagent" serve
