#!/usr/bin/env bash
# Run every libFuzzer target for SECONDS each (default 20) and end with `N passed, N failed`: a
# target passes when its run ends without a crash, sanitizer report, leak, timeout or failed
# check. Builds them first (tests/fuzz/build.sh, into build-fuzz/). Exit 77 (SKIPPED) when clang or
# libFuzzer's runtime is missing.
#
#   tests/fuzz/run.sh [SECONDS [TARGET...]]      TARGET: envelope jwt schema sse (default: all)
#
# Each target starts from its checked-in seeds (tests/fuzz/corpus/<target>, read only) plus a
# working corpus: $LUAGENT_FUZZ_CORPUS/<target> when that is set (kept between runs: bench/fuzz),
# else a temporary directory. Crash inputs go to $LUAGENT_FUZZ_ARTIFACTS (default: a temporary
# directory, printed on failure); replay one with `build-fuzz/fuzz_<target> <file>`.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}; shift || true
targets=("$@"); ((${#targets[@]})) || targets=(envelope jwt schema sse)

bash tests/fuzz/build.sh build-fuzz >&2; rc=$?
if [ "$rc" = 77 ]; then echo "tests/fuzz: SKIPPED"; exit 77; fi
if [ "$rc" != 0 ]; then echo "tests/fuzz: build failed"; echo "0 passed, 1 failed"; exit 1; fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
art=${LUAGENT_FUZZ_ARTIFACTS:-$tmp/artifacts}; mkdir -p "$art"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0
# The suppressions name functions: reports must be symbolized, and Debian's llvm-14 has the
# symbolizer only as llvm-symbolizer-14 (the unversioned name comes with the `llvm` package).
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ]; then
  for s in "$(command -v llvm-symbolizer)" /usr/lib/llvm-*/bin/llvm-symbolizer; do
    if [ -x "$s" ]; then export ASAN_SYMBOLIZER_PATH=$s; break; fi
  done
  [ -n "${ASAN_SYMBOLIZER_PATH:-}" ] || echo "tests/fuzz: no llvm-symbolizer: leak suppressions cannot apply" >&2
fi

passed=0 failed=0
for t in "${targets[@]}"; do
  bin=build-fuzz/fuzz_$t
  if [ ! -x "$bin" ]; then echo "FAIL fuzz_$t: no such target"; failed=$((failed + 1)); continue; fi
  work=${LUAGENT_FUZZ_CORPUS:+$LUAGENT_FUZZ_CORPUS/$t}; work=${work:-$tmp/corpus-$t}; mkdir -p "$work"
  log=$tmp/$t.log
  "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2560 -print_final_stats=1 \
         -artifact_prefix="$art/$t-" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1
  rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  files=$(find "$work" -type f | wc -l)
  if [ "$rc" = 0 ] && grep -q '^Done\|DONE' "$log"; then
    echo "ok fuzz_$t: ${execs:-?} execs in ${secs}s (${rate:-?}/s), corpus $files files"
    passed=$((passed + 1))
  else
    echo "FAIL fuzz_$t (exit $rc): ${execs:-?} execs; artifacts in $art"
    grep -E 'ERROR|SUMMARY|check failed|stream:|harness error|Test unit written|^    #[0-9]' "$log" | head -n 30
    [ -n "${LUAGENT_FUZZ_ARTIFACTS:-}" ] || { keep=$(mktemp -d /tmp/luagent-fuzz-XXXXXX); cp -r "$art/." "$keep/"; cp "$log" "$keep/"; echo "  kept in $keep"; }
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
