import json
import math
import shutil
import time

import pytest
import torch

from vaekit import classifier
from vaekit.classifier import (accuracy, build_classifier, classify, label_check, load_or_train_classifier,
                               train_classifier)
from vaekit.data import ImageSet, load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cached(digits, tmp_path_factory):
    """The RECIPE classifier of digits, trained once into a fresh cache: (model, info, cache_dir)."""
    cache_dir = tmp_path_factory.mktemp("classifiers")
    model, info = load_or_train_classifier(digits["train"], cache_dir=cache_dir)
    return model, info, cache_dir


def _refuse_training(*args, **kwargs):
    raise AssertionError("the cache should have been used")


# -----------------------------------------------------------------------------
# the network


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 9, 13), (1, 1, 20), (2, 4, 4)])
def test_build_classifier_gives_logits_of_every_shape(shape):
    model = build_classifier(shape, 7)
    out = model(torch.rand(5, math.prod(shape)))
    assert out.shape == (5, 7)
    assert model.image_shape == shape and model.num_classes == 7
    convolutional = any(isinstance(m, torch.nn.Conv2d) for m in model)
    assert convolutional == (min(shape[1:]) >= classifier.MIN_CONV_SIDE)


def test_build_classifier_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image_shape"):
        build_classifier((28, 28), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier((1, 8, 8), 0)


# -----------------------------------------------------------------------------
# training, on digits


def test_classifier_trains_on_digits(cached, digits):
    model, info, _ = cached
    assert not info["loaded"]
    assert info["num_classes"] == 10 and info["num_examples"] == 1437
    assert accuracy(model, digits["test"]) >= 0.9
    # the real test images, the reference a generator is compared with: confident and all classes
    check = label_check(classify(model, digits["test"].x, digits["test"].image_shape))
    assert check["confident_share"] >= 0.85
    assert check["label_entropy"] > math.log(10) - 0.05
    assert check["num_examples"] == 360


def test_train_classifier_is_seeded_and_leaves_global_rng_alone(digits):
    small = ImageSet(digits["train"].x[:256].clone(), digits["train"].y[:256].clone(), (1, 8, 8), "digits")
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = train_classifier(small, seed=5, epochs=1)
    assert torch.equal(torch.rand(3), before)
    b = train_classifier(small, seed=5, epochs=1)
    c = train_classifier(small, seed=6, epochs=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    assert not a.training


# -----------------------------------------------------------------------------
# the cache


def test_cache_round_trip_loads_without_training(cached, digits, monkeypatch):
    model, info, cache_dir = cached
    weights = cache_dir / f"digits-{info['key'][:16]}.safetensors"
    record = json.loads(weights.with_suffix(".json").read_text())
    assert info["path"] == str(weights)
    assert record["key"] == info["key"] and record["recipe"] == classifier.RECIPE
    assert len(record["weights_sha256"]) == 64

    monkeypatch.setattr(classifier, "train_classifier", _refuse_training)
    again, info2 = load_or_train_classifier(digits["train"], cache_dir=cache_dir)
    assert info2["loaded"] and info2["key"] == info["key"]
    x = digits["test"].x
    assert torch.equal(classify(again, x, (1, 8, 8)), classify(model, x, (1, 8, 8)))


def test_cache_key_follows_the_data(cached, digits, monkeypatch):
    _, info, cache_dir = cached
    changed = digits["train"].x.clone()
    changed[0, 0] = 1 - changed[0, 0]
    calls = []
    monkeypatch.setattr(classifier, "train_classifier",
                        lambda data, **kw: calls.append(data) or build_classifier(data.image_shape, 10))
    _, info2 = load_or_train_classifier(ImageSet(changed, digits["train"].y, (1, 8, 8), "digits"), cache_dir=cache_dir)
    assert len(calls) == 1 and not info2["loaded"] and info2["key"] != info["key"]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "drop_json", "garbage_json"])
def test_damaged_cache_is_detected_and_retrained(cached, digits, tmp_path, monkeypatch, damage):
    _, info, cache_dir = cached
    folder = tmp_path / "cache"
    shutil.copytree(cache_dir, folder)
    weights = folder / f"digits-{info['key'][:16]}.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flip_byte":
        data[-1] ^= 0xFF  # a tensor byte: the file still parses, only its hash can tell
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "garbage_json":
        weights.with_suffix(".json").write_text("[1, 2")
    else:
        weights.with_suffix(".json").unlink()
    calls = []
    monkeypatch.setattr(classifier, "train_classifier",
                        lambda data, **kw: calls.append(data) or build_classifier(data.image_shape, 10))
    if damage == "drop_json":  # an unfinished write: retrained quietly
        _, info2 = load_or_train_classifier(digits["train"], cache_dir=folder)
    else:
        with pytest.warns(UserWarning, match="retraining"):
            _, info2 = load_or_train_classifier(digits["train"], cache_dir=folder)
    assert len(calls) == 1 and not info2["loaded"]
    # the retrained weights replaced the damaged ones, and load cleanly next time
    monkeypatch.setattr(classifier, "train_classifier", _refuse_training)
    assert load_or_train_classifier(digits["train"], cache_dir=folder)[1]["loaded"]


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path))
    assert classifier.default_cache_dir() == tmp_path / "classifiers"
    monkeypatch.delenv("VAEKIT_CACHE_DIR")
    assert str(classifier.default_cache_dir()).endswith(".cache/vaekit/classifiers")


# -----------------------------------------------------------------------------
# the check


def test_label_check_uniform_histogram_is_log_10():
    # 20 confident rows, two per class: histogram uniform over 10 classes
    probs = torch.full((20, 10), 0.05 / 9)
    probs[torch.arange(20), torch.arange(20) % 10] = 0.95
    check = label_check(probs)
    assert check["label_entropy"] == pytest.approx(math.log(10))
    assert check["label_histogram"] == pytest.approx([0.1] * 10)
    assert check["confident_share"] == 1.0 and check["num_examples"] == 20


def test_label_check_one_class_has_zero_entropy():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.95, 0.05, 0.0], [0.9, 0.1, 0.0], [0.6, 0.2, 0.2]])
    check = label_check(probs)
    assert check["label_entropy"] == 0.0
    assert check["label_histogram"] == [1.0, 0.0, 0.0]
    assert check["confident_share"] == 0.5  # 0.95 and 0.9 (the threshold itself counts)


def test_label_check_counts_confidence_and_mixed_histogram():
    probs = torch.tensor([[0.89, 0.11], [0.91, 0.09], [0.2, 0.8], [0.02, 0.98]])
    check = label_check(probs)
    assert check["confident_share"] == 0.5
    assert check["label_entropy"] == pytest.approx(math.log(2))
    assert label_check(probs, threshold=0.85)["confident_share"] == 0.75
    assert label_check(probs, threshold=0.8)["confident_share"] == 1.0  # 0.8 itself counts
    three = label_check(torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]))
    assert three["label_entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


def test_label_check_rejects_non_probabilities():
    with pytest.raises(ValueError, match="rows summing to 1"):
        label_check(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        label_check(torch.ones(3))
    with pytest.raises(ValueError, match="threshold"):
        label_check(torch.eye(3), threshold=0)


# -----------------------------------------------------------------------------
# validation at the boundary


def test_unlabelled_training_data_names_the_set(digits):
    unlabelled = ImageSet(digits["train"].x, None, (1, 8, 8), "my-samples")
    with pytest.raises(ValueError, match="my-samples.*no labels"):
        train_classifier(unlabelled)
    with pytest.raises(ValueError, match="my-samples.*no labels"):
        load_or_train_classifier(unlabelled)
    with pytest.raises(ValueError, match="my-samples.*no labels"):
        accuracy(build_classifier((1, 8, 8), 10), unlabelled)


def test_classify_checks_shapes_and_range():
    model = build_classifier((1, 8, 8), 10)
    probs = classify(model, torch.rand(7, 64), (1, 8, 8), batch_size=3)
    assert probs.shape == (7, 10) and torch.allclose(probs.sum(-1), torch.ones(7))
    with pytest.raises(ValueError, match=r"\(7, 64\).*\(1, 28, 28\)"):
        classify(model, torch.rand(7, 64), (1, 28, 28))
    with pytest.raises(ValueError, match=r"\(1, 4, 16\).*\(1, 8, 8\)"):
        classify(model, torch.rand(7, 64), (1, 4, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classify(model, torch.rand(7, 64) * 2, (1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classify(model, torch.full((2, 64), float("nan")), (1, 8, 8))


# -----------------------------------------------------------------------------
# MNIST


@pytest.mark.slow  # ~4 minutes of training on 2 cores: run with pytest -m slow
@pytest.mark.mnist
def test_mnist_classifier_reaches_99_percent(mnist_dir, tmp_path):
    data = load_dataset("mnist", data_dir=mnist_dir, download=False)
    start = time.perf_counter()
    model, info = load_or_train_classifier(data["train"], cache_dir=tmp_path)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, data["test"])
    print(f"MNIST classifier: {test_accuracy:.4f} test accuracy, trained in {seconds:.0f} s")
    assert test_accuracy >= 0.99
    check = label_check(classify(model, data["test"].x, data["test"].image_shape))
    assert check["confident_share"] >= 0.95 and check["label_entropy"] > math.log(10) - 0.01
