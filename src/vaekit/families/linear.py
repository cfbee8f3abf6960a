"""The linear-Gaussian family: PPCA, factor analysis or the direct generator, trained by gradient
ascent on its exact log-likelihood (or fitted in closed form)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ConfigError, check_choice, check_positive
from ..models.linear import NOISE_TYPES, LinearGaussian
from ..train import StepState, ascend
from . import Family, latent


@dataclass
class LinearConfig:
    latent: int = 2  # k, the latent dimension (= D for noise = "none")
    noise: str = "ppca"  # ppca (one sigma) | fa (diagonal) | none (direct generator, latent = D)
    init: str = "random"  # random | ppca (closed-form maximum likelihood, Tipping & Bishop 1999)
    min_scale: float = 1e-3  # floor on the noise scale: keeps log-densities finite

    def validate(self) -> None:
        check_choice(self.noise, NOISE_TYPES, "linear.noise")
        check_choice(self.init, ("random", "ppca"), "linear.init")
        check_positive(self, "linear", ("latent", "min_scale"))
        if self.init == "ppca" and self.noise != "ppca":
            raise ConfigError("linear.init: 'ppca' is the closed-form fit of linear.noise = 'ppca'")


def build(c: LinearConfig, spec) -> LinearGaussian:
    return LinearGaussian(spec.num_dims, c.latent, c.noise, c.min_scale)


def init(model: LinearGaussian, data, c: LinearConfig) -> None:
    if c.init == "ppca":
        fitted = LinearGaussian.fit_ppca(data.train.x, c.latent, c.min_scale)
        model.load_state_dict(fitted.state_dict())


def log_px(model, x: torch.Tensor, cfg) -> torch.Tensor:
    """The exact log-likelihood log N(x; mu, L L^T + Psi): gradient ascent on log p itself. [B]."""
    return model.log_prob(x)


def step(state: StepState, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return ascend(state, log_px, x, "log_px")


FAMILY = Family(
    name="linear", help="linear-Gaussian generator: PPCA, factor analysis (exact log p)", config=LinearConfig,
    build=build, step=step, evaluate=latent.evaluate_test, monitor=latent.monitor, pictures=latent.PICTURES,
    init=init)
