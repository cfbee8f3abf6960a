#!/usr/bin/env bash
# The GPU check, one short script (<= 8 minutes on one GPU): vaekit's tests on CUDA, the examples
# preset's training throughput, a GAN epoch, its sample quality, and one importance-sampled evaluation (K = 5000, the full
# MNIST test set) with its time. Results go to $OUT/device_check.txt (or ./device_check.txt).
#
#     VAEKIT_MNIST_DIR=path/to/mnist bash bench/device_check.sh
#
# Needs torch with CUDA, numpy, scikit-learn, matplotlib, safetensors, tqdm and pytest (pytest-xdist
# optional); vaekit runs from this checkout (PYTHONPATH=src), nothing is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}/device_check.txt"
data="${VAEKIT_MNIST_DIR:-../shared/data/mnist}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 VAEKIT_MNIST_DIR="$data"
runs="$(mktemp -d)"
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }
{
  step "device"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0), '|', torch.get_num_threads(), 'CPU threads')"

  step "tests parametrised over devices, on cpu and cuda"
  python3 -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_gan.py

  step "burda VAE: 10 epochs on cuda, then IS with K = 5000 on the 10,000 test images"
  python3 -m vaekit.cli train --config bench/configs/mnist_burda.toml --data-dir "$data" --epochs 10 \
      --set train.time_limit_minutes=0 --device cuda --no-progress --out "$runs/burda"
  time python3 -m vaekit.cli evaluate "$runs/burda" --device cuda --no-progress
  echo "-- the same with 5000 samples per chunk and 20 images per batch"
  time python3 -m vaekit.cli evaluate "$runs/burda" --device cuda --no-progress --chunk-size 5000 --batch-size 20

  step "examples preset throughput on cuda (batch 128, dynamic binarisation)"
  python3 bench/throughput.py --data mnist --data-dir "$data" --preset examples --epochs 4 --device cuda
  step "examples preset throughput on cuda, batch 1024"
  python3 bench/throughput.py --data mnist --data-dir "$data" --preset examples --epochs 4 --batch-size 1024 --device cuda

  step "DCGAN on cuda: 2 epochs of MNIST grey levels, batch 64, then the classifier check"
  python3 -m vaekit.cli run --model gan --data mnist --data-dir "$data" --epochs 2 --device cuda --no-progress \
      --set gan.ema=0.999 --out "$runs/gan"
  python3 -c "import json; [print(r['epoch'], round(r['images_per_s']), 'images/s') for r in map(json.loads, open('$runs/gan/metrics.jsonl'))]"
  step "sample quality of the DCGAN on cuda: the feature network (trained by the check above, else now), then 10k samples scored"
  time python3 -m vaekit.cli quality --build-features --data mnist --data-dir "$data" --device cuda --no-progress
  time python3 -m vaekit.cli quality "$runs/gan" --device cuda --no-progress

  step "the whole suite on this machine (CPU paths; torch of this machine), at most 150 s"
  xdist=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
  timeout 150 python3 -m pytest -q -p no:cacheprovider $xdist
} 2>&1 | tee "$out"
