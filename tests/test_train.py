"""Training loop: resume is bit-exact, divergence stops cleanly, checkpoints are safetensors + JSON."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from conftest import tiny_run
from vaekit import checkpoint
from vaekit import config as configlib
from vaekit import families
from vaekit import train as trainlib
from vaekit.runs import RunFolderError
from vaekit.train import Trainer, TrainingDiverged, lr_factor


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("binarization", ["dynamic", "static"])
def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch, binarization):
    values = tiny_run(tmp_path, train={"epochs": 4}, data={"binarization": binarization})
    full = Trainer(configlib.from_dict(values), tmp_path / "full")
    full.fit()

    # the interrupted run crashes in the middle of its third epoch
    calls = {"n": 0}
    vae = families.get("vae")

    def crash_in_epoch_3(state, x):
        calls["n"] += 1
        if calls["n"] == 2 * len(full.loader) + 3:
            raise KeyboardInterrupt
        return vae.step(state, x)

    monkeypatch.setitem(families.REGISTRY, "vae", replace(vae, step=crash_in_epoch_3))
    with pytest.raises(KeyboardInterrupt):
        Trainer(configlib.from_dict(values), tmp_path / "cut").fit()
    monkeypatch.setitem(families.REGISTRY, "vae", vae)
    assert json.loads((tmp_path / "cut" / "checkpoint.json").read_text())["epoch"] == 2

    resumed = Trainer(configlib.from_dict(values), tmp_path / "cut", resume=True)
    assert resumed.epoch == 2
    resumed.fit()
    for name, value in params(full.model).items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    rows = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/elbo"] for r in rows(tmp_path / "full")] == [r["train/elbo"] for r in rows(tmp_path / "cut")]


def test_a_folder_another_process_trains_in_is_refused_until_it_ends(tmp_path):
    """Two processes training in one folder would interleave their checkpoints and metrics: a resume
    started while the first run still holds the folder is refused, and allowed once that run ends."""
    values = tiny_run(tmp_path, train={"epochs": 1})
    first = Trainer(configlib.from_dict(values), tmp_path / "run")  # holds the folder from here on
    with pytest.raises(RunFolderError, match="in use: another vaekit process is training in it"):
        Trainer(configlib.from_dict(values), tmp_path / "run", resume=True)
    first.fit()
    resumed = Trainer(configlib.from_dict({**values, "train": {**values["train"], "epochs": 2}}), tmp_path / "run",
                      resume=True)
    assert resumed.epoch == 1 and resumed.fit() == tmp_path / "run"


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    values = tiny_run(tmp_path, train={"epochs": 3})
    trainer = Trainer(configlib.from_dict(values))
    steps_per_epoch = len(trainer.loader)
    calls = {"n": 0}
    vae = families.get("vae")

    def nan_in_epoch_2(state, x):
        calls["n"] += 1
        return vae.step(state, x * float("nan") if calls["n"] == steps_per_epoch + 2 else x)

    trainer.family = replace(vae, step=nan_in_epoch_2)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step .*epoch 1"):
        trainer.fit()
    groups, meta = checkpoint.load(trainer.run_dir)
    assert meta["epoch"] == 1
    assert all(bool(torch.isfinite(t).all()) for t in groups["model"].values())


def test_checkpoint_is_safetensors_with_json_metadata(tmp_path):
    values = tiny_run(tmp_path, train={"epochs": 1})
    run_dir = trainlib.train(configlib.from_dict(values))
    with safe_open(str(run_dir / "checkpoint.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        meta = json.loads(f.metadata()["vaekit"])
    assert any(k.startswith("model/") for k in keys) and any(k.startswith("optimizer.model/") for k in keys)
    assert "rng/torch" in keys and "rng/loader.generator" in keys
    assert meta["epoch"] == 1 and meta["config"]["vae"]["latent"] == 2 and meta["family"] == "vae"
    assert json.loads((run_dir / "checkpoint.json").read_text()) == meta
    assert configlib.load_json(run_dir / "config.json") == configlib.from_dict(values)
    assert not list(run_dir.glob(".*.tmp"))  # no temporary files left behind


def test_atomic_write_keeps_previous_checkpoint_on_failure(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, {"model": {"w": torch.ones(3)}}, {"epoch": 1})
    import vaekit.checkpoint as ck

    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, {"model": {"w": torch.zeros(3)}}, {"epoch": 2})
    groups, meta = checkpoint.load(tmp_path)
    assert meta["epoch"] == 1 and torch.equal(groups["model"]["w"], torch.ones(3))
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_refuses_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file
    save_file({"w": torch.ones(2)}, str(tmp_path / "checkpoint.safetensors"))
    with pytest.raises(ValueError, match="not a vaekit checkpoint"):
        checkpoint.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing")


def test_training_raises_the_bound(tmp_path):
    values = tiny_run(tmp_path, train={"epochs": 8, "lr": 3e-3})
    run_dir = trainlib.train(configlib.from_dict(values))
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and rows[-1]["step"] == 8 * 23
    assert rows[-1]["train/elbo"] > rows[0]["train/elbo"] + 5
    assert rows[-1]["test/elbo"] > rows[0]["test/elbo"] + 5
    assert rows[-1]["test/kl"] > 0 and 0 <= rows[-1]["test/active_units"] <= 2


def test_lr_schedules():
    cfg = configlib.TrainConfig(lr_schedule="cosine", lr_final_factor=0.1, warmup_steps=10)
    assert lr_factor(cfg, 0, 110) == pytest.approx(0.1)  # warm-up starts small
    assert lr_factor(cfg, 10, 110) == pytest.approx(1.0)
    assert lr_factor(cfg, 60, 110) == pytest.approx(0.55)
    assert lr_factor(cfg, 110, 110) == pytest.approx(0.1)
    cfg.lr_schedule = "linear"
    assert lr_factor(cfg, 60, 110) == pytest.approx(0.55)
    cfg.lr_schedule, cfg.warmup_steps = "constant", 0
    assert lr_factor(cfg, 100, 110) == 1.0


def test_bernoulli_on_grey_levels_is_refused_unless_asked(tmp_path):
    values = tiny_run(tmp_path, data={"binarization": "none"}, train={"epochs": 1})
    with pytest.raises(ValueError, match="allow_nonbinary_bernoulli"):
        Trainer(configlib.from_dict(values))
    values["data"]["allow_nonbinary_bernoulli"] = True
    Trainer(configlib.from_dict(values)).fit()
    values["data"]["allow_nonbinary_bernoulli"] = False
    values["vae"]["likelihood"] = "gaussian"
    values["out"] = str(tmp_path / "gauss")
    Trainer(configlib.from_dict(values)).fit()


def test_iwae_objective_trains(tmp_path):
    values = tiny_run(tmp_path, train={"epochs": 1, "objective": "iwae", "num_samples": 5})
    run_dir = trainlib.train(configlib.from_dict(values))
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert "train/iwae" in row


def test_monitoring_is_logged_and_does_not_change_training(tmp_path):
    quiet = tiny_run(tmp_path / "a", eval={"monitor_samples": 0})
    loud = tiny_run(tmp_path / "b", eval={"monitor_samples": 20, "monitor_examples": 50})
    runs = [Trainer(configlib.from_dict(v)) for v in (quiet, loud)]
    for trainer in runs:
        trainer.fit()
    for name, value in runs[0].model.state_dict().items():
        assert torch.equal(value, runs[1].model.state_dict()[name]), name
    row = json.loads((runs[1].run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["test/iwae20"] >= row["test/elbo"] - 1.0 and "test/iwae20" not in json.loads(
        (runs[0].run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_linear_model_closed_form_init_and_exact_monitor(tmp_path):
    from vaekit.models import LinearGaussian
    values = tiny_run(tmp_path, model={"name": "linear"}, linear={"init": "ppca", "latent": 3},
                      data={"binarization": "none"}, train={"epochs": 1, "lr": 1e-6})
    del values["vae"]
    trainer = Trainer(configlib.from_dict(values))
    x = trainer.data.train.x
    with torch.no_grad():
        expected = LinearGaussian.fit_ppca(x, 3).log_prob(x).mean()
        assert torch.allclose(trainer.model.log_prob(x).mean(), expected, rtol=1e-5)
    trainer.fit()
    row = json.loads((trainer.run_dir / "metrics.jsonl").read_text())
    assert abs(row["test/log_px"] - row["test/iwae100"]) < 1e-3  # exact posterior proposal: IWAE = log p(x)
    assert "train/log_px" in row and "train/elbo" not in row
    with pytest.raises(configlib.ConfigError, match="vae.init"):
        configlib.from_dict(tiny_run(tmp_path, vae={"init": "ppca"}))


def test_in_memory_training_writes_nothing(tmp_path, monkeypatch):
    """Trainer(data=..., save=False): arrays in, a trained model and its history out, no files."""
    import numpy as np
    from vaekit.runs import Splits, as_image_set
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).random((200, 16)).round()
    cfg = configlib.from_dict({"vae": {"latent": 2, "hidden": [8]}, "train": {"epochs": 2, "progress": False,
                                                                              "device": "cpu"}})
    trainer = Trainer(cfg, data=Splits(as_image_set(x, "x"), None, as_image_set(x[:50], "x_test")), save=False)
    assert trainer.fit() is None
    assert [row["epoch"] for row in trainer.history] == [1, 2] and "test/elbo" in trainer.history[-1]
    assert list(tmp_path.iterdir()) == []


def test_weight_decay_spares_the_biases():
    from vaekit.models.rbm import RBM
    model = RBM(6, 3)
    with torch.no_grad():
        model.visible_bias.fill_(-2.0)
    cfg = configlib.TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.5)
    optimizer = trainlib.make_optimizer(model, cfg, torch.device("cpu"))
    before = params(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), before["weight"] * (1 - 0.1 * 0.5))
    assert torch.equal(model.visible_bias.detach(), before["visible_bias"])


@pytest.mark.parametrize("family, section", [("vae", {"hidden": [32], "latent": 2}),
                                             ("hvae", {"latents": [4, 2], "hidden": [[32], [16]]})])
def test_a_compiled_step_trains_as_the_eager_one(tmp_path, family, section):
    """train.compile = true fuses the step's element-wise work; the run it gives is the eager run's up to
    floating-point reassociation (same draws, same updates)."""
    rows = {}
    for compiled in (False, True):
        values = tiny_run(tmp_path, train={"epochs": 1, "compile": compiled})
        del values["vae"]
        values.update(model={"name": family}, **{family: section}, out=str(tmp_path / f"{family}-{compiled}"))
        trainer = Trainer(configlib.from_dict(values))
        trainer.fit()
        rows[compiled] = trainer.history[-1]
    assert rows[True]["train/elbo"] == pytest.approx(rows[False]["train/elbo"], rel=1e-4)
