"""One protocol of sample quality for every family: the same feature network, pixel space, reference
set and metrics, so that a GAN, a VAE and an RBM land in one table.

The convention, identical for every model:
- pixels: each family's `sample(n)` in data space, which is the mean image of its observation model
  (Bernoulli decoders and the RBM give p(x = 1 | z) or p(v = 1 | h), grey-level models their means,
  the GAN sigmoid(G(z))), clamped to [0, 1] (only a Gaussian model's means can leave it);
- reference: the data set's grey-level test images;
- a second line, every metric prefixed "binary_": binary images drawn from those means, x ~ Bernoulli(mean)
  (seeded), against the test images binarised once (seed 0, the draw every run's held-out set uses);
- features: the penultimate layer of vaekit.classifier's network trained on the training images and
  labels (cached, SHA-256 checked), the "Fréchet LeNet distance" of the MNIST literature;
- metrics: vaekit.quality's Fréchet distance (bootstrap error), KID (block error), precision and
  recall (k = 3), density and coverage (k = 5), and the classifier check (confident share, label
  entropy), each a typed Result.
The floor is the same protocol with real training images in place of samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import classifier, quality
from .results import Result, proportion

__all__ = ["PROTOCOL", "sample_quality", "binary_line", "binary_images", "degrade", "feature_network", "feature_accuracy", "model_images",
           "run_quality", "floor", "memorisation", "memorisation_of", "embed", "feature_quality"]

PROTOCOL = {
    "pixels": "mean images in [0, 1] (p(x=1|z) for Bernoulli models), clamped",
    "reference": "grey-level test images",
    "binary_line": "binary_*: x ~ Bernoulli(mean image) against the test images binarised once (seed 0)",
    "features": "penultimate layer of vaekit.classifier's network (trained on the training images and labels)",
    "precision_recall_k": 3,
    "density_coverage_k": 5,
    "kid_block_size": 1000,
    "bootstrap": 10,
    "confidence": classifier.CONFIDENCE,
}


@torch.no_grad()
def embed(net: classifier.Classifier, images: torch.Tensor, image_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, F] in float64 on the CPU, class probabilities [N, C]) of images [N, D], clamped to [0, 1]."""
    features, probs = classifier.features(net, images.clamp(0, 1), image_shape)
    return features.cpu().double(), probs


def sample_quality(net: classifier.Classifier, generated: torch.Tensor, reference: torch.Tensor,
                   image_shape: tuple[int, int, int], seed: int = 0) -> dict[str, Result]:
    """Every sample-quality metric of images generated [M, D] against reference [N, D] (both in data
    space; generated is clamped to [0, 1]) in net's feature space. -> {name: Result}."""
    return feature_quality(embed(net, reference, image_shape)[0], *embed(net, generated, image_shape), seed)


def feature_quality(real: torch.Tensor, fake: torch.Tensor, fake_probs: torch.Tensor,
                    seed: int = 0) -> dict[str, Result]:
    """sample_quality's metrics from features real [N, F], fake [M, F] and the samples' class probabilities."""
    m, p = len(fake), PROTOCOL
    fd = quality.frechet_distance_of(real, fake, p["bootstrap"], seed)
    block = min(p["kid_block_size"], len(real) // 2, m // 2)
    kid = quality.kernel_distance(real, fake, block, seed)
    pr = quality.precision_recall(real, fake, p["precision_recall_k"])
    dc = quality.density_coverage(real, fake, p["density_coverage_k"])
    check = classifier.label_check(fake_probs, p["confidence"])
    k3, k5 = p["precision_recall_k"], p["density_coverage_k"]
    return {
        "frechet_distance": Result(fd[0], fd[1], f"Fréchet distance of classifier features, bootstrap error "
                                   f"({p['bootstrap']} resamplings)", "estimate", None, m, "squared feature units"),
        "kernel_distance": Result(kid[0], kid[1], f"KID, unbiased MMD^2, cubic kernel, blocks of {block}",
                                  "estimate", None, m, "squared feature units"),
        "precision": proportion(pr["precision"][0], m, f"improved precision, k = {k3}", pr["precision"][1]),
        "recall": proportion(pr["recall"][0], len(real), f"improved recall, k = {k3}", pr["recall"][1]),
        "density": Result(*dc["density"], f"density, k = {k5}", "estimate", None, m, "ratio"),
        "coverage": proportion(dc["coverage"][0], len(real), f"coverage, k = {k5}", dc["coverage"][1]),
        "confident_share": proportion(check["confident_share"], m,
                                      f"classifier: share with max p(c|x) >= {p['confidence']}"),
        "label_entropy": Result(check["label_entropy"], None, "classifier: entropy of the predicted labels",
                                "estimate", None, m, "nats"),
    }


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of images [N, C, H, W] with standard deviation sigma pixels (separable, reflect padding)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-offsets.pow(2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def binary_images(images: torch.Tensor, seed: int) -> torch.Tensor:
    """x ~ Bernoulli(images) [N, D] for the convention's binary line, drawn on the CPU (every device
    scores the same binary images)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images.detach().cpu().clamp(0, 1), generator=g).to(images.device)


def binary_line(net: classifier.Classifier, generated: torch.Tensor, reference: torch.Tensor, image_shape,
                seed: int = 0) -> dict[str, Result]:
    """sample_quality's metrics, as "binary_<name>", of binary draws of the generated images [M, D] against
    the reference images [N, D] binarised once with HELD_OUT_SEED: the convention's second line."""
    from .runs import HELD_OUT_SEED
    line = sample_quality(net, binary_images(generated, seed), binary_images(reference, HELD_OUT_SEED),
                          image_shape, seed)
    return {f"binary_{name}": r for name, r in line.items()}


def degrade(x: torch.Tensor, image_shape: tuple[int, int, int], kind: str, level: float,
            seed: int = 0) -> torch.Tensor:
    """Images x [N, D] in [0, 1] made worse, for the metrics' sanity checks (and their floors):
    "noise": + N(0, level^2) per pixel, clamped; "blur": a Gaussian blur of level pixels;
    "dropout": each pixel set to 0 with probability level. level 0 returns x. -> [N, D]."""
    if kind not in ("noise", "blur", "dropout"):
        raise ValueError(f"kind: expected 'noise', 'blur' or 'dropout', got {kind!r}")
    if level < 0 or (kind == "dropout" and level > 1):
        raise ValueError(f"level: expected >= 0 (a probability for dropout), got {level}")
    if level == 0:
        return x
    g = torch.Generator(device=x.device).manual_seed(seed)
    if kind == "noise":
        return (x + level * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)).clamp(0, 1)
    if kind == "dropout":
        return x * (torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) >= level)
    return _blur(x.reshape(-1, *image_shape), level).reshape(x.shape).clamp(0, 1)


# -----------------------------------------------------------------------------
# the protocol applied: a run, or the floor of a data set


def feature_network(train, progress: bool = False) -> tuple[classifier.Classifier, dict]:
    """The data set's feature network: vaekit.classifier's RECIPE network on its training images and
    labels (the full training set, whatever a run held out, so that every model meets the same one),
    from the cache when it is there. -> (network, its JSON record)."""
    if train.y is None:
        raise ValueError(f"data {train.name!r} has no labels: the feature network is a classifier of the training "
                         "labels, so sample quality is measured on labelled data sets only")
    return classifier.load_or_train_classifier(train, progress=progress)


def reference_features(net: classifier.Classifier, info: dict, images: torch.Tensor, image_shape) -> torch.Tensor:
    """embed(net, images)'s features [N, F] of a data set's own images (its training and test images: the
    same for every model scored), read from the cache when this network (info: its record) saw these
    exact images before, else computed and stored beside the network as safetensors, keyed by the
    network's weights and the images' SHA-256."""
    import hashlib
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file
    from .checkpoint import atomic_write
    digest = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    path = classifier.default_cache_dir() / f"features-{info['weights_sha256'][:16]}-{digest}.safetensors"
    if path.is_file():
        try:
            return load_file(path)["features"].to(images.device)
        except (SafetensorError, KeyError, OSError):
            pass  # a damaged cache file is recomputed and replaced
    features = embed(net, images, image_shape)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"features": features.cpu().contiguous()}, tmp))
    return features


@torch.no_grad()
def model_images(model, num_samples: int, batch_size: int = 1000) -> torch.Tensor:
    """num_samples images of a model in data space [N, D]: E[x | z] for z ~ p(z) for a decoder (VAE,
    linear, GAN: no observation noise), the model's own sample() (an RBM's p(v | h) means) otherwise."""
    from .protocols import Decoder
    if num_samples < 1:
        raise ValueError(f"num_samples: expected a positive number of images, got {num_samples}")
    draw = ((lambda n: model.decode_mean(model.prior().sample((n,)))) if isinstance(model, Decoder)
            else model.sample)
    return torch.cat([draw(min(batch_size, num_samples - i)) for i in range(0, num_samples, batch_size)])


MEMORY_PAIRS = 32  # samples in the memorisation picture, each beside its nearest training image
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@torch.no_grad()
def memorisation(net: classifier.Classifier, generated: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                 image_shape: tuple[int, int, int]) -> dict:
    """Does the model copy its training images? memorisation_of the three sets' features."""
    return memorisation_of(*(embed(net, x, image_shape)[0] for x in (generated, train, test)))


def memorisation_of(samples: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> dict:
    """In feature space ([M, F], [N, F], [T, F]), the distance from each sample to its nearest training
    image beside the distance from each test image to its nearest training image: samples much closer
    to the training set than unseen test images are are copies. -> quantiles of both distributions,
    their ratio at the median, and the indices of the nearest training images of the first
    MEMORY_PAIRS samples (for the picture)."""
    sample_distance, sample_index = quality.nearest_neighbours(samples, train)
    test_distance, _ = quality.nearest_neighbours(test, train)
    q = torch.tensor(QUANTILES, dtype=torch.float64)
    samples_q, test_q = sample_distance.quantile(q).tolist(), test_distance.quantile(q).tolist()
    return {"quantiles": list(QUANTILES), "samples_to_train": samples_q, "test_to_train": test_q,
            "median_ratio": samples_q[2] / max(test_q[2], 1e-12),
            "pairs": sample_index[:MEMORY_PAIRS].tolist()}


def memorisation_picture(generated: torch.Tensor, train: torch.Tensor, pairs: list[int], image_shape, path):
    """Columns of (sample, its nearest training image in feature space), 8 pairs to a row."""
    from . import pictures, plots
    n = len(pairs)
    both = torch.stack([generated[:n].clamp(0, 1).cpu(), train[pairs].cpu()], 1).reshape(2 * n, *image_shape)
    return plots.save_image_grid(both, path, nrow=16, scale=pictures.scale_for(image_shape))


def feature_accuracy(net, test) -> Result:
    return proportion(classifier.accuracy(net, test), len(test), "test accuracy of the feature network")


def run_quality(run_dir, num_samples: int | None = None, device: str = "auto", progress: bool = True,
                inception: bool = False) -> dict:
    """Every sample-quality metric of a run's model: num_samples images (default eval.quality_samples)
    against the grey-level test images of its data set (with inception, also the standard FID; see
    vaekit.inception). Writes <run_dir>/quality.json and returns it."""
    import json
    import time
    from pathlib import Path
    from . import checkpoint
    from .results import as_json
    from .runs import load_run, load_sets, seeded_stream
    start = time.perf_counter()
    cfg, model = load_run(run_dir, device)
    dev = next(model.parameters()).device
    inception_net = None
    if inception:  # missing weights or package: say so before any work
        from .inception import network
        inception_net = network(dev)
    sets = load_sets(cfg.data)
    net, info = feature_network(sets["train"], progress)
    with seeded_stream(cfg.eval.seed, dev):
        generated = model_images(model.eval(), num_samples or cfg.eval.quality_samples)
    test, train = sets["test"], sets["train"].x.to(dev)
    results, memory = score_images(net, generated, test, train, cfg.eval.seed, inception_net, info)
    picture = memorisation_picture(generated, train, memory["pairs"], test.image_shape,
                                   Path(run_dir) / "pictures" / "nearest_training_images.png")
    report = {"data": cfg.data.name, "family": cfg.model.name, "checkpoint": checkpoint.describe(run_dir),
              "protocol": PROTOCOL, "feature_network": {k: info[k] for k in ("key", "weights_sha256", "recipe")},
              "num_samples": len(generated), "reference": f"{len(test)} test images",
              "results": as_json(results), "memorisation": memory, "picture": str(picture),
              "seconds": round(time.perf_counter() - start, 1)}
    text = json.dumps(report, indent=2) + "\n"
    checkpoint.atomic_write(Path(run_dir) / "quality.json", lambda tmp: Path(tmp).write_text(text))
    return report


def score_images(net: classifier.Classifier, generated: torch.Tensor, test, train_x: torch.Tensor, seed: int,
                 inception_net=None, info: dict | None = None) -> tuple[dict[str, Result], dict]:
    """Every metric of the protocol for generated images [N, D] against the test set (an ImageSet), and
    the memorisation check against the training images train_x [M, D]: (results, memorisation). With
    the network's record `info`, the data set's own features come from the cache (reference_features)."""
    net, test_x = net.to(generated.device), test.x.to(generated.device)
    own = (lambda x: reference_features(net, info, x, test.image_shape)) if info else \
        (lambda x: embed(net, x, test.image_shape)[0])
    fake, fake_probs = embed(net, generated, test.image_shape)
    real = own(test_x)
    results = {**feature_quality(real, fake, fake_probs, seed), "feature_accuracy": feature_accuracy(net, test),
               **binary_line(net, generated, test_x, test.image_shape, seed)}
    if inception_net is not None:
        from .inception import fid
        results["inception_fid"] = fid(inception_net, generated, test_x, test.image_shape, PROTOCOL["bootstrap"], seed)
    return results, memorisation_of(fake, own(train_x.to(generated.device)), real)


def floor(train, test, num_samples: int | None = None, seed: int = 0, progress: bool = False) -> dict[str, Result]:
    """The protocol with num_samples real training images (a seeded draw without replacement; default
    10,000 or all of them) in place of samples: what a model whose samples were the data would score,
    the floor every model is compared with."""
    num_samples = min(10000, len(train)) if num_samples is None else num_samples
    if not 1 <= num_samples <= len(train):
        raise ValueError(f"num_samples: expected 1..{len(train)} (the training images), got {num_samples}")
    net, _ = feature_network(train, progress)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:num_samples]
    images = train.x[pick.to(train.x.device)]
    return {**sample_quality(net, images, test.x, test.image_shape, seed), "feature_accuracy": feature_accuracy(net, test),
            **binary_line(net, images, test.x, test.image_shape, seed)}
