#!/usr/bin/env bash
# Issue 19's measurements of a sink-model candidate, on text it was not trained on (data/sink from
# `train_sink_model.py prepare`, bench/models/README.md):
#   1. sink strength: `kvstream inspect` on the first CONTEXT tokens of held-out generated text
#      (mean attention on token 0 per layer and head; Gu et al.'s count of heads above 0.3);
#   2. the StreamingLLM effect: `kvstream sweep` of full, window, sinks, hidden-sinks and h2o over
#      4096 tokens (16x a 256-token context) of held-out generated text and over the TinyStories
#      tail, at budgets 32-512 plus the budgets next to the model's copy distance LAG (where the
#      kept initial tokens sit exactly LAG back: the fixed-lag head's trap);
#   3. inside the training context: full against sinks on its first CONTEXT tokens;
#   4. hidden sinks: the same policies over a stream of held-out stories, each opened by BOS, and
#      `kvstream compare` of hidden-sinks against sinks at every budget (95% intervals).
# Usage: bash scripts/eval_sink_model.sh MODEL OUTDIR [LAG] [CONTEXT] [KVSTREAM]
# Extra sweep flags (e.g. --sink-min-heads 1) come from $SWEEP_FLAGS. Tables go to OUTDIR/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model}
out=${2:?output directory}
lag=${3:-127}
ctx=${4:-256}
K=${5:-build/release/integrations/kvstream/kvstream}
tok=(--tokenizer ../shared/models/tok512.bin)
[[ $model == *.gguf ]] && tok=()
read -r -a extra <<< "${SWEEP_FLAGS:-}"
mkdir -p "$out"
budgets="32,64,128,256,512,$((lag - 4)),$((lag + 1)),$((lag + 2)),$((lag + 4)),$((lag + 8))"
"$K" inspect --model "$model" "${tok[@]}" --text data/sink/eval_gen_9001.txt --max-tokens "$ctx" \
  --out "$out/inspect" > "$out/inspect.txt"
sweep() {  # name, input flags...
  local name=$1
  shift
  "$K" sweep --model "$model" "${tok[@]}" "$@" --segment 256 --per-token "${extra[@]}" \
    --policies full,window,sinks,hidden-sinks,h2o --budgets "$budgets" --out "$out/sweep-$name" \
    > "$out/sweep-$name.txt"
}
sweep generated --text data/sink/eval_gen_9001.txt --max-tokens 4096
sweep tinystories_tail --text data/sink/tinystories_heldout.txt
sweep docs --tokens data/sink/eval_gen_9002_docs.bin --max-tokens 8192
"$K" sweep --model "$model" "${tok[@]}" --text data/sink/eval_gen_9001.txt --max-tokens "$ctx" \
  --policies full,window,sinks --budgets 64,128 --no-plot --out "$out/in-context" > "$out/in-context.txt"
for name in generated tinystories_tail docs; do
  for b in ${budgets//,/ }; do
    echo "== $name, budget $b: hidden-sinks against sinks"
    "$K" compare "$out/sweep-$name/nll/sinks-b$b-f32.csv" "$out/sweep-$name/nll/hidden-sinks-b$b-f32.csv"
  done
done > "$out/compare.txt"
cat "$out/inspect.txt" "$out/in-context.txt" "$out"/sweep-*.txt
grep -E "^==|ratio|verdict|B (higher|lower)|not distinguishable" "$out/compare.txt" || cat "$out/compare.txt"
