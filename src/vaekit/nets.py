"""Network building blocks shared by the model families: MLPs, and convolutional image networks
sized from an image shape (channels, height, width).

Nothing here knows about probabilities: a network maps tensors to tensors, and the families turn its
outputs into distributions (logits, locations, scales).
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus,
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
