"""Training throughput of a VAE preset in images/s, beside the machine's float32 matmul rate.

    python bench/throughput.py --data mnist --data-dir ../shared/data/mnist --preset examples --epochs 6

Runs vaekit's own training loop (the one `vaekit train` uses) for several epochs, because a one-epoch
figure hides slow-downs that appear later (denormal numbers in Adam's state on x86 CPUs), and reports
every epoch, the sustained rate over epochs 2.., the model's FLOPs per image, the achieved FLOP rate
and its ratio to a large float32 GEMM measured in the same process. It also times the shape-level
ceiling: every matrix product of one training step at the run's batch size (each Linear's forward
product, its weight gradient and, past the first layer, its input gradient), each alone, best of several
repeats; their sum is the least time a step can take on this machine's GEMMs, and batch / sum the
images/s no loop can beat without changing the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from vaekit import config as configlib
from vaekit.train import Trainer


def matmul_gflops(n: int = 2048, repeats: int = 20) -> float:
    """float32 GEMM rate of an n x n x n product, best of a few timings (GFLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * n ** 3 / best / 1e9


def train_flops_per_image(model: torch.nn.Module) -> float:
    """Multiply-adds of the Linear layers x 2, forward + backward (weight grads everywhere, input grads
    for every layer but the first, whose input is data): about 3x the forward pass."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    macs = [m.in_features * m.out_features for m in linears]
    forward = 2 * sum(macs)
    return forward + forward + (forward - 2 * macs[0])


def _best_seconds(fn, repeats: int = 50) -> float:
    """Best mean time of fn() over three rounds of `repeats` calls, after a warm-up call."""
    fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def step_gemms(model: torch.nn.Module, batch: int) -> list[tuple[str, tuple[int, int, int]]]:
    """The matrix products (name, (m, k, n)) of one training step of an MLP model at this batch size:
    per Linear(k_in -> n_out) the forward x W^T [B, k_in] x [k_in, n_out], the weight gradient
    g^T x [n_out, B] x [B, k_in] and, for every layer but the first (whose input is data), the input
    gradient g W [B, n_out] x [n_out, k_in]."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    gemms = []
    for i, m in enumerate(linears):
        k, n = m.in_features, m.out_features
        gemms += [(f"fwd {k}->{n}", (batch, k, n)), (f"dW {k}->{n}", (n, batch, k))]
        if i:
            gemms.append((f"dx {k}->{n}", (batch, n, k)))
    return gemms


def shape_ceiling(model: torch.nn.Module, batch: int) -> tuple[float, list[tuple[str, float]]]:
    """(images/s at the sum of the step's GEMM times, [(name, seconds)]): each product of `step_gemms`
    timed alone (torch.addmm for the forward products, which carry the bias, torch.mm for the rest)."""
    times = []
    for name, (m, k, n) in step_gemms(model, batch):
        a, b, bias = torch.randn(m, k), torch.randn(k, n), torch.randn(n)
        fn = (lambda: torch.addmm(bias, a, b)) if name.startswith("fwd") else (lambda: torch.mm(a, b))
        times.append((name, _best_seconds(fn)))
    return batch / sum(t for _, t in times), times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist")
    p.add_argument("--data-dir")
    p.add_argument("--preset", default="examples")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--device", default="cpu", help="cpu | cuda (the GEMM rate is always the CPU's)")
    args = p.parse_args()
    # before any parallel work: the flag is per thread, and worker threads copy it when they start
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    gemm = matmul_gflops()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = configlib.from_dict({
            "data": {"name": args.data, "data_dir": args.data_dir}, "vae": {"preset": args.preset},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "progress": False, "device": args.device,
                      "num_threads": args.threads, "compile": args.compile}, "out": tmp})
        trainer = Trainer(cfg)
        trainer.fit()
        rows = [json.loads(line) for line in open(f"{tmp}/metrics.jsonl")]
    # measured again after training: on a shared (virtual) machine the rate drifts with the neighbours' load
    gemm_after = matmul_gflops()
    rates = [r["images_per_s"] for r in rows]
    sustained = sum(rates[1:]) / len(rates[1:]) if len(rates) > 1 else rates[0]
    flops = train_flops_per_image(trainer.model)
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"float32 matmul (2048^3): {gemm:.1f} GFLOP/s before training, {gemm_after:.1f} after")
    gemm = min(gemm, gemm_after)
    print(f"model: {args.preset} on {args.data}, batch {args.batch_size}, compile={args.compile}, "
          f"{flops / 1e6:.2f} MFLOP per image "
          f"(train step) -> GEMM ceiling {gemm * 1e9 / flops:,.0f} images/s")
    for r in rows:
        print(f"  epoch {r['epoch']}: {r['images_per_s']:,.0f} images/s")
    achieved = sustained * flops / 1e9
    print(f"sustained (epochs 2-{len(rates)}): {sustained:,.0f} images/s = {achieved:.1f} GFLOP/s = "
          f"{achieved / gemm:.2f} of the matmul rate")
    if args.device == "cpu":
        ceiling, times = shape_ceiling(trainer.model, args.batch_size)
        print(f"shape-level ceiling (the step's {len(times)} GEMMs at batch {args.batch_size}, each alone): "
              f"{sum(t for _, t in times) * 1e3:.2f} ms per step -> {ceiling:,.0f} images/s")
        for name, t in times:
            print(f"  {name:>16}: {t * 1e6:7.1f} us")
        print(f"sustained / shape-level ceiling: {sustained / ceiling:.2f}")


if __name__ == "__main__":
    main()
