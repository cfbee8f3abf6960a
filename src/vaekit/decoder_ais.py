"""log p(x) of a decoder-based model by annealed importance sampling with Hamiltonian Monte Carlo
(Neal 2001; Wu, Burda, Salakhutdinov & Grosse 2017, "On the quantitative analysis of decoder-based
generative models").

A model p(z) p(x|z) with continuous z (a VAE's decoder alone, the linear-Gaussian generator, a GAN's
generator with an observation model) has log p(x) = log ∫ p(z) p(x|z) dz. AIS anneals from the prior
f_0(z) = p(z) (normalised, Z_0 = 1) to the unnormalised posterior f_T(z) = p(z) p(x|z) (Z_T = p(x))
through f_t(z) = p(z) p(x|z)^beta_t, moving each chain by HMC transitions that leave f_t invariant:
    log w = sum_t (beta_t - beta_{t-1}) log p(x | z_{t-1}),    E[w] = p(x),
so the log-mean-exp of the weights of several chains is a stochastic lower bound on log p(x) that
tightens as the number of intermediate distributions grows. Walked backwards from an exact posterior
sample (available for data simulated from the model), the same path gives E[w'] = 1 / p(x), a
stochastic upper bound: bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015) brackets log p(x).

Shapes: x [B, D]; chains run in one batch of N = num_chains * B latents z [N, L], chain-major.
The HMC step size is adapted per chain towards an acceptance rate of 0.65 (as in Wu et al. 2017),
from the chain's own past acceptances.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm.auto import tqdm
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily

from .annealing import annealing_path
from .models.vae import BernoulliLogits, diagonal_normal
from .objectives import log_mean_exp
from .protocols import ExactDensity, LatentVariableModel
from .results import Result, mean_result

MIN_STEP, MAX_STEP = 1e-4, 1.0  # HMC step sizes stay in this range while adapting
ADAPT_RATE = 1.02  # step size *= this after an acceptance-rate estimate above target, /= below


def sigmoid_schedule(num_steps: int, radius: float = 4.0) -> torch.Tensor:
    """Inverse temperatures 0 = beta_0 < ... < beta_T = 1 spaced as a sigmoid of a uniform grid on
    [-radius, radius], rescaled to [0, 1]: dense at both ends, where the annealed distributions change
    fastest (Grosse, Maddison & Salakhutdinov 2013; Wu et al. 2017). [num_steps + 1], float64."""
    if num_steps < 1:
        raise ValueError(f"num_steps: expected at least 1 intermediate step, got {num_steps}")
    s = torch.sigmoid(torch.linspace(-radius, radius, num_steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


class ObservedGenerator(nn.Module):
    """p(z) p(x|z) for a generator without a likelihood of its own (a GAN's): x ~ Normal(g(z), scale^2 I)
    on grey levels or Bernoulli(logits = G(z)) on binary data, g = sigmoid(G) (Wu et al. 2017, section 4).
    A categorical code c ~ Uniform{1..K} beside z (InfoGAN) is summed out exactly:
    p(x|z) = (1/K) sum_c p(x | z, c), so that HMC moves z alone.

    generator: a model with prior() over z (or [z, onehot(c)]) and generate_logits(z) -> G(z) [N, D];
    observation: "gaussian" (needs scale > 0) or "bernoulli"."""

    def __init__(self, generator: nn.Module, observation: str, scale: float | None = None, categories: int = 0):
        super().__init__()
        if observation not in ("gaussian", "bernoulli"):
            raise ValueError(f"observation: expected 'gaussian' or 'bernoulli', got {observation!r}")
        if observation == "gaussian" and not (scale and scale > 0):
            raise ValueError(f"scale: a Gaussian observation model needs a noise scale > 0, got {scale!r}")
        self.generator, self.observation, self.scale = generator, observation, scale
        self.categories = categories

    def prior(self) -> Distribution:
        """p(z) = N(0, I) over the continuous latents."""
        loc = self.generator.prior_loc
        return diagonal_normal(loc, torch.ones_like(loc))

    def _observe(self, logits: torch.Tensor) -> Distribution:
        if self.observation == "bernoulli":
            return Independent(BernoulliLogits(logits=logits, validate_args=False), 1, validate_args=False)
        return diagonal_normal(torch.sigmoid(logits), torch.full_like(logits, self.scale))

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z [N, L]: one event over D, a uniform mixture over the K codes when there are any."""
        if not self.categories:
            return self._observe(self.generator.generate_logits(z))
        n, k = z.shape[0], self.categories
        codes = torch.eye(k, dtype=z.dtype, device=z.device).expand(n, k, k)
        logits = self.generator.generate_logits(torch.cat([z[:, None].expand(n, k, -1), codes], -1).flatten(0, 1))
        mixture = Categorical(logits=z.new_zeros(n, k), validate_args=False)
        return MixtureSameFamily(mixture, self._observe(logits.unflatten(0, (n, k))), validate_args=False)


def _terms(model, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(log p(z) [N], log p(x|z) [N], their gradients in z [N, L] each): everything the energy
    U_beta(z) = -log p(z) - beta log p(x|z) needs at any beta, from one pass through the decoder."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        log_lik = model.likelihood(z).log_prob(x)
        (grad_lik,) = torch.autograd.grad(log_lik.sum(), z)
        log_prior = model.prior().log_prob(z)
        (grad_prior,) = torch.autograd.grad(log_prior.sum(), z)
    return log_prior.detach(), log_lik.detach(), grad_prior, grad_lik


def _energy(terms, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(U_beta(z) [N], dU_beta/dz [N, L]) from _terms."""
    log_prior, log_lik, grad_prior, grad_lik = terms
    return -(log_prior + beta * log_lik), -(grad_prior + beta * grad_lik)


def hmc_step(model, x: torch.Tensor, z: torch.Tensor, beta: float, step_size: torch.Tensor, leapfrog: int,
             terms: tuple[torch.Tensor, ...]):
    """One HMC transition leaving f_beta(z) = p(z) p(x|z)^beta invariant (Neal 2011, figure 2): a fresh
    momentum p ~ N(0, I), `leapfrog` leapfrog steps of size step_size [N] (one per chain), then
    Metropolis acceptance on H = U(z) + |p|^2 / 2. terms: _terms at z. -> (z, its terms, accepted [N])."""
    eps = step_size[:, None]
    energy0, grad = _energy(terms, beta)
    momentum0 = torch.randn_like(z)
    znew, momentum = z, momentum0 - 0.5 * eps * grad
    for i in range(leapfrog):
        znew = znew + eps * momentum
        new_terms = _terms(model, x, znew)
        energy, grad = _energy(new_terms, beta)
        momentum = momentum - (eps if i < leapfrog - 1 else 0.5 * eps) * grad
    log_ratio = (energy0 - energy) + 0.5 * (momentum0.pow(2).sum(-1) - momentum.pow(2).sum(-1))
    accepted = torch.log(torch.rand_like(log_ratio)) < log_ratio  # NaN compares False: rejected
    pick = lambda new, old: torch.where(accepted.view(-1, *[1] * (new.dim() - 1)), new, old)
    return pick(znew, z), tuple(map(pick, new_terms, terms)), accepted


@torch.no_grad()
def anneal(model, x: torch.Tensor, betas: torch.Tensor, num_chains: int, leapfrog: int = 10,
           step_size: float = 0.05, target_accept: float = 0.65, init_z: torch.Tensor | None = None) -> dict:
    """AIS along betas for every row of x, num_chains chains each. Forward (init_z None): chains start
    from p(z) and walk beta 0 -> 1; reverse (init_z [num_chains, B, L], exact posterior samples): they
    walk 1 -> 0. Returns {"log_w" [num_chains, B] float64, "accept_rate", "step_size" (final means)}.
    Forward: log mean_k w_k estimates log p(x) from below; reverse: -log mean_k w_k from above."""
    path = annealing_path(betas.double().tolist(), reverse=init_z is not None)
    b = x.shape[0]
    xs = x.expand(num_chains, *x.shape).reshape(num_chains * b, -1)
    if init_z is None:
        z = model.prior().sample((num_chains * b,))
    else:
        z = init_z.reshape(num_chains * b, -1).to(x.dtype)
    eps = torch.full((z.shape[0],), step_size, dtype=x.dtype, device=x.device)
    rate = torch.full_like(eps, target_accept)
    log_w = torch.zeros(z.shape[0], dtype=torch.float64, device=x.device)
    terms = _terms(model, xs, z)
    accepts = 0.0
    for i, (b_prev, b_next) in enumerate(zip(path[:-1], path[1:])):
        log_w += (b_next - b_prev) * terms[1].double()
        if i == len(path) - 2:
            break  # the last transition would not change any weight
        z, terms, accepted = hmc_step(model, xs, z, b_next, eps, leapfrog, terms)
        rate = 0.9 * rate + 0.1 * accepted.to(rate.dtype)
        eps = torch.where(rate > target_accept, eps * ADAPT_RATE, eps / ADAPT_RATE).clamp(MIN_STEP, MAX_STEP)
        accepts += float(accepted.double().mean())
    transitions = max(1, len(path) - 2)
    return {"log_w": log_w.reshape(num_chains, b), "accept_rate": accepts / transitions,
            "step_size": float(eps.mean())}


def log_likelihood(model, x: torch.Tensor, cfg, num_steps: int | None = None, init_z: torch.Tensor | None = None,
                   progress: bool = False) -> dict:
    """AIS estimates of log p(x) for every row of x [N, D], cfg.batch_size rows at a time, with the
    settings of an EvalConfig (decoder_ais_*, hmc_*). Forward: a stochastic lower bound; with init_z
    [chains, N, L] (exact posterior samples) the reverse estimate, a stochastic upper bound.
    -> {"log_px" [N] float64, "accept_rate", "step_size", "seconds"}."""
    start, betas = time.perf_counter(), sigmoid_schedule(num_steps or cfg.decoder_ais_steps)
    model.eval()  # e.g. BatchNorm on running statistics: each image's density its own
    chains = cfg.decoder_ais_chains if init_z is None else init_z.shape[0]
    parts = []
    for i in tqdm(range(0, x.shape[0], cfg.batch_size), desc=f"AIS, {len(betas) - 1} steps", disable=not progress,
                  leave=False):
        z0 = None if init_z is None else init_z[:, i:i + cfg.batch_size]
        out = anneal(model, x[i:i + cfg.batch_size], betas, chains, cfg.hmc_leapfrog, cfg.hmc_step_size,
                     init_z=z0)
        parts.append(out)
    estimate = torch.cat([log_mean_exp(o["log_w"]) for o in parts])
    rows = [o["log_w"].shape[1] for o in parts]
    mean = lambda key: sum(o[key] * r for o, r in zip(parts, rows)) / sum(rows)
    return {"log_px": estimate if init_z is None else -estimate, "accept_rate": mean("accept_rate"),
            "step_size": mean("step_size"), "seconds": time.perf_counter() - start}


@torch.no_grad()
def simulate(model, num_examples: int, num_chains: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Data from the model itself with exact posterior samples: z ~ p(z), x ~ p(x|z); the z that made
    each x is a draw from p(z|x). -> (x [N, D], z repeated for each chain [num_chains, N, L])."""
    z = model.prior().sample((num_examples,))
    x = model.likelihood(z).sample()
    return x, z.expand(num_chains, *z.shape)


def bdmc(model, cfg, progress: bool = False) -> dict:
    """Bidirectional Monte Carlo on cfg.bdmc_examples images simulated from the model (Grosse,
    Ghahramani & Adams 2015; Wu et al. 2017, section 3.2): forward AIS from the prior gives a stochastic
    lower bound on each log p(x), reverse AIS from the exact posterior sample a stochastic upper bound;
    their gap bounds the error of forward AIS with the same schedule on such data.
    -> {"lower" [N], "upper" [N], "accept_rate", "seconds"}."""
    x, z = simulate(model, cfg.bdmc_examples, cfg.decoder_ais_chains)
    lower = log_likelihood(model, x, cfg, progress=progress)
    upper = log_likelihood(model, x, cfg, init_z=z, progress=progress)
    return {"lower": lower["log_px"], "upper": upper["log_px"], "accept_rate": lower["accept_rate"],
            "seconds": lower["seconds"] + upper["seconds"]}


def choose_scale(build, x: torch.Tensor, cfg, progress: bool = False) -> tuple[float, dict[float, float]]:
    """The observation noise scale sigma of a generator's Gaussian p(x|z) = N(g(z), sigma^2 I) that
    maximises the mean AIS log-likelihood of held-out images x [N, D], over the grid
    cfg.observation_scales, with a quarter of the evaluation's steps (Wu et al. 2017 choose sigma on a
    validation set). Too few steps would favour large sigma, whose broad posteriors are easy to anneal
    to. build(sigma) -> the model. -> (best sigma, {sigma: mean log p(x)})."""
    steps = max(10, cfg.decoder_ais_steps // 4)
    means = {s: float(log_likelihood(build(s), x, cfg, steps, progress=progress)["log_px"].mean())
             for s in cfg.observation_scales}
    return max(means, key=means.get), means


def _reference(model, x: torch.Tensor, cfg) -> tuple[str, torch.Tensor] | None:
    """What forward AIS is checked against on the same images: the exact log p(x) where the model has
    one, else importance sampling with q(z|x) and K = cfg.num_samples where it has an encoder."""
    from .evaluate import log_likelihood as importance_sampled
    if isinstance(model, ExactDensity):
        return "exact", torch.cat([model.log_prob(xb) for xb in x.split(cfg.batch_size)]).double()
    if isinstance(model, LatentVariableModel):
        return "is", torch.cat([importance_sampled(model, xb, cfg.num_samples, cfg.chunk_size)
                                for xb in x.split(cfg.batch_size)]).double()
    return None


@torch.no_grad()
def evaluate(model, x: torch.Tensor, cfg, progress: bool = False) -> tuple[dict[str, Result], dict]:
    """`vaekit evaluate --ais` on the first cfg.decoder_ais_examples rows of x [N, D]: the AIS test NLL,
    its paired difference from the exact or importance-sampled log p(x) of the same images, HMC's
    acceptance rate and, on cfg.bdmc_examples simulated images, the BDMC bracket. Seeding is the
    caller's. -> (results, {"seconds": {...}})."""
    x, chains = x[:cfg.decoder_ais_examples], cfg.decoder_ais_chains
    how = f"AIS with HMC, {cfg.decoder_ais_steps} steps, {chains} chains, {cfg.hmc_leapfrog} leapfrog steps"
    forward = log_likelihood(model, x, cfg, progress=progress)
    results = {"nll_ais": mean_result(-forward["log_px"], how, "stochastic upper bound", chains),
               "ais_accept_rate": Result(forward["accept_rate"], None, "HMC acceptance, mean over transitions",
                                         "estimate", None, x.shape[0], "fraction")}
    seconds = {"ais": forward["seconds"]}
    reference = _reference(model, x, cfg)
    if reference:
        kind, log_px = reference
        if kind == "is":
            results["nll_is_same_examples"] = mean_result(
                -log_px, f"importance sampling, K={cfg.num_samples}, q(z|x) proposal", "stochastic upper bound",
                cfg.num_samples)
        results[f"ais_minus_{kind}"] = mean_result(forward["log_px"] - log_px, f"log p(x): AIS minus {kind}, paired",
                                                   "estimate")
    if cfg.bdmc_examples:
        b = bdmc(model, cfg, progress)
        sim = f"{how}, on {cfg.bdmc_examples} images simulated from the model"
        results["bdmc_nll_forward"] = mean_result(-b["lower"], "forward " + sim, "stochastic upper bound", chains)
        results["bdmc_nll_reverse"] = mean_result(-b["upper"], "reverse " + sim, "stochastic lower bound", chains)
        results["bdmc_gap"] = mean_result(b["upper"] - b["lower"], "BDMC: reverse minus forward log p(x), paired",
                                          "estimate")
        seconds["bdmc"] = b["seconds"]
    return results, {"seconds": seconds}
