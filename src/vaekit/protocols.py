"""What model families share, written down as protocols (checked with isinstance, never hasattr).

One name means one signature everywhere: `log_prob(x)` is always a normalised log-density [B];
an energy model exposes its free energy instead, whose normaliser the evaluation layer estimates.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch.distributions import Distribution


@runtime_checkable
class Sampler(Protocol):
    def sample(self, num_samples: int) -> torch.Tensor:
        """num_samples draws (or their means) in data space. [N, D]."""


@runtime_checkable
class Decoder(Protocol):
    """A generator x = g(z), z ~ p(z): samples and interpolations in latent space."""

    def prior(self) -> Distribution: ...

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] (or g(z)) for latents z [N, L]. [N, D]."""


@runtime_checkable
class DecoderLikelihood(Protocol):
    """p(z) p(x|z) over continuous latents: what annealed importance sampling over z needs
    (vaekit.decoder_ais), with no encoder."""

    def prior(self) -> Distribution: ...

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents z [N, L], one event over D."""


@runtime_checkable
class LatentVariableModel(Decoder, Sampler, Protocol):
    """p(z) p(x|z) with an approximate (or exact) posterior q(z|x)."""

    def posterior(self, x: torch.Tensor) -> Distribution: ...

    def likelihood(self, z: torch.Tensor) -> Distribution: ...

    def log_weights(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """log p(x, z_k) - log q(z_k|x), z_k ~ q(z|x). [B, D] -> [K, B]."""

    def elbo_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[log p(x|z)], KL(q(z|x) || p(z))), each [B]."""

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z|x]. [B, D] -> [B, L]."""


@runtime_checkable
class LayeredLatents(Protocol):
    """A latent-variable model with several stochastic layers, whose KL(q(z|x) || p(z)) has no closed form:
    elbo_terms estimates it by Monte Carlo, and kl_terms gives the rate of each layer."""

    def kl_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(E_q[log p(x|z)], [KL_1, ..., KL_L]) by Monte Carlo, each [B]."""


@runtime_checkable
class ExactDensity(Protocol):
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact, normalised log p(x). [B, D] -> [B]."""


@runtime_checkable
class EnergyModel(Sampler, Protocol):
    """p(v) = exp(-F(v)) / Z with Z intractable; sampled by Gibbs chains."""

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -log sum_h exp(-E(v, h)). [B, D] -> [B]."""

    def gibbs(self, v: torch.Tensor, num_steps: int = 1) -> torch.Tensor:
        """num_steps block Gibbs sweeps. [B, D] -> [B, D]."""
