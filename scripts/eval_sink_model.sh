#!/usr/bin/env bash
# Issue 8's measurements of a trained sink-model candidate, on text it was not trained on:
#   1. sink strength: `kvstream inspect` on the first 512 tokens of the held-out generated text
#      (mean attention on token 0 per layer and head, Gu et al.'s heads above 0.3);
#   2. the StreamingLLM effect: `kvstream sweep` of full, window, sinks and hidden-sinks at budgets
#      32-512 over 4096 tokens (16x a 256-token training context) of each evaluation text.
# Usage: bash scripts/eval_sink_model.sh MODEL.bin OUTDIR [KVSTREAM]
# Needs data/sink from `train_sink_model.py prepare` (bench/models/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model}
out=${2:?output directory}
K=${3:-build/release/integrations/kvstream/kvstream}
mkdir -p "$out"
texts=(generated:data/sink/eval_gen_9001.txt tinystories_tail:data/sink/tinystories_heldout.txt
       gpl3:/usr/share/common-licenses/GPL-3)
"$K" inspect --model "$model" --text data/sink/eval_gen_9001.txt --max-tokens 512 --out "$out/inspect" |
  tee "$out/inspect.txt"
for t in "${texts[@]}"; do
  name=${t%%:*}
  "$K" sweep --model "$model" --text "${t#*:}" --max-tokens 4096 --segment 256 \
    --policies full,window,sinks,hidden-sinks --budgets 32,64,128,256,512 --per-token \
    --out "$out/sweep-$name" | tee "$out/sweep-$name.txt"
done
