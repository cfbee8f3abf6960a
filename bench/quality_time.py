"""Where `vaekit quality RUN` spends its time, step by step (docs/benchmarks.md, section 8): drawing the
samples, the grey-level metrics (features of samples and test images, FD, KID, precision/recall,
density/coverage, label statistics), the binary line (the same on Bernoulli draws), the memorisation check
(nearest training images; the data set's own features come from the cache that the first run on it fills), and the whole command.

    python bench/quality_time.py RUN [--device cpu] [--threads 2]
"""

import argparse
import time

import torch

from vaekit import yardstick
from vaekit.runs import load_run, load_sets, seeded_stream


def timed(label: str, work):
    start = time.perf_counter()
    out = work()
    print(f"{label:<58s} {time.perf_counter() - start:6.1f} s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads")
    cfg, model = load_run(args.run, args.device)
    dev = next(model.parameters()).device
    sets = timed("read the data set", lambda: load_sets(cfg.data))
    net, info = timed("feature network (cached)", lambda: yardstick.feature_network(sets["train"]))
    net, test, train = net.to(dev), sets["test"], sets["train"].x.to(dev)
    with seeded_stream(cfg.eval.seed, dev):
        generated = timed(f"draw {cfg.eval.quality_samples} samples",
                          lambda: yardstick.model_images(model.eval(), cfg.eval.quality_samples))
    seed, shape = cfg.eval.seed, test.image_shape
    real = timed("features of the 10,000 test images (cache)",
                 lambda: yardstick.reference_features(net, info, test.x.to(dev), shape))
    fake, probs = timed("features of the samples", lambda: yardstick.embed(net, generated, shape))
    timed("grey-level metrics on those features", lambda: yardstick.feature_quality(real, fake, probs, seed))
    timed("binary line (draws, features, metrics)",
          lambda: yardstick.binary_line(net, generated, test.x.to(dev), shape, seed))
    timed("memorisation (training images' features from the cache, neighbours)",
          lambda: yardstick.memorisation_of(fake, yardstick.reference_features(net, info, train, shape), real))
    timed("the whole `vaekit quality` (run_quality)",
          lambda: yardstick.run_quality(args.run, device=args.device, progress=False))


if __name__ == "__main__":
    main()
