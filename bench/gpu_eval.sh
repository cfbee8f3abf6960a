#!/usr/bin/env bash
# Test NLL of trained runs on a lent GPU: `vaekit evaluate` (IS, K = eval.num_samples = 5000, all 10k test
# images) for each run folder given, one after the other. The binary test set is the CPU's (binarised on
# the CPU with the fixed held-out seed, then moved), the estimator the same; only the importance draws come
# from the GPU's random stream. A top-down model's K = 5000 evaluation costs ~40 CPU-minutes here and
# ~10 s on an H200. Writes $OUT/<run>.eval.json and $OUT/<run>.log.
#
#     bash bench/gpu_eval.sh path/to/mnist RUN [RUN ...]
set -uo pipefail
cd "$(dirname "$0")/.."
mnist="$1"; shift; out="${OUT:-.}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name --format=csv,noheader || echo "no GPU") > "$out/gpu.txt" 2>&1
for run in "$@"; do
  name="$(basename "$run")"
  python3 -m vaekit.cli evaluate "$run" --device cuda --data-dir "$mnist" --no-progress > "$out/$name.log" 2>&1
  cp "$run/eval.json" "$out/$name.eval.json" 2>/dev/null
  tail -9 "$out/$name.log"
done
