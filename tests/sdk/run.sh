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

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || exit 1
  else
    echo "tests/sdk: node and npm are required" >&2; exit 1
  fi
fi
echo "tests/sdk: node $(node --version), npm $(npm --version)"

# Install exactly what the lock file says; reuse node_modules when it already matches. Trust the
# system CA store (where a machine's TLS-inspecting proxy CA lives), not only Node's built-in list.
# When the registry cannot be reached at all, say so and exit 77 (skipped): that is the machine's
# network, not a finding about the fakes.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
  export npm_config_cafile=${npm_config_cafile:-/etc/ssl/certs/ca-certificates.crt}
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if ! npm ci --no-audit --no-fund --prefer-offline --loglevel=error; then
    if ! npm ping >/dev/null 2>&1; then
      echo "tests/sdk: SKIPPED: the npm registry cannot be reached from this machine (npm ping failed)"
      exit 77
    fi
    exit 1
  fi
fi

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
