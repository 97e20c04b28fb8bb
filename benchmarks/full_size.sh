#!/usr/bin/env bash
# Full-size check for one GPU: the 7B recipe's own training loop, then the inference benchmark, on a model of
# LaSagnA-7B's shapes (LLaMA-7B, CLIP ViT-L/14, SAM ViT-H) with random weights. No released weights reach a machine
# without internet, so the data is ShapeWorld and the tokenizer is the plain one fitted on it (about 1k pieces instead
# of LLaMA's 32k: the LM head is then ~1% of the LLM's work per token instead of ~3%). It measures what does not
# depend on the weights: that the loop runs at this size, seconds per step, peak GPU memory, and decoding cost with
# full-length answers. With no init_from to restore frozen weights from, checkpoints hold every weight.
#
#   bash benchmarks/full_size.sh OUT [PRESET] [STEPS] [DEVICE]     # e.g. /tmp/full lasagna-7b 20 cuda
#
# `bash benchmarks/full_size.sh /tmp/full-tiny tiny 3 cpu` runs the same path in a minute on a laptop.
set -euo pipefail
out=${1:?usage: bash benchmarks/full_size.sh OUT [PRESET] [STEPS] [DEVICE]}
out=$(realpath -m "$out")
cd "$(dirname "$0")/.."
if [ -e "$out/run" ]; then
    echo "$out/run exists: give a new OUT (its metrics would mix two runs)" >&2
    exit 1
fi
preset=${2:-lasagna-7b}
steps=${3:-20}
device=${4:-cuda}
python=${PYTHON:-python}

start=$(date +%s)
"$python" -m lasagna.cli train --config configs/train/lasagna-7b.yaml \
    out_dir="$out/run" init_from=null checkpoint_weights=full model_preset="$preset" \
    "model_overrides={tokenization: plain}" \
    data.dataset=shapeworld "data.mixture.dataset_weights={}" \
    optim.steps="$steps" optim.grad_accum=1 optim.warmup_steps=2 encoders.steps=0 decoder.steps=0 \
    eval.limit=2 save_every=100000 keep_last=1 log_every=1
echo "train wall: $(( $(date +%s) - start )) s"
# seconds per optimizer step, leaving out the first (allocator and kernel warm-up)
"$python" - "$out/run/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in rows if "seconds" in r]
first, last = steps[0], steps[-1]
per_step = (last["seconds"] - first["seconds"]) / max(1, last["step"] - first["step"])
print(f"steps {last['step']}: {per_step:.3f} s/step after the first ({first['seconds']:.1f} s); "
      f"loss {first['loss']:.3f} -> {last['loss']:.3f}; tokens/conversation {last['tokens']:.0f}")
print("final:", [r for r in rows if "rank_checksums" in r][-1])
EOF
"$python" benchmarks/inference.py --model "$out/run/final" --images 2 --full-answers --device "$device"
