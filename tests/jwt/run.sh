#!/usr/bin/env bash
# Verify JWTs minted by an independent library (jose, pinned in package-lock.json; engines accept
# Node 18) with luagent's lg_jwt_verify: mint.mjs writes keys, tokens and expected verdicts into a
# temporary directory, the jwt_cases program (tests/jwt/verify_cases.c, built by meson with
# -Dtests=enabled) checks each. Ends with "N passed, N failed"; exit 77 when the npm registry
# cannot be reached (skipped), 1 on failures.
#
#   tests/jwt/run.sh      (LUAGENT_BUILD=build-asan to use another build directory; default build)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${LUAGENT_BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
cd "$HERE"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || exit 1
  else
    echo "tests/jwt: node and npm are required" >&2; exit 1
  fi
fi
echo "tests/jwt: node $(node --version), npm $(npm --version)"

# As tests/sdk/run.sh: exactly what the lock file says, the system CA store trusted, 77 when the
# registry is unreachable.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
  export npm_config_cafile=${npm_config_cafile:-/etc/ssl/certs/ca-certificates.crt}
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if ! npm ci --no-audit --no-fund --prefer-offline --loglevel=error; then
    if ! npm ping >/dev/null 2>&1; then
      echo "tests/jwt: SKIPPED: the npm registry cannot be reached from this machine (npm ping failed)"
      exit 77
    fi
    exit 1
  fi
fi

if [ -f "$BUILD/build.ninja" ]; then
  meson compile -C "$BUILD" >/dev/null || { echo "tests/jwt: building $BUILD failed"; exit 1; }
fi
if [ ! -x "$BUILD/jwt_cases" ]; then
  echo "tests/jwt: $BUILD/jwt_cases is missing (meson setup $BUILD -Dtests=enabled first)"; exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node mint.mjs "$work" || exit 1
"$BUILD/jwt_cases" "$work"
