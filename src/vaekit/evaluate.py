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
from .models.rbm import EXACT_UNITS, ais, ais_schedule, base_rate_bias, raise_log_prob
from .objectives import bits_per_dim, iwae_bound, standard_error
from .runs import load_run, prepare_data, seeded_stream


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
    with seeded_stream(cfg.seed, x.device):
        batches = [per_example(model, xb, cfg) for xb in
                   tqdm(x.split(cfg.batch_size), desc=f"log p(x), K={cfg.num_samples}", disable=not progress,
                        leave=False)]
    values = {k: torch.cat([b[k] for b in batches]).double().cpu() for k in batches[0]}
    result = summarize(values, x.shape[1])
    result.update(num_examples=x.shape[0], num_samples=cfg.num_samples, seconds=time.perf_counter() - start)
    return result


@torch.no_grad()
def evaluate_rbm(model, data, cfg: configlib.EvalConfig, progress: bool = True) -> dict:
    """Test log-likelihood of an RBM, log p(v) = -F(v) - log Z, with log Z by forward AIS from the
    base-rate RBM of the training marginals (Salakhutdinov & Murray 2008): it overestimates log p(v) on
    average. Beside it, on the first cfg.raise_examples test points, RAISE (Burda, Grosse & Salakhutdinov
    2015), which underestimates it, and forward AIS on the same points: the bracket. The exact log Z
    too when the smaller layer is small enough to enumerate."""
    start, x = time.perf_counter(), data.test.x
    with seeded_stream(cfg.seed, x.device):
        base = base_rate_bias(data.train.x)
        forward = ais(model, base, ais_schedule(cfg.ais_betas), num_runs=cfg.ais_runs)
        subset = x[:cfg.raise_examples]
        # one annealing run per test point, all points at once: the matmuls stay large
        raised = raise_log_prob(model, base, ais_schedule(cfg.raise_betas), subset) if subset.shape[0] else None
    log_px = -model.free_energy(x).double().cpu() - forward["log_z"]
    result = summarize({"log_px": log_px}, x.shape[1])
    result.update(log_z=forward["log_z"], log_z_stderr=forward["stderr"], num_examples=x.shape[0],
                  num_betas=cfg.ais_betas, num_runs=cfg.ais_runs)
    if raised is not None:
        raised = raised.cpu()
        # the width of the bracket, paired point by point: its error excludes the spread of log p(v) itself
        width = log_px[:subset.shape[0]] - raised
        result.update(nll_raise=-float(raised.mean()), nll_raise_stderr=standard_error(raised),
                      nll_ais_same_examples=-float(log_px[:subset.shape[0]].mean()),
                      bracket_width=float(width.mean()), bracket_width_stderr=standard_error(width),
                      raise_examples=subset.shape[0], raise_betas=cfg.raise_betas)
    if min(model.num_visible, model.num_hidden) <= EXACT_UNITS:
        result["log_z_exact"] = float(model.log_partition_exact())
    result["seconds"] = time.perf_counter() - start
    return result


def evaluate_latent(model, data, cfg: configlib.EvalConfig, progress: bool = True) -> dict:
    return evaluate(model, data.test.x, cfg, progress)


# per family: fn(model, data splits, eval config, progress) -> result dict
EVALUATORS = {"vae": evaluate_latent, "linear": evaluate_latent, "rbm": evaluate_rbm}
ESTIMATORS = {"rbm": lambda c: f"AIS, {c.ais_betas} betas x {c.ais_runs} runs, base-rate RBM"
                               + (f"; RAISE ({c.raise_betas} betas) on {c.raise_examples} test points beside it"
                                  if c.raise_examples else "")}


def evaluate_model(run_dir: str | Path, cfg: configlib.RunConfig, model, data, progress: bool = True) -> dict:
    """Evaluate `model` on the binarised test set of its run; writes <run_dir>/eval.json."""
    configlib.validate(cfg)
    binarization = cfg.data.binarization
    estimator = ESTIMATORS.get(cfg.model.name, lambda c: f"importance sampling, K={c.num_samples}, "
                                                         "q(z|x) proposal")(cfg.eval)
    result = {"data": cfg.data.name,
              "test_binarization": f"{binarization} -> fixed draw (seed 0)"
              if binarization in ("dynamic", "static") else binarization,
              "estimator": estimator, **EVALUATORS[cfg.model.name](model, data, cfg.eval, progress)}
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_run(run_dir: str | Path, num_samples: int | None = None, device: str = "auto",
                 progress: bool = True) -> dict:
    """Evaluate a run's last checkpoint on its test set; writes eval.json into the run folder."""
    cfg, model = load_run(run_dir, device)
    if num_samples is not None:
        cfg = replace(cfg, eval=replace(cfg.eval, num_samples=num_samples))
    data = prepare_data(cfg, next(model.parameters()).device)
    return evaluate_model(run_dir, cfg, model, data, progress)


def format_result(result: dict) -> str:
    """A few human-readable lines of an evaluation result."""
    lines = [f"test NLL  {result['nll']:.3f} ± {result['nll_stderr']:.3f} nats  "
             f"({result['bits_per_dim']:.4f} bits/dim)  [{result['data']}, {result['estimator']}, "
             f"{result['num_examples']} examples]"]
    if "elbo" in result:
        lines.append(f"test ELBO {result['elbo']:.3f} ± {result['elbo_stderr']:.3f}  = reconstruction "
                     f"{result['reconstruction']:.3f} - KL {result['kl']:.3f}")
    if "log_z" in result:
        lines.append(f"log Z     {result['log_z']:.3f} ± {result['log_z_stderr']:.3f} (AIS)"
                     + (f"; exact {result['log_z_exact']:.3f}" if "log_z_exact" in result else ""))
    if "nll_raise" in result:
        lines.append(f"bracket   on the first {result['raise_examples']} test points: NLL {result['nll_ais_same_examples']:.3f} "
                     f"(AIS, optimistic) to {result['nll_raise']:.3f} (RAISE, conservative): width "
                     f"{result['bracket_width']:.3f} ± {result['bracket_width_stderr']:.3f} nats")
    for key in sorted((k for k in result if k.startswith("iwae_") and not k.endswith("stderr")),
                      key=lambda k: int(k.split("_")[1])):
        lines.append(f"IWAE K={key.split('_')[1]:<5} {result[key]:.3f} ± {result[key + '_stderr']:.3f}")
    return "\n".join(lines)
