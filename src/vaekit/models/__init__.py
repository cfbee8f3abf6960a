"""Model registry: name -> builder(model_config, data_dim) -> nn.Module."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .linear import LinearGaussian
from .rbm import RBM
from .vae import VAE

MODELS: dict[str, Callable[..., nn.Module]] = {
    "vae": VAE.from_config, "linear": LinearGaussian.from_config, "rbm": RBM.from_config,
}


def build_model(config, data_dim: int) -> nn.Module:
    """Build the model named by `config.name` for data of dimension `data_dim`."""
    if config.name not in MODELS:
        raise ValueError(f"model.name: unknown model {config.name!r}; known: {sorted(MODELS)}")
    return MODELS[config.name](config, data_dim)


__all__ = ["MODELS", "VAE", "LinearGaussian", "RBM", "build_model"]
