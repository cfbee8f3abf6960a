#!/usr/bin/env bash
# Issue 11's deeper VAEs side by side on one GPU: each candidate trains the same number of epochs (the
# same cosine schedule, its own process), then `vaekit evaluate` scores it by importance sampling
# (K = 5000, all 10k test images, dynamic binarisation: the CPU benchmarks' protocol). What a GPU tells
# the CPU benchmarks: the NLL each model reaches per epoch (the CPU's cost per epoch is measured there)
# and the GPU's images/s. Results: $OUT/summary.md (and each run's metrics and evaluation).
#
#     bash bench/hier_gpu.sh path/to/mnist [EPOCHS] [MINUTES]   # defaults 60 epochs, 6-minute backstop
set -uo pipefail
cd "$(dirname "$0")/.."
mnist="$1"; epochs="${2:-60}"; minutes="${3:-6}"; out="${OUT:-.}"; runs="$out/runs"
device="${DEVICE:-cuda}"; data="${DATA:-mnist}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
vaekit() { timeout "$(python3 -c "print(int(60 * $minutes + 240))")" python3 -m vaekit.cli "$@"; }
(nvidia-smi --query-gpu=name,memory.total --format=csv || echo "no nvidia-smi") > "$out/gpu.txt" 2>&1
declare -A candidates=(
  [burda2]="--config bench/configs/mnist_burda2.toml"
  [burda2-iwae5]="--config bench/configs/mnist_burda2_iwae5.toml"
  [ladder]="--config bench/configs/mnist_ladder.toml"
  [ladder-wide]="--config bench/configs/mnist_ladder.toml --set topdown.latents=[64,32,16] --set topdown.width=384 --set topdown.depth=2"
  [ladder-iwae5]="--config bench/configs/mnist_ladder.toml --set train.kl_warmup_steps=0 --set train.objective=\"iwae\" --train-samples 5"
)
for name in "${!candidates[@]}"; do
  # shellcheck disable=SC2086
  (vaekit train ${candidates[$name]} --data "$data" --data-dir "$mnist" --device "$device" --epochs "$epochs" \
       --set train.time_limit_minutes="$minutes" --set eval.monitor_every=5 --out "$runs/$name" &&
   vaekit evaluate "$runs/$name" --device "$device") > "$out/$name.log" 2>&1 &
done
wait
python3 - "$runs" > "$out/summary.md" <<'PY'
import json, pathlib, sys
print("| run | epochs | images/s | train s | test NLL (IS K=5000) | test -ELBO |\n|---|---|---|---|---|---|")
for run in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()] if (run / "metrics.jsonl").is_file() else []
    ev = json.loads((run / "eval.json").read_text()) if (run / "eval.json").is_file() else {}
    rate = sorted(r["images_per_s"] for r in rows)[len(rows) // 2] if rows else float("nan")
    print(f"| {run.name} | {rows[-1]['epoch'] if rows else 0} | {rate:.0f} | {sum(r['epoch_s'] for r in rows):.0f} "
          f"| {ev.get('nll', float('nan')):.2f} | {-ev.get('elbo', float('nan')):.2f} |")
PY
cat "$out/summary.md"
