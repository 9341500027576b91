#!/usr/bin/env bash
# Check windmill/ with Windmill's own CLI (windmill-cli, pinned in package-lock.json; it declares no
# engines and runs on Node 18): `wmill lint` must validate every flow and schedule, and check.mjs
# holds each script's metadata and each flow step against Windmill's Python parser. The scripts and
# flows themselves run against a live luagent in tests/integration/test_windmill.py.
# Ends with "N passed, N failed"; exit 77 when the npm registry cannot be reached (skipped), 1 on failures.
#
#   tests/windmill/run.sh
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$HERE"

. "$HERE/../npm_setup.sh"
npm_setup tests/windmill

node check.mjs "$ROOT/windmill"
