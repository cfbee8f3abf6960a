"""The normaliser of an energy model, estimated or enumerated: the evaluation layer of the RBM.

log p(v) = -F(v) - log Z needs log Z. Up to ~20 units on the smaller side it is enumerated exactly
(exact_log_partition); beyond, annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008)
estimates it from a base-rate RBM, and RAISE (Burda, Grosse & Salakhutdinov 2015) gives the other side
of the bracket. `log_partition` is the one entry point that `vaekit evaluate` and
`vaekit.estimators.BernoulliRBM.score_samples` both call.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from .models.rbm import RBM, draw_bernoulli
from .results import Result

MAX_EXACT_UNITS = 24  # 2^24 states: about a second of matrix products
EXACT_UNITS = 20  # log Z is enumerated (not only estimated) up to this many units on the smaller side


def all_states(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Every binary vector of length n, [2^n, n]."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=dtype, device=device)




@torch.no_grad()
def exact_log_partition(rbm: RBM) -> torch.Tensor:
    """log Z by summing out the larger layer in closed form and enumerating the smaller one:
    log Z = logsumexp_h [c^T h + sum_i softplus(b_i + W_i: h)] (or the same with v and h swapped)."""
    small = min(rbm.num_visible, rbm.num_hidden)
    if small > MAX_EXACT_UNITS:
        raise ValueError(f"exact log Z enumerates 2^{small} states; at most 2^{MAX_EXACT_UNITS} are allowed: "
                         f"use ais() for an RBM of {rbm.num_visible} x {rbm.num_hidden} units")
    if rbm.num_hidden <= rbm.num_visible:
        h = all_states(rbm.num_hidden, rbm.weight.dtype, rbm.weight.device)
        terms = h @ rbm.hidden_bias + F.softplus(h @ rbm.weight.T + rbm.visible_bias).sum(-1)
    else:
        v = all_states(rbm.num_visible, rbm.weight.dtype, rbm.weight.device)
        terms = -rbm.free_energy(v)
    return torch.logsumexp(terms, dim=0)


def _annealed_log_joint(pre_hidden: torch.Tensor, v_base: torch.Tensor, v_target: torch.Tensor,
                        beta: float) -> torch.Tensor:
    """log p*_beta(v) = (1 - beta) b_A^T v + beta b^T v + sum_j softplus(beta (c_j + v^T W_:j)), the
    geometric path from the base-rate RBM (beta = 0) to the target (beta = 1), h summed out. Takes the
    products of v that do not depend on beta: pre_hidden = c + v W [B, H], v_base = b_A^T v and
    v_target = b^T v [B]. Returns [B]."""
    return (1 - beta) * v_base + beta * v_target + F.softplus(beta * pre_hidden).sum(-1)


def _annealed_visible(rbm: RBM, base_bias: torch.Tensor, pre_hidden: torch.Tensor, beta: float) -> torch.Tensor:
    """The v half of a Gibbs sweep that leaves p*_beta invariant, from h ~ sigmoid(beta (c + v W))."""
    h = draw_bernoulli(beta * pre_hidden)
    return draw_bernoulli((1 - beta) * base_bias + beta * (h @ rbm.weight.T + rbm.visible_bias))


def log_partition_base(rbm: RBM, base_bias: torch.Tensor) -> float:
    """log Z_A of the base-rate RBM: sum_i softplus(b_A,i) + H log 2."""
    return float(F.softplus(base_bias).sum()) + rbm.num_hidden * math.log(2.0)


@torch.no_grad()
def annealing_path(betas, reverse: bool = False) -> list[float]:
    """The inverse temperatures in the order an AIS run walks them: a schedule increasing from 0.0 to 1.0
    (checked), backwards for reverse AIS."""
    betas = [float(b) for b in betas]
    if not betas or betas[0] != 0.0 or betas[-1] != 1.0 or any(b1 <= b0 for b0, b1 in zip(betas, betas[1:])):
        raise ValueError("betas: expected an increasing schedule from 0.0 to 1.0")
    return betas[::-1] if reverse else betas


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
    reverse = init_v is not None
    path = annealing_path(betas, reverse)
    if reverse:
        v = init_v.to(rbm.weight.dtype)
    else:
        v = draw_bernoulli(base_bias.expand(num_runs, -1))
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


def log_partition(rbm: RBM, base_bias: torch.Tensor, num_betas: int, num_runs: int, exact_units: int = EXACT_UNITS,
                  estimate: bool = False) -> dict[str, Result]:
    """log Z as typed results: "log_z_exact" when the smaller layer has at most exact_units units,
    "log_z_ais" (forward AIS, num_betas x num_runs, from the base-rate RBM with visible biases
    base_bias) when it has more or when estimate=True. Seeding is the caller's."""
    results = {}
    if min(rbm.num_visible, rbm.num_hidden) <= exact_units:
        results["log_z_exact"] = Result(float(exact_log_partition(rbm)), 0.0, "enumeration", "exact")
    if estimate or not results:
        forward = ais(rbm, base_bias, ais_schedule(num_betas), num_runs=num_runs)
        # E[log Z-hat] <= log Z (Jensen on an unbiased estimate of Z)
        results["log_z_ais"] = Result(forward["log_z"], forward["stderr"], f"AIS, {num_betas} betas, base-rate RBM",
                                      "stochastic lower bound", num_runs)
    return results


def best_log_partition(results: dict[str, Result]) -> Result:
    """The exact log Z when it was enumerated, else the AIS estimate."""
    return results.get("log_z_exact") or results["log_z_ais"]
