"""The RBM family: a Bernoulli restricted Boltzmann machine trained by CD-k or PCD-k, scored by AIS
with RAISE beside it (vaekit.annealing)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import pictures
from ..annealing import ais_schedule, log_partition, raise_log_prob
from ..config import ConfigError, check_choice, check_positive
from ..evaluate import summarize
from ..models.rbm import RBM, base_rate_bias, centre_gradients, update_offsets
from ..results import Result, mean_result, flat
from ..runs import seeded_stream
from ..train import StepState, ascend
from . import Family


@dataclass
class RBMConfig:
    num_hidden: int = 64  # hidden units H
    num_chains: int = 100  # persistent Gibbs chains (persistent = true)
    init: str = "random"  # random | base_rate (visible biases at the data log-odds, Hinton 2010)
    cd_steps: int = 1  # Gibbs sweeps of CD-k / PCD-k
    persistent: bool = False  # persistent chains (PCD, Tieleman 2008) instead of CD
    # > 0 follows the centred gradient (Melchior, Fischer & Wiskott 2016), the offsets tracking the data
    # means of v and p(h|v) as sliding averages at this rate (0.01 in the paper); 0 = the plain gradient
    centering: float = 0.0

    def validate(self) -> None:
        check_choice(self.init, ("random", "base_rate"), "rbm.init")
        check_positive(self, "rbm", ("num_hidden", "num_chains", "cd_steps"))
        if not 0 <= self.centering <= 1:
            raise ConfigError(f"rbm.centering: expected an offset update rate in [0, 1], got {self.centering}")


def build(c: RBMConfig, spec) -> RBM:
    return RBM(spec.num_dims, c.num_hidden, num_chains=c.num_chains)


@torch.no_grad()
def init(model: RBM, data, c: RBMConfig) -> None:
    if c.init == "base_rate":  # Hinton 2010, "A practical guide to training RBMs", section 8
        model.visible_bias.copy_(base_rate_bias(data.train.x))
        model.visible_offset.copy_(data.train.x.float().mean(0))


def free_energy_gap(model: RBM, x: torch.Tensor, cfg) -> torch.Tensor:
    """CD-k (Hinton 2002) or PCD-k (Tieleman 2008): per example -F(x) + mean F(v-), v- the negative
    samples after rbm.cd_steps Gibbs sweeps from the data or the persistent chains. Its gradient is the
    contrastive-divergence estimate of d log p(x); its value is the free-energy gap, not a bound. With
    rbm.centering > 0 the offsets move first. [B]."""
    c = cfg.family
    if c.centering:
        update_offsets(model, x, c.centering)
    start = model.persistent_chains(x) if c.persistent else x
    negative = model.gibbs(start, c.cd_steps)
    if c.persistent:
        model.chains.copy_(negative)
    return -model.free_energy(x) + model.free_energy(negative).mean()


def step(state: StepState, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One SGD (or Adam) step on the CD surrogate, the gradient centred when rbm.centering > 0."""
    centre = (lambda: centre_gradients(state.model)) if state.cfg.family.centering else None
    return ascend(state, free_energy_gap, x, "free_energy_gap", centre)


@torch.no_grad()
def monitor(model: RBM, x: torch.Tensor, cfg) -> dict[str, float]:
    """Cheap held-out terms of an RBM: mean free energy, and the squared error of a one-sweep
    mean-field reconstruction p(v|h ~ p(h|v))."""
    free_energy = error = 0.0
    for xb in x.split(cfg.eval.batch_size):
        free_energy += float(model.free_energy(xb).sum())
        error += float((model.visible_given_hidden(model.hidden_given_visible(xb).sample()).mean - xb).pow(2).sum())
    return {"free_energy": free_energy / x.shape[0], "reconstruction_error": error / x.shape[0]}


def _bracket(log_px: torch.Tensor, raised: torch.Tensor, e) -> dict[str, Result]:
    """RAISE beside forward AIS on the same points; the width is paired point by point, so its
    error excludes the spread of log p(v) itself."""
    n = raised.shape[0]
    return {"nll_raise": mean_result(-raised, f"RAISE, {e.raise_betas} betas", "stochastic upper bound", 1),
            "nll_ais_same_examples": mean_result(-log_px[:n], "AIS log Z", "stochastic lower bound", e.ais_runs),
            "bracket_width": mean_result(log_px[:n] - raised, "AIS - RAISE, paired", "estimate")}


@torch.no_grad()
def evaluate(model: RBM, data, cfg, progress: bool = True) -> dict:
    """Test log-likelihood log p(v) = -F(v) - log Z with log Z by forward AIS from the base-rate RBM of
    the training marginals (Salakhutdinov & Murray 2008): it overestimates log p(v) on average. Beside
    it, on the first eval.raise_examples test points, RAISE (Burda, Grosse & Salakhutdinov 2015), which
    underestimates it: the bracket. The exact log Z too when the smaller layer can be enumerated."""
    e, start, x = cfg.eval, time.perf_counter(), data.test.x
    with seeded_stream(e.seed, x.device):
        base = base_rate_bias(data.train.x)
        log_z = log_partition(model, base, e.ais_betas, e.ais_runs, estimate=True)
        subset = x[:e.raise_examples]
        # one annealing run per test point, all points at once: the matmuls stay large
        raised = raise_log_prob(model, base, ais_schedule(e.raise_betas), subset).cpu() if subset.shape[0] else None
    log_px = -model.free_energy(x).double().cpu() - log_z["log_z_ais"].value
    results = summarize({"log_px": log_px}, x.shape[1], e)
    estimator = f"AIS, {e.ais_betas} betas x {e.ais_runs} runs, base-rate RBM"
    # AIS underestimates log Z on average, so log p(v) errs high and the NLL low
    results = {name: Result(r.value, r.stderr, estimator, "stochastic lower bound", e.ais_runs, r.num_examples,
                            r.unit) for name, r in results.items()}
    results["log_z"] = log_z["log_z_ais"]
    if "log_z_exact" in log_z:
        results["log_z_exact"] = log_z["log_z_exact"]
    if raised is not None:
        results.update(_bracket(log_px, raised, e))
        estimator += f"; RAISE ({e.raise_betas} betas) on {subset.shape[0]} test points beside it"
    extra = {"raise_examples": subset.shape[0], "raise_betas": e.raise_betas} if raised is not None else {}
    return {**flat(results), **extra, "results": results, "estimator": estimator, "num_examples": x.shape[0],
            "num_betas": e.ais_betas, "num_runs": e.ais_runs, "seconds": time.perf_counter() - start}


FAMILY = Family(
    name="rbm", help="Bernoulli restricted Boltzmann machine: CD-k / PCD-k, AIS log-likelihood", config=RBMConfig,
    build=build, step=step, evaluate=evaluate, monitor=monitor, init=init, binary_data=lambda c: True,
    pictures=pictures.pick("samples", "chain", "filters", "curves"),
    no_pictures={"reconstructions": "an RBM has no encoder-decoder pair (its chains are drawn by 'sample')",
                 "interpolations": "an RBM has no latent space to interpolate in"},
    legacy_keys={"latent": "num_hidden"})
