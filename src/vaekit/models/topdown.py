"""A top-down hierarchical VAE (Ladder VAE: Sonderby et al. 2016; NVAE: Vahdat & Kautz 2020; laid out
like openai/vdvae's vae.py) with L latent groups on flat data x [B, D]:

    bottom-up   a_0 = in(x),  a_l = cells_l(a_{l-1})                   deterministic features, l = 1..L
    top-down    h_L = h_top (learned), then for l = L, ..., 1:
                  p(z_l | z_>l)    = N(prior_l(h_l))
                  q(z_l | z_>l, x) = N(prior_l(h_l) + delta_l(h_l, a_l))    residual (NVAE, eq. 2)
                  h_{l-1}          = cells_l(h_l + embed_l(z_l))
    p(x | z) = Bernoulli(logits = out(h_0)) or a Gaussian

Inference and generation share the top-down path h, so q(z|x) and p(z) are both `Chain`s over
z = [z_1, ..., z_L] whose steps carry h: the log importance weights, the ELBO, the IWAE bound, the
importance-sampled NLL and AIS are the one-layer definitions unchanged. Training and evaluation take
one joint top-down pass (`walk`) that yields q's draw and both laws of every group; the per-group KL is
in closed form given the groups above it (its expectation over them by Monte Carlo).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, kl_divergence

from ..nets import ACTIVATIONS
from .hvae import Chain
from .vae import LatentVariableBase, diagonal_normal


class Cell(nn.Module):
    """Residual MLP cell h + W_2 act(W_1 act(h)) (pre-activation, He et al. 2016). W_2 starts scaled by
    `scale` (vdvae: 1 / sqrt(number of cells)) so that a deep stack starts near the identity."""

    def __init__(self, width: int, activation: str, scale: float):
        super().__init__()
        self.act, self.inner, self.outer = ACTIVATIONS[activation](), nn.Linear(width, width), nn.Linear(width, width)
        with torch.no_grad():
            self.outer.weight.mul_(scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.outer(self.act(self.inner(self.act(h))))


def cells(width: int, depth: int, activation: str, scale: float) -> nn.Sequential:
    return nn.Sequential(*(Cell(width, activation, scale) for _ in range(depth)))


class Group(nn.Module):
    """One latent group z_l of the top-down pass: its prior head, the posterior's correction from the
    bottom-up features, and the cells that carry the path h down past it."""

    def __init__(self, width: int, latent: int, depth: int, activation: str, min_scale: float, scale: float):
        super().__init__()
        self.min_scale = min_scale
        self.prior_head = nn.Sequential(ACTIVATIONS[activation](), nn.Linear(width, 2 * latent))
        # delta(h, a) = W act(A h + C a + b): C a is computed once per example, not once per sample
        self.from_h, self.from_a = nn.Linear(width, width), nn.Linear(width, width, bias=False)
        self.delta = nn.Sequential(ACTIVATIONS[activation](), nn.Linear(width, 2 * latent))
        self.embed = nn.Linear(latent, width)
        self.cells = cells(width, depth, activation, scale)

    def gaussian(self, params: torch.Tensor) -> Distribution:
        loc, raw = params.chunk(2, dim=-1)
        return diagonal_normal(loc, F.softplus(raw) + self.min_scale)

    def laws(self, h: torch.Tensor, a: torch.Tensor | None = None) -> tuple[Distribution, Distribution | None]:
        """p(z_l | h) and, given the bottom-up features a, q(z_l | h, a), whose parameters are the prior's
        plus a correction (NVAE's residual normal: q starts at p, and KL(q || p) is small to learn)."""
        prior = self.prior_head(h)
        if a is None:
            return self.gaussian(prior), None
        return self.gaussian(prior), self.gaussian(prior + self.delta(self.from_h(h) + self.from_a(a)))

    def descend(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h_{l-1} = cells(h_l + embed(z_l)); h [..., W] broadcasts against z [..., L_l]."""
        return self.cells(h + self.embed(z))


class TopDownVAE(LatentVariableBase):
    """The top-down hierarchical VAE of the module docstring. latents [L_1, ..., L_L] from the data up;
    width W of every deterministic layer; depth residual cells per group on each path."""

    def __init__(self, data_dim: int, latents: list[int], width: int, depth: int = 1, activation: str = "elu",
                 likelihood: str = "bernoulli", min_scale: float = 1e-3):
        super().__init__()
        if not latents or depth < 0 or width <= 0:
            raise ValueError(f"latents, width, depth: expected >= 1 group, width > 0 and depth >= 0, got "
                             f"{latents}, {width}, {depth}")
        self.data_dim, self.latents = data_dim, list(latents)
        self.latent = sum(latents)
        scale = 1 / math.sqrt(max(1, 2 * depth * len(latents)))
        self.inp = nn.Linear(data_dim, width)
        self.up = nn.ModuleList(cells(width, depth, activation, scale) for _ in latents)
        self.groups = nn.ModuleList(Group(width, n, depth, activation, min_scale, scale) for n in latents)
        self.h_top = nn.Parameter(torch.zeros(width))
        self.out = nn.Sequential(ACTIVATIONS[activation](), nn.Linear(width, data_dim))
        self.init_observation(likelihood, data_dim, min_scale)  # last: older checkpoints' parameter order

    def output_layer(self) -> nn.Linear:
        """The Linear layer giving p(x|z)'s per-dimension logits or locations."""
        return self.out[-1]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The bottom-up pass: [a_1, ..., a_L], each [B, W]."""
        a, out = self.inp(x), []
        for up in self.up:
            a = up(a)
            out.append(a)
        return out

    def _steps(self, features: list[torch.Tensor] | None) -> list:
        """Chain steps from each group to the one below: descend past z_l, then the law of z_{l-1}
        (the prior's, or the posterior's given the bottom-up features)."""
        def step(above: int):
            def go(z: torch.Tensor, h: torch.Tensor):
                h = self.groups[above].descend(h, z)
                p, q = self.groups[above - 1].laws(h, None if features is None else features[above - 1])
                return (p if features is None else q), h
            return go
        return [step(l) for l in reversed(range(1, len(self.latents)))]

    def prior(self) -> Distribution:
        """p(z) = p(z_L) prod_l p(z_l | z_>l), top-down; over [z_1, ..., z_L]."""
        top = self.groups[-1].laws(self.h_top)[0]
        return Chain(top, self._steps(None), self.latents, top_down=True, state=self.h_top)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) = q(z_L|x) prod_l q(z_l | z_>l, x), top-down; over [z_1, ..., z_L], batch [B]."""
        a = self.features(x)
        top = self.groups[-1].laws(self.h_top, a[-1])[1]
        return Chain(top, self._steps(a), self.latents, top_down=True, state=self.h_top)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z = [z_1, ..., z_L] [..., sum L_l]: the top-down path given z, then the output layer."""
        h = self.h_top
        for group, part in reversed(list(zip(self.groups, z.split(self.latents, dim=-1)))):
            h = group.descend(h, part)
        return self.observation(self.out(h))

    def walk(self, x: torch.Tensor, num_samples: int) -> tuple[list, Distribution]:
        """One top-down pass under q: [(z_l, q_l, p_l)] from the top group down, z_l [K, B, L_l], and
        p(x | z). Every quantity of a training step or an evaluation reads this one pass."""
        a, h, groups = self.features(x), self.h_top, []
        for l in reversed(range(len(self.latents))):
            p, q = self.groups[l].laws(h, a[l])
            z = q.rsample((num_samples,) if not groups else ())
            groups.append((z, q, p))
            h = self.groups[l].descend(h, z)
        return groups, self.observation(self.out(h))

    def log_weights(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """log w_k = log p(x|z_k) + sum_l [log p(z_l,k | z_>l,k) - log q(z_l,k | z_>l,k, x)]. [K, B]."""
        groups, likelihood = self.walk(x, num_samples)
        return likelihood.log_prob(x) + sum(p.log_prob(z) - q.log_prob(z) for z, q, p in groups)

    def kl_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(E_q[log p(x|z)], [KL_1, ..., KL_L]) from the data up, each [B]: KL_l = E_q(z_>l)[KL(q(z_l|.)
        || p(z_l|.))], in closed form given the groups above and averaged over num_samples draws of them;
        their sum is KL(q(z|x) || p(z))."""
        groups, likelihood = self.walk(x, num_samples)
        batch = x.shape[0]
        kls = [kl_divergence(q, p).reshape(-1, batch).mean(dim=0) for _, q, p in groups]
        return likelihood.log_prob(x).mean(dim=0), kls[::-1]

    def elbo_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[log p(x|z)], KL(q(z|x) || p(z))), each [B]: the per-group closed-form KLs summed."""
        reconstruction, kls = self.kl_terms(x, num_samples)
        return reconstruction, sum(kls)
