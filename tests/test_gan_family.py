"""The GAN through vaekit's loop and CLI: two players in one step, bit-exact resume, failure warnings,
pictures and the classifier check on the digits."""

import json
import math

import pytest
import torch

from conftest import tiny_run
from vaekit import checkpoint
from vaekit import config as configlib
from vaekit.cli import main
from vaekit.families import gan as gan_family
from vaekit.train import Trainer, TrainingDiverged

GAN = ["--model", "gan", "--set", "gan.width=8", "--set", "gan.latent=4", "--batch-size", "64", "--no-progress",
       "--device", "cpu", "--set", "eval.quality_samples=300"]


def gan_run(tmp_path, **sections):
    values = tiny_run(tmp_path, model={"name": "gan"}, gan={"width": 8, "latent": 4, "ema": 0.9, **sections.pop("gan", {})},
                      **sections)
    del values["vae"]
    return values


def test_gan_resume_equals_uninterrupted_run(tmp_path):
    values = gan_run(tmp_path, train={"epochs": 3}, gan={"d_steps": 2, "spectral_norm": True, "categories": 3,
                                                         "real_info_weight": 1.0, "augment_weight": 1.0})
    full = Trainer(configlib.from_dict({**values, "out": str(tmp_path / "full")}))
    full.fit()
    cut_values = {**values, "out": str(tmp_path / "cut"), "train": {**values["train"], "epochs": 2}}
    Trainer(configlib.from_dict(cut_values)).fit()
    resumed = Trainer(configlib.from_dict({**values, "out": str(tmp_path / "cut")}), resume=True)
    resumed.fit()
    for name, value in full.model.state_dict().items():  # both players, the EMA copy, spectral-norm vectors
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    groups, meta = checkpoint.load(tmp_path / "cut")
    assert set(meta["optimizers"]) == {"generator", "discriminator"}
    assert any(k.startswith("generator_ema.") for k in groups["model"])
    for opt_full, opt_cut in zip(full.optimizers.values(), resumed.optimizers.values()):
        for a, b in zip(opt_full.state.values(), opt_cut.state.values()):
            assert torch.equal(a["exp_avg"], b["exp_avg"])


def test_gan_step_logs_both_players_and_updates_the_generator_every_d_steps(tmp_path):
    trainer = Trainer(configlib.from_dict(gan_run(tmp_path, train={"epochs": 1}, gan={"d_steps": 3})))
    weights = lambda: dict(trainer.model.generator.named_parameters())
    before = {k: v.detach().clone() for k, v in weights().items()}
    x = trainer.data.train.x[:64]
    first = trainer.train_step(x)
    assert "loss_g" not in first and {"loss_d", "value", "d_accuracy_real", "d_accuracy_fake"} <= set(first)
    assert all(torch.equal(v, weights()[k]) for k, v in before.items())  # D only (G's batch statistics move)
    trainer.train_step(x)
    third = trainer.train_step(x)
    assert {"loss_g", "grad_norm_g"} <= set(third)
    assert not torch.equal(before["0.weight"], weights()["0.weight"])
    trainer.fit()
    row = trainer.history[-1]
    assert {"train/loss_d", "train/loss_g", "train/value", "test/spread_ratio", "images_per_s"} <= set(row)
    assert row["train/value"] == pytest.approx(-row["train/loss_d"], abs=1e-5)  # non-saturating: D's loss is -V


def test_gan_divergence_stops_and_keeps_the_last_checkpoint(tmp_path):
    from dataclasses import replace
    trainer = Trainer(configlib.from_dict(gan_run(tmp_path, train={"epochs": 3})))
    calls = {"n": 0}

    def nan_in_epoch_2(state, x):
        calls["n"] += 1
        return gan_family.step(state, x * float("nan") if calls["n"] == len(trainer.loader) + 1 else x)

    trainer.family = replace(trainer.family, step=nan_in_epoch_2)
    with pytest.raises(TrainingDiverged, match="discriminator loss.*epoch 2.*from epoch 1"):
        trainer.fit()
    assert checkpoint.load(trainer.run_dir)[1]["epoch"] == 1


def test_failures_of_the_game_are_warned_about():
    healthy = {"train/loss_d": 1.2, "test/spread_ratio": 0.9}
    assert gan_family.diagnose([healthy]) == []
    assert "discriminator wins" in gan_family.diagnose([{**healthy, "train/loss_d": 1e-4}])[0]
    fresh = {"train/loss_d": 1.2, "test/spread_ratio": 0.05}  # a new generator's samples are all alike
    assert gan_family.diagnose([fresh]) == []
    assert "mode collapse" in gan_family.diagnose([fresh, healthy, {**healthy, "test/spread_ratio": 0.1}])[0]


def test_warnings_reach_the_log(tmp_path, monkeypatch, capsys):
    from dataclasses import replace
    from vaekit import families
    always = replace(families.get("gan"), diagnose=lambda rows: ["the discriminator wins: test"])
    monkeypatch.setitem(families.REGISTRY, "gan", always)
    trainer = Trainer(configlib.from_dict(gan_run(tmp_path, train={"epochs": 1})))
    trainer.fit()
    assert trainer.history[-1]["warnings"] == ["the discriminator wins: test"]
    assert "warning, epoch 1: the discriminator wins" in capsys.readouterr().out


def test_gan_cli_train_sample_interpolate_evaluate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))  # the classifier is trained here, not in ~
    run_dir = tmp_path / "gan"
    assert main(["train", *GAN, "--epochs", "2", "--out", str(run_dir)]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["data"]["binarization"] == "none" and saved["train"]["adam_betas"] == [0.5, 0.999]  # GAN defaults
    assert sorted(p.name for p in (run_dir / "pictures" / "progress").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert main(["sample", str(run_dir)]) == 0 and main(["interpolate", str(run_dir)]) == 0
    assert {"samples.png", "interpolations.png"} <= {p.name for p in (run_dir / "pictures").glob("*.png")}
    capsys.readouterr()
    assert main(["reconstruct", str(run_dir)]) == 2
    assert "a GAN has no encoder" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "no likelihood" in out and "confident_share" in out
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["results"]["confident_share"]["unit"] == "fraction" and result["num_examples"] == 300
    assert result["real_confident_share"] > 0.9 and result["real_label_entropy"] > 2.2  # the real digits
    assert main(["evaluate", str(run_dir), "--gap"]) == 2


def test_gan_on_flat_data_uses_mlps(tmp_path):
    import numpy as np
    from vaekit.runs import Splits, as_image_set
    x = np.random.default_rng(0).random((256, 5))
    cfg = configlib.from_dict({"model": {"name": "gan"}, "gan": {"latent": 2, "hidden": [16]},
                               "train": {"epochs": 2, "progress": False, "device": "cpu"}})
    trainer = Trainer(cfg, data=Splits(as_image_set(x, "x"), None, as_image_set(x[:64], "x_test")), save=False)
    trainer.fit()
    assert trainer.model.architecture == "mlp" and trainer.model.sample(3).shape == (3, 5)
    with pytest.raises(ValueError, match="1x1x5.*'mlp'"):
        Trainer(configlib.from_dict({"model": {"name": "gan"}, "gan": {"architecture": "conv"},
                                     "train": {"device": "cpu"}}),
                data=Splits(as_image_set(x, "x"), None, None), save=False)


def test_infogan_code_is_learned_and_drawn_in_rows(tmp_path):
    """With a categorical code both players lower -log Q(c | G(z, c)): the logged bound on I(c; G(z, c))
    rises from about 0 towards log K; the progress grid has one row per code."""
    from PIL import Image
    values = gan_run(tmp_path, train={"epochs": 4, "lr": 2e-3}, gan={"categories": 3, "info_weight": 1.0})
    trainer = Trainer(configlib.from_dict(values))
    trainer.fit()
    bounds = [row["train/mutual_information"] for row in trainer.history]
    assert bounds[0] < 0.5 * math.log(3) < bounds[-1] <= math.log(3) + 1e-6
    grid = Image.open(trainer.run_dir / "pictures" / "progress" / "epoch_0004.png")
    columns, rows = gan_family.PROGRESS_COLUMNS, 3
    assert grid.size[0] * rows == pytest.approx(grid.size[1] * columns, rel=0.05)
    with pytest.raises(configlib.ConfigError, match="gan.categories"):
        configlib.from_dict(gan_run(tmp_path, gan={"categories": 1}))


def test_real_information_sorts_real_images_into_the_codes_groups(tmp_path):
    """gan.real_info_weight > 0: the discriminator's Q head raises I_Q(c; x) on the real batches (logged as
    train/real_code_information) well above what it reaches without the term; it needs a code."""
    def last_information(weight):
        values = gan_run(tmp_path / str(weight), train={"epochs": 4, "lr": 2e-3},
                         gan={"categories": 3, "real_info_weight": weight})
        trainer = Trainer(configlib.from_dict(values))
        trainer.fit()
        return trainer.history[-1]["train/real_code_information"]
    sorted_, unsorted = last_information(3.0), last_information(0.0)  # about 0.65 and 0.32 nats
    assert 0.5 * math.log(3) < sorted_ <= math.log(3) + 1e-6 and sorted_ > 1.5 * unsorted
    with pytest.raises(configlib.ConfigError, match="real_info_weight = 1.0 needs a code"):
        configlib.from_dict(gan_run(tmp_path, gan={"real_info_weight": 1.0}))


def test_augmented_consistency_is_logged_and_needs_images(tmp_path):
    values = gan_run(tmp_path, train={"epochs": 1}, gan={"categories": 3, "augment_weight": 2.0})
    trainer = Trainer(configlib.from_dict(values))
    trainer.fit()
    assert trainer.history[-1]["train/code_consistency"] >= 0
    with pytest.raises(configlib.ConfigError, match="augment_weight = 1.0 needs a code"):
        configlib.from_dict(gan_run(tmp_path, gan={"augment_weight": 1.0}))
    with pytest.raises(configlib.ConfigError, match="needs gan.architecture = 'conv'"):
        configlib.from_dict(gan_run(tmp_path, gan={"categories": 3, "augment_weight": 1.0, "architecture": "mlp"}))
