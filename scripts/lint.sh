#!/usr/bin/env bash
# clang-format check and clang-tidy over the library sources (uses build/ci/compile_commands.json).
# Usage: bash scripts/lint.sh [--fix]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh clang-format clang-tidy
[[ -f build/ci/compile_commands.json ]] || cmake --preset ci >/dev/null
mapfile -t files < <(git ls-files 'kvcache/*.cc' 'kvcache/*.h' 'include/*.h' 'integrations/*.cc' 'integrations/*.h')
if [[ ${1:-} == --fix ]]; then
  clang-format -i "${files[@]}"
else
  clang-format --dry-run --Werror "${files[@]}"
fi
mapfile -t sources < <(git ls-files 'kvcache/*.cc')
clang-tidy -p build/ci --quiet "${sources[@]}"
