"""GAN training throughput: vaekit's GAN step in vaekit's loop beside a plain PyTorch loop written the way
pytorch/examples' dcgan/main.py writes its training step, on the same networks, batch and data.

    python bench/gan_throughput.py --data-dir ../shared/data/mnist --images 19200 --repeats 2

Both train the same DCGAN (vaekit.nets.ConvGenerator / ConvDiscriminator, width 64, latent 64) on
28 x 28 MNIST grey levels with batch 64, non-saturating loss, Adam 2e-4 (beta1 = 0.5). The plain loop
feeds in-memory batches too (the examples' DataLoader would only slow it), uses BCE-with-logits on the
same logits, torch.optim.Adam as the examples do, and one generator forward for both players. The plain loop
runs twice per repeat: in the default memory layout, as the examples write it, and in the channels-last
layout vaekit's GAN uses, so the comparison is of the loops and not of the layout. The runs
alternate (plain, plain channels-last, vaekit, ...) so that a drifting machine affects both alike. Images/s
counts real images through one discriminator and one generator update.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from vaekit import config as configlib
from vaekit.data import ImageSet, load_dataset
from vaekit.nets import ConvDiscriminator, ConvGenerator
from vaekit.runs import Splits, configure_process
from vaekit.train import Trainer


def plain_dcgan(x: torch.Tensor, batch_size: int, latent: int, width: int, seed: int,
                channels_last: bool = False) -> float:
    """pytorch/examples dcgan's training step over x [N, D] once; returns images/s. channels_last: the
    networks and batches in the memory layout vaekit's GAN uses (the examples use the default one)."""
    torch.manual_seed(seed)
    shape = (1, 28, 28)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net_g = ConvGenerator(latent, shape, width).to(memory_format=layout)
    net_d = ConvDiscriminator(shape, width).to(memory_format=layout)
    criterion = torch.nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    order = torch.randperm(x.shape[0])
    start = time.perf_counter()
    for i in range(0, x.shape[0], batch_size):
        real = x[order[i:i + batch_size]].view(-1, *shape).contiguous(memory_format=layout)
        b = real.shape[0]
        net_d.zero_grad()
        label = torch.full((b,), 1.0)
        err_real = criterion(net_d(real).view(-1), label)
        err_real.backward()
        noise = torch.randn(b, latent)
        fake = torch.sigmoid(net_g(noise))
        label.fill_(0.0)
        err_fake = criterion(net_d(fake.detach()).view(-1), label)
        err_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        label.fill_(1.0)
        err_g = criterion(net_d(fake).view(-1), label)
        err_g.backward()
        opt_g.step()
    return x.shape[0] / (time.perf_counter() - start)


def vaekit_gan(x: torch.Tensor, batch_size: int, latent: int, width: int, seed: int) -> float:
    """One epoch of vaekit's own loop (the one `vaekit train --model gan` runs) over x; images/s."""
    cfg = configlib.from_dict({"model": {"name": "gan"}, "gan": {"latent": latent, "width": width,
                                                                 "architecture": "conv"},
                               "data": {"binarization": "none"},
                               "train": {"epochs": 1, "batch_size": batch_size, "seed": seed, "progress": False,
                                         "device": "cpu"}})
    train = ImageSet(x, None, (1, 28, 28), "mnist-subset")
    trainer = Trainer(cfg, data=Splits(train, None, None), save=False)
    return trainer.train_epoch()["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--images", type=int, default=19200, help="training images per timed run")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    configure_process(configlib.TrainConfig(num_threads=args.threads))
    x = load_dataset("mnist", args.data_dir)["train"].x[:args.images].contiguous()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; MNIST 28x28 grey levels, {x.shape[0]} images per run, batch {args.batch_size}")
    runners = {"plain": plain_dcgan, "plain, channels-last": lambda *a, **k: plain_dcgan(*a, **k, channels_last=True),
               "vaekit": vaekit_gan}
    rates = {name: [] for name in runners}
    for r in range(args.repeats):
        for name, fn in runners.items():
            rates[name].append(fn(x, args.batch_size, args.latent, args.width, seed=r))
            print(f"  run {r + 1} {name:>20}: {rates[name][-1]:7.0f} images/s", flush=True)
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    best = max(mean["plain"], mean["plain, channels-last"])
    print(f"mean: plain PyTorch (pytorch/examples dcgan step) {mean['plain']:.0f} images/s, the same in vaekit's "
          f"channels-last layout {mean['plain, channels-last']:.0f}, vaekit {mean['vaekit']:.0f} images/s; "
          f"vaekit / the faster plain loop {mean['vaekit'] / best:.2f}")


if __name__ == "__main__":
    main()
