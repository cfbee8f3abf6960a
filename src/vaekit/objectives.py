"""Bounds on log p(x) built from one definition: the log importance weights.

A latent-variable model exposes log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x), as a tensor
[K, B]. Every objective here is a reduction of it over K and returns one value per example [B]; the
caller reduces over the batch.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence

Likelihood = Callable[[torch.Tensor], Distribution]  # z [..., L] -> p(x|z), event over D


def log_importance_weights(x: torch.Tensor, q: Distribution, prior: Distribution, likelihood: Likelihood,
                           num_samples: int, z: torch.Tensor | None = None) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q (reparameterised), or the given draws
    z [K, B, L] from q. x [B, D] -> [K, B]."""
    z = q.rsample((num_samples,)) if z is None else z
    return likelihood(z).log_prob(x) + prior.log_prob(z) - q.log_prob(z)


def elbo_analytic_kl(x: torch.Tensor, q: Distribution, prior: Distribution, likelihood: Likelihood,
                     num_samples: int) -> torch.Tensor:
    """(a) E_q[log p(x|z)] - KL(q(z|x) || p(z)), the KL in closed form (Kingma & Welling 2014, eq. 7).

    Per-sample terms [K, B] (their mean over K is the estimate): only log p(x|z_k) varies with k.
    """
    z = q.rsample((num_samples,))
    return likelihood(z).log_prob(x) - kl_divergence(q, prior)


def elbo_monte_carlo(x: torch.Tensor, q: Distribution, prior: Distribution, likelihood: Likelihood,
                     num_samples: int) -> torch.Tensor:
    """(b) E_q[log p(x, z) - log q(z|x)]: the log importance weights themselves, [K, B]
    (Kingma & Welling 2014, eq. 6)."""
    return log_importance_weights(x, q, prior, likelihood, num_samples)


def elbo_entropy(x: torch.Tensor, q: Distribution, prior: Distribution, likelihood: Likelihood,
                 num_samples: int) -> torch.Tensor:
    """(c) E_q[log p(x, z)] + H(q(z|x)), the entropy in closed form (Goodfellow et al. 2016, eq. 19.31).
    Per-sample terms [K, B]."""
    z = q.rsample((num_samples,))
    return likelihood(z).log_prob(x) + prior.log_prob(z) + q.entropy()


def elbo_from_posterior(log_px: torch.Tensor, q: Distribution, posterior: Distribution) -> torch.Tensor:
    """(d) log p(x) - KL(q(z|x) || p(z|x)): exact wherever the model's posterior is (Neal & Hinton 1998).
    [B]; the gap log p(x) - ELBO is the KL term."""
    return log_px - kl_divergence(q, posterior)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k), computed stably. [K, B] -> [B]."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def log_mean_exp_chunks(chunks) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k) over log weights that arrive in chunks [K_i, B], K = sum_i K_i, without
    holding all K at once: a running logaddexp of each chunk's logsumexp. -> [B]."""
    total, count = None, 0
    for log_w in chunks:
        lse = torch.logsumexp(log_w, 0)
        total, count = (lse if total is None else torch.logaddexp(total, lse)), count + log_w.shape[0]
    return total - math.log(count)


def elbo(log_w: torch.Tensor) -> torch.Tensor:
    """Monte Carlo ELBO, E_q[log p(x, z) - log q(z|x)] (Kingma & Welling 2014, eq. 3). [K, B] -> [B]."""
    return log_w.mean(dim=0)


def iwae_dreg(x: torch.Tensor, q: Distribution, prior: Distribution, likelihood: Likelihood,
              num_samples: int, held_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The IWAE bound L_K [B] with the doubly-reparameterised gradient (DReG; Tucker, Lawson, Gu &
    Maddison 2019, eq. 8): for q's parameters phi, sum_k wt_k^2 d log w_k / d z_k dz_k/dphi, with
    wt = softmax_k log w_k and log q evaluated with phi held fixed, which drops the score-function term
    whose variance grows with K; for the decoder the usual sum_k wt_k d log w_k / d theta. Its value is
    the bound itself. held_log_prob(z): log q(z|x) [K, B] with q's parameters held fixed and z's own
    path kept; None for one diagonal Gaussian layer, Independent(Normal(loc, scale), 1), whose loc and
    scale are simply detached."""
    z = q.rsample((num_samples,))
    if held_log_prob is None:
        base = q.base_dist
        held_log_prob = Independent(Normal(base.loc.detach(), base.scale.detach(), validate_args=False), 1,
                                    validate_args=False).log_prob
    log_w = likelihood(z).log_prob(x) + prior.log_prob(z) - held_log_prob(z)  # [K, B], the bound's weights
    weights = torch.softmax(log_w, dim=0).detach()
    if z.requires_grad:  # the path into q's parameters: one more factor wt_k
        z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    surrogate = (weights * log_w).sum(dim=0)
    return log_mean_exp(log_w.detach(), dim=0) + surrogate - surrogate.detach()


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """IWAE bound L_K = E[log (1/K) sum_k w_k] <= log p(x) (Burda, Grosse & Salakhutdinov 2016, eq. 8).

    One draw of it, for K = log_w.shape[0]; with K in the thousands it is the standard estimate of
    log p(x) (its bias shrinks as O(1/K)). [K, B] -> [B].
    """
    return log_mean_exp(log_w, dim=0)


def standard_error(values: torch.Tensor) -> float:
    """Standard error of the mean of per-example values [N]."""
    n = values.numel()
    return float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")


def bits_per_dim(nats: float, num_dims: int) -> float:
    """Negative log-likelihood in nats per example -> bits per dimension."""
    return nats / (num_dims * math.log(2.0))
