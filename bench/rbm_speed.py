"""Speed of the RBM's Markov chains: Gibbs sweeps per second and AIS wall time.

    python bench/rbm_speed.py --visible 784 --hidden 500 --chains 500 --betas 14500 --runs 100

A sweep is one block-Gibbs step v -> h -> v of every chain; an AIS run of B betas is B such sweeps
(at the annealed weights) plus the weight updates. Random weights of the usual trained scale are
enough: the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import time

import torch

from vaekit.models.rbm import RBM, ais, ais_schedule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--visible", type=int, default=784)
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--chains", type=int, default=500)
    p.add_argument("--sweeps", type=int, default=500)
    p.add_argument("--betas", type=int, default=14500)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    rbm = RBM(args.visible, args.hidden, init_scale=0.05).to(args.device)
    v = torch.bernoulli(torch.full((args.chains, args.visible), 0.5, device=args.device))
    rbm.gibbs(v, 10)  # warm-up
    start = time.perf_counter()
    rbm.gibbs(v, args.sweeps)
    seconds = time.perf_counter() - start
    print(f"{args.visible}x{args.hidden} RBM, {args.chains} chains on {args.device} "
          f"({torch.get_num_threads()} threads): {args.sweeps / seconds:,.0f} sweeps/s "
          f"({args.sweeps * args.chains / seconds:,.0f} chain-steps/s)")
    base = torch.zeros(args.visible, device=args.device)
    start = time.perf_counter()
    ais(rbm, base, ais_schedule(args.betas), num_runs=args.runs)
    print(f"AIS, {args.betas} betas x {args.runs} runs: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
