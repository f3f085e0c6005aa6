#!/usr/bin/env bash
# Installs what is missing, then builds and runs the whole test suite four ways:
#   1. Release with -Werror (every test; the openai npm client test installs its pinned package
#      with npm ci first),
#   2. ASan + UBSan (every test),
#   3. TSan (the tests that run threads),
#   4. libFuzzer (clang-14, ASan + UBSan): every fuzz target for a few seconds from the committed
#      seed corpus (KVCACHE_FUZZ_SECONDS per target, default 5; long runs: scripts/fuzz.sh).
# Usage: bash scripts/test.sh            (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh clang-14 libclang-rt-14-dev nodejs npm
jobs=$(nproc)
for preset in ci asan tsan; do
  echo "=== $preset: configure and build ===" >&2
  cmake --preset "$preset" >/dev/null
  # TSan runs only the threaded library tests: build just that binary.
  targets=()
  [[ $preset == tsan ]] && targets=(--target kvcache_tests)
  cmake --build --preset "$preset" -j "$jobs" "${targets[@]}"
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "=== ci: tests ===" >&2
ctest --preset ci -j "$jobs" | tee -a "$log"
echo "=== asan: tests ===" >&2
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --preset asan -j "$jobs" | tee -a "$log"
echo "=== tsan: threaded tests ===" >&2
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --preset tsan -j "$jobs" -R "concurrent|threads" |
  tee -a "$log"
echo "=== fuzz: build and a short run of every target ===" >&2
KVCACHE_BUILD_JOBS="$jobs" bash scripts/fuzz.sh --fresh --seconds "${KVCACHE_FUZZ_SECONDS:-5}"
# One closing line over the three ctest runs (each stopped the script had anything failed).
passed=0
while read -r n; do passed=$((passed + n)); done < <(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$log")
echo "kvcache: ${passed} passed, 0 failed"
