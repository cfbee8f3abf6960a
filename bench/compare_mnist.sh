#!/usr/bin/env bash
# The MNIST comparison of issue 10 (docs/benchmarks.md section 10): each family's run of at most an hour
# on this 2-core CPU, their sample quality, then one `vaekit compare` report (HTML, Markdown, screenshot).
#
#     bash bench/compare_mnist.sh path/to/mnist OUT_FOLDER [THREADS]     # THREADS per run (default 2)
#
# The DCGAN is section 6's run 5 (bench/configs/mnist_dcgan.toml), published as zoo:mnist-dcgan.
set -euo pipefail
cd "$(dirname "$0")/.."
data="$1"; out="$2"; threads="${3:-2}"
runs="$out/runs"; mkdir -p "$runs"
vaekit run --config bench/configs/mnist_burda.toml --data-dir "$data" --set train.num_threads="$threads" \
    --out "$runs/mnist-burda"
vaekit run --config bench/configs/mnist_rbm.toml --data-dir "$data" --set train.num_threads="$threads" \
    --out "$runs/mnist-rbm"
vaekit run --model linear --data mnist --data-dir "$data" --set linear.init=ppca --latent 50 \
    --set data.binarization=none --epochs 3 --set eval.num_samples=100 --set train.num_threads="$threads" \
    --out "$runs/mnist-linear"
vaekit run --model vae --preset dcgan --likelihood gaussian --data mnist --data-dir "$data" \
    --set data.binarization=none --epochs 100 --set train.time_limit_minutes=38 --set eval.num_samples=100 \
    --set eval.chunk_size=100 --set eval.monitor_samples=10 --set train.num_threads="$threads" \
    --out "$runs/mnist-conv-vae"
[ -d "$runs/mnist-dcgan" ] || vaekit run --config bench/configs/mnist_dcgan.toml --data-dir "$data" \
    --out "$runs/mnist-dcgan"
for run in mnist-burda mnist-rbm mnist-linear mnist-conv-vae mnist-dcgan; do
  VAEKIT_MNIST_DIR="$data" vaekit quality "$runs/$run" --no-progress
done
VAEKIT_MNIST_DIR="$data" vaekit compare "$runs"/mnist-burda "$runs"/mnist-rbm "$runs"/mnist-linear \
    "$runs"/mnist-conv-vae "$runs"/mnist-dcgan --floor --screenshot --out "$out/report" --force --no-progress
