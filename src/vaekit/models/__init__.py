"""The models of vaekit as torch modules: the mathematics of each family, nothing about training or
evaluation (their families in vaekit.families say how those are done)."""

from __future__ import annotations

from .hvae import HierarchicalVAE
from .linear import LinearGaussian
from .rbm import RBM
from .topdown import TopDownVAE
from .vae import VAE

__all__ = ["VAE", "HierarchicalVAE", "TopDownVAE", "LinearGaussian", "RBM"]
