#!/usr/bin/env bash
# The comparison runs of docs/benchmarks.md section 10 that were trained on a lent GPU (one short call):
# the 784 x 500 RBM and the convolutional Gaussian VAE on MNIST, the Gaussian MLP VAE on Fashion-MNIST,
# three processes side by side on one GPU, each stopped by its time limit at the latest, then scored by
# `vaekit run`'s own evaluation (RBM: AIS 10,000 betas x 500 runs + RAISE; VAEs: IS). One tar per run in
# $OUT (or ./), for `vaekit quality` and `vaekit compare` on any machine afterwards.
#
#     bash bench/compare_gpu.sh path/to/mnist path/to/fashion-mnist [MINUTES]    # MINUTES per run (default 5.5)
set -uo pipefail
cd "$(dirname "$0")/.."
mnist="$1"; fashion="$2"; minutes="${3:-5.5}"; out="${OUT:-.}"; runs="$(mktemp -d)"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
vaekit() { timeout "$(python3 -c "print(int(60 * $minutes + 150))")" python3 -m vaekit.cli "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt"
vaekit run --config bench/configs/mnist_rbm.toml --data-dir "$mnist" --device cuda --epochs 300 \
    --set train.time_limit_minutes="$minutes" --out "$runs/mnist-rbm" > "$out/mnist-rbm.log" 2>&1 &
vaekit run --model vae --preset dcgan --likelihood gaussian --data mnist --data-dir "$mnist" --device cuda \
    --set data.binarization=none --epochs 60 --set train.time_limit_minutes="$minutes" --set eval.num_samples=100 \
    --set eval.chunk_size=100 --set eval.monitor_samples=10 --no-progress --out "$runs/mnist-conv-vae" \
    > "$out/mnist-conv-vae.log" 2>&1 &
vaekit run --model vae --preset burda --likelihood gaussian --data fashion-mnist --data-dir "$fashion" --device cuda \
    --set data.binarization=none --epochs 300 --batch-size 256 --set train.lr_final_factor=0.05 \
    --set train.time_limit_minutes="$minutes" --set eval.num_samples=1000 --no-progress --out "$runs/fashion-vae" \
    > "$out/fashion-vae.log" 2>&1 &
wait
for run in mnist-rbm mnist-conv-vae fashion-vae; do tar -C "$runs" -cf "$out/$run.tar" "$run"; done
ls -l "$out"
