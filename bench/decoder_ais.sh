#!/usr/bin/env bash
# Decoder-based log-likelihoods on MNIST grey levels (issue 10, section 2): a VAE with a Gaussian decoder
# trained here (in a temporary folder), then `vaekit evaluate --ais` (AIS with HMC over the decoder's latents, the BDMC bracket on
# simulated images, AIS vs IS) on it and on a GAN run. Results go to $OUT (or ./decoder_ais/).
#
#     VAEKIT_MNIST_DIR=path/to/mnist bash bench/decoder_ais.sh GAN_RUN [DEVICE] [EPOCHS]
set -uo pipefail
cd "$(dirname "$0")/.."
gan="$1"; device="${2:-cuda}"; epochs="${3:-40}"
out="${OUT:-decoder_ais}"; runs="$(mktemp -d)"; mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
data="${VAEKIT_MNIST_DIR:-../shared/data/mnist}"
step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }
{
  step "VAE, burda sizes (784-200-200-50 tanh), Gaussian decoder, MNIST grey levels, $epochs epochs on $device"
  python3 -m vaekit.cli train --model vae --data mnist --data-dir "$data" --set vae.preset=burda \
      --set vae.likelihood=gaussian --set data.binarization=none --epochs "$epochs" --batch-size 256 \
      --device "$device" --no-progress --out "$runs/vae_gauss"
  step "VAE: IS (K = 5000, 10,000 test images) and AIS (1000 steps, 16 chains, 100 images), BDMC on 20"
  time python3 -m vaekit.cli evaluate "$runs/vae_gauss" --ais --ais-examples 100 --bdmc-examples 20 \
      --device "$device" --no-progress
  cp "$runs/vae_gauss/eval.json" "$out/vae_eval.json"
  step "GAN $gan: sigma chosen on 20 training images, AIS (1000 steps, 16 chains, 50 images), BDMC on 10"
  time python3 -m vaekit.cli evaluate "$gan" --ais --ais-examples 50 --bdmc-examples 10 --batch-size 50 \
      --device "$device" --no-progress
  cp "$gan/eval.json" "$out/gan_eval.json"
} 2>&1 | tee "$out/decoder_ais.txt"
