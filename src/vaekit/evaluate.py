"""Test log-likelihood by importance sampling, next to the ELBO, its terms and IWAE bounds.

log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016, appendix; Rezende
et al. 2014): the IWAE bound with K in the thousands. It is computed over batches of data points and
chunks of samples, combined with a running log-sum-exp, so memory stays at batch x chunk x D floats.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import config as configlib
from .objectives import bits_per_dim, iwae_bound, standard_error
from .runs import load_run, prepare_data


@torch.no_grad()
def log_likelihood(model, x: torch.Tensor, num_samples: int, chunk_size: int) -> torch.Tensor:
    """Importance-sampled log p(x) with num_samples samples, chunk_size at a time. x [B, D] -> [B]."""
    total = None
    for start in range(0, num_samples, chunk_size):
        lse = torch.logsumexp(model.log_weights(x, min(chunk_size, num_samples - start)), dim=0)
        total = lse if total is None else torch.logaddexp(total, lse)
    return total - math.log(num_samples)


@torch.no_grad()
def per_example(model, x: torch.Tensor, cfg: configlib.EvalConfig) -> dict[str, torch.Tensor]:
    """Every evaluation quantity for each data point of a batch x [B, D] -> {name: [B]}."""
    reconstruction, kl = model.elbo_terms(x, cfg.elbo_samples)
    out = {"log_px": log_likelihood(model, x, cfg.num_samples, cfg.chunk_size),
           "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
    for k in cfg.iwae_samples:
        out[f"iwae_{k}"] = iwae_bound(model.log_weights(x, k))
    return out


def summarize(values: dict[str, torch.Tensor], num_dims: int) -> dict:
    """Means with standard errors; the NLL in nats and bits/dim."""
    log_px = values["log_px"]
    nll = -float(log_px.mean())
    result = {"nll": nll, "nll_stderr": standard_error(log_px), "bits_per_dim": bits_per_dim(nll, num_dims),
              "bits_per_dim_stderr": bits_per_dim(standard_error(log_px), num_dims)}
    for name, v in values.items():
        if name != "log_px":
            result[name] = float(v.mean())
            result[f"{name}_stderr"] = standard_error(v)
    return result


@torch.no_grad()
def evaluate(model, x: torch.Tensor, cfg: configlib.EvalConfig, progress: bool = True) -> dict:
    """Evaluate a latent-variable model on data x [N, D]; seeded, leaves the global RNG as it was."""
    model.eval()
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        batches = [per_example(model, xb, cfg) for xb in
                   tqdm(x.split(cfg.batch_size), desc=f"log p(x), K={cfg.num_samples}", disable=not progress,
                        leave=False)]
    values = {k: torch.cat([b[k] for b in batches]).double().cpu() for k in batches[0]}
    result = summarize(values, x.shape[1])
    result.update(num_examples=x.shape[0], num_samples=cfg.num_samples, seconds=time.perf_counter() - start)
    return result


def evaluate_model(run_dir: str | Path, cfg: configlib.RunConfig, model, test, progress: bool = True) -> dict:
    """Evaluate `model` on the binarised test set of its run; writes <run_dir>/eval.json."""
    configlib.validate(cfg)
    binarization = cfg.data.binarization
    result = {"data": cfg.data.name,
              "test_binarization": f"{binarization} -> fixed draw (seed 0)"
              if binarization in ("dynamic", "static") else binarization,
              "estimator": f"importance sampling, K={cfg.eval.num_samples}, q(z|x) proposal",
              **evaluate(model, test.x, cfg.eval, progress)}
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_run(run_dir: str | Path, num_samples: int | None = None, device: str = "auto",
                 progress: bool = True) -> dict:
    """Evaluate a run's last checkpoint on its test set; writes eval.json into the run folder."""
    cfg, model = load_run(run_dir, device)
    if num_samples is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, num_samples=num_samples))
    test = prepare_data(cfg, next(model.parameters()).device).test
    return evaluate_model(run_dir, cfg, model, test, progress)


def format_result(result: dict) -> str:
    """A few human-readable lines of an evaluation result."""
    lines = [f"test NLL  {result['nll']:.3f} ± {result['nll_stderr']:.3f} nats  "
             f"({result['bits_per_dim']:.4f} bits/dim)  [{result['data']}, {result['estimator']}, "
             f"{result['num_examples']} examples]",
             f"test ELBO {result['elbo']:.3f} ± {result['elbo_stderr']:.3f}  = reconstruction "
             f"{result['reconstruction']:.3f} - KL {result['kl']:.3f}"]
    for key in sorted((k for k in result if k.startswith("iwae_") and not k.endswith("stderr")),
                      key=lambda k: int(k.split("_")[1])):
        lines.append(f"IWAE K={key.split('_')[1]:<5} {result[key]:.3f} ± {result[key + '_stderr']:.3f}")
    return "\n".join(lines)
