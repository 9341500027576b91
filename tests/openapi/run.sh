#!/usr/bin/env bash
# Lint the OpenAPI document a running luagent serves with Redocly's linter (@redocly/cli, pinned in
# package-lock.json; engines accept Node 18): start `luagent serve` (auth required) on a scratch
# agents directory with agents that declare input schemas, fetch /openapi.json without a credential,
# lint it with redocly.yaml (recommended rules, warnings raised to errors), hot-swap an agent to a new
# schema and lint the new document, and check that the linter does fail a broken document. Ends
# with "N passed, N failed"; exit 77 when the npm registry cannot be reached (skipped), 1 on failures.
#
#   tests/openapi/run.sh      (LUAGENT_BIN=path/to/luagent; default build/luagent)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${LUAGENT_BIN:-$ROOT/build/luagent}
cd "$HERE"

. "$HERE/../npm_setup.sh"
npm_setup tests/openapi

if [ ! -x "$BIN" ]; then echo "tests/openapi: $BIN is missing (build it first)"; echo "0 passed, 1 failed"; exit 1; fi

work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/agents/team" "$work/providers"
cat >"$work/agents/order.lua" <<'LUA'
return {
  description = "Place an order <b>not markup</b>",
  input = {type = "object", required = {"customer", "items"}, additionalProperties = false,
           properties = {customer = {type = "string", minLength = 1, pattern = "^[a-z]+$"},
                         priority = {enum = {"low", "high"}},
                         items = {type = "array", minItems = 1,
                                  items = {type = "object", required = {"sku", "qty"},
                                           properties = {sku = {type = "string"},
                                                         qty = {type = "integer", minimum = 1}}}}}},
  execute = function(task) return {count = #task.items} end,
}
LUA
cat >"$work/agents/team/review.lua" <<'LUA'
return {input = {type = {"string", "object"}, maxLength = 100}, execute = function(task) return task end}
LUA
cat >"$work/agents/anything.lua" <<'LUA'
return {description = "No input schema: any task", execute = function(task) return task end}
LUA

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$work" && exec env -u DATABASE_URL -u REDIS_URL LUAGENT_LISTEN="127.0.0.1:$port" LUAGENT_AGENTS_DIR="$work/agents" \
  LUAGENT_PROVIDERS_DIR="$work/providers" LUAGENT_AUTH=required LUAGENT_API_KEYS_FILE="$work/api_keys" \
  LUAGENT_WORKERS=1 LUAGENT_LOG_LEVEL=warn "$BIN" serve >"$work/stdout" 2>"$work/stderr") &
pid=$!

# fetch PATH OUT: GET without a credential; prints the status and the ETag
fetch() {
  python3 - "$port" "$1" "$2" <<'PY'
import sys, urllib.request, urllib.error
port, path, out = sys.argv[1:]
try:
    r = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10)
    status, etag, body = r.status, r.headers.get("etag", ""), r.read()
except urllib.error.HTTPError as e:
    status, etag, body = e.code, "", e.read()
except OSError:
    status, etag, body = 0, "", b""
open(out, "wb").write(body)
print(status, etag)
PY
}

for _ in $(seq 200); do
  [ "$(fetch /health "$work/h" | cut -d' ' -f1)" = 200 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done

passed=0 failed=0
check() { # check NAME COMMAND...: runs the command, counts it
  local name=$1; shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1)); echo "ok - $name"
  else
    failed=$((failed + 1)); echo "not ok - $name"; echo "$out" | tail -n 60 | sed 's/^/    /'
  fi
}
# no update check, no telemetry: the linter talks to nobody
lint() { REDOCLY_SUPPRESS_UPDATE_NOTICE=true REDOCLY_TELEMETRY=off node node_modules/@redocly/cli/bin/cli.js lint \
           --config "$HERE/redocly.yaml" --format=codeframe "$@"; }
has_ops() { # has_ops FILE OPERATION_ID...: the document is JSON and has these operations
  python3 - "$@" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
ids = {op.get("operationId") for item in doc["paths"].values() for op in item.values() if isinstance(op, dict)}
missing = [i for i in sys.argv[2:] if i not in ids]
assert not missing, f"operations missing: {missing} (have {sorted(i for i in ids if i)})"
PY
}

read -r status etag1 < <(fetch /openapi.json "$work/v1.json")
check "GET /openapi.json answers 200 without a credential (auth required)" test "$status" = 200
check "the document has an operation per agent" has_ops "$work/v1.json" execute_order execute_team.review execute_anything

# hot swap: a new version of order.lua with another schema; the document follows
cat >"$work/agents/order.lua" <<'LUA'
return {
  description = "Place an order, version 2",
  input = {type = "object", required = {"sku"}, properties = {sku = {type = "string", maxLength = 32},
                                                               gift = {type = "boolean", default = false}}},
  execute = function(task) return task.sku end,
}
LUA
swapped=
for _ in $(seq 100); do
  read -r status etag2 < <(fetch /openapi.json "$work/v2.json")
  if [ "$status" = 200 ] && [ "$etag2" != "$etag1" ]; then swapped=1; break; fi
  sleep 0.05
done
check "the document changes after a hot swap (ETag $etag1 -> ${etag2:-none})" test -n "$swapped"
check "redocly lint passes on the live document and on the one after the swap (warnings count as errors)" \
  lint "$work/v1.json" "$work/v2.json"

# the linter can fail: the same document with a dangling \$ref must not pass
python3 - "$work/v2.json" "$work/broken.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
del doc["components"]["schemas"]["Error"]
json.dump(doc, open(sys.argv[2], "w"))
PY
lint_fails() { ! lint "$@"; }
check "redocly lint fails a document with a dangling \$ref" lint_fails "$work/broken.json"

if ! kill -0 "$pid" 2>/dev/null; then
  failed=$((failed + 1)); echo "not ok - the server died:"; tail -n 20 "$work/stderr"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
