"""The top-down hierarchical VAE family (Ladder VAE / NVAE-style): a deterministic bottom-up pass, then
latent groups generated top-down, each posterior a residual correction of its prior."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError
from ..models.topdown import TopDownVAE
from . import Family, latent


@dataclass
class TopDownConfig:
    preset: str | None = None  # fills the fields below; explicit keys still win
    latents: list[int] = field(default_factory=lambda: [32, 16, 8])  # latent group sizes, from the data up
    width: int = 256  # of every deterministic layer (the residual stream)
    depth: int = 1  # residual cells per group, on each path
    activation: str = "elu"
    likelihood: str = "bernoulli"  # bernoulli | gaussian | logistic (256 grey levels)
    min_scale: float = 1e-3  # floor on every Gaussian scale
    output_bias: str = "default"  # default | data: the output layer's bias from the training data's mean

    def validate(self) -> None:
        latent.check_section(self, "topdown", ("latents", "width"))
        if self.depth < 0:
            raise ConfigError(f"topdown.depth: expected residual cells per group >= 0, got {self.depth}")


PRESETS = {
    # Sized for dynamically binarised MNIST on a 2-core CPU: an epoch costs <= 4x the vae burda preset's
    "ladder": {"latents": [32, 16, 8], "width": 256, "depth": 1, "activation": "elu"},
}


def build(c: TopDownConfig, spec) -> TopDownVAE:
    return TopDownVAE(spec.num_dims, list(c.latents), c.width, c.depth, c.activation, c.likelihood, c.min_scale)


FAMILY = Family(
    name="topdown", help="top-down hierarchical VAE (Ladder VAE / NVAE-style): residual cells, a KL per group "
                         "(preset ladder)",
    config=TopDownConfig, build=build, step=latent.step, evaluate=latent.evaluate_test, monitor=latent.monitor,
    pictures=latent.PICTURES, init=latent.init, binary_data=lambda c: c.likelihood == "bernoulli", presets=PRESETS)
