"""The sample-quality metrics against closed forms and their defining behaviour on synthetic features."""


import pytest
import scipy.linalg
import torch

from vaekit import quality


def gaussian_features(n, mean, scale, seed, width=8):
    g = torch.Generator().manual_seed(seed)
    return mean + scale * torch.randn(n, width, generator=g, dtype=torch.float64)


def random_covariance(width, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(width, width, generator=g, dtype=torch.float64)
    return a @ a.T / width + 0.1 * torch.eye(width, dtype=torch.float64)


def test_frechet_distance_matches_closed_forms():
    """Diagonal covariances: ||m1 - m2||^2 + sum (sqrt(a) - sqrt(b))^2; general ones: scipy's sqrtm of C1 C2."""
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 2.5])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = float((m1 - m2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert quality.frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expected, rel=1e-12)
    c1, c2 = random_covariance(6, 0), random_covariance(6, 1)
    mu1, mu2 = torch.zeros(6, dtype=torch.float64), torch.full((6,), 0.3, dtype=torch.float64)
    cross = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real.trace()
    expected = float(0.09 * 6 + c1.trace() + c2.trace() - 2 * cross)
    assert quality.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-9)
    assert quality.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_samples_is_near_zero_for_one_distribution_and_has_an_error():
    features = gaussian_features(4000, 0.0, 1.0, 0)
    same, error = quality.frechet_distance_of(features[:2000], features[2000:])
    apart, _ = quality.frechet_distance_of(features[:2000], features[2000:] + 0.5)
    assert same < 0.05 and 0 < error < 0.05
    # a shift leaves the covariances alone: only the mean term moves, by exactly this much
    d = features[:2000].mean(0) - features[2000:].mean(0)
    assert apart - same == pytest.approx(float((d - 0.5).pow(2).sum() - d.pow(2).sum()), rel=1e-9)
    assert apart == pytest.approx(8 * 0.25, abs=0.3)


def test_kernel_distance_is_unbiased_and_grows_with_the_shift():
    features = gaussian_features(4000, 0.0, 1.0, 1)
    same, error = quality.kernel_distance(features[:2000], features[2000:], block_size=500)
    assert abs(same) < 3 * error + 1e-3 and error > 0
    small, _ = quality.kernel_distance(features[:2000], features[2000:] + 0.2, block_size=500)
    large, _ = quality.kernel_distance(features[:2000], features[2000:] + 0.5, block_size=500)
    assert same < small < large
    with pytest.raises(ValueError, match="block_size"):
        quality.kernel_distance(features[:100], features[100:200], block_size=500)


def test_knn_radii_by_brute_force():
    features = gaussian_features(50, 0.0, 1.0, 2, width=3)
    d = torch.cdist(features, features)
    d.fill_diagonal_(float("inf"))
    torch.testing.assert_close(quality.knn_radii(features, 3), d.sort(1).values[:, 2])


def test_precision_drops_and_recall_holds_with_noise_and_the_reverse_with_collapse():
    real = gaussian_features(2000, 0.0, 1.0, 3)
    like = gaussian_features(2000, 0.0, 1.0, 4)
    base = quality.precision_recall(real, like)
    noisy = quality.precision_recall(real, like + 0.8 * gaussian_features(2000, 0.0, 1.0, 5))
    collapsed = quality.precision_recall(real, like[:20].repeat(100, 1) + 0.01 * gaussian_features(2000, 0, 1, 6))
    assert base["precision"][0] > 0.6 and base["recall"][0] > 0.6
    assert noisy["precision"][0] < base["precision"][0] - 0.2 and noisy["recall"][0] > base["recall"][0] - 0.1
    assert collapsed["precision"][0] > base["precision"][0] - 0.1 and collapsed["recall"][0] < 0.1


def test_density_and_coverage():
    real = gaussian_features(2000, 0.0, 1.0, 7)
    like = quality.density_coverage(real, gaussian_features(2000, 0.0, 1.0, 8))
    assert like["density"][0] == pytest.approx(1.0, abs=0.15) and like["coverage"][0] > 0.9
    collapsed = quality.density_coverage(real, torch.zeros(2000, 8, dtype=torch.float64))
    assert collapsed["coverage"][0] < 0.05 and collapsed["density"][0] > 1.0  # all at the densest point
    far = quality.density_coverage(real, real + 10.0)
    assert far["density"][0] == 0.0 and far["coverage"][0] == 0.0


def test_nearest_neighbours_finds_copies():
    points = gaussian_features(300, 0.0, 1.0, 9)
    distance, index = quality.nearest_neighbours(points[[5, 17, 250]], points)
    # cdist's matrix-product form leaves ~1e-8 of rounding where the distance is zero (seen on torch 2.11)
    assert torch.equal(index, torch.tensor([5, 17, 250])) and torch.all(distance < 1e-6)


@pytest.mark.parametrize("bad, message", [(torch.zeros(5), r"\[N, F\]"), (torch.zeros(1, 3), "at least 2 rows"),
                                          (torch.full((4, 3), float("nan")), "NaN")])
def test_inputs_are_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        quality.frechet_distance_of(bad, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="same width"):
        quality.precision_recall(torch.randn(10, 3), torch.randn(10, 4))


# -----------------------------------------------------------------------------
# the protocol on real images (digits: its feature network trains in seconds)

import json  # noqa: E402

from vaekit import yardstick  # noqa: E402
from vaekit.cli import main  # noqa: E402
from vaekit.data import load_dataset  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    import os
    os.environ.setdefault("VAEKIT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    sets = load_dataset("digits")
    net, _ = yardstick.feature_network(sets["train"])
    return sets, net


@pytest.mark.parametrize("kind, levels", [("noise", [0.0, 0.1, 0.2, 0.4]), ("blur", [0.0, 0.6, 1.0, 1.5]),
                                          ("dropout", [0.0, 0.1, 0.25, 0.5])])
def test_frechet_distance_grows_as_the_images_degrade(digits, kind, levels):
    """Training images against test images, degraded more and more: the distance rises at every step
    (level 0 is the floor); KID rises from the floor to the worst level."""
    sets, net = digits
    train, test = sets["train"], sets["test"]
    shape = test.image_shape
    scores = [yardstick.sample_quality(net, yardstick.degrade(train.x, shape, kind, level), test.x, shape)
              for level in levels]
    distances = [s["frechet_distance"].value for s in scores]
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    assert scores[-1]["kernel_distance"].value > scores[0]["kernel_distance"].value + 3 * scores[-1]["kernel_distance"].stderr


def test_two_halves_of_one_set_are_near_zero_apart(digits):
    """Halves of the digits' training images: KID (unbiased) is 0 within its error; FD, biased upwards
    by about F / N at N = 718 images and F = 128 features, is a small fraction of noise's distance."""
    sets, net = digits
    x, shape = sets["train"].x, sets["train"].image_shape
    halves = yardstick.sample_quality(net, x[: len(x) // 2], x[len(x) // 2:], shape)
    noisy = yardstick.sample_quality(net, yardstick.degrade(x[: len(x) // 2], shape, "noise", 0.3), x[len(x) // 2:], shape)
    assert halves["frechet_distance"].value < 0.25 * noisy["frechet_distance"].value
    assert abs(halves["kernel_distance"].value) < 3 * halves["kernel_distance"].stderr + 1e-9
    assert min(halves["precision"].value, halves["recall"].value) > 0.7 and halves["coverage"].value > 0.75
    assert noisy["precision"].value < halves["precision"].value - 0.2 and noisy["density"].value < halves["density"].value


def test_binary_line_scores_binary_draws_against_the_binarised_test_set(digits):
    sets, net = digits
    x, shape = sets["test"].x, sets["test"].image_shape
    draws = yardstick.binary_images(x, seed=3)
    assert set(draws.unique().tolist()) <= {0.0, 1.0} and torch.equal(draws, yardstick.binary_images(x, seed=3))
    # the same images binarised twice (seeds 1 and 0) against uniform noise binarised
    same = yardstick.binary_line(net, x, x, shape, seed=1)
    noise = yardstick.binary_line(net, torch.rand_like(x), x, shape, seed=1)
    assert set(same) == {f"binary_{k}" for k in ("frechet_distance", "kernel_distance", "precision", "recall",
                                                 "density", "coverage", "confident_share", "label_entropy")}
    assert same["binary_frechet_distance"].value < noise["binary_frechet_distance"].value / 10
    assert same["binary_recall"].value > 0.5 > noise["binary_recall"].value


def test_degrade_checks_its_arguments_and_keeps_level_zero(digits):
    sets, _ = digits
    x, shape = sets["test"].x, sets["test"].image_shape
    assert yardstick.degrade(x, shape, "blur", 0.0) is x
    assert yardstick.degrade(x, shape, "dropout", 1.0).abs().sum() == 0
    with pytest.raises(ValueError, match="kind"):
        yardstick.degrade(x, shape, "rotate", 0.1)
    with pytest.raises(ValueError, match="level"):
        yardstick.degrade(x, shape, "dropout", 1.5)


def test_memorisation_tells_copies_from_new_images(digits):
    sets, net = digits
    train, test, shape = sets["train"].x, sets["test"].x, sets["test"].image_shape
    copies = yardstick.memorisation(net, train[:300], train, test, shape)
    assert copies["median_ratio"] < 1e-4 and copies["pairs"][:5] == [0, 1, 2, 3, 4]  # 0 up to float32 batching
    fresh = yardstick.memorisation(net, test[:300], train, test, shape)
    assert 0.7 < fresh["median_ratio"] < 1.3


def test_reference_features_are_cached_per_network_and_images(digits, monkeypatch):
    sets, _ = digits
    net, info = yardstick.feature_network(sets["train"])
    train, shape = sets["train"].x, sets["train"].image_shape
    first = yardstick.reference_features(net, info, train, shape)
    assert torch.equal(first, yardstick.embed(net, train, shape)[0])
    monkeypatch.setattr(yardstick, "embed", lambda *a: pytest.fail("features recomputed, not read from the cache"))
    assert torch.equal(yardstick.reference_features(net, info, train, shape), first)
    with pytest.raises(BaseException, match="recomputed"):  # other images: other features, never a stale file
        yardstick.reference_features(net, info, train[:-1], shape)


FAMILY_RUNS = {"vae": ["--model", "vae", "--latent", "2", "--hidden", "32", "--binarization", "dynamic"],
               "linear": ["--model", "linear", "--latent", "4", "--binarization", "none"],
               "gan": ["--model", "gan", "--set", "gan.width=8", "--set", "gan.latent=4"],
               "rbm": ["--model", "rbm", "--set", "rbm.num_hidden=16", "--binarization", "dynamic"]}


@pytest.mark.parametrize("family", sorted(FAMILY_RUNS))
def test_quality_of_a_run_from_the_cli(tmp_path, capsys, digits, family):
    """Every family's run is scored by one command and one protocol, into quality.json."""
    run_dir = tmp_path / family
    assert main(["train", *FAMILY_RUNS[family], "--epochs", "1", "--batch-size", "64", "--no-progress",
                 "--device", "cpu", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["quality", str(run_dir), "--num-samples", "400", "--no-progress"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run_dir / "quality.json").read_text())
    assert report["family"] == family and report["num_samples"] == 400 and "frechet_distance" in out
    assert set(report["results"]) >= {"frechet_distance", "kernel_distance", "precision", "recall", "density",
                                      "coverage", "confident_share", "label_entropy", "feature_accuracy"}
    assert report["results"]["frechet_distance"]["value"] > 0 and report["results"]["feature_accuracy"]["value"] > 0.95
    assert {"binary_frechet_distance", "binary_precision", "binary_coverage"} <= set(report["results"])
    assert (run_dir / "pictures" / "nearest_training_images.png").is_file() and "nearest training image" in out


def test_quality_cli_floor_and_errors(capsys, digits):
    assert main(["quality", "--floor", "--data", "digits", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "feature network of digits" in out and "precision" in out
    assert main(["quality"]) == 2 and "expected a RUN folder" in capsys.readouterr().err
    assert main(["quality", "somewhere", "--floor"]) == 2


# -----------------------------------------------------------------------------
# the optional standard FID (vaekit.inception)

from vaekit import inception  # noqa: E402


def inception_available() -> bool:
    try:
        inception.network()
    except inception.InceptionUnavailable:
        return False
    return True


def test_inception_without_its_weights_says_where_they_go(tmp_path, capsys, digits, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub folder: no weights there
    run_dir = tmp_path / "run"
    assert main(["train", "--model", "vae", "--data", "digits", "--epochs", "1", "--no-progress", "--device", "cpu",
                 "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["quality", str(run_dir), "--inception", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert inception.WEIGHTS in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert not (run_dir / "quality.json").exists()  # refused before any work
    assert main(["quality", "--floor", "--inception"]) == 2


class MeanColour(torch.nn.Module):
    """A stand-in for Inception: the mean of each colour channel, as torch-fidelity's (features,) tuple."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return (x.double().mean((2, 3)),)


def test_inception_features_get_uint8_rgb_images():
    net, images = MeanColour(), torch.rand(450, 64)
    out = inception.features(net, images, (1, 8, 8))
    batch = net.inputs[0]
    assert batch.dtype == torch.uint8 and batch.shape == (inception.BATCH, 3, 8, 8) and len(net.inputs) == 3
    assert torch.equal(batch[:, 0], batch[:, 2])  # the grey level copied to three channels
    assert torch.allclose(out[:, 0], (images * 255).round().mean(1).double(), atol=1e-9)


@pytest.mark.skipif(not inception_available(), reason=f"torch-fidelity or {inception.WEIGHTS} not available")
def test_inception_fid_is_small_for_two_halves_and_large_for_noise(digits):
    sets, _ = digits
    net, x, shape = inception.network(), sets["train"].x, sets["train"].image_shape
    same = inception.fid(net, x[:500], x[500:1000], shape)
    noisy = inception.fid(net, torch.rand(500, x.shape[1]), x[500:1000], shape)
    assert same.value < noisy.value / 10
