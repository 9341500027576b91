#!/usr/bin/env bash
# Drive the OpenAI-compatible face (/v1) with the official openai SDK (pinned in package-lock.json;
# engines accept Node 18): start build/luagent on a free loopback port with authentication on, the
# sample agents and the offline mock provider, make an operator API key with `luagent keys create`,
# and run check.mjs with that key as the SDK's apiKey. Ends with "N passed, N failed"; exit 77 when
# the npm registry cannot be reached (skipped), 1 on failures.
#
#   tests/compat/run.sh      (LUAGENT_BUILD=build-asan to use another build directory; default build)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${LUAGENT_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
cd "$HERE"

. "$HERE/../npm_setup.sh"
npm_setup tests/compat

if [ -f "$BUILD/build.ninja" ]; then
  meson compile -C "$BUILD" >/dev/null || { echo "tests/compat: building $BUILD failed"; exit 1; }
fi
BIN=$BUILD/luagent
if [ ! -x "$BIN" ]; then echo "tests/compat: $BIN is missing (meson setup $BUILD first)"; exit 1; fi

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
# only what this server is told: nothing from the caller's LUAGENT_*, provider keys or services
unset DATABASE_URL REDIS_URL GOOGLE_API_KEY
for v in $(env | sed -n 's/^\(\(LUAGENT\|OPENAI\|ANTHROPIC\|GEMINI\)_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
export LUAGENT_AUTH=required LUAGENT_API_KEYS_FILE=$work/api_keys LUAGENT_AGENTS_DIR=$ROOT/agents \
       LUAGENT_PROVIDERS_DIR=$ROOT/providers LUAGENT_WORKERS=1 LUAGENT_SPILL_DIR=$work/spill
key=$("$BIN" keys create --name compat-sdk --role operator | sed -n 's/.*"key": *"\(lg_[^"]*\)".*/\1/p')
if [ -z "$key" ]; then echo "tests/compat: luagent keys create gave no key"; exit 1; fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/cwd"
(cd "$work/cwd" && LUAGENT_LISTEN=127.0.0.1:$port exec "$BIN" serve >"$work/out.log" 2>"$work/err.log") &
pid=$!
for _ in $(seq 200); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if ! curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
  echo "tests/compat: luagent did not start:"; tail -n 20 "$work/err.log"; exit 1
fi
echo "tests/compat: luagent at http://127.0.0.1:$port"

LUAGENT_URL=http://127.0.0.1:$port LUAGENT_KEY=$key node check.mjs
rc=$?
kill "$pid" 2>/dev/null; wait "$pid"; code=$?; pid=
if [ "$code" != 0 ]; then
  echo "tests/compat: luagent exited with $code after SIGTERM:"; tail -n 20 "$work/err.log"
  echo "0 passed, 1 failed"; exit 1
fi
exit $rc
