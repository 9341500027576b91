#!/usr/bin/env bash
# Prove that the fake providers (tests/fakes/providers.py) speak what the official SDKs accept:
# install the pinned SDKs (package-lock.json, engines accept Node 18), start a fake on a free loopback
# port, run check.mjs against it, stop the fake. Exit status is check.mjs's.
#
#   tests/sdk/run.sh            (from anywhere; needs python3, node >= 18 and npm; as root on Debian it
#                                installs nodejs and npm with apt-get when they are missing)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"

. "$HERE/../npm_setup.sh"
npm_setup tests/sdk

out=$(mktemp)
python3 ../fakes/providers.py --port 0 >"$out" 2>&1 &
fake_pid=$!
trap 'kill "$fake_pid" 2>/dev/null; wait "$fake_pid" 2>/dev/null; rm -f "$out"' EXIT
url=
for _ in $(seq 100); do
  url=$(sed -n 's/^fake providers listening on //p' "$out")
  [ -n "$url" ] && break
  kill -0 "$fake_pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$url" ]; then echo "tests/sdk: the fake did not start:"; cat "$out"; exit 1; fi
echo "tests/sdk: fake providers at $url"

FAKE_URL=$url node check.mjs
