"""The gap between log p(x) and the ELBO, measured and split (Cremer, Li & Duvenaud 2018).

    log p(x) - ELBO(q) = KL(q(z|x) || p(z|x))                          the total gap
                       = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q)]   approximation + amortisation

where q* is the best member of q's family for each x alone, found here by optimising a separate
Gaussian per data point. Also: the ELBO's two halves E_q[log p(x,z)] and H(q), IWAE bounds for
several K, the number of active latent units (Burda et al. 2016: Cov_x(E_q[z_j]) > 0.01) and the KL
per latent dimension. Every value is a mean over data points with its standard error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from .evaluate import log_likelihood
from .objectives import elbo_analytic_kl, iwae_bound, log_importance_weights, standard_error
from .protocols import ExactDensity

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda, Grosse & Salakhutdinov 2016, section 5.2


def _mean_se(values: torch.Tensor) -> dict[str, float]:
    values = values.double().cpu()
    return {"mean": float(values.mean()), "stderr": standard_error(values)}


@torch.no_grad()
def active_units(model, x: torch.Tensor, batch_size: int = 500) -> dict:
    """Number of latent dimensions j with Cov_x(E_q[z_j|x]) > 0.01, and each variance [L]."""
    means = torch.cat([model.posterior(xb).mean for xb in x.split(batch_size)])
    variance = means.var(dim=0)
    return {"active": int((variance > ACTIVE_UNIT_THRESHOLD).sum()), "of": int(variance.numel()),
            "variance": variance.cpu().tolist()}


@torch.no_grad()
def kl_per_dimension(model, x: torch.Tensor) -> list[float] | None:
    """Mean over x of KL(q(z_j|x) || N(0, 1)) for each latent dimension j; None unless q factorises."""
    q = model.posterior(x)
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal)):
        return None
    prior = Normal(torch.zeros_like(q.base_dist.loc), torch.ones_like(q.base_dist.scale))
    return kl_divergence(q.base_dist, prior).mean(0).cpu().tolist()


def optimised_posterior(model, x: torch.Tensor, steps: int = 500, num_samples: int = 10,
                        lr: float = 1e-2) -> Independent:
    """q*(z|x): a separate diagonal Gaussian for every data point, started at the encoder's q and
    trained by Adam on the ELBO (Cremer et al. 2018, section 3). The points do not interact, so they
    are optimised together as one batch. x [B, D]."""
    with torch.no_grad():
        q = model.posterior(x)
        loc, scale = q.mean.clone(), q.variance.sqrt().clamp_min(1e-4)
    raw = torch.log(torch.expm1(scale)).requires_grad_()  # inverse softplus
    loc.requires_grad_()
    optimizer = torch.optim.Adam([loc, raw], lr=lr)
    for _ in range(steps):
        q_star = Independent(Normal(loc, F.softplus(raw) + 1e-6), 1)
        loss = -elbo_analytic_kl(x, q_star, model.prior(), model.likelihood, num_samples).mean(0).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Independent(Normal(loc.detach(), F.softplus(raw.detach()) + 1e-6), 1)


def _elbo(model, x, q, num_samples) -> torch.Tensor:
    """ELBO(q) [B]: the KL in closed form where torch has it, else the mean of the log weights (a chain
    of layers, or a diagonal q* against a layered prior)."""
    try:
        return elbo_analytic_kl(x, q, model.prior(), model.likelihood, num_samples).mean(0)
    except NotImplementedError:
        return log_importance_weights(x, q, model.prior(), model.likelihood, num_samples).mean(0)


def _entropy(q, num_samples: int) -> torch.Tensor:
    """H(q) [B]: closed form where torch has it, else -E_q[log q(z)] by Monte Carlo."""
    try:
        return q.entropy()
    except NotImplementedError:
        return -q.log_prob(q.sample((num_samples,))).mean(0)


@torch.no_grad()
def gap_report(model, x: torch.Tensor, num_samples: int = 1000, iwae_samples=(1, 10, 100),
               elbo_samples: int = 100, amortisation: bool = True, optimise_steps: int = 500,
               log_px: torch.Tensor | None = None) -> dict:
    """Every quantity of the module docstring on data x [N, D] (keep N in the hundreds: the
    amortisation split optimises one q per point). log p(x) [N] is taken from the argument when a
    caller knows it, else exact when the model has log_prob, else importance-sampled with num_samples."""
    prior, q = model.prior(), model.posterior(x)
    z = q.sample((elbo_samples,))
    log_joint = (model.likelihood(z).log_prob(x) + prior.log_prob(z)).mean(0)  # E_q[log p(x,z)] [B]
    entropy, elbo = _entropy(q, elbo_samples), _elbo(model, x, q, elbo_samples)
    exact = model if isinstance(model, ExactDensity) else getattr(model, "as_linear_gaussian", lambda: None)()
    estimator = "given" if log_px is not None else "exact" if exact is not None else f"IS, K={num_samples}"
    if log_px is None:
        log_px = exact.log_prob(x) if exact is not None else \
            log_likelihood(model, x, num_samples, min(num_samples, 500))
    report = {"num_examples": x.shape[0], "log_px_estimator": estimator,
              "expected_log_joint": _mean_se(log_joint), "entropy": _mean_se(entropy),
              "elbo": _mean_se(elbo), "log_px": _mean_se(log_px), "gap": _mean_se(log_px - elbo),
              "iwae": {k: _mean_se(iwae_bound(model.log_weights(x, k))) for k in iwae_samples},
              "active_units": active_units(model, x), "kl_per_dim": kl_per_dimension(model, x)}
    # one diagonal Gaussian per point is q's own family only where q factorises (not a chain of layers)
    if amortisation and report["kl_per_dim"] is not None:
        with torch.enable_grad():
            q_star = optimised_posterior(model, x, optimise_steps)
        elbo_star = _elbo(model, x, q_star, elbo_samples)
        report["approximation_gap"] = _mean_se(log_px - elbo_star)
        report["amortisation_gap"] = _mean_se(elbo_star - elbo)
    return report


def format_gap(report: dict) -> str:
    """Readable lines of a gap report."""
    f = lambda v: f"{v['mean']:10.3f} ± {v['stderr']:.3f}"
    lines = [f"gap report on {report['num_examples']} examples (log p(x): {report['log_px_estimator']})",
             f"  E_q[log p(x,z)]     {f(report['expected_log_joint'])}",
             f"  H(q)                {f(report['entropy'])}",
             f"  ELBO                {f(report['elbo'])}",
             *[f"  IWAE K={k:<6}       {f(v)}" for k, v in report["iwae"].items()],
             f"  log p(x)            {f(report['log_px'])}",
             f"  gap = KL(q||p(z|x)) {f(report['gap'])}"]
    if "amortisation_gap" in report:
        lines += [f"    approximation    {f(report['approximation_gap'])}",
                  f"    amortisation     {f(report['amortisation_gap'])}"]
    units = report["active_units"]
    lines.append(f"  active units        {units['active']} of {units['of']}")
    if report["kl_per_dim"] is not None:
        kl = sorted(report["kl_per_dim"], reverse=True)
        lines.append("  KL per dimension    " + " ".join(f"{v:.2f}" for v in kl[:10])
                     + (f" ... ({len(kl) - 10} more)" if len(kl) > 10 else ""))
    return "\n".join(lines)
