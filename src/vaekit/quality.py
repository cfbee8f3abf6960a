"""Sample quality without Inception: distances between sets of images in the feature space of a
classifier trained on the data set itself (a "Fréchet LeNet distance" for MNIST-like data).

Every metric here takes two feature matrices, real [N, F] and generated [M, F] (rows are images,
computed by the same network for both), and returns a value with its standard error or the
spread it comes with. The feature network and the protocol around it (which pixel space, which
reference set, the floors) are in `vaekit.quality_report`; this module is the mathematics.

- Fréchet distance of the features' Gaussian fits (Heusel et al. 2017), with the matrix square
  root from a symmetric eigen-decomposition, so it is real and stable;
- kernel distance (KID, Bińkowski et al. 2018): the unbiased MMD^2 under the cubic polynomial kernel,
  in disjoint blocks;
- improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al.
  2020), from k-nearest-neighbour balls around each feature vector.
"""

from __future__ import annotations

import math

import torch

__all__ = ["gaussian_fit", "frechet_distance", "frechet_distance_of", "kernel_distance", "knn_radii",
           "precision_recall", "density_coverage", "nearest_neighbours"]

BLOCK = 1024  # rows per block of pairwise distances: 1024 x 10,000 floats is 40 MB


def _features(features: torch.Tensor, name: str, min_rows: int = 2) -> torch.Tensor:
    """features [N, F] as float64 (covariances of 10,000 rows lose digits in float32), checked."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"{name}: expected a feature matrix [N, F], got {shape}")
    if features.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} rows (images), got {features.shape[0]}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{name}: the features hold NaN or inf values")
    return features.double()


def _same_width(real: torch.Tensor, fake: torch.Tensor) -> None:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)}: expected features of the same "
                         "width F from the same network")


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [F], covariance [F, F]) of features [N, F], the covariance unbiased (divided by N - 1)."""
    f = _features(features, "features")
    mean = f.mean(0)
    centred = f - mean
    return mean, centred.T @ centred / (f.shape[0] - 1)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix by eigen-decomposition;
    round-off's small negative eigenvalues clamped to 0."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor,
                     cov2: torch.Tensor) -> float:
    """d^2 = ||m1 - m2||^2 + tr(C1) + tr(C2) - 2 tr((C1^(1/2) C2 C1^(1/2))^(1/2)), the squared 2-Wasserstein
    (Fréchet) distance between N(m1, C1) and N(m2, C2) (Dowson & Landau 1982; FID, Heusel et al. 2017).

    tr((C1 C2)^(1/2)) is taken as the trace of the root of the symmetric matrix C1^(1/2) C2 C1^(1/2),
    which has the same eigenvalues as C1 C2 but real ones, instead of scipy's complex sqrtm of C1 C2."""
    mean1, mean2, cov1, cov2 = (t.double() for t in (mean1, mean2, cov1, cov2))
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape or cov1.shape != (mean1.shape[0],) * 2:
        raise ValueError(f"expected means [F] and covariances [F, F] of one F, got {tuple(mean1.shape)}, "
                         f"{tuple(cov1.shape)}, {tuple(mean2.shape)}, {tuple(cov2.shape)}")
    root1 = _sqrt_psd(cov1)
    middle = root1 @ cov2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    d2 = (mean1 - mean2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross
    return float(d2.clamp_min(0))


def frechet_distance_of(real: torch.Tensor, fake: torch.Tensor, num_bootstrap: int = 10,
                        seed: int = 0) -> tuple[float, float]:
    """(FD, standard error) between the Gaussian fits of real [N, F] and fake [M, F] features. The
    error is the spread of the distance over num_bootstrap resamplings (with replacement) of both
    sets; FD is biased upwards at finite N, so compare distances at the same N."""
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_width(real, fake)
    value = frechet_distance(*gaussian_fit(real), *gaussian_fit(fake))
    if num_bootstrap < 2:
        return value, float("nan")
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(num_bootstrap):
        r = real[torch.randint(len(real), (len(real),), generator=g)]
        f = fake[torch.randint(len(fake), (len(fake),), generator=g)]
        draws.append(frechet_distance(*gaussian_fit(r), *gaussian_fit(f)))
    return value, float(torch.tensor(draws).std())


def _polynomial_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a, b) = (a . b / F + 1)^3, KID's kernel (Bińkowski et al. 2018, section 4). [n, F], [m, F] -> [n, m]."""
    return (a @ b.T / a.shape[1] + 1).pow(3)


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased estimate of MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y) (Gretton et al. 2012,
    eq. 3): the diagonals k(x_i, x_i) are left out of the within-set means."""
    n, m = len(x), len(y)
    kxx, kyy = _polynomial_kernel(x, x), _polynomial_kernel(y, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * _polynomial_kernel(x, y).mean())


def kernel_distance(real: torch.Tensor, fake: torch.Tensor, block_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """(KID, standard error): the unbiased MMD^2 under the cubic polynomial kernel (Bińkowski et al.
    2018), averaged over disjoint blocks of block_size real and block_size fake features (after one
    seeded shuffle of each set), its error the blocks' standard deviation / sqrt(number of blocks).
    Unbiased: about 0, possibly below, for two samples of one distribution, at any N."""
    real, fake = _features(real, "real"), _features(fake, "fake")
    _same_width(real, fake)
    num_blocks = min(len(real), len(fake)) // block_size
    if block_size < 2 or num_blocks < 1:
        raise ValueError(f"block_size: expected 2 <= block_size <= the smaller set ({min(len(real), len(fake))} "
                         f"rows), got {block_size}")
    g = torch.Generator().manual_seed(seed)
    real, fake = real[torch.randperm(len(real), generator=g)], fake[torch.randperm(len(fake), generator=g)]
    values = torch.tensor([_mmd2_unbiased(real[i * block_size:(i + 1) * block_size],
                                          fake[i * block_size:(i + 1) * block_size]) for i in range(num_blocks)])
    error = float(values.std() / math.sqrt(num_blocks)) if num_blocks > 1 else float("nan")
    return float(values.mean()), error


def _blocked_distances(queries: torch.Tensor, points: torch.Tensor):
    """Yield (start, distances [b, N]) of blocks of queries [M, F] to all points [N, F]."""
    for start in range(0, len(queries), BLOCK):
        yield start, torch.cdist(queries[start:start + BLOCK], points)


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """The distance from each row of features [N, F] to its k-th nearest other row. -> [N]."""
    f = _features(features, "features", min_rows=k + 1)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    radii = torch.empty(len(f), dtype=f.dtype)
    for start, d in _blocked_distances(f, f):
        # the k + 1 smallest include the row itself at distance 0
        radii[start:start + len(d)] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def _inside_counts(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each query, the number of balls B(centre_i, radius_i) that hold it. [M]."""
    counts = torch.empty(len(queries), dtype=torch.long)
    for start, d in _blocked_distances(queries, centres):
        counts[start:start + len(d)] = (d <= radii).sum(1)
    return counts


def _proportion(inside: torch.Tensor) -> tuple[float, float]:
    """(p, binomial standard error sqrt(p (1 - p) / n)) of a boolean vector."""
    p = float(inside.double().mean())
    return p, math.sqrt(p * (1 - p) / len(inside))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, tuple[float, float]]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
    balls around its points with radius the distance to the point's k-th nearest neighbour in the set.
    precision = share of fake points inside the real manifold (are the samples realistic?),
    recall = share of real points inside the fake manifold (is all the data covered?). Each as
    (value, binomial standard error, the radii taken as fixed)."""
    real, fake = _features(real, "real", k + 1), _features(fake, "fake", k + 1)
    _same_width(real, fake)
    precision = _inside_counts(fake, real, knn_radii(real, k)) > 0
    recall = _inside_counts(real, fake, knn_radii(fake, k)) > 0
    return {"precision": _proportion(precision), "recall": _proportion(recall)}


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, tuple[float, float]]:
    """Density and coverage (Naeem et al. 2020, eqs. 5-6; k = 5 as recommended there), with the balls
    of the real points only (their k-NN radii r_i), so outliers among the samples cannot inflate them:
    density = 1/(k M) sum_j #{i: fake_j in B(real_i, r_i)}  (about 1 for samples like the data; > 1
        where samples crowd dense regions),
    coverage = share of real points whose ball holds at least one fake point.
    Each as (value, standard error): density's from the per-sample counts, coverage's binomial."""
    real, fake = _features(real, "real", k + 1), _features(fake, "fake")
    _same_width(real, fake)
    radii = knn_radii(real, k)
    per_sample = _inside_counts(fake, real, radii).double() / k
    covered = torch.zeros(len(real), dtype=torch.bool)
    for start, d in _blocked_distances(real, fake):
        covered[start:start + len(d)] = d.min(1).values <= radii[start:start + len(d)]
    return {"density": (float(per_sample.mean()), float(per_sample.std() / math.sqrt(len(fake)))),
            "coverage": _proportion(covered)}


def nearest_neighbours(queries: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance [M], index [M]) of each query's nearest row of points [N, F] (memorisation checks:
    a sample whose nearest training image is much closer than test images' are copies it)."""
    queries, points = _features(queries, "queries", 1), _features(points, "points", 1)
    _same_width(points, queries)
    distance, index = torch.empty(len(queries), dtype=queries.dtype), torch.empty(len(queries), dtype=torch.long)
    for start, d in _blocked_distances(queries, points):
        distance[start:start + len(d)], index[start:start + len(d)] = d.min(1)
    return distance, index
