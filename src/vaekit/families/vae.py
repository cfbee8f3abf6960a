"""The VAE family: MLP encoder and decoder, Gaussian q(z|x), Bernoulli or Gaussian p(x|z)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_choice, check_positive
from ..models.vae import VAE
from ..nets import ACTIVATIONS
from . import Family, latent


@dataclass
class VAEConfig:
    preset: str | None = None  # fills the fields below; explicit keys still win
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    latent: int = 2  # latent dimension
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # bernoulli | gaussian
    min_scale: float = 1e-3  # floor on every Gaussian scale: keeps log-densities finite

    def validate(self) -> None:
        check_choice(self.likelihood, ("bernoulli", "gaussian"), "vae.likelihood")
        check_choice(self.activation, ACTIVATIONS, "vae.activation")
        check_positive(self, "vae", ("hidden", "latent", "min_scale"))


PRESETS = {
    # pytorch/examples VAE: 784-400-20, ReLU
    "examples": {"hidden": [400], "latent": 20, "activation": "relu"},
    # Burda, Grosse & Salakhutdinov 2016, one stochastic layer: 784-200-200-50, tanh
    "burda": {"hidden": [200, 200], "latent": 50, "activation": "tanh"},
}


def build(c: VAEConfig, spec) -> VAE:
    return VAE(spec.num_dims, list(c.hidden), c.latent, c.activation, c.likelihood, c.min_scale)


FAMILY = Family(
    name="vae", help="variational autoencoder (MLPs; presets examples, burda)", config=VAEConfig, build=build,
    step=latent.step, evaluate=latent.evaluate_test, monitor=latent.monitor, pictures=latent.PICTURES,
    binary_data=lambda c: c.likelihood == "bernoulli", presets=PRESETS)
