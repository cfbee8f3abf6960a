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
    init: str = "default"  # default (PyTorch's) | glorot (Glorot & Bengio 2010, biases 0; Burda et al. 2016)
    output_bias: str = "default"  # default | data: the decoder's last bias from the training data's mean

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
    # with their code's output bias: the logit of the mean pixel. With a bias at 0 the model collapses to ~9
    # active units; with it, ~110 stay active. PyTorch's default weights measured faster than Glorot's (as their
    # code) beside it: docs/benchmarks.md, section 11
    "burda2": {"latents": [100, 50], "hidden": [[200, 200], [100, 100]], "activation": "tanh",
               "output_bias": "data"},
}


def build(c: HVAEConfig, spec) -> HierarchicalVAE:
    return latent.initialise(HierarchicalVAE(spec.num_dims, [list(h) for h in c.hidden], list(c.latents),
                                             c.activation, c.likelihood, c.min_scale), c)


FAMILY = Family(
    name="hvae", help="hierarchical VAE: L stochastic layers, bottom-up inference (preset burda2)",
    config=HVAEConfig, build=build, step=latent.step, evaluate=latent.evaluate_test, monitor=latent.monitor,
    pictures=latent.PICTURES, init=latent.init, binary_data=lambda c: c.likelihood == "bernoulli", presets=PRESETS)
