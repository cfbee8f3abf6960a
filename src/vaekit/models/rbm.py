"""The Bernoulli restricted Boltzmann machine: explicit density through Markov chains.

Binary visible v [B, V] and hidden h [B, H] units, energy E(v, h) = -v^T W h - b^T v - c^T h and
p(v, h) = exp(-E(v, h)) / Z (Smolensky 1986; Hinton 2002). Summing h out gives the free energy
F(v) = -b^T v - sum_j softplus(c_j + v^T W_:j), so log p(v) = -F(v) - log Z. Z is intractable beyond
~20 units on the smaller side: `log_partition_exact` enumerates that side, `ais` estimates it by
annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent

from ..data import bernoulli_draw

MAX_EXACT_UNITS = 24  # 2^24 states: about a second of matrix products
EXACT_UNITS = 20  # evaluators enumerate log Z (instead of only estimating it) up to this many units


def _bernoulli(logits: torch.Tensor) -> Distribution:
    return Independent(Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)


def _draw(logits: torch.Tensor) -> torch.Tensor:
    """One Bernoulli(sigmoid(logits)) draw per entry (the fast sampler of vaekit.data: on CPU, sampling
    with torch.bernoulli would cost as much as the matmuls)."""
    return bernoulli_draw(torch.sigmoid(logits))


def all_states(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Every binary vector of length n, [2^n, n]."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=dtype, device=device)


class RBM(nn.Module):
    """W [V, H], visible bias b [V], hidden bias c [H]."""

    pictures = ("samples", "chain", "filters", "curves")  # what vaekit.pictures draws for it

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

    @classmethod
    def from_config(cls, config, data_dim: int) -> "RBM":
        return cls(data_dim, config.latent, num_chains=config.num_chains)

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
            h = _draw(v @ self.weight + self.hidden_bias)
            v = _draw(h @ self.weight.T + self.visible_bias)
        return v

    @torch.no_grad()
    def log_partition_exact(self) -> torch.Tensor:
        """log Z by summing out the larger layer in closed form and enumerating the smaller one:
        log Z = logsumexp_h [c^T h + sum_i softplus(b_i + W_i: h)] (or the same with v and h swapped)."""
        small = min(self.num_visible, self.num_hidden)
        if small > MAX_EXACT_UNITS:
            raise ValueError(f"exact log Z enumerates 2^{small} states; at most 2^{MAX_EXACT_UNITS} are allowed: "
                             f"use ais() for an RBM of {self.num_visible} x {self.num_hidden} units")
        if self.num_hidden <= self.num_visible:
            h = all_states(self.num_hidden, self.weight.dtype, self.weight.device)
            terms = h @ self.hidden_bias + F.softplus(h @ self.weight.T + self.visible_bias).sum(-1)
        else:
            v = all_states(self.num_visible, self.weight.dtype, self.weight.device)
            terms = -self.free_energy(v)
        return torch.logsumexp(terms, dim=0)

    def log_prob(self, v: torch.Tensor, log_z: torch.Tensor | float) -> torch.Tensor:
        """log p(v) = -F(v) - log Z. [B]."""
        return -self.free_energy(v) - log_z


def base_rate_bias(v: torch.Tensor, smoothing: float = 1e-3) -> torch.Tensor:
    """Visible biases of the base-rate RBM (W = 0, c = 0) matching the data marginals:
    b_A,i = log(p_i / (1 - p_i)) (Salakhutdinov & Murray 2008, section 4.1). v [N, V] -> [V]."""
    p = v.float().mean(0).clamp(smoothing, 1 - smoothing)
    return torch.log(p) - torch.log1p(-p)


def _annealed_log_joint(pre_hidden: torch.Tensor, v_base: torch.Tensor, v_target: torch.Tensor,
                        beta: float) -> torch.Tensor:
    """log p*_beta(v) = (1 - beta) b_A^T v + beta b^T v + sum_j softplus(beta (c_j + v^T W_:j)), the
    geometric path from the base-rate RBM (beta = 0) to the target (beta = 1), h summed out. Takes the
    products of v that do not depend on beta: pre_hidden = c + v W [B, H], v_base = b_A^T v and
    v_target = b^T v [B]. Returns [B]."""
    return (1 - beta) * v_base + beta * v_target + F.softplus(beta * pre_hidden).sum(-1)


def _annealed_visible(rbm: RBM, base_bias: torch.Tensor, pre_hidden: torch.Tensor, beta: float) -> torch.Tensor:
    """The v half of a Gibbs sweep that leaves p*_beta invariant, from h ~ sigmoid(beta (c + v W))."""
    h = _draw(beta * pre_hidden)
    return _draw((1 - beta) * base_bias + beta * (h @ rbm.weight.T + rbm.visible_bias))


def log_partition_base(rbm: RBM, base_bias: torch.Tensor) -> float:
    """log Z_A of the base-rate RBM: sum_i softplus(b_A,i) + H log 2."""
    return float(F.softplus(base_bias).sum()) + rbm.num_hidden * math.log(2.0)


@torch.no_grad()
def ais(rbm: RBM, base_bias: torch.Tensor, betas: torch.Tensor, num_runs: int = 100,
        init_v: torch.Tensor | None = None) -> dict:
    """Annealed importance sampling of log Z (Neal 2001; Salakhutdinov & Murray 2008, algorithm 2).

    Forward (init_v None): chains start from the base-rate RBM and anneal along betas (0 = b_0 < ... <
    b_K = 1); log Z_B ~ log Z_A + log mean_r w_r, unbiased in Z, so log Z is underestimated on average
    and the log-likelihood overestimated. Reverse (init_v [R, V], states from the target such as long
    Gibbs chains or data): the same path walked backwards gives log Z_B ~ log Z_A - log mean_r w'_r,
    which errs the other way (Burda, Grosse & Salakhutdinov 2015): together they bracket log Z.
    Returns {"log_z", "stderr" (delta method), "log_w" [R]}.
    """
    betas = [float(b) for b in betas]
    if betas[0] != 0.0 or betas[-1] != 1.0 or any(b1 <= b0 for b0, b1 in zip(betas, betas[1:])):
        raise ValueError("betas: expected an increasing schedule from 0.0 to 1.0")
    reverse = init_v is not None
    path = betas[::-1] if reverse else betas
    if reverse:
        v = init_v.to(rbm.weight.dtype)
    else:
        v = _draw(base_bias.expand(num_runs, -1))
    log_w = torch.zeros(v.shape[0], dtype=torch.float64, device=v.device)
    for b_prev, b_next in zip(path[:-1], path[1:]):
        pre_hidden, v_base, v_target = v @ rbm.weight + rbm.hidden_bias, v @ base_bias, v @ rbm.visible_bias
        log_w += (_annealed_log_joint(pre_hidden, v_base, v_target, b_next)
                  - _annealed_log_joint(pre_hidden, v_base, v_target, b_prev)).double()
        v = _annealed_visible(rbm, base_bias, pre_hidden, b_next)
    log_mean = torch.logsumexp(log_w, 0) - math.log(log_w.numel())
    # delta method: se(log mean w) = std(w) / (sqrt(R) mean(w)), computed relative to max for stability
    w = torch.exp(log_w - log_w.max())
    stderr = float(w.std() / (w.mean() * math.sqrt(w.numel()))) if w.numel() > 1 else float("nan")
    log_z_a = log_partition_base(rbm, base_bias)
    log_z = log_z_a - float(log_mean) if reverse else log_z_a + float(log_mean)
    return {"log_z": log_z, "stderr": stderr, "log_w": log_w, "reverse": reverse}


@torch.no_grad()
def raise_log_prob(rbm: RBM, base_bias: torch.Tensor, betas: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """RAISE, reverse annealed importance sampling of log p(v) itself (Burda, Grosse & Salakhutdinov 2015).

    The forward AIS chain x_0 ~ p_0, x_k ~ T_k(.|x_{k-1}) is a generative model q_AIS(x_K) ~ p(v). Walking
    it backwards from the test point (x_K = v, then x_{k-1} ~ T_k(.|x_k), each Gibbs sweep its own
    reversal) gives the unbiased estimate of q_AIS(v)
        log w = -F(v) - log Z_A + sum_{k<K} [log p*_k(x_k) - log p*_{k+1}(x_k)],
    so E[log w] <= log q_AIS(v): a conservative (stochastic lower) estimate that tightens with more
    betas, the other side of forward AIS, which overestimates log p(v) on average. One run per test
    point. v [B, V] -> [B]."""
    start = rbm.gibbs(v, 1)  # x_{K-1} ~ T_K(.|v): the sweep at beta = 1 comes before the first weight
    log_w = ais(rbm, base_bias, betas, init_v=start)["log_w"]
    return -rbm.free_energy(v).double() - log_partition_base(rbm, base_bias) + log_w


def ais_schedule(num_betas: int) -> torch.Tensor:
    """Inverse temperatures 0 = b_0 < ... < b_K = 1, denser near 1 where the distributions change
    fastest: 10 %, 40 % and 50 % of the points on [0, 0.5], [0.5, 0.9], [0.9, 1] (after Salakhutdinov
    & Murray 2008). [num_betas]."""
    n1, n2 = max(2, num_betas // 10), max(2, 4 * num_betas // 10)
    n3 = max(2, num_betas - n1 - n2 + 2)
    return torch.cat([torch.linspace(0, 0.5, n1), torch.linspace(0.5, 0.9, n2)[1:], torch.linspace(0.9, 1, n3)[1:]])


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
