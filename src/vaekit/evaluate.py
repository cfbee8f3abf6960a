"""Test log-likelihood by importance sampling, next to the ELBO, its terms and IWAE bounds.

log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016, appendix; Rezende
et al. 2014): the IWAE bound with K in the thousands. It is computed over batches of data points and
chunks of samples, combined with a running log-sum-exp, so memory stays at batch x chunk x D floats.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint
from . import config as configlib
from . import families
from .objectives import iwae_bound, log_mean_exp_chunks
from .protocols import LayeredLatents
from .results import Result, as_json, flat, format_line, from_json, mean_result
from .runs import load_run, prepare_data, seeded_stream


@torch.no_grad()
def log_likelihood(model, x: torch.Tensor, num_samples: int, chunk_size: int, log_weights=None) -> torch.Tensor:
    """Importance-sampled log p(x) with num_samples samples, chunk_size at a time. x [B, D] -> [B].
    log_weights: (x, K) -> [K, B], model.log_weights unless given (its compiled version)."""
    log_weights = log_weights or model.log_weights
    return log_mean_exp_chunks(log_weights(x, min(chunk_size, num_samples - start))
                               for start in range(0, num_samples, chunk_size))


def weights_function(model, compile: bool):
    """(model.log_weights or its torch.compile'd version, the context to call it in). Compiled, the
    element-wise work of each chunk (the likelihood's log-density over [K, B, D] above all) is fused
    into few passes over memory; the context keeps the random draws eager (inductor's fallback_random),
    so the compiled function draws the very samples the eager one does, from the same stream."""
    if not compile:
        return model.log_weights, contextlib.nullcontext()
    import torch._inductor.config as inductor_config
    return torch.compile(model.log_weights, dynamic=False), inductor_config.patch(fallback_random=True)


@torch.no_grad()
def per_example(model, x: torch.Tensor, cfg: configlib.EvalConfig, log_weights=None) -> dict[str, torch.Tensor]:
    """Every evaluation quantity for each data point of a batch x [B, D] -> {name: [B]}.
    log_weights: as in log_likelihood."""
    log_weights = log_weights or model.log_weights
    reconstruction, kl = model.elbo_terms(x, cfg.elbo_samples)
    out = {"log_px": log_likelihood(model, x, cfg.num_samples, cfg.chunk_size, log_weights),
           "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}
    for k in cfg.iwae_samples:
        out[f"iwae_{k}"] = iwae_bound(log_weights(x, k))
    return out


def summarize(values: dict[str, torch.Tensor], num_dims: int, cfg: configlib.EvalConfig,
              analytic_kl: bool = True) -> dict[str, Result]:
    """Per-example values {name: [N]} of `per_example` as typed results: the NLL (in nats and
    bits/dim) and the bounds on log p(x), each with its standard error over the N examples.
    analytic_kl: the model's KL(q || p(z)) is in closed form (else a Monte Carlo estimate)."""
    nll = -values["log_px"]
    proposal = "importance sampling, q(z|x) proposal"
    # E[log p-hat(x)] <= log p(x) (Jensen): the NLL estimate errs high on average
    results = {"nll": mean_result(nll, proposal, "stochastic upper bound", cfg.num_samples),
               "bits_per_dim": mean_result(nll / (num_dims * math.log(2.0)), proposal, "stochastic upper bound",
                                     cfg.num_samples, "bits/dim")}
    if "elbo" in values:
        mc = "Monte Carlo reconstruction term, " + ("analytic KL" if analytic_kl else "Monte Carlo KL")
        results["elbo"] = mean_result(values["elbo"], mc, "lower bound", cfg.elbo_samples)
        results["reconstruction"] = mean_result(values["reconstruction"], "Monte Carlo", "estimate",
                                                cfg.elbo_samples)
        results["kl"] = (mean_result(values["kl"], "analytic", "exact") if analytic_kl else
                         mean_result(values["kl"], "Monte Carlo", "estimate", cfg.elbo_samples))
    for k in cfg.iwae_samples:
        if f"iwae_{k}" in values:
            results[f"iwae_{k}"] = mean_result(values[f"iwae_{k}"], "IWAE bound", "lower bound", k)
    return results


@torch.no_grad()
def evaluate(model, x: torch.Tensor, cfg: configlib.EvalConfig, progress: bool = True) -> dict:
    """Evaluate a latent-variable model on data x [N, D]; seeded, leaves the global RNG as it was.
    Returns {"results": {name: Result}} and the legacy flat keys (nll, nll_stderr, elbo, ...)."""
    model.eval()
    start = time.perf_counter()
    log_weights, context = weights_function(model, cfg.compile)
    with seeded_stream(cfg.seed, x.device), context:
        batches = [per_example(model, xb, cfg, log_weights) for xb in
                   tqdm(x.split(cfg.batch_size), desc=f"log p(x), K={cfg.num_samples}", disable=not progress,
                        leave=False)]
    values = {k: torch.cat([b[k] for b in batches]).double().cpu() for k in batches[0]}
    results = summarize(values, x.shape[1], cfg, analytic_kl=not isinstance(model, LayeredLatents))
    return {**flat(results), "results": results, "estimator": f"importance sampling, K={cfg.num_samples}, "
            "q(z|x) proposal", "num_examples": x.shape[0], "num_samples": cfg.num_samples,
            "seconds": time.perf_counter() - start}


def check_ais(model, cfg: configlib.RunConfig) -> None:
    """--ais needs a decoder p(z) p(x|z) over continuous latents, the model's own or one its family
    makes by adding an observation model; checked before any evaluation runs."""
    from .protocols import DecoderLikelihood
    if families.get(cfg.model.name).observation_model is None and not isinstance(model, DecoderLikelihood):
        raise ValueError(f"--ais: the {cfg.model.name!r} family's model is not a decoder p(z) p(x|z) over "
                         "continuous latents, so there is nothing for AIS with HMC to anneal over")


def ais_evaluation(model, data, cfg: configlib.RunConfig, progress: bool = True) -> dict:
    """`vaekit evaluate --ais`: log p(x) of the model's decoder by AIS with HMC (vaekit.decoder_ais) on
    the first eval.decoder_ais_examples test images, beside the BDMC bracket on simulated images; a
    family without a likelihood adds its observation model first. -> {"results": ..., "seconds": ...}."""
    from . import decoder_ais
    family, chosen = families.get(cfg.model.name), {}
    check_ais(model, cfg)
    if family.observation_model is not None:
        with seeded_stream(cfg.eval.seed, data.test.x.device):
            model, chosen = family.observation_model(model, data, cfg, progress)
    with seeded_stream(cfg.eval.seed, data.test.x.device):
        results, info = decoder_ais.evaluate(model, data.test.x, cfg.eval, progress)
    return {"results": {**chosen, **results}, **info}


def evaluate_model(run_dir: str | Path, cfg: configlib.RunConfig, model, data, progress: bool = True,
                   ais: bool = False) -> dict:
    """Evaluate `model` by its family's evaluation on the test set of its run (with ais, also by AIS
    over its decoder); writes <run_dir>/eval.json (the typed results under "results", beside the flat
    keys of earlier versions)."""
    configlib.validate(cfg)
    if cfg.eval.compile and not callable(getattr(model, "log_weights", None)):
        raise ValueError(f"eval.compile: the {cfg.model.name!r} family's model has no log importance weights to "
                         "compile (it is evaluated by its own estimator); leave eval.compile off")
    if ais:
        check_ais(model, cfg)
    binarization = cfg.data.binarization
    result = {"data": cfg.data.name, "family": cfg.model.name, "checkpoint": checkpoint.describe(run_dir),
              "test_binarization": f"{binarization} -> fixed draw (seed 0)"
              if binarization in ("dynamic", "static") else binarization,
              **families.get(cfg.model.name).evaluate(model, data, cfg, progress)}
    if ais:
        extra = ais_evaluation(model, data, cfg, progress)
        result["results"] = {**result["results"], **extra["results"]}
        result.update({**flat(extra["results"]), "ais_seconds": extra["seconds"]})
    saved = {**result, "results": as_json(result["results"])}
    (Path(run_dir) / "eval.json").write_text(json.dumps(saved, indent=2) + "\n")
    return result


def evaluate_run(run_dir: str | Path, num_samples: int | None = None, device: str = "auto",
                 progress: bool = True, ais: bool = False, data_dir: str | None = None, **eval_settings) -> dict:
    """Evaluate a run's last checkpoint on its test set (with ais, also by AIS over its decoder); writes
    eval.json into the run folder. num_samples and eval_settings (fields of EvalConfig, None = the
    run's) override the run's [eval]; data_dir, where the run's data set lives on this machine (its files
    are checked against their checksums as in training), its data.data_dir."""
    cfg, model = load_run(run_dir, device, data_dir=data_dir)
    settings = {k: v for k, v in {"num_samples": num_samples, **eval_settings}.items() if v is not None}
    if settings:
        cfg = replace(cfg, eval=replace(cfg.eval, **settings))
    data = prepare_data(cfg, next(model.parameters()).device)
    return evaluate_model(run_dir, cfg, model, data, progress, ais)


def format_result(result: dict) -> str:
    """Readable lines of an evaluation: a headline (the test NLL where the family has a likelihood,
    else what it says instead), then every typed result."""
    results = result["results"]
    if isinstance(next(iter(results.values()), None), dict):
        results = from_json(results)
    lines = []
    if "nll" in results:
        nll, bpd = results["nll"], results.get("bits_per_dim")
        lines.append(f"test NLL  {nll.value:.3f} ± {nll.stderr:.3f} nats"
                     + (f"  ({bpd.value:.4f} bits/dim)" if bpd else "")
                     + f"  [{result['data']}, {result['estimator']}, {result['num_examples']} examples]")
    elif "note" in result:
        lines.append(f"{result['note']}  [{result['data']}]")
    lines += [format_line(name, r) for name, r in results.items() if name not in ("nll", "bits_per_dim")]
    return "\n".join(lines)
