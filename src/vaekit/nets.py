"""Network building blocks shared by the model families: MLPs, and convolutional image networks
sized from an image shape (channels, height, width).

Nothing here knows about probabilities: a network maps tensors to tensors, and the families turn its
outputs into distributions (logits, locations, scales).
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import nn
from torch.nn.utils import parametrizations

LEAKY_SLOPE = 0.2  # of the DCGAN discriminator (Radford et al. 2016, section 3)
DCGAN_STD = 0.02  # of the DCGAN weight initialisation (Radford et al. 2016, section 4)
KERNEL, STRIDE, PADDING = 4, 2, 1  # each stage exactly halves (or doubles) the height and width
MIN_BASE = 3  # smallest side a stride-2 stage may leave: below it a 4x4 kernel sees mostly padding


class LeakyReLU(nn.LeakyReLU):
    """LeakyReLU(0.2), built without arguments like the other ACTIVATIONS."""

    def __init__(self):
        super().__init__(LEAKY_SLOPE)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus,
    "leaky_relu": LeakyReLU,
}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with `activation` between them, none after the last."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; known: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def glorot_(net: nn.Module) -> nn.Module:
    """Every Linear layer of net drawn as Glorot & Bengio 2010 (eq. 16) for tanh networks: weights
    U(-a, a), a = sqrt(6 / (n_in + n_out)), biases 0; what Burda et al. 2016's code starts from, and a
    faster start than PyTorch's default (U(+-1/sqrt(n_in)), which shrinks a tanh signal layer by layer).
    In place; returns net."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


def _image_shape(image_shape) -> tuple[int, int, int]:
    """(channels, height, width) as positive ints, or an error naming the value."""
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(n, Integral) and n > 0 for n in shape):
        raise ValueError(f"image_shape: expected (channels, height, width) of positive ints, got {image_shape!r}")
    return tuple(int(n) for n in shape)


def _positive(name: str, value) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def conv_stages(height: int, width: int) -> int:
    """The number n of stride-2 stages an image network uses: the largest n such that height and width
    are divisible by 2^n and both leave a base of at least MIN_BASE (28x28 -> 2, base 7x7; 8x8 -> 1,
    base 4x4; 32x32 -> 3, base 4x4)."""
    n = 0
    while all(side % 2 ** (n + 1) == 0 and side // 2 ** (n + 1) >= MIN_BASE for side in (height, width)):
        n += 1
    if n == 0:
        raise ValueError(f"image of {height}x{width}: no stride-2 stage fits (each needs even sides that "
                         f"halve to at least {MIN_BASE}); data without image structure needs an MLP")
    return n


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016, section 4): conv and linear weights ~ N(0, 0.02),
    BatchNorm scales ~ N(1, 0.02), biases 0. Use as net.apply(dcgan_init), before spectral_norm."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, DCGAN_STD)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(module.weight, 1.0, DCGAN_STD)
    else:
        return
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def spectral_normalize(net: nn.Module) -> nn.Module:
    """Every Conv2d and Linear of net divided by the largest singular value of its weight (a conv's
    reshaped to [out, in * k * k]), estimated by one power iteration per training forward (Miyato et al.
    2018). In place; returns net."""
    for module in [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]:
        parametrizations.spectral_norm(module)
    return net


class ResidualConv(nn.Module):
    """x + conv(act(conv(act(x)))), two 3x3 convolutions that keep channels and size (He et al. 2016's
    pre-activation block). The second starts scaled by 0.1, so that added blocks start near the
    identity and leave the DCGAN network they extend as it was."""

    def __init__(self, channels: int, activation: type[nn.Module]):
        super().__init__()
        self.body = nn.Sequential(activation(), nn.Conv2d(channels, channels, 3, padding=1), activation(),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.body.apply(dcgan_init)
        with torch.no_grad():
            self.body[-1].weight.mul_(0.1)

    def forward(self, x):
        return x + self.body(x)


def residual_convs(channels: int, blocks: int, activation: type[nn.Module]) -> list[nn.Module]:
    return [ResidualConv(channels, activation) for _ in range(blocks)]


class ConvGenerator(nn.Sequential):
    """DCGAN generator (Radford et al. 2016): z [B, L] -> logits [B, C, H, W], no output activation.

    A Linear layer maps z to [w 2^(n-1), H / 2^n, W / 2^n] (n = conv_stages(H, W)), then n transposed
    convolutions (kernel 4, stride 2, padding 1) double the sides and halve the channels, the last one to
    C image channels; BatchNorm + ReLU after every layer but the last, then `blocks` residual blocks
    (ResidualConv) at every resolution but the image's.
    """

    def __init__(self, latent: int, image_shape, width: int = 64, blocks: int = 0):
        channels, height, image_width = _image_shape(image_shape)
        _positive("latent", latent)
        _positive("width", width)
        n = conv_stages(height, image_width)
        base = (width * 2 ** (n - 1), height // 2 ** n, image_width // 2 ** n)
        # no biases before BatchNorm: its shift replaces them
        layers: list[nn.Module] = [nn.Linear(latent, math.prod(base), bias=False), nn.Unflatten(1, base),
                                   nn.BatchNorm2d(base[0]), nn.ReLU()]
        for i in range(n):
            n_in, last = base[0] // 2 ** i, i == n - 1
            n_out = channels if last else n_in // 2
            layers += residual_convs(n_in, blocks, nn.ReLU)
            layers.append(nn.ConvTranspose2d(n_in, n_out, KERNEL, STRIDE, PADDING, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(n_out), nn.ReLU()]
        for layer in layers:  # the residual blocks keep their own start
            if not isinstance(layer, ResidualConv):
                layer.apply(dcgan_init)
        super().__init__(*layers)
        self.latent, self.image_shape = latent, (channels, height, image_width)


class ConvDiscriminator(nn.Sequential):
    """DCGAN discriminator (Radford et al. 2016): images [B, C, H, W] -> [B, out_features].

    n = conv_stages(H, W) convolutions (kernel 4, stride 2, padding 1) halve the sides and double the
    channels (w, 2w, ..., w 2^(n-1)), each followed by LeakyReLU(0.2), with BatchNorm before it on all
    stages but the first; a Linear layer maps the flattened features to out_features. With
    spectral_norm every Conv2d and Linear is spectrally normalised (Miyato et al. 2018) and there is no
    BatchNorm: the Lipschitz bound holds per example, which batch statistics would break. `blocks`
    residual blocks (ResidualConv) follow every stage.
    """

    def __init__(self, image_shape, width: int = 64, spectral_norm: bool = False, out_features: int = 1,
                 blocks: int = 0):
        channels, height, image_width = _image_shape(image_shape)
        _positive("width", width)
        _positive("out_features", out_features)
        n = conv_stages(height, image_width)
        layers: list[nn.Module] = []
        for i in range(n):
            n_in, n_out = (channels if i == 0 else width * 2 ** (i - 1)), width * 2 ** i
            batch_norm = i > 0 and not spectral_norm
            layers.append(nn.Conv2d(n_in, n_out, KERNEL, STRIDE, PADDING, bias=not batch_norm))
            layers += [nn.BatchNorm2d(n_out)] if batch_norm else []
            layers.append(LeakyReLU())
            layers += residual_convs(n_out, blocks, LeakyReLU)
        features = width * 2 ** (n - 1) * (height // 2 ** n) * (image_width // 2 ** n)
        layers += [nn.Flatten(), nn.Linear(features, out_features)]
        for layer in layers:  # the residual blocks keep their own start
            if not isinstance(layer, ResidualConv):
                layer.apply(dcgan_init)
        super().__init__(*layers)
        self.image_shape = (channels, height, image_width)
        if spectral_norm:
            spectral_normalize(self)
