"""The VAE family: MLP encoder and decoder, Gaussian q(z|x), Bernoulli or Gaussian p(x|z)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, check_choice
from ..models.vae import ARCHITECTURES, VAE
from ..nets import conv_stages
from . import Family, latent


@dataclass
class VAEConfig:
    preset: str | None = None  # fills the fields below; explicit keys still win
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    latent: int = 2  # latent dimension
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # bernoulli | gaussian | logistic (256 grey levels)
    min_scale: float = 1e-3  # floor on every Gaussian scale: keeps log-densities finite
    init: str = "default"  # mlp: default (PyTorch's) | glorot (Glorot & Bengio 2010, biases 0; Burda et al. 2016)
    output_bias: str = "default"  # default | data: the decoder's last bias from the training data's mean
    architecture: str = "mlp"  # mlp (hidden, activation) | conv (the GAN family's DCGAN networks, for images)
    width: int = 32  # conv: channels of the first stage (as gan.width: the same decoder as such a GAN)
    blocks: int = 0  # conv: residual blocks (two 3x3 convolutions) at each resolution of encoder and decoder

    def validate(self) -> None:
        latent.check_section(self, "vae", ("hidden", "latent", "width"))
        check_choice(self.architecture, ARCHITECTURES, "vae.architecture")
        if self.architecture == "conv" and (self.init, self.output_bias) != ("default", "default"):
            raise ConfigError(f"vae.init and vae.output_bias: 'glorot' and 'data' are for MLP networks; architecture "
                              f"'conv' keeps the DCGAN start (got init {self.init!r}, output_bias {self.output_bias!r})")
        if self.blocks < 0 or (self.blocks and self.architecture != "conv"):
            raise ConfigError(f"vae.blocks: expected residual blocks >= 0, with architecture 'conv' (an MLP has none); "
                              f"got {self.blocks} with {self.architecture!r}")


PRESETS = {
    # pytorch/examples VAE: 784-400-20, ReLU
    "examples": {"hidden": [400], "latent": 20, "activation": "relu"},
    # Burda, Grosse & Salakhutdinov 2016, one stochastic layer: 784-200-200-50, tanh
    "burda": {"hidden": [200, 200], "latent": 50, "activation": "tanh"},
    # the decoder of bench/configs/mnist_dcgan.toml's GAN (a DCGAN generator of width 32), with its encoder
    "dcgan": {"architecture": "conv", "width": 32, "latent": 64},
    # the same with a residual block at each resolution of encoder and decoder
    "resconv": {"architecture": "conv", "width": 32, "latent": 64, "blocks": 1},
}


def build(c: VAEConfig, spec) -> VAE:
    if c.architecture == "conv":
        try:
            conv_stages(*spec.image_shape[1:])
        except ValueError as error:
            raise ConfigError(f"vae.architecture: 'conv' needs image data; {error}") from None
    return latent.initialise(VAE(spec.num_dims, list(c.hidden), c.latent, c.activation, c.likelihood, c.min_scale,
                                 c.architecture, spec.image_shape, c.width, c.blocks), c)


FAMILY = Family(
    name="vae", help="variational autoencoder (MLPs or DCGAN convolutions; presets examples, burda, dcgan, resconv)",
    config=VAEConfig, build=build,
    step=latent.step, evaluate=latent.evaluate_test, monitor=latent.monitor, pictures=latent.PICTURES,
    init=latent.init, binary_data=lambda c: c.likelihood == "bernoulli", presets=PRESETS,
    legacy_keys={"init": None})  # the old shared [model] held the RBM's and linear model's start, not a VAE's
