#!/usr/bin/env bash
# Install what is missing, build, and run every test:
#   1. the release build, what users and distributions build (every suite),
#   2. an ASan+UBSan build, -O1 with line tables only (every suite),
#   3. a TSan build, debugoptimized (the 'concurrency' suite).
# Every build is made with -Werror (-Dwerror=true), the release one
# included, so that a warning at -O3 cannot come back unseen; meson.build
# itself keeps -Werror out of users' release and plain builds.
# Idempotent; each build directory is reused. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

passed=0; failed=0; skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Run one build's tests and add meson's counts to the totals.
run_suite() {
  local dir=$1; shift
  echo "== tests: $dir $*"
  local rc=0
  meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" | tee "$log" || rc=$?
  count() { awk -v k="$1:" '$1 == k {n += $2} END {print n + 0}' "$log"; }
  passed=$((passed + $(count Ok)))
  failed=$((failed + $(count Fail) + $(count Timeout)))
  skipped=$((skipped + $(count Skipped)))
  if [ "$rc" -ne 0 ]; then
    echo "tests: $passed passed, $failed failed, $skipped skipped"
    exit "$rc"
  fi
}

scripts/build.sh build --buildtype=release -Dwerror=true
run_suite build

# -O1 -g1 (line tables: stack traces keep file:line), as ASan's own docs
# advise: UBSan's checks make -O2 -g compile 2.5x slower (hmmctl/main.cpp: 72
# s against 29 s), and this build was more than half of the command's time.
scripts/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=false -Dwerror=true \
  -Doptimization=1 -Dcpp_args=-g1
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan

scripts/build.sh build-tsan -Db_sanitize=thread -Db_lundef=false -Dbenchmarks=false -Dwerror=true
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_suite build-tsan --suite concurrency

echo "== all test runs passed"
echo "tests: $passed passed, $failed failed, $skipped skipped"
