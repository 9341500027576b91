#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang, ASan and UBSan into build-fuzz/
# (or $1): a separate Meson build of the whole core with coverage instrumentation
# (-fsanitize=fuzzer-no-link), so the normal gcc build in build/ is untouched.
# Exit 77 when clang or libFuzzer's runtime (libclang-rt-14-dev) is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build-fuzz}
command -v clang >/dev/null || { echo "SKIPPED: clang not installed" >&2; exit 77; }
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' |
     clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then
  echo "SKIPPED: clang cannot link libFuzzer (install libclang-rt-14-dev)" >&2; exit 77
fi
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" -Dfuzz=enabled -Dtests=disabled -Dbuildtype=debugoptimized \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dc_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -gline-tables-only" >&2
fi
meson compile -C "$dir" fuzz_envelope fuzz_jwt fuzz_schema fuzz_sse >&2
