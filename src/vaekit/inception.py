"""The standard FID beside vaekit's own feature space, optional: `vaekit quality RUN --inception`.

FID (Heusel et al. 2017) is the Fréchet distance of Inception-v3's 2048 pool features; the numbers in the
literature come from the TensorFlow network, which torch-fidelity re-implements bit for bit
(FeatureExtractorInceptionV3, "inception-v3-compat"). vaekit uses it when the user has torch-fidelity
installed and its weights file in torch.hub's checkpoint folder; it never downloads them (no internet is
assumed). On 28 x 28 grey digits Inception features are a poor fit (images upsampled to 299 x 299, the
grey level copied to three channels): vaekit's classifier features stay the main yardstick, this
number is for comparison with papers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import quality
from .results import Result

WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS}"
BATCH = 200


class InceptionUnavailable(ValueError):
    """torch-fidelity or its Inception weights are missing: what to install, where to put the file."""


def weights_path() -> Path:
    """Where torch-fidelity's Inception weights must be: <torch.hub dir>/checkpoints/ (TORCH_HOME moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS


def _how() -> str:
    return (f"--inception needs torch-fidelity (pip install torch-fidelity; it imports torchvision, which must "
            f"match your torch) and its weights file {WEIGHTS} (from {URL}) at {weights_path()}; vaekit never "
            "downloads them")


def network(device: torch.device | str = "cpu") -> torch.nn.Module:
    """torch-fidelity's TF-compatible Inception-v3 from the local weights, or InceptionUnavailable."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as e:  # ImportError, or torchvision failing to load beside this torch
        raise InceptionUnavailable(f"{_how()} (importing torch_fidelity failed: {type(e).__name__}: {e})") from None
    if not weights_path().is_file():
        raise InceptionUnavailable(f"{_how()} (no file there)")
    net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                      feature_extractor_weights_path=str(weights_path()))
    return net.to(device).eval()


@torch.no_grad()
def features(net: torch.nn.Module, images: torch.Tensor, image_shape) -> torch.Tensor:
    """Pool features [N, 2048] (float64, CPU) of images [N, D] in [0, 1]: as uint8 RGB, as torch-fidelity
    expects (it resizes to 299 x 299 itself); one grey channel is copied to three."""
    x = (images.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, *image_shape)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    device = next(net.parameters()).device
    return torch.cat([net(xb.to(device))[0].double().cpu() for xb in x.split(BATCH)])


def fid(net: torch.nn.Module, generated: torch.Tensor, reference: torch.Tensor, image_shape,
        num_bootstrap: int = 10, seed: int = 0) -> Result:
    """FID of generated [M, D] against reference [N, D] images, with a bootstrap error."""
    value, stderr = quality.frechet_distance_of(features(net, reference, image_shape),
                                                features(net, generated, image_shape), num_bootstrap, seed)
    return Result(value, stderr, "FID: Fréchet distance of Inception-v3 pool features (torch-fidelity's "
                  f"TF-compatible network), bootstrap error ({num_bootstrap} resamplings)", "estimate", None,
                  len(generated), "squared feature units")
