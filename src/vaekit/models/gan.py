"""The generative adversarial network (Goodfellow et al. 2014), with DCGAN networks (Radford et al. 2016).

A generator x = sigmoid(G(z)), z ~ p(z) = N(0, I), and a discriminator D(x) = sigmoid(l(x)) play
    min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]      (Goodfellow et al. 2014, eq. 1).
The discriminator outputs logits l [B]; every loss is written from them with softplus, since
-log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l) stay finite where sigmoid rounds
to 0 or 1. Losses are per example [B]; the caller reduces them.

Besides the minimax and non-saturating losses, the hinge loss: its discriminator loss is bounded per
example, it is the standard partner of spectral normalisation, and unlike WGAN-GP it needs no second
backward pass through a gradient penalty.

With a categorical code (InfoGAN, Chen et al. 2016) the generator's input is [z, onehot(c)] with
c ~ Uniform{1..K} beside z, and the discriminator's last layer has K more outputs, the logits of
Q(c | x); both players also minimise the cross-entropy -log Q(c | G(z, c)), which makes
log K - E[-log Q(c | G(z, c))] a lower bound on the mutual information I(c; G(z, c)) (eq. 4 there).
Without labels the code tends to pick the data's discrete factor (the digit class on MNIST), so the
generator no longer has to spread a continuous z across separate classes, where the images between
two classes are neither. Tending is not always doing: several codes can settle on one class and
style (InfoGAN's own caveat). Q can also be asked to sort the real images into K confident and
equally common groups by maximising its mutual information with them, H(E_x Q(c|x)) - E_x H(Q(c|x))
(regularised information maximisation, Krause et al. 2010; Hu et al. 2017); the groups of real
images are then the classes the codes have to share out. What makes those groups classes rather than
styles is invariance: Q's answer is also asked to stay the same when a real image is slightly rotated,
scaled and shifted (self-augmented training, Hu et al. 2017), changes that keep a digit's class.

There is no density: the model has no log_weights, only samples.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, OneHotCategorical

from ..nets import ConvDiscriminator, ConvGenerator, conv_stages, mlp, spectral_normalize
from .vae import diagonal_normal

LOSSES = ("minimax", "non_saturating", "hinge")
ARCHITECTURES = ("conv", "mlp")


def _check_kind(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"kind: unknown GAN loss {kind!r}; known: {list(LOSSES)}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       kind: str = "non_saturating") -> torch.Tensor:
    """The discriminator's loss on real logits l(x) [B] and fake logits l(G(z)) [B]. -> [B].

    minimax, non_saturating: -log D(x) - log(1 - D(G(z))) = softplus(-l(x)) + softplus(l(G(z))), the
        negated value V (Goodfellow et al. 2014, eq. 1); the two kinds differ only in the generator.
    hinge: relu(1 - l(x)) + relu(1 + l(G(z))) (Lim & Ye 2017; as in Miyato et al. 2018).
    """
    _check_kind(kind)
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"real_logits {tuple(real_logits.shape)} and fake_logits {tuple(fake_logits.shape)}: "
                         f"expected the same shape [B], one real and one fake example per term")
    if kind == "hinge":
        return F.relu(1 - real_logits) + F.relu(1 + fake_logits)
    return F.softplus(-real_logits) + F.softplus(fake_logits)


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    """The generator's loss on fake logits l(G(z)) [B]. -> [B].

    minimax: log(1 - D(G(z))) = -softplus(l), the term of V that G minimises (Goodfellow et al. 2014,
        eq. 1); its gradient vanishes where D confidently rejects the fakes (l -> -inf).
    non_saturating: -log D(G(z)) = softplus(-l), the same fixed point with strong gradients early in
        training (Goodfellow et al. 2014, section 3).
    hinge: -l (Lim & Ye 2017; as in Miyato et al. 2018).
    """
    _check_kind(kind)
    if kind == "minimax":
        return -F.softplus(fake_logits)
    if kind == "non_saturating":
        return F.softplus(-fake_logits)
    return -fake_logits


def game_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """V = log D(x) + log(1 - D(G(z))) = -softplus(-l(x)) - softplus(l(G(z))) per pair (Goodfellow et
    al. 2014, eq. 1). At the optimal D its mean is -log 4 + 2 JSD(p_data || p_g) (theorem 1). [B]."""
    return -F.softplus(-real_logits) - F.softplus(fake_logits)


def code_cross_entropy(code_logits: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """-log Q(c | x) for the code c held one-hot in the last K columns of latents [B, L + K], from
    Q's logits [B, K] (InfoGAN, Chen et al. 2016, eq. 4: I(c; G(z, c)) >= log K - its mean). -> [B]."""
    num_categories = code_logits.shape[-1]
    if latents.shape[0] != code_logits.shape[0] or latents.shape[-1] < num_categories:
        raise ValueError(f"code_logits {tuple(code_logits.shape)} and latents {tuple(latents.shape)}: expected "
                         f"[B, K] and [B, L + K] with the one-hot code in the last K columns")
    return F.cross_entropy(code_logits, latents[:, -num_categories:].argmax(-1), reduction="none")


def code_information(code_logits: torch.Tensor) -> torch.Tensor:
    """I_Q(c; x) = H(mean_b Q(c | x_b)) - mean_b H(Q(c | x_b)) from Q's logits [B, K] on a batch of
    images: the mutual information between the images and the code Q assigns them (Krause et al. 2010,
    eq. 3; IMSAT, Hu et al. 2017). 0 when Q says the same for every image, log K when it puts each
    image in one group with certainty and every group holds 1/K of the batch. A batch statistic (the
    marginal needs the whole batch): a scalar, not per example."""
    if code_logits.dim() != 2 or code_logits.shape[-1] < 2:
        raise ValueError(f"code_logits: expected [B, K] with K >= 2 groups, got {tuple(code_logits.shape)}")
    log_q = F.log_softmax(code_logits, -1)
    q = log_q.exp()
    marginal = q.mean(0)
    marginal_entropy = -(marginal * marginal.clamp_min(torch.finfo(q.dtype).tiny).log()).sum()
    return marginal_entropy + (q * log_q).sum(-1).mean()


AFFINE_DEGREES = 15.0  # random rotations within +-15 degrees,
AFFINE_SCALE = 0.1  # scalings within 1 +- 0.1,
AFFINE_SHIFT = 0.07  # shifts within +-7 % of the side (2 pixels of 28): a digit stays the same digit


def random_affine(images: torch.Tensor) -> torch.Tensor:
    """Each image of images [B, C, H, W] rotated, scaled and shifted at random within AFFINE_DEGREES,
    AFFINE_SCALE and AFFINE_SHIFT (bilinear resampling, zeros outside). Draws from the global RNG."""
    n = images.shape[0]
    uniform = lambda *shape: 2 * torch.rand(*shape, device=images.device, dtype=images.dtype) - 1
    angle = uniform(n) * math.radians(AFFINE_DEGREES)
    scale = 1 + uniform(n) * AFFINE_SCALE
    shift = uniform(n, 2) * 2 * AFFINE_SHIFT  # affine_grid's coordinates span 2 units per side
    cos, sin = scale * angle.cos(), scale * angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)


def code_consistency(code_logits: torch.Tensor, moved_logits: torch.Tensor) -> torch.Tensor:
    """KL(Q(c | x) || Q(c | T(x))) per image, from Q's logits on images x [B, K] and on the same images
    transformed [B, K]; Q(c | x) is held fixed as the target (self-augmented training, Hu et al. 2017,
    eq. 2, with T a random affine map instead of an adversarial perturbation). -> [B]."""
    if code_logits.shape != moved_logits.shape or code_logits.dim() != 2:
        raise ValueError(f"code_logits {tuple(code_logits.shape)} and moved_logits {tuple(moved_logits.shape)}: "
                         "expected the same shape [B, K]")
    target = F.log_softmax(code_logits.detach(), -1)
    return F.kl_div(F.log_softmax(moved_logits, -1), target, log_target=True, reduction="none").sum(-1)


class CodedPrior(Distribution):
    """p(z, c) = N(z; loc, diag(scale^2)) Uniform(c; 1..K) as one vector [z, onehot(c)] of size L + K,
    the input of an InfoGAN generator (Chen et al. 2016)."""

    arg_constraints: dict = {}

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_categories: int):
        self.normal = diagonal_normal(loc, scale)
        self.code = OneHotCategorical(logits=loc.new_zeros(num_categories), validate_args=False)
        super().__init__(event_shape=torch.Size([loc.shape[-1] + num_categories]), validate_args=False)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return torch.cat([self.normal.sample(sample_shape), self.code.sample(sample_shape)], -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log N(z) + log Uniform(c) = log N(z) - log K, value [..., L + K] with a one-hot code."""
        latent = self.normal.event_shape[0]
        return self.normal.log_prob(value[..., :latent]) + self.code.log_prob(value[..., latent:])


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """Run module in eval mode inside the block, then restore every submodule's own training flag."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


class GAN(nn.Module):
    """Generator and discriminator on flat data x [B, D] with D = C * H * W, latents z [N, L].

    architecture "conv": ConvGenerator / ConvDiscriminator on images of image_shape (C, H, W);
    "mlp": MLPs (hidden sizes for D, reversed for G; ReLU in G, LeakyReLU(0.2) in D) for data without
    image structure, with PyTorch's default initialisation (DCGAN's N(0, 0.02) is for the conv networks).
    With categories K > 0 (InfoGAN), the generator reads [z, onehot(c)] [N, L + K] and the
    discriminator has K more outputs, the logits of Q(c | x) (code_logits).
    With ema > 0, generator_ema holds an exponential moving average of the generator's
    weights (Yazici et al. 2019), the one generate() and sample() use by default.
    """

    def __init__(self, data_dim: int, image_shape, latent: int = 64, architecture: str = "conv",
                 width: int = 64, hidden: Sequence[int] = (256, 256), spectral_norm: bool = False,
                 ema: float = 0.0, categories: int = 0):
        super().__init__()
        image_shape = tuple(image_shape)
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: expected one of {list(ARCHITECTURES)}, got {architecture!r}")
        if math.prod(image_shape) != data_dim:
            raise ValueError(f"image_shape: {image_shape} holds {math.prod(image_shape)} values, "
                             f"expected data_dim = {data_dim}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema: expected a decay in [0, 1) (0 for no average), got {ema!r}")
        if not isinstance(latent, int) or latent <= 0:
            raise ValueError(f"latent: expected a positive int, got {latent!r}")
        if not isinstance(categories, int) or categories < 0 or categories == 1:
            raise ValueError(f"categories: expected 0 (no code) or a number of categories >= 2, got {categories!r}")
        self.data_dim, self.image_shape, self.latent = data_dim, image_shape, latent
        self.architecture, self.ema, self.categories = architecture, ema, categories
        inputs, outputs = latent + categories, 1 + categories
        if architecture == "conv":
            self._check_conv(image_shape)
            # channels-last: oneDNN's (and cuDNN's) fast layout for these convolutions, about 1.1-1.3x
            # the images/s on a 2-core CPU (docs/benchmarks.md); values are the same in any layout
            self.generator = ConvGenerator(inputs, image_shape, width).to(memory_format=torch.channels_last)
            self.discriminator = ConvDiscriminator(image_shape, width, spectral_norm, outputs).to(
                memory_format=torch.channels_last)
        else:
            self.generator = mlp([inputs, *reversed(hidden), data_dim], "relu")
            self.discriminator = mlp([data_dim, *hidden, outputs], "leaky_relu")
            if spectral_norm:
                spectral_normalize(self.discriminator)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if ema > 0 else None
        self.register_buffer("prior_loc", torch.zeros(latent))
        self.register_buffer("prior_scale", torch.ones(latent))

    @staticmethod
    def _check_conv(image_shape) -> None:
        try:
            conv_stages(*image_shape[1:])
        except ValueError as error:
            raise ValueError(f"architecture 'conv': data of shape {'x'.join(map(str, image_shape))} has no "
                             f"image structure to convolve ({error}); use architecture 'mlp'") from None

    def prior(self) -> Distribution:
        """p(z) = N(0, I), or with categories p(z, c) = N(z; 0, I) Uniform(c) as [z, onehot(c)]."""
        if self.categories:
            return CodedPrior(self.prior_loc, self.prior_scale, self.categories)
        return diagonal_normal(self.prior_loc, self.prior_scale)

    def latents(self, num_samples: int) -> torch.Tensor:
        """Training draws from the prior: z = randn [N, L], with categories [z, onehot(c)] [N, L + K]."""
        z = torch.randn(num_samples, self.latent, device=self.prior_loc.device)
        if not self.categories:
            return z
        c = torch.randint(self.categories, (num_samples,), device=z.device)
        return torch.cat([z, F.one_hot(c, self.categories).to(z.dtype)], 1)

    def players(self) -> dict[str, nn.Module]:
        """The two networks, each trained by its own optimiser on its own loss."""
        return {"generator": self.generator, "discriminator": self.discriminator}

    def _generator(self, ema: bool | None) -> nn.Module:
        if ema and self.generator_ema is None:
            raise ValueError("ema: True asks for the averaged generator, but the model was built with ema = 0")
        return self.generator_ema if (ema is not False and self.generator_ema is not None) else self.generator

    def generate(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor:
        """Pixel values sigmoid(G(z)) in [0, 1], flattened. z [N, L] (with categories [N, L + K]) -> [N, D].

        Runs the generator in its current mode (training: BatchNorm on batch statistics, gradients to z
        and the weights). ema None uses the averaged generator when there is one, False the trained one:
        the generator's training step must pass ema=False."""
        return torch.sigmoid(self.generate_logits(z, ema))

    def generate_logits(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor:
        """G(z), the logits of the pixel values (generate's sigmoid undone), flattened; as generate.
        [N, L] -> [N, D]."""
        return self._generator(ema)(z).flatten(1)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """Discriminator logits l(x), D(x) = sigmoid(l(x)). x [B, D] -> [B]."""
        return self.discriminate_code(x)[0]

    def discriminate_code(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(l(x) [B], code_logits [B, K]) from one pass: the discriminator's logits and Q(c | x)'s
        (K = categories; [B, 0] without a code). x [B, D]."""
        if self.architecture == "conv":
            x = x.reshape(-1, *self.image_shape).contiguous(memory_format=torch.channels_last)
        out = self.discriminator(x)
        return out[:, 0], out[:, 1:]

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, ema: bool | None = None) -> torch.Tensor:
        """generate(z) for pictures: no gradients, the generator in eval mode for the call. [N, L] -> [N, D].

        Eval mode makes a sample a function of its own z (BatchNorm on running statistics, not on the
        other samples of the batch) and leaves the running statistics untouched, so sampling during
        training does not move them; the training flags are restored afterwards."""
        with evaluating(self._generator(ema)):
            return self.generate(z, ema)

    @torch.no_grad()
    def sample(self, num_samples: int, ema: bool | None = None) -> torch.Tensor:
        """Pixel values sigmoid(G(z)) for z ~ p(z), as decode_mean. [N, D]."""
        return self.decode_mean(self.prior().sample((num_samples,)), ema)

    @torch.no_grad()
    def update_ema(self) -> None:
        """theta_ema <- ema * theta_ema + (1 - ema) * theta for the generator's parameters (Yazici et al.
        2019); buffers (BatchNorm running statistics) are copied, being statistics of the trained
        generator's activations rather than weights. Call after each generator step."""
        if self.generator_ema is None:
            raise ValueError("update_ema: the model was built with ema = 0, there is no averaged generator")
        for averaged, current in zip(self.generator_ema.parameters(), self.generator.parameters()):
            averaged.lerp_(current, 1.0 - self.ema)
        for averaged, current in zip(self.generator_ema.buffers(), self.generator.buffers()):
            averaged.copy_(current)
