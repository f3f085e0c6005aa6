#!/usr/bin/env bash
# Builds the libFuzzer targets (CMake preset "fuzz": clang-14, ASan + UBSan) and runs each one for
# a fixed time, starting from the committed seed corpus (tests/fuzz/corpus/<target>/).
#
# Usage: bash scripts/fuzz.sh [--seconds N] [--jobs J] [--merge] [--fresh] [--no-build] [target...]
#   --seconds N  time per target (default 10)
#   --jobs J     fuzzing processes per target (libFuzzer -fork=J; default 1)
#   --merge      afterwards, add the scratch inputs that bring new coverage to the committed corpus
#                (without it the committed corpus is never modified)
#   --fresh      start from the committed corpus only (drop earlier runs' scratch corpora)
#   --no-build   use the existing build/fuzz binaries
#   target...    a subset of: fuzz_checkpoint fuzz_tokenizer fuzz_token_file fuzz_snapshot fuzz_api fuzz_gguf
# Per target it prints the executions and whether it crashed; crash inputs are kept under
# build/fuzz/artifacts/<target>/ (reproduce: build/fuzz/tests/fuzz/<target> <crash file>).
# Exit status: non-zero when any target crashed (or the build failed).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
jobs=1
merge=0
fresh=0
build=1
targets=()
all_targets=(fuzz_checkpoint fuzz_tokenizer fuzz_token_file fuzz_snapshot fuzz_api fuzz_gguf)
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    --fresh) fresh=1; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    fuzz_*) targets+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")

if ((build)); then
  echo "=== fuzz: configure and build ===" >&2
  cmake --preset fuzz >/dev/null
  # Only the fuzz targets (and the library they need): the rest of the preset is not needed here.
  cmake --build --preset fuzz -j "${KVCACHE_BUILD_JOBS:-$(nproc)}" --target fuzz_targets
fi

bin_dir=build/fuzz/tests/fuzz
work=build/fuzz/fuzz-run
# Leaks are findings too; UBSan already aborts (-fno-sanitize-recover), print its stack.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=0
summary=()
for t in "${targets[@]}"; do
  bin="$bin_dir/$t"
  seeds="tests/fuzz/corpus/$t"
  scratch="$work/corpus/$t"
  artifacts="$work/artifacts/$t/"
  [[ -x "$bin" ]] || { echo "fuzz.sh: $bin is missing (build first)" >&2; exit 1; }
  ((fresh)) && rm -rf "$scratch"
  mkdir -p "$scratch" "$artifacts"
  cp -n "$seeds"/* "$scratch"/ 2>/dev/null || true  # the scratch copy is the one libFuzzer grows
  log="$work/$t.log"
  echo "=== $t: ${seconds}s, $jobs job(s) ===" >&2
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts")
  ((jobs > 1)) && args+=(-fork="$jobs")
  before=$(find "$artifacts" -type f | wc -l)
  status=0
  "$bin" "${args[@]}" "$scratch" >"$log" 2>&1 || status=$?
  after=$(find "$artifacts" -type f | wc -l)
  # Executions: the final stats line (single process) or the last status line (fork mode).
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}' || true)
  if [[ -z "$execs" ]]; then
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  fi
  if ((status != 0 || after > before)); then
    result="CRASHED (exit $status; log $log; inputs in $artifacts)"
    failed=1
    grep -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY|Test unit written' "$log" | head -8 >&2 || true
  else
    result="ok"
  fi
  summary+=("$(printf '%-16s %12s execs  %s' "$t" "${execs:-?}" "$result")")
  if ((merge)) && ((status == 0)); then
    "$bin" -merge=1 "$seeds" "$scratch" >>"$log" 2>&1
    echo "$t: merged; committed corpus now $(du -sh "$seeds" | cut -f1)" >&2
  fi
done

echo "=== fuzz summary (${seconds}s per target) ===" >&2
printf '%s\n' "${summary[@]}"
exit "$failed"
