# Sourced by the node test runners (tests/*/run.sh), in the directory holding package-lock.json:
# npm_setup NAME makes sure node and npm are there (installing Debian's as root when missing) and
# installs exactly what the lock file says, reusing node_modules when it already matches. It trusts
# the system CA store (where a machine's TLS-inspecting proxy CA lives), not only Node's built-in
# list. When the npm registry cannot be reached at all it says so and exits 77 (skipped): that is
# the machine's network, not a finding of the test.
npm_setup() {
  local name=$1
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || exit 1
    else
      echo "$name: node and npm are required" >&2; exit 1
    fi
  fi
  echo "$name: node $(node --version), npm $(npm --version)"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export NODE_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
    export npm_config_cafile=${npm_config_cafile:-/etc/ssl/certs/ca-certificates.crt}
  fi
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    # one quick ping first: npm ci against an unreachable registry retries for minutes
    if ! npm ping --fetch-retries=1 --fetch-timeout=20000 >/dev/null 2>&1; then
      echo "$name: SKIPPED: the npm registry cannot be reached from this machine (npm ping failed)"
      exit 77
    fi
    npm ci --no-audit --no-fund --prefer-offline --loglevel=error || exit 1
  fi
}
