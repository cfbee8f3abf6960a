"""Bounds on log p(x) built from one definition: the log importance weights.

A latent-variable model exposes log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x), as a tensor
[K, B]. Every objective here is a reduction of it over K and returns one value per example [B]; the
caller reduces over the batch.
"""

from __future__ import annotations

import math

import torch


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k), computed stably. [K, B] -> [B]."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def elbo(log_w: torch.Tensor) -> torch.Tensor:
    """Monte Carlo ELBO, E_q[log p(x, z) - log q(z|x)] (Kingma & Welling 2014, eq. 3). [K, B] -> [B]."""
    return log_w.mean(dim=0)


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
