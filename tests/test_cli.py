"""Every documented command smoke-runs on digits for a few steps; errors exit 2 and name the problem."""

import json
import shutil

import pytest

from vaekit.cli import COMMANDS, main

TINY = ["--hidden", "16", "--latent", "2", "--epochs", "2", "--batch-size", "64", "--num-samples", "20",
        "--device", "cpu", "--no-progress", "--set", "eval.chunk_size=8", "--set", "eval.iwae_samples=[1, 5]"]


def pngs(run_dir):
    return sorted(p.name for p in (run_dir / "pictures").glob("*.png"))


def test_run_trains_evaluates_and_draws(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", *TINY, "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "test NLL" in out and "nats" in out and "bits/dim" in out
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["num_samples"] == 20 and result["num_examples"] == 360
    assert result["elbo"] <= result["iwae_5"] + 1.0 and result["nll"] > 0
    assert pngs(run_dir) == ["interpolations.png", "latent_manifold.png", "latent_scatter.png",
                             "posterior_contours.png", "reconstructions.png", "samples.png", "training_curves.png"]


def test_train_resume_evaluate_and_pictures(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run_dir)]) == 0
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--no-progress"]) == 0
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
    settings = ["--num-samples", "10", "--chunk-size", "10", "--batch-size", "400", "--no-progress"]
    assert main(["evaluate", str(run_dir), *settings]) == 0
    eager = json.loads((run_dir / "eval.json").read_text())
    assert eager["num_samples"] == 10
    # compiled: the same draws, so the same figures to float rounding
    assert main(["evaluate", str(run_dir), *settings, "--compile"]) == 0
    compiled = json.loads((run_dir / "eval.json").read_text())
    assert compiled["nll"] == pytest.approx(eager["nll"], abs=1e-4) and compiled["nll"] != 0
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--gap", "--compile"]) == 2
    assert "--compile" in capsys.readouterr().err
    for command, picture in [("sample", "samples.png"), ("reconstruct", "reconstructions.png"),
                             ("interpolate", "interpolations.png")]:
        assert main([command, str(run_dir)]) == 0
        assert picture in pngs(run_dir)
    assert "latent_manifold.png" in pngs(run_dir)  # sample draws the 2-D latent space too


def test_config_file_with_flag_override(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[vae]\nhidden = [8]\nlatent = 3\n[train]\nepochs = 5\nbatch_size = 128\nprogress = false\n')
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "1", "--out", str(run_dir)]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["epochs"] == 1 and saved["vae"]["latent"] == 3 and saved["vae"]["hidden"] == [8]


@pytest.mark.parametrize("argv, needle", [
    (["train", "--set", "train.epoch=3"], "train.epoch"),
    (["train", "--epochs", "many"], "train.epochs: expected int"),
    (["train", "--data", "cifar"], "unknown data set"),
    (["train", "--preset", "giant"], "vae.preset"),
    (["train", "--model", "rbm", "--latent", "3"], "rbm.latent"),
    (["train", "--model", "flow"], "unknown model family 'flow'"),
    (["evaluate", "nowhere"], "not a vaekit run folder"),
    (["train", "--resume", "nowhere"], "no config.json"),
])
def test_errors_exit_2_and_name_the_problem(argv, needle, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "r")] if argv[0] == "train" and "--resume" not in argv else argv) == 2
    assert needle.lower() in capsys.readouterr().err.lower()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: vaekit" in capsys.readouterr().out


@pytest.mark.mnist
def test_mnist_train_and_evaluate(tmp_path, mnist_dir, capsys):
    run_dir = tmp_path / "mnist"
    argv = ["run", "--data", "mnist", "--data-dir", str(mnist_dir), "--hidden", "32", "--latent", "2",
            "--epochs", "1", "--batch-size", "256", "--num-samples", "4", "--no-progress", "--device", "cpu",
            "--out", str(run_dir)]
    assert main(argv) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["num_examples"] == 10_000 and 60 < result["nll"] < 300
    assert "samples.png" in pngs(run_dir)
    moved = tmp_path / "elsewhere"  # the run evaluated on a machine whose copy of MNIST is elsewhere
    shutil.copytree(mnist_dir, moved)
    assert main(["evaluate", str(run_dir), "--data-dir", str(moved), "--no-progress"]) == 0
    assert json.loads((run_dir / "eval.json").read_text())["nll"] == result["nll"]
    assert main(["evaluate", str(run_dir), "--data-dir", str(tmp_path / "nothing"), "--no-progress"]) != 0


def test_linear_model_through_the_same_cli(tmp_path, capsys):
    run_dir = tmp_path / "linear"
    argv = ["run", "--model", "linear", "--binarization", "none", "--latent", "2",
            "--epochs", "3", "--lr", "0.01", "--num-samples", "10", "--no-progress", "--device", "cpu",
            "--out", str(run_dir)]
    assert main(argv) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    # the exact posterior as proposal: every IWAE bound and the estimate are log p(x) itself
    assert abs(result["iwae_1"] - result["iwae_5"]) < 1e-3 and abs(result["nll"] + result["iwae_5"]) < 1e-3
    assert "latent_manifold.png" in pngs(run_dir)
    assert main(["evaluate", str(run_dir), "--gap", "--gap-examples", "30"]) == 0
    assert "log p(x): exact" in capsys.readouterr().out
    assert main(["train", "--model", "linear", "--likelihood", "bernoulli", "--epochs", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "linear.likelihood" in capsys.readouterr().err  # the linear-Gaussian model has no other likelihood
