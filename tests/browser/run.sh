#!/usr/bin/env bash
# The dashboard in a browser: playwright-core (pinned in package-lock.json; engines accept Node 18)
# drives Debian's chromium headless against a luagent this script starts with authentication on
# (an operator key made with `luagent keys create` in a keys file), the sample agent summarize and
# the test agents in tests/browser/agents. Screenshots go to tests/browser/artifacts/. Ends with
# "N passed, N failed"; exit 77 when the npm registry or chromium is unavailable (skipped).
#
#   tests/browser/run.sh      (LUAGENT_BUILD=build-asan to use another build directory; default build)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${LUAGENT_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/luagent
cd "$HERE"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "tests/browser: SKIPPED: $CHROMIUM is missing (Debian package chromium)"; exit 77
fi
. "$HERE/../npm_setup.sh"
npm_setup tests/browser

if [ -f "$BUILD/build.ninja" ]; then
  meson compile -C "$BUILD" >/dev/null || { echo "tests/browser: building $BUILD failed"; exit 1; }
fi
[ -x "$BIN" ] || { echo "tests/browser: $BIN is missing (meson setup build first)"; exit 1; }

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/agents" artifacts
cp agents/*.lua "$ROOT/agents/summarize.lua" "$work/agents/"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export LUAGENT_API_KEYS_FILE=$work/keys LUAGENT_AGENTS_DIR=$work/agents LUAGENT_PROVIDERS_DIR=$ROOT/providers \
       LUAGENT_WEB_DIR=$ROOT/web LUAGENT_LISTEN=127.0.0.1:$port LUAGENT_WORKERS=2 LUAGENT_AUTH=required \
       LUAGENT_SPILL_DIR=$work/spill
unset DATABASE_URL REDIS_URL OPENAI_API_KEY ANTHROPIC_API_KEY GEMINI_API_KEY GOOGLE_API_KEY LUAGENT_DEFAULT_MODEL
cd "$work"   # no .env from the repository
key=$("$BIN" keys create --name browser --role operator | grep -o 'lg_[A-Za-z0-9_-]*' | head -1)
[ -n "$key" ] || { echo "tests/browser: could not create an API key"; exit 1; }
"$BIN" serve >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if ! curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
  echo "tests/browser: the server did not start:"; tail -20 "$work/server.log"; echo "0 passed, 1 failed"; exit 1
fi
cd "$HERE"
out=$(BASE_URL="http://127.0.0.1:$port" API_KEY=$key node dashboard.mjs)
rc=$?
echo "$out" | grep -vE '^[0-9]+ passed, [0-9]+ failed$'
[ "$rc" = 77 ] && exit 77
line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
p=$(echo "${line:-0 passed, 1 failed}" | awk '{print $1}') f=$(echo "${line:-0 passed, 1 failed}" | awk '{print $3}')
# the server must stop cleanly on SIGTERM (under ASan: no leak report, exit 0)
kill -TERM "$pid"; wait "$pid"; src=$?; pid=
if [ "$src" = 0 ]; then p=$((p + 1)); echo "ok - the server exits 0 on SIGTERM"
else f=$((f + 1)); echo "not ok - the server exited $src on SIGTERM"; fi
if [ "$f" != 0 ]; then echo "tests/browser: server log:"; tail -20 "$work/server.log"; fi
echo "$p passed, $f failed"
[ "$f" = 0 ]
