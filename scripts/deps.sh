# Sourced by scripts/run and scripts/test: install the Debian packages a command needs, once.
# Only what is missing is installed, so a second run costs one dpkg-query.

# Build and run: OpenResty's LuaJIT and its luajit (compiles lua/ into the binary; never Debian's
# luajit/libluajit-5.1-dev: they conflict),
# libh2o-evloop 2.2.5, OpenSSL, libcurl (luagent.http), libpq (PostgreSQL), hiredis (Redis),
# CA certificates for TLS upstreams, Meson.
LUAGENT_BUILD_PKGS=(gcc libc6-dev pkg-config meson ninja-build luajit2 libluajit2-5.1-dev libh2o-evloop-dev libssl-dev
                    libcurl4-openssl-dev libpq-dev libhiredis-dev ca-certificates)
# Tests: cmocka, busted (run under luajit2), Python for the integration suite and the fake
# providers, curl for the scripts, a real PostgreSQL and Redis (started by the suite on temporary
# ports), Node (Debian's 18 unless one is there) for the official SDKs, curl and nghttp for HTTP/2,
# clang, libFuzzer's runtime and llvm-symbolizer for tests/fuzz (clang only recommends
# libclang-rt-14-dev and llvm-14; without a symbolizer LeakSanitizer's suppressions match nothing).
LUAGENT_TEST_PKGS=(libcmocka-dev lua-busted luajit2 python3 curl nghttp2-client openssl procps postgresql-15
                   postgresql-client-15 redis-server clang libclang-rt-14-dev llvm-14)
LUAGENT_TEST_PKGS+=(prometheus) # promtool check metrics (tests/integration/test_metrics.py)
command -v node >/dev/null && command -v npm >/dev/null || LUAGENT_TEST_PKGS+=(nodejs npm)
# tests/integration: `docker-compose config` (Debian's v1, test_deploy.py) and PyYAML (the k8s manifests,
# and the Windmill flows in test_windmill.py).
LUAGENT_TEST_PKGS+=(docker-compose python3-yaml)
LUAGENT_TEST_PKGS+=(chromium)   # tests/browser: the dashboard driven by playwright-core

luagent_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Configure (once) and build the given build directory with extra meson options.
luagent_build() {
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >&2
  fi
  meson compile -C "$dir" >&2
}
