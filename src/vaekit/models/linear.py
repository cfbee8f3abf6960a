"""The linear-Gaussian generator: exact log-likelihood and posterior, the oracle for every estimator.

x = mu + L z + eps,  z ~ N(0, I_k),  eps ~ N(0, Psi)  =>  x ~ N(mu, L L^T + Psi)   (Roweis 1998)

Psi = sigma^2 I is probabilistic PCA (Tipping & Bishop 1999), Psi = diag(psi) factor analysis, and
Psi = 0 with k = d the direct generator x = g(z) = mu + L z of N(mu, L L^T).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (Distribution, Independent, LowRankMultivariateNormal, MultivariateNormal,
                                 Normal)

from ..objectives import log_importance_weights

NOISE_TYPES = ("ppca", "fa", "none")


class LinearGaussian(nn.Module):
    """x [B, d] = loc + z @ weight.T + noise, z [B, k]; `noise` is 'ppca', 'fa' or 'none' (k = d)."""

    def __init__(self, data_dim: int, latent: int, noise: str = "ppca", min_scale: float = 1e-3):
        super().__init__()
        if noise not in NOISE_TYPES:
            raise ValueError(f"noise: expected one of {NOISE_TYPES}, got {noise!r}")
        if noise == "none" and latent != data_dim:
            raise ValueError(f"noise='none' (the direct generator) needs latent == data_dim, got "
                             f"latent={latent}, data_dim={data_dim}: otherwise L L^T is singular")
        self.data_dim, self.latent, self.noise, self.min_scale = data_dim, latent, noise, min_scale
        self.loc = nn.Parameter(torch.zeros(data_dim))
        self.weight = nn.Parameter(torch.randn(data_dim, latent) / math.sqrt(latent))  # L [d, k]
        if noise != "none":
            # softplus(0.5413) = 1: unit noise scale to start, one (ppca) or d (fa) of them
            self.raw_scale = nn.Parameter(torch.full((1 if noise == "ppca" else data_dim,), 0.5413))

    def noise_variance(self) -> torch.Tensor:
        """diag(Psi) [d]."""
        return (F.softplus(self.raw_scale) + self.min_scale).pow(2).expand(self.data_dim)

    def prior(self) -> Distribution:
        """p(z) = N(0, I_k)."""
        zeros = self.loc.new_zeros(self.latent)
        return MultivariateNormal(zeros, scale_tril=torch.eye(self.latent, dtype=zeros.dtype, device=zeros.device))

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) = N(loc + L z, Psi). z [..., k]."""
        if self.noise == "none":
            raise ValueError("the direct generator (noise='none') has a deterministic p(x|z): no density")
        return Independent(Normal(self.loc + z @ self.weight.T, self.noise_variance().sqrt()), 1)

    def marginal(self) -> Distribution:
        """p(x) = N(loc, L L^T + Psi); log_prob goes through the k x k capacitance matrix
        I + L^T Psi^-1 L (Woodbury), never a d x d inverse."""
        if self.noise == "none":
            return MultivariateNormal(self.loc, covariance_matrix=self.weight @ self.weight.T)
        return LowRankMultivariateNormal(self.loc, cov_factor=self.weight, cov_diag=self.noise_variance())

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x). [B, d] -> [B]."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """Exact p(z|x) = N(M^-1 L^T Psi^-1 (x - loc), M^-1), M = I + L^T Psi^-1 L (k x k).

        For PPCA this is Tipping & Bishop's N(M'^-1 L^T (x - mu), sigma^2 M'^-1), M' = L^T L + sigma^2 I.
        """
        if self.noise == "none":
            raise ValueError("the direct generator (noise='none') has a point-mass posterior z = L^-1 (x - loc)")
        scaled = self.weight / self.noise_variance()[:, None]  # Psi^-1 L [d, k]
        m = torch.eye(self.latent, dtype=x.dtype, device=x.device) + self.weight.T @ scaled
        chol = torch.linalg.cholesky(m)
        mean = torch.cholesky_solve(((x - self.loc) @ scaled).T, chol).T  # [B, k]
        cov_tril = torch.linalg.cholesky(torch.cholesky_inverse(chol))
        return MultivariateNormal(mean, scale_tril=cov_tril.expand(x.shape[0], -1, -1))

    def log_weights(self, x: torch.Tensor, num_samples: int = 1, q: Distribution | None = None) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q. [K, B]. With q the exact posterior (the
        default) every weight equals log p(x): importance sampling with zero variance."""
        q = self.posterior(x) if q is None else q
        return log_importance_weights(x, q, self.prior(), self.likelihood, num_samples)

    def expected_log_likelihood(self, x: torch.Tensor, q: MultivariateNormal) -> torch.Tensor:
        """E_q[log p(x|z)] in closed form for q = N(m, S): log N(x; loc + L m, Psi) - tr(Psi^-1 L S L^T) / 2.
        x [B, d] -> [B]."""
        var = self.noise_variance()
        projected = self.weight @ q.scale_tril  # L S^(1/2): [B, d, k]
        trace = (projected.pow(2).sum(-1) / var).sum(-1)
        return self.likelihood(q.mean).log_prob(x) - 0.5 * trace

    def elbo_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[log p(x|z)], KL(q || p(z))) for q the exact posterior, both in closed form. [B] each.
        num_samples is accepted for the common interface; nothing is sampled."""
        q = self.posterior(x)
        return self.expected_log_likelihood(x, q), torch.distributions.kl_divergence(q, self.prior())

    def elbo(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """With the exact posterior the ELBO is log p(x) itself. [B]."""
        return self.log_prob(x)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] = loc + L z. [N, k] -> [N, d]."""
        return self.loc + z @ self.weight.T

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means E[z|x]. [B, d] -> [B, k]."""
        return self.posterior(x).mean

    @torch.no_grad()
    def sample(self, num_samples: int, noise: bool = True) -> torch.Tensor:
        """x = loc + L z (+ eps), z ~ N(0, I). [N, d]."""
        z = torch.randn(num_samples, self.latent, dtype=self.loc.dtype, device=self.loc.device)
        x = self.loc + z @ self.weight.T
        if noise and self.noise != "none":
            x = x + torch.randn_like(x) * self.noise_variance().sqrt()
        return x

    @classmethod
    def fit_ppca(cls, x: torch.Tensor, latent: int, min_scale: float = 0.0) -> "LinearGaussian":
        """Closed-form maximum likelihood PPCA (Tipping & Bishop 1999, eqs. 7-8): with S = U diag(l) U^T
        the sample covariance (divided by N), sigma^2 = mean of the d - k smallest l, and
        L = U_k (diag(l_k) - sigma^2 I)^(1/2) (up to a rotation)."""
        n, d = x.shape
        if not 0 < latent < d:
            raise ValueError(f"latent: expected 0 < latent < data_dim={d}, got {latent}")
        loc = x.mean(0)
        centred = (x - loc).double()
        eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / n)  # ascending
        eigvals, eigvecs = eigvals.flip(0), eigvecs.flip(1)
        sigma2 = eigvals[latent:].mean().clamp_min(1e-12)
        weight = eigvecs[:, :latent] * (eigvals[:latent] - sigma2).clamp_min(0).sqrt()
        model = cls(d, latent, "ppca", min_scale=min_scale).to(x.dtype)
        with torch.no_grad():
            model.loc.copy_(loc)
            model.weight.copy_(weight.to(x.dtype))
            # sigma = softplus(raw) + min_scale; inverse softplus log(exp(s) - 1), written stably
            s = (sigma2.sqrt() - min_scale).clamp_min(1e-12)
            model.raw_scale.fill_(float(s + torch.log(-torch.expm1(-s))))
        return model
