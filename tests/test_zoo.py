"""The model zoo: published checkpoints load by name offline and reproduce the figures they were
published with."""

import json
import math

import pytest
import torch

import vaekit
from vaekit import checkpoint, zoo
from vaekit import config as configlib
from vaekit.cli import main
from vaekit.results import from_json
from vaekit.train import Trainer

from conftest import tiny_run

MAX_BYTES = 10 * 2**20


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))


def within(value: float, stderr: float, published) -> bool:
    """|value - published| within 3 standard errors of the difference (the two errors combined)."""
    return abs(value - published.value) <= 3 * math.hypot(stderr, published.stderr)


@pytest.mark.parametrize("name", zoo.names())
def test_every_entry_is_a_small_complete_run_folder(name):
    folder = zoo.entry(name)
    assert all((folder / f).is_file() for f in zoo.FILES)
    assert sum(p.stat().st_size for p in folder.iterdir()) <= MAX_BYTES
    cfg = configlib.load_json(folder / "config.json")
    assert cfg.data.data_dir is None and cfg.out is None  # nothing of the machine it was trained on
    assert set(checkpoint.load(folder)[0]) == {"model"}  # no optimizer state
    info = zoo.published(name)
    assert from_json(info["results"]) and info["command"] and "docs/benchmarks.md" in info["docs"]


def test_the_published_models_include_the_main_job():
    assert {"digits-vae", "mnist-dcgan", "mnist-burda", "mnist-rbm"} <= set(zoo.names())


def test_load_by_name_gives_the_trained_model():
    model = vaekit.load("digits-vae")
    assert not model.training and model.sample(4).shape == (4, 64)
    assert torch.equal(vaekit.load("zoo:digits-vae").decoder[0].weight, model.decoder[0].weight)
    with pytest.raises(ValueError, match="digits-vae"):
        vaekit.load("no-such-model")


def test_evaluate_reproduces_the_published_figure_without_touching_the_package(capsys):
    published = from_json(zoo.published("digits-vae")["results"])["nll"]
    assert main(["evaluate", "zoo:digits-vae", "--num-samples", "500", "--no-progress"]) == 0
    nll = from_json(json.loads((zoo.working_copy("digits-vae") / "eval.json").read_text())["results"])["nll"]
    # the same 360 test images: K = 500 instead of 5000 moves log p(x) by hundredths of a nat
    assert within(nll.value, nll.stderr, published) and abs(nll.value - published.value) < 0.1
    assert not (zoo.entry("digits-vae") / "eval.json").exists()
    assert "test NLL" in capsys.readouterr().out


def test_zoo_command_lists_entries_and_unknown_names_are_errors(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in zoo.names()) and "nll" in out
    assert main(["sample", "zoo:no-such-model"]) == 2
    assert "digits-vae" in capsys.readouterr().err


def test_export_keeps_the_model_and_refuses_to_replace(tmp_path):
    values = tiny_run(tmp_path)
    trainer = Trainer(configlib.from_dict(values))
    trainer.fit()
    folder = zoo.export(trainer.run_dir, "tiny", {"results": {}, "command": "-", "docs": "-"}, root=tmp_path / "z")
    loaded = vaekit.load(folder)
    state = trainer.model.state_dict()
    assert all(torch.equal(t, state[k]) for k, t in loaded.state_dict().items())
    with pytest.raises(FileExistsError, match="tiny"):
        zoo.export(trainer.run_dir, "tiny", {}, root=tmp_path / "z")


@pytest.mark.slow  # trains the MNIST classifier (~4 minutes on 2 cores) unless it is cached
@pytest.mark.mnist
def test_the_mnist_dcgan_reproduces_its_classifier_check(mnist_dir, monkeypatch):
    monkeypatch.setenv("VAEKIT_MNIST_DIR", str(mnist_dir))
    published = from_json(zoo.published("mnist-dcgan")["results"])["confident_share"]
    assert main(["evaluate", "zoo:mnist-dcgan", "--no-progress"]) == 0
    result = from_json(json.loads((zoo.working_copy("mnist-dcgan") / "eval.json").read_text())["results"])
    share = result["confident_share"]
    assert within(share.value, share.stderr, published)


@pytest.mark.mnist
def test_the_mnist_burda_vae_reproduces_its_likelihood_with_fewer_samples(mnist_dir, monkeypatch):
    """IS with K = 100 instead of 5000 on the same 10,000 binarised test images: a looser stochastic upper
    bound on the NLL, above the published one by the few tenths of a nat K = 100 leaves."""
    monkeypatch.setenv("VAEKIT_MNIST_DIR", str(mnist_dir))
    published = from_json(zoo.published("mnist-burda")["results"])["nll"]
    assert main(["evaluate", "zoo:mnist-burda", "--num-samples", "100", "--device", "cpu", "--no-progress"]) == 0
    nll = from_json(json.loads((zoo.working_copy("mnist-burda") / "eval.json").read_text())["results"])["nll"]
    assert nll.num_examples == published.num_examples == 10000
    assert 0 < nll.value - published.value < 1.5


@pytest.mark.mnist
def test_the_mnist_rbm_reproduces_its_likelihood_from_its_log_partition(mnist_dir):
    """-log p(v) = F(v) + log Z: the free energies of the zoo's weights on the binarised test set, with the
    published AIS log Z, give the published NLL (AIS itself is minutes of CPU; its log Z is checked in
    tests/test_rbm.py against exact values)."""
    from dataclasses import replace
    from vaekit.runs import prepare_data
    published = from_json(zoo.published("mnist-rbm")["results"])
    model = vaekit.load("mnist-rbm")
    cfg = configlib.load_json(zoo.entry("mnist-rbm") / "config.json")
    test = prepare_data(replace(cfg, data=replace(cfg.data, data_dir=str(mnist_dir)))).test
    with torch.no_grad():
        nll = float(model.free_energy(test.x).double().mean()) + published["log_z"].value
    assert abs(nll - published["nll"].value) < 1e-3
