#!/usr/bin/env bash
# Issue 11's best model on one GPU within ~10 minutes of device time: the top-down hierarchical VAE
# (preset ladder) trained by the IWAE bound with k = 5, alone on the card, then `vaekit evaluate`
# (IS, K = 5000, all 10k dynamically binarised test images). Writes $OUT/gpu_best.md: the card, the
# images/s, the epochs, the training time and the NLL.
#
#     bash bench/gpu_best.sh path/to/mnist [EPOCHS] [MINUTES]   # defaults 120 epochs, 5-minute backstop
set -uo pipefail
cd "$(dirname "$0")/.."
mnist="$1"; epochs="${2:-120}"; minutes="${3:-5}"; out="${OUT:-.}"; run="$out/runs/ladder-iwae5"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo "no GPU")"
python3 -m vaekit.cli train --config bench/configs/mnist_ladder.toml --data-dir "$mnist" --device cuda \
    --set train.kl_warmup_steps=0 --set 'train.objective="iwae"' --train-samples 5 --epochs "$epochs" \
    --set train.time_limit_minutes="$minutes" --set eval.monitor_every=10 --out "$run" > "$out/train.log" 2>&1
start=$(date +%s)
python3 -m vaekit.cli evaluate "$run" --device cuda > "$out/evaluate.log" 2>&1
python3 - "$run" "$card" "$(( $(date +%s) - start ))" > "$out/gpu_best.md" <<'PY'
import json, pathlib, sys
run, card, eval_s = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
ev = json.loads((run / "eval.json").read_text())
rate = sorted(r["images_per_s"] for r in rows)[len(rows) // 2]
print(f"{card}: topdown ladder, IWAE k=5, {rows[-1]['epoch']} epochs in {sum(r['epoch_s'] for r in rows):.0f} s "
      f"of training ({rate:.0f} images/s, median epoch); test NLL {ev['nll']:.2f} nats (IS K=5000, 10k test "
      f"images, dynamic binarisation), test -ELBO {-ev['elbo']:.2f}; evaluation {eval_s} s")
PY
cat "$out/gpu_best.md"
