"""The Bernoulli restricted Boltzmann machine: explicit density through Markov chains.

Binary visible v [B, V] and hidden h [B, H] units, energy E(v, h) = -v^T W h - b^T v - c^T h and
p(v, h) = exp(-E(v, h)) / Z (Smolensky 1986; Hinton 2002). Summing h out gives the free energy
F(v) = -b^T v - sum_j softplus(c_j + v^T W_:j), so log p(v) = -F(v) - log Z. Z is intractable beyond
~20 units on the smaller side: vaekit.annealing enumerates that side (exact_log_partition) or
estimates it by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent

from ..data import bernoulli_draw

def _bernoulli(logits: torch.Tensor) -> Distribution:
    return Independent(Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)


def draw_bernoulli(logits: torch.Tensor) -> torch.Tensor:
    """One Bernoulli(sigmoid(logits)) draw per entry (the fast sampler of vaekit.data: on CPU, sampling
    with torch.bernoulli would cost as much as the matmuls)."""
    return bernoulli_draw(torch.sigmoid(logits))


class RBM(nn.Module):
    """W [V, H], visible bias b [V], hidden bias c [H]."""

    def __init__(self, num_visible: int, num_hidden: int, init_scale: float = 0.01, num_chains: int = 100):
        super().__init__()
        self.num_visible, self.num_hidden = num_visible, num_hidden
        self.weight = nn.Parameter(init_scale * torch.randn(num_visible, num_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(num_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(num_hidden))
        # persistent chains of PCD live with the model, so checkpoints and resume carry them
        self.register_buffer("chains", torch.zeros(num_chains, num_visible))
        self.register_buffer("chains_started", torch.zeros((), dtype=torch.bool))
        # offsets mu [V], lambda [H] of the centred gradient (train.centering); unused otherwise
        self.register_buffer("visible_offset", torch.full((num_visible,), 0.5))
        self.register_buffer("hidden_offset", torch.full((num_hidden,), 0.5))
        self._register_load_state_dict_pre_hook(self._default_offsets)

    def _default_offsets(self, state_dict, prefix, *args) -> None:
        # checkpoints written before the centred gradient existed have no offsets: keep the defaults
        for name in ("visible_offset", "hidden_offset"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())

    @torch.no_grad()
    def persistent_chains(self, v: torch.Tensor) -> torch.Tensor:
        """The PCD chains, started at the first batch's data [B, V] (repeated as needed)."""
        if not self.chains_started:
            self.chains.copy_(v[torch.arange(self.chains.shape[0], device=v.device) % v.shape[0]])
            self.chains_started.fill_(True)
        return self.chains

    @torch.no_grad()
    def sample(self, num_samples: int, num_steps: int = 1000) -> torch.Tensor:
        """p(v|h) means after num_steps Gibbs sweeps from uniform noise. [N, V]."""
        v = torch.bernoulli(torch.full((num_samples, self.num_visible), 0.5, device=self.weight.device))
        v = self.gibbs(v, num_steps - 1)
        return self.visible_given_hidden(self.hidden_given_visible(v).sample()).mean

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = -v^T W h - b^T v - c^T h. [B]."""
        return -((v @ self.weight) * h).sum(-1) - v @ self.visible_bias - h @ self.hidden_bias

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -log sum_h exp(-E(v, h)) = -b^T v - sum_j softplus(c_j + v^T W_:j). [B]."""
        return -v @ self.visible_bias - F.softplus(v @ self.weight + self.hidden_bias).sum(-1)

    def hidden_given_visible(self, v: torch.Tensor) -> Distribution:
        """p(h|v) = prod_j Bernoulli(sigmoid(c_j + v^T W_:j))."""
        return _bernoulli(v @ self.weight + self.hidden_bias)

    def visible_given_hidden(self, h: torch.Tensor) -> Distribution:
        """p(v|h) = prod_i Bernoulli(sigmoid(b_i + W_i: h))."""
        return _bernoulli(h @ self.weight.T + self.visible_bias)

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, num_steps: int = 1) -> torch.Tensor:
        """num_steps sweeps of block Gibbs sampling v -> h -> v. [B, V] -> [B, V]."""
        for _ in range(num_steps):
            h = draw_bernoulli(v @ self.weight + self.hidden_bias)
            v = draw_bernoulli(h @ self.weight.T + self.visible_bias)
        return v

def base_rate_bias(v: torch.Tensor, smoothing: float = 1e-3) -> torch.Tensor:
    """Visible biases of the base-rate RBM (W = 0, c = 0) matching the data marginals:
    b_A,i = log(p_i / (1 - p_i)) (Salakhutdinov & Murray 2008, section 4.1). v [N, V] -> [V]."""
    p = v.float().mean(0).clamp(smoothing, 1 - smoothing)
    return torch.log(p) - torch.log1p(-p)


@torch.no_grad()
def update_offsets(rbm: RBM, v: torch.Tensor, rate: float) -> None:
    """Sliding averages of the centring offsets: mu <- (1 - rate) mu + rate <v>_data and lambda <-
    (1 - rate) lambda + rate <p(h=1|v)>_data (Melchior, Fischer & Wiskott 2016, algorithm 1, dd^b_s).
    The standard parameters (W, b, c) stay the model; the offsets only shape the gradient."""
    rbm.visible_offset.lerp_(v.mean(0), rate)
    rbm.hidden_offset.lerp_(torch.sigmoid(v @ rbm.weight + rbm.hidden_bias).mean(0), rate)


@torch.no_grad()
def centre_gradients(rbm: RBM) -> None:
    """Turn the plain gradients in .grad into the centred gradient (Melchior, Fischer & Wiskott 2016),
    expressed in the standard parameters. In the centred energy -(v - mu)^T W (h - lambda) - b'^T (v - mu)
    - c'^T (h - lambda) the gradient is
        grad_W' = <(v - mu)(h - lambda)^T>_data - <...>_model = grad_W - mu grad_c^T - grad_b lambda^T,
        grad_b' = grad_b, grad_c' = grad_c,
    and a step on (W, b', c') moves the standard biases b = b' - W lambda, c = c' - W^T mu by
        delta b = delta b' - delta W lambda, delta c = delta c' - delta W^T mu.
    Linear in the gradients, so it applies to the loss gradients as they are."""
    mu, lam = rbm.visible_offset, rbm.hidden_offset
    g_w, g_b, g_c = rbm.weight.grad, rbm.visible_bias.grad, rbm.hidden_bias.grad
    g_w.sub_(torch.outer(mu, g_c)).sub_(torch.outer(g_b, lam))
    g_b.sub_(g_w @ lam)
    g_c.sub_(g_w.T @ mu)


def cd_loss(rbm: RBM, v_data: torch.Tensor, v_model: torch.Tensor) -> torch.Tensor:
    """Surrogate whose gradient is the contrastive-divergence estimate of -d log p(v)/d theta:
    mean F(v_data) - mean F(v_model), the negative samples held fixed (Hinton 2002). Scalar."""
    return rbm.free_energy(v_data).mean() - rbm.free_energy(v_model.detach()).mean()
