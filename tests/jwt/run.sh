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

. "$HERE/../npm_setup.sh"
npm_setup tests/jwt

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
