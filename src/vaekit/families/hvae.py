"""The hierarchical VAE family: L stochastic layers with bottom-up inference (Burda et al. 2016's
two-layer VAE and IWAE: preset burda2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError
from ..models.hvae import HierarchicalVAE
from . import Family, latent


@dataclass
class HVAEConfig:
    preset: str | None = None  # fills the fields below; explicit keys still win
    latents: list[int] = field(default_factory=lambda: [100, 50])  # latent sizes, from the data up
    hidden: list[list[int]] = field(default_factory=lambda: [[200, 200], [100, 100]])  # per stochastic layer
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # bernoulli | gaussian | logistic (256 grey levels)
    min_scale: float = 1e-3  # floor on every Gaussian scale

    def validate(self) -> None:
        latent.check_section(self, "hvae", ("latents",))
        if len(self.hidden) != len(self.latents):
            raise ConfigError(f"hvae.hidden: expected one list of hidden sizes per stochastic layer "
                              f"({len(self.latents)}, as hvae.latents {self.latents}), got {self.hidden}")
        for i, sizes in enumerate(self.hidden):
            if not all(h > 0 for h in sizes):
                raise ConfigError(f"hvae.hidden[{i}]: expected positive layer sizes, got {sizes}")


PRESETS = {
    # Burda, Grosse & Salakhutdinov 2016, two stochastic layers: 784-200-200-100 (z1) -100-100-50 (z2), tanh
    "burda2": {"latents": [100, 50], "hidden": [[200, 200], [100, 100]], "activation": "tanh"},
}


def build(c: HVAEConfig, spec) -> HierarchicalVAE:
    return HierarchicalVAE(spec.num_dims, [list(h) for h in c.hidden], list(c.latents), c.activation,
                           c.likelihood, c.min_scale)


FAMILY = Family(
    name="hvae", help="hierarchical VAE: L stochastic layers, bottom-up inference (preset burda2)",
    config=HVAEConfig, build=build, step=latent.step, evaluate=latent.evaluate_test, monitor=latent.monitor,
    pictures=latent.PICTURES, binary_data=lambda c: c.likelihood == "bernoulli", presets=PRESETS)
