"""vaekit: deep generative models around the variational autoencoder."""

__version__ = "0.1.0"
