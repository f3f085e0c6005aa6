#!/usr/bin/env bash
# One GPU run of the sink recipe (issue 8), sized for a lent device machine: a time-limited training
# run whose learning-rate cosine spans the wall-time budget, writing the llama2.c checkpoint, the
# PyTorch state and the log (token-0 attention every 10 logs) to $OUT.
#
# Prepared here, run there: `prepare` (bench/models/README.md) writes data/sink/ on a CPU machine;
# the device tool carries data/sink (about 17 MB) with the working tree and runs, from the repo root,
#   bash scripts/sink_gpu_run.sh 420
# Evaluate the checkpoint afterwards on a CPU machine with `kvstream inspect` and `kvstream sweep`.
# Fails in seconds, before any training, when no Python with a CUDA-enabled torch is found.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-420}
out=${OUT:-out/gpu}
mkdir -p "$out"
for f in data/sink/train.bin data/sink/probe_gen.bin; do
  [[ -s $f ]] || { echo "sink_gpu_run: $f missing: run prepare and carry data/sink" >&2; exit 1; }
done
py=""
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    py=$cand
    break
  fi
done
[[ -n $py ]] || { echo "sink_gpu_run: no python3 with a CUDA-enabled torch on this machine" >&2; exit 1; }
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
# dim 128, 6 layers, 8 query / 4 KV heads of 16 dims, SwiGLU 352: 1.17M parameters (a 4.7 MB
# checkpoint); 64 windows of 1024 tokens per step, every window BOS first.
"$py" scripts/train_sink_model.py train --data data/sink/train.bin --probe-tokens data/sink/probe_gen.bin \
  --out "$out/sinkgpu.bin" --device cuda --threads 0 --precision bf16 --seed 1234 --dim 128 --hidden-dim 352 \
  --n-layers 6 --n-heads 8 --n-kv-heads 4 --seq-len 1024 --batch 64 --steps 0 --max-seconds "$secs" \
  --lr 3e-3 --warmup 200 --weight-decay 0.5 --save-every 1000 --log-every 20 2>&1 | tee "$out/train.log"
sha256sum "$out/sinkgpu.bin" | tee -a "$out/device.txt"
