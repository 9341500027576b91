#!/usr/bin/env bash
# Mint an ES256 key pair and a token for the `jwt` variant of bench/target.sh:
#   eval "$(bash bench/jwt-token.sh)"      # exports BENCH_AUTH and BENCH_JWT_PUBLIC_KEY
#   ../shared/bench/run.sh project project:jwt echo
# The token says role=operator and expires in 2 hours.
set -euo pipefail
DIR=${1:-${TMPDIR:-/tmp}/luagent-bench-jwt}
mkdir -p "$DIR"
openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/key.pem" 2>/dev/null
openssl ec -in "$DIR/key.pem" -pubout -out "$DIR/pub.pem" 2>/dev/null
TOKEN=$(DIR="$DIR" python3 - <<'PY'
import base64, json, os, subprocess, time
d = os.environ["DIR"]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
signing = b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode()) + "." + \
          b64(json.dumps({"sub": "bench", "role": "operator", "exp": int(time.time()) + 7200}).encode())
der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{d}/key.pem"], input=signing.encode(),
                     capture_output=True, check=True).stdout
i = 3 if der[1] & 0x80 else 2          # DER SEQUENCE { INTEGER r, INTEGER s } -> raw r || s
r = der[i + 2:i + 2 + der[i + 1]]; i += 2 + der[i + 1]
s = der[i + 2:i + 2 + der[i + 1]]
raw = r.lstrip(b"\0").rjust(32, b"\0") + s.lstrip(b"\0").rjust(32, b"\0")
print(signing + "." + b64(raw))
PY
)
echo "export BENCH_AUTH='Bearer $TOKEN' BENCH_JWT_PUBLIC_KEY='$DIR/pub.pem'"
