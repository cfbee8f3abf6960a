"""A VAE with L stochastic layers and bottom-up inference (Burda, Grosse & Salakhutdinov 2016, section 5):

    q(z_1..z_L | x) = q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1})
    p(x, z_1..z_L)  = p(z_L) p(z_{L-1}|z_L) ... p(z_1|z_2) p(x|z_1)

every conditional a diagonal Gaussian from an MLP (Bernoulli logits or a Gaussian for p(x|z_1)). The
latents travel as one vector z = [z_1, ..., z_L] [..., sum L_l]: q(z|x) and p(z) are Distribution objects
over it (`Chain`), so the log importance weights, the ELBO, the IWAE bound, the importance-sampled NLL
and AIS over z are the one-layer VAE's definitions unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from ..nets import mlp
from .vae import LatentVariableBase, diagonal_normal


Step = Callable[[torch.Tensor, object], tuple[Distribution, object]]  # (u_l, state) -> (law of u_{l+1}, state)


def markov(layer: Callable[[torch.Tensor], Distribution]) -> Step:
    """A step that looks at the previous draw alone (no carried state): u_{l+1} ~ layer(u_l)."""
    return lambda u, state: (layer(u), state)


class Chain(Distribution):
    """A distribution over z = [z_1, ..., z_L] concatenated on the last dimension, drawn in order:
    u_1 ~ first, then (law_l, state) = step[l-1](u_{l-1}, state) and u_l ~ law_l. The state carries what
    a step needs of the draws before the last (the top-down VAE's deterministic path: u_l then depends
    on all earlier draws); `markov` steps ignore it. `layout` says which z_l each u is (top_down: u_1 =
    z_L, laid out as [z_1, ..., z_L]).
    log_prob(z) = log first(u_1) + sum_l log law_l(u_l), over one event [..., sum L_l]."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, first: Distribution, steps: list[Step], sizes: list[int], top_down: bool = False,
                 state: object = None):
        self.first, self.steps, self.sizes, self.top_down, self.state = first, steps, list(sizes), top_down, state
        self._drawn: tuple[torch.Tensor, list[Distribution]] | None = None  # the last draw and its conditionals
        super().__init__(first.batch_shape, torch.Size([sum(sizes)]), validate_args=False)

    def _lay_out(self, draws: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(draws[::-1] if self.top_down else draws, dim=-1)

    def _draws(self, z: torch.Tensor) -> list[torch.Tensor]:
        parts = list(z.split(self.sizes, dim=-1))
        return parts[::-1] if self.top_down else parts

    def _walk(self, u: torch.Tensor, pick: Callable[[Distribution], torch.Tensor],
              given: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[Distribution]]:
        """Draws and conditionals from u_1 on: each next u is pick(law) (a draw or a mean) or given."""
        draws, conditionals, state = [u], [self.first], self.state
        for l, step in enumerate(self.steps):
            law, state = step(u, state)
            u = pick(law) if given is None else given[l + 1]
            draws.append(u)
            conditionals.append(law)
        return draws, conditionals

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        draws, conditionals = self._walk(self.first.rsample(sample_shape), lambda law: law.rsample())
        z = self._lay_out(draws)
        # log_prob of this very draw (the log weights, the KL) reuses its conditionals: no second pass
        # through the step networks
        self._drawn = (z, conditionals)
        return z

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def reparameterised(self, noise: torch.Tensor) -> torch.Tensor:
        """The draw whose u_l = loc_l + scale_l * noise_l, for standard-normal noise [..., sum L_l] laid out
        as z (the draw rsample makes from that noise; every conditional is a Gaussian). The same noise for
        every row of a batch gives common random numbers: a row's draws do not depend on its neighbours."""
        eps = iter(self._draws(noise))
        first = self.first.mean + self.first.stddev * next(eps)
        draws, conditionals = self._walk(first, lambda law: law.mean + law.stddev * next(eps))
        z = self._lay_out(draws)
        self._drawn = (z, conditionals)
        return z

    def conditionals(self, z: torch.Tensor) -> list[Distribution]:
        """The law of each u_l given the draws before it, at z, in drawing order."""
        if self._drawn is not None and self._drawn[0] is z:
            return self._drawn[1]
        u = self._draws(z)
        return self._walk(u[0], None, given=u)[1]

    def log_prob_terms(self, z: torch.Tensor) -> list[torch.Tensor]:
        """log of each factor at z, in drawing order: [log first(u_1), log law_1(u_2), ...]."""
        return [law.log_prob(part) for law, part in zip(self.conditionals(z), self._draws(z))]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return sum(self.log_prob_terms(z))

    @property
    def mean(self) -> torch.Tensor:
        """Ancestral means: each conditional's mean at the mean of the ones before (not E[z] for
        nonlinear conditionals; what reconstructions and interpolations decode)."""
        return self._lay_out(self._walk(self.first.mean, lambda law: law.mean)[0])


def reparameterised(q: Distribution, noise: torch.Tensor) -> torch.Tensor:
    """A draw of q(z|x) from standard-normal noise [..., L]: loc + scale * noise for one diagonal Gaussian,
    each layer's for a Chain of them."""
    return q.reparameterised(noise) if isinstance(q, Chain) else q.mean + q.stddev * noise


class GaussianLayer(nn.Module):
    """z_in [..., n_in] -> N(loc, diag scale^2) over n_out through an MLP; softplus(.) + min_scale keeps
    the scale positive without exp overflow."""

    def __init__(self, n_in: int, hidden: list[int], n_out: int, activation: str, min_scale: float):
        super().__init__()
        self.net, self.min_scale = mlp([n_in, *hidden, 2 * n_out], activation), min_scale

    def forward(self, z: torch.Tensor) -> Distribution:
        loc, raw = self.net(z).chunk(2, dim=-1)
        return diagonal_normal(loc, F.softplus(raw) + self.min_scale)


class HierarchicalVAE(LatentVariableBase):
    """L stochastic layers, bottom-up inference (module docstring). latents [L_1, ..., L_L] from the data
    up; hidden[l] the hidden sizes between layer l and l+1 (layer 0 = x), used by both q and p, as in
    Burda et al.: latents [100, 50], hidden [[200, 200], [100, 100]]."""

    def __init__(self, data_dim: int, hidden: list[list[int]], latents: list[int], activation: str = "tanh",
                 likelihood: str = "bernoulli", min_scale: float = 1e-3):
        super().__init__()
        if len(hidden) != len(latents) or not latents:
            raise ValueError(f"hidden: expected one list of hidden sizes per stochastic layer ({len(latents)} "
                             f"for latents {latents}), got {hidden}")
        self.data_dim, self.latents = data_dim, list(latents)
        self.latent = sum(latents)
        below = [data_dim, *latents[:-1]]
        self.up = nn.ModuleList(GaussianLayer(n, h, m, activation, min_scale)
                                for n, h, m in zip(below, hidden, latents))
        # p(z_l | z_{l+1}) for l = L-1 .. 1, drawn top-down
        self.down = nn.ModuleList(GaussianLayer(latents[l + 1], hidden[l + 1][::-1], latents[l], activation,
                                                min_scale) for l in reversed(range(len(latents) - 1)))
        self.decoder = mlp([latents[0], *hidden[0][::-1], data_dim], activation)
        self.init_observation(likelihood, data_dim, min_scale)  # last: older checkpoints' parameter order
        self.register_buffer("prior_loc", torch.zeros(latents[-1]))
        self.register_buffer("prior_scale", torch.ones(latents[-1]))

    def prior(self) -> Distribution:
        """p(z) = p(z_L) prod_l p(z_l | z_{l+1}), p(z_L) = N(0, I); over [z_1, ..., z_L]."""
        top = diagonal_normal(self.prior_loc, self.prior_scale)
        return Chain(top, [markov(layer) for layer in self.down], self.latents, top_down=True)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) = q(z_1|x) prod_l q(z_{l+1}|z_l); over [z_1, ..., z_L], batch [B]."""
        return Chain(self.up[0](x), [markov(layer) for layer in self.up[1:]], self.latents)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z_1) for z = [z_1, ..., z_L] [..., sum L_l]: Bernoulli logits or a Gaussian, one event over D."""
        return self.observation(self.decoder(z[..., :self.latents[0]]))

    def kl_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(E_q[log p(x|z_1)], [KL_1, ..., KL_L]) by Monte Carlo with num_samples draws, each [B]:
        KL_l = E_q[log q(z_l|z_{l-1}) - log p(z_l|z_{l+1})] (p(z_L) for the top), the rate of layer l;
        their sum is KL(q(z|x) || p(z)) of the whole chain."""
        q = self.posterior(x)
        z = q.rsample((num_samples,))
        log_q, log_p = q.log_prob_terms(z), self.prior().log_prob_terms(z)[::-1]  # both bottom-up
        kls = [(a - b).mean(dim=0) for a, b in zip(log_q, log_p)]
        return self.likelihood(z).log_prob(x).mean(dim=0), kls

    def elbo_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[log p(x|z)], KL(q(z|x) || p(z))), each [B], both by Monte Carlo (no closed form for the
        chain's KL)."""
        reconstruction, kls = self.kl_terms(x, num_samples)
        return reconstruction, sum(kls)
