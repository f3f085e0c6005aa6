#!/usr/bin/env bash
# The main job: installs what is missing, builds in Release and streams text from stories260K
# without end under StreamingLLM retention (4 sinks + window, 256 tokens kept per layer), so the
# KV memory stays flat however long it runs. Ctrl-C stops it with a summary.
# Extra arguments go to `kvstream generate` (e.g. -n 5000, --policy hidden-sinks, --seed 7).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target kvstream >&2
exec build/release/integrations/kvstream/kvstream generate --policy sinks --sinks 4 --budget 256 \
  --temperature 0.8 "$@"
