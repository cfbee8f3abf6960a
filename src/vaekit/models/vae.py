"""The variational autoencoder (Kingma & Welling 2014; Rezende, Mohamed & Wierstra 2014).

Gaussian encoder q(z|x) = N(loc(x), diag scale(x)^2), prior p(z) = N(0, I), decoder p(x|z) either
Bernoulli(logits = g(z)) or Normal(g(z), diag scale^2) with one learned scale per dimension; the
networks are MLPs or, for images, the DCGAN convolutions the GAN family uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, constraints, kl_divergence

from ..nets import ConvDiscriminator, ConvGenerator, mlp
from ..objectives import log_importance_weights


class BernoulliLogits(Bernoulli):
    """Bernoulli(logits=l) with log p(x) = x*l - softplus(l), the same value as -BCE-with-logits.

    Written as two element-wise passes instead of BCE's several: evaluating log p(x|z) for thousands
    of importance samples is memory-bound, and this is its largest tensor.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return value * self.logits - F.softplus(self.logits)


class DiscretizedLogistic(Distribution):
    """A logistic of location loc and scale s discretised to the 256 grey levels x = k/255 of 8-bit
    images (Salimans et al. 2017, eq. 2; Kingma et al. 2016): the mass of level x is the logistic's mass
    on [x - 1/510, x + 1/510], the end levels taking the tails,

        P(x) = sigmoid((x + 1/510 - loc) / s) - sigmoid((x - 1/510 - loc) / s),

    per dimension (batch shape that of loc). log_prob is a log-probability (nats over 256 levels),
    comparable with published bits/dim on 8-bit data."""

    arg_constraints: dict = {}
    support = constraints.unit_interval
    LEVELS = 256

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=False)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        half = 0.5 / (self.LEVELS - 1)
        upper, lower = (x + half - self.loc) / self.scale, (x - half - self.loc) / self.scale
        # log(sigmoid(a) - sigmoid(b)) without cancellation: by its mirror image where both are near 1
        mirror = (upper + lower) > 0
        a, b = torch.where(mirror, -lower, upper), torch.where(mirror, -upper, lower)
        log_a = F.logsigmoid(a)
        middle = log_a + torch.log(-torch.expm1(F.logsigmoid(b) - log_a).clamp(max=-1e-12))
        return torch.where(x < half, F.logsigmoid(upper), torch.where(x > 1 - half, F.logsigmoid(-lower), middle))

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = (1/255) sum_{k=1}^{255} P(x >= k/255), exactly."""
        levels = torch.arange(1, self.LEVELS, device=self.loc.device, dtype=self.loc.dtype) / (self.LEVELS - 1)
        edges = levels - 0.5 / (self.LEVELS - 1)
        return torch.sigmoid((self.loc.unsqueeze(-1) - edges) / self.scale.unsqueeze(-1)).mean(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """The logistic's inverse CDF at uniform draws, rounded to the nearest level."""
        with torch.no_grad():
            u = torch.rand(self._extended_shape(sample_shape), device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return torch.round(y.clamp(0, 1) * (self.LEVELS - 1)) / (self.LEVELS - 1)


LIKELIHOODS = ("bernoulli", "gaussian", "logistic")


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    """N(loc, diag scale^2) over the last dimension, as one event."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class ImageEncoder(nn.Module):
    """x [B, D] -> [B, out]: the DCGAN discriminator's convolutions on x seen as images of image_shape."""

    def __init__(self, image_shape, width: int, out_features: int, blocks: int = 0):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = ConvDiscriminator(image_shape, width, out_features=out_features, blocks=blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, *self.image_shape))


class ImageDecoder(nn.Module):
    """z [..., L] -> [..., D]: the DCGAN generator (the GAN family's), flattened; any leading dims
    (K importance samples of B examples) are folded into its batch."""

    def __init__(self, latent: int, image_shape, width: int, blocks: int = 0):
        super().__init__()
        self.net = ConvGenerator(latent, image_shape, width, blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(-1, z.shape[-1])).flatten(1).reshape(*z.shape[:-1], -1)


ARCHITECTURES = ("mlp", "conv")


class LatentVariableBase(nn.Module):
    """What a VAE-like model derives from its prior(), posterior(x), likelihood(z) and elbo_terms(x, K):
    the log importance weights, the ELBO, samples and the encode/decode means (the LatentVariableModel
    protocol). The likelihood's output layer: observation()."""

    def log_weights(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x). x [B, D] -> [K, B]."""
        return log_importance_weights(x, self.posterior(x), self.prior(), self.likelihood, num_samples)

    def elbo(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """L(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) (Kingma & Welling 2014, eq. 10). [B]."""
        reconstruction, kl = self.elbo_terms(x, num_samples)
        return reconstruction - kl

    def init_observation(self, likelihood: str, data_dim: int, min_scale: float) -> None:
        """The output layer's setting: its name and, for a Gaussian or discretised logistic, a learned scale
        per dimension (softplus(raw_scale) + min_scale, starting at ~1)."""
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {list(LIKELIHOODS)}, got {likelihood!r}")
        self.likelihood_name, self.min_scale = likelihood, min_scale
        if likelihood != "bernoulli":
            self.raw_scale = nn.Parameter(torch.full((data_dim,), 0.5413))  # softplus(0.5413) = 1

    def observation(self, out: torch.Tensor) -> Distribution:
        """p(x|z) from the decoder's output [..., D], one event over D: Bernoulli(logits = out), or
        Normal(out, diag scale^2) or the 256-level DiscretizedLogistic(out, scale) with a learned scale
        per dimension."""
        if self.likelihood_name == "bernoulli":
            return Independent(BernoulliLogits(logits=out, validate_args=False), 1, validate_args=False)
        scale = F.softplus(self.raw_scale) + self.min_scale
        if self.likelihood_name == "logistic":
            return Independent(DiscretizedLogistic(out, scale), 1, validate_args=False)
        return diagonal_normal(out, scale)

    def output_layer(self) -> nn.Linear | None:
        """The Linear layer whose outputs [..., D] are p(x|z)'s per-dimension logits or locations (the
        last of an MLP decoder), or None (a convolutional decoder's last layer has one bias per channel)."""
        last = self.decoder[-1] if isinstance(self.decoder, nn.Sequential) else None
        return last if isinstance(last, nn.Linear) and last.out_features == self.data_dim else None

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """Mean of p(x|z) for z ~ p(z): pixel probabilities (Bernoulli) or means. [N, D]."""
        return self.likelihood(self.prior().sample((num_samples,))).mean

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z] for given latents z [N, L] -> [N, D]."""
        return self.likelihood(z).mean

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means E_q[z|x] (a chain of layers: its ancestral means). [B, D] -> [B, L]."""
        return self.posterior(x).mean


class VAE(LatentVariableBase):
    """A VAE on x [B, D] with z [B, L] (or [K, B, L] for K samples). architecture "mlp": MLP encoder and
    decoder (hidden sizes, activation); "conv": the DCGAN networks of the GAN family on images of
    image_shape (encoder: the discriminator's convolutions with 2L outputs; decoder: the generator,
    the same network a GAN of that width trains), width channels in the first stage, `blocks` residual
    blocks at each resolution of both."""

    def __init__(self, data_dim: int, hidden: list[int], latent: int, activation: str = "tanh",
                 likelihood: str = "bernoulli", min_scale: float = 1e-3, architecture: str = "mlp",
                 image_shape=None, width: int = 32, blocks: int = 0):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: expected one of {list(ARCHITECTURES)}, got {architecture!r}")
        self.data_dim, self.latent = data_dim, latent
        if architecture == "conv":
            if image_shape is None or math.prod(image_shape) != data_dim:
                raise ValueError(f"image_shape: architecture 'conv' needs the (C, H, W) of the data, C*H*W = "
                                 f"data_dim = {data_dim}; got {image_shape!r}")
            self.encoder = ImageEncoder(image_shape, width, 2 * latent, blocks)
            self.decoder = ImageDecoder(latent, image_shape, width, blocks)
        else:
            self.encoder = mlp([data_dim, *hidden, 2 * latent], activation)
            self.decoder = mlp([latent, *reversed(hidden), data_dim], activation)
        self.init_observation(likelihood, data_dim, min_scale)  # last: older checkpoints' parameter order
        self.register_buffer("prior_loc", torch.zeros(latent))
        self.register_buffer("prior_scale", torch.ones(latent))

    def prior(self) -> Distribution:
        """p(z) = N(0, I)."""
        return diagonal_normal(self.prior_loc, self.prior_scale)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) = N(loc(x), diag scale(x)^2); softplus keeps scale > min_scale without exp overflow."""
        loc, raw = self.encoder(x).chunk(2, dim=-1)
        return diagonal_normal(loc, F.softplus(raw) + self.min_scale)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z): Bernoulli(logits = g(z)) or Normal(g(z), diag scale^2), one event over D."""
        return self.observation(self.decoder(z))

    def elbo_terms(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(E_q[log p(x|z)] by Monte Carlo, KL(q(z|x) || p(z)) analytically), each [B]."""
        q = self.posterior(x)
        z = q.rsample((num_samples,))
        return self.likelihood(z).log_prob(x).mean(dim=0), kl_divergence(q, self.prior())

    def as_linear_gaussian(self):
        """The same generative model as a LinearGaussian (exact log p(x) and p(z|x)) when the decoder is
        one Linear layer with a Gaussian likelihood, else None. Shares no parameters: a snapshot."""
        linear = isinstance(self.decoder, nn.Sequential) and len(self.decoder) == 1 and \
            isinstance(self.decoder[0], nn.Linear)
        if not (linear and self.likelihood_name == "gaussian"):
            return None
        from .linear import LinearGaussian
        model = LinearGaussian(self.data_dim, self.latent, "fa", self.min_scale).to(self.raw_scale)
        with torch.no_grad():
            model.loc.copy_(self.decoder[0].bias)
            model.weight.copy_(self.decoder[0].weight)
            model.raw_scale.copy_(self.raw_scale)
        return model
