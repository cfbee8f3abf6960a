"""Run folders are never mixed and a resume cannot lie (issue 9, sections 1 and 2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_run
from vaekit import checkpoint
from vaekit import config as configlib
from vaekit import families
from vaekit.cli import main
from vaekit.runs import create_run_dir

TINY = ["--hidden", "8", "--latent", "2", "--batch-size", "128", "--no-progress", "--device", "cpu",
        "--set", "eval.monitor_samples=0", "--num-samples", "5"]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_new_run_refuses_a_folder_that_holds_a_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir)]) == 0
    before = (run_dir / "checkpoint.safetensors").read_bytes()
    assert main(["train", *TINY, "--epochs", "1", "--seed", "7", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and "--resume" in err and "Traceback" not in err
    assert (run_dir / "checkpoint.safetensors").read_bytes() == before and len(rows(run_dir)) == 1
    assert main(["train", *TINY, "--epochs", "1", "--seed", "7", "--out", str(run_dir), "--force"]) == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert (aside / "checkpoint.safetensors").read_bytes() == before  # the old run, moved whole
    assert json.loads((run_dir / "config.json").read_text())["train"]["seed"] == 7 and len(rows(run_dir)) == 1


def test_default_folders_are_distinct_within_a_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = configlib.from_dict({})
    folders = {create_run_dir(None, cfg) for _ in range(3)}
    assert len(folders) == 3 and all(f.is_dir() for f in folders)


def test_concurrent_cli_starts_get_their_own_folders(tmp_path):
    """Three `vaekit train` processes started together, different seeds: three folders, each whole."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "vaekit.cli", "train", *TINY, "--epochs", "1", "--seed", str(s)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for s in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 3
    seeds = {json.loads((f / "config.json").read_text())["train"]["seed"] for f in folders}
    assert seeds == {0, 1, 2} and all(len(rows(f)) == 1 for f in folders)
    for f in folders:  # the checkpoint's config is the folder's config: no run wrote into another's folder
        assert checkpoint.metadata(f)["config"] == json.loads((f / "config.json").read_text())


def test_rows_after_the_last_checkpoint_are_dropped_on_resume(tmp_path, monkeypatch):
    from dataclasses import replace
    from vaekit.train import Trainer
    vae, calls = families.get("vae"), {"n": 0}

    def killed_in_epoch_4(state, x):
        calls["n"] += 1
        if calls["n"] == 3 * 12 + 2:  # 12 steps an epoch: epoch 3 is logged, its checkpoint never written
            raise KeyboardInterrupt
        return vae.step(state, x)

    monkeypatch.setitem(families.REGISTRY, "vae", replace(vae, step=killed_in_epoch_4))
    values = tiny_run(tmp_path, train={"epochs": 4, "checkpoint_every": 2, "batch_size": 128}, eval={"monitor_samples": 0})
    trainer = Trainer(configlib.from_dict(values))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert [r["epoch"] for r in rows(trainer.run_dir)] == [1, 2, 3]
    (trainer.run_dir / ".checkpoint.safetensors.x1.tmp").write_bytes(b"half a checkpoint")
    monkeypatch.setitem(families.REGISTRY, "vae", vae)
    resumed = Trainer(trainer.cfg, trainer.run_dir, resume=True)
    assert resumed.epoch == 2 and not list(trainer.run_dir.glob(".*.tmp"))
    resumed.fit()
    assert [r["epoch"] for r in rows(trainer.run_dir)] == [1, 2, 3, 4]


def test_a_lagging_checkpoint_json_is_repaired_from_the_header(tmp_path):
    checkpoint.save(tmp_path, {"model": {"w": torch.ones(2)}}, {"epoch": 2})
    (tmp_path / "checkpoint.json").write_text(json.dumps({"epoch": 1}))  # a crash between the two renames
    _, meta = checkpoint.load(tmp_path)
    assert meta["epoch"] == 2 and json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("flags, needle", [
    (["--lr", "1e300"], "train.lr"),
    (["--latent", "3"], "vae.latent"),
    (["--data", "mnist"], "data.name"),
    (["--set", "data.binarization=static"], "data.binarization"),
    (["--out", "elsewhere"], "--out beside --resume"),
    (["--config", "c.toml"], "--config beside --resume"),
])
def test_resume_refuses_changed_settings(tmp_path, capsys, flags, needle):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir)]) == 0
    saved = (run_dir / "config.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", *flags]) == 2
    assert needle in capsys.readouterr().err
    assert (run_dir / "config.json").read_text() == saved and len(rows(run_dir)) == 1


def test_resume_records_allowed_changes_and_says_when_finished(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir)]) == 0
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--no-progress"]) == 0
    (change,) = [json.loads(line) for line in (run_dir / "changes.jsonl").read_text().splitlines()]
    assert change["epoch"] == 1 and change["changes"] == {"train.epochs": [1, 2]}
    assert json.loads((run_dir / "config.json").read_text())["train"]["epochs"] == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert "has finished: epoch 2 of 2" in capsys.readouterr().out and len(rows(run_dir)) == 2


def test_an_edited_config_json_is_detected(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir)]) == 0
    saved = json.loads((run_dir / "config.json").read_text())
    saved["vae"]["activation"] = "relu"
    (run_dir / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    for command in (["evaluate", str(run_dir)], ["sample", str(run_dir)], ["train", "--resume", str(run_dir)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "vae.activation ('tanh' in the checkpoint, 'relu' in config.json)" in err, err


def test_eval_json_names_the_checkpoint_it_scored(tmp_path):
    import hashlib
    run_dir = tmp_path / "run"
    assert main(["run", *TINY, "--epochs", "2", "--out", str(run_dir)]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    digest = hashlib.sha256((run_dir / "checkpoint.safetensors").read_bytes()).hexdigest()
    assert result["checkpoint"] == {"epoch": 2, "step": 2 * 12, "sha256": digest}


def strict_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} in metrics.jsonl")
    return [json.loads(line, parse_constant=refuse) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_huge_learning_rate_does_not_end_silently(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["train", *TINY, "--epochs", "3", "--lr", "1e6", "--out", str(run_dir)])
    out, err = capsys.readouterr()
    warned = any("exploding" in w for r in strict_rows(run_dir) for w in r.get("warnings", []))
    assert (code == 0 and warned and "exploding" in out) or (code == 1 and "non-finite" in err), (code, out, err)


def test_exploding_objective_is_warned_about(tmp_path):
    from vaekit.train import Trainer
    trainer = Trainer(configlib.from_dict(tiny_run(tmp_path)), save=False)
    trainer.initial = {"elbo": -50.0}
    assert trainer.exploding({"train/elbo": -60.0}) == []
    assert "exploding" in trainer.exploding({"train/elbo": -1e11})[0]


@pytest.mark.parametrize("epoch_of_nan, message", [(2, "last good checkpoint .* from epoch 1"),
                                                   (1, "no checkpoint was written")])
def test_a_non_finite_held_out_value_stops_training(tmp_path, monkeypatch, epoch_of_nan, message):
    from dataclasses import replace
    from vaekit.train import Trainer, TrainingDiverged
    vae = families.get("vae")

    def monitor(model, x, cfg):
        terms = vae.monitor(model, x, cfg)
        return {**terms, "elbo": float("nan")} if len(trainer.history) == epoch_of_nan - 1 else terms

    monkeypatch.setitem(families.REGISTRY, "vae", replace(vae, monitor=monitor))
    trainer = Trainer(configlib.from_dict(tiny_run(tmp_path, train={"epochs": 3})))
    with pytest.raises(TrainingDiverged, match=f"non-finite test/elbo at epoch {epoch_of_nan}.*{message}"):
        trainer.fit()
    logged = strict_rows(trainer.run_dir)
    assert logged[-1]["test/elbo"] is None and len(logged) == epoch_of_nan
    meta = checkpoint.metadata(trainer.run_dir)
    assert (meta is None) if epoch_of_nan == 1 else meta["epoch"] == epoch_of_nan - 1


@pytest.mark.parametrize("values, needle", [
    ({"train": {"lr": float("inf")}}, "train.lr: expected a positive finite number"),
    ({"train": {"weight_decay": float("inf")}}, "train.weight_decay: expected a finite number"),
    ({"vae": {"min_scale": float("inf")}}, "vae.min_scale"),
    ({"train": {"adam_eps": 0.0}}, "train.adam_eps"),
])
def test_infinite_or_zero_settings_are_config_errors(values, needle):
    with pytest.raises(configlib.ConfigError, match=needle):
        configlib.from_dict(values)


def test_checkpoint_files_get_the_mode_of_the_rest_of_the_run(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir)]) == 0
    mode = lambda name: (run_dir / name).stat().st_mode & 0o777
    assert mode("checkpoint.safetensors") == mode("checkpoint.json") == mode("metrics.jsonl")


def test_without_a_terminal_progress_is_one_line_per_epoch(tmp_path, capsys):
    argv = [a for a in TINY if a != "--no-progress"]
    assert main(["train", *argv, "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[:2] for line in out.splitlines() if line.startswith("epoch")] == \
        [["epoch", "1"], ["epoch", "2"], ["epoch", "3"]]
    assert "it/s" not in err  # no progress bar written into a file or a pipe


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def trained(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run_dir)]) == 0
    return run_dir


@pytest.mark.parametrize("damage", [b"", b"\x00" * 7, "truncate", "garble"])
def test_a_damaged_checkpoint_is_one_line(trained, capsys, damage):
    path = trained / "checkpoint.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else
                     raw[:8] + b"\xff" * 64 + raw[72:] if damage == "garble" else damage)
    capsys.readouterr()
    for command in (["evaluate", str(trained)], ["train", "--resume", str(trained), "--epochs", "2"]):
        assert main(command) == 2
        assert "checkpoint.safetensors" in one_line_error(capsys)


def test_a_checkpoint_that_does_not_fit_its_config_is_one_line(trained, capsys):
    groups, meta = checkpoint.load(trained)
    meta["config"]["vae"]["latent"] = 3  # config and checkpoint agree, the tensors do not fit
    checkpoint.save(trained, groups, meta)
    (trained / "config.json").write_text(json.dumps(meta["config"]))
    capsys.readouterr()
    assert main(["evaluate", str(trained)]) == 2
    assert "do not fit the model" in one_line_error(capsys)


@pytest.mark.parametrize("argv, needle", [
    (["--device", "banana"], "train.device: 'banana' is not a device"),
    (["--set", "train.adam_eps=-1"], "train.adam_eps"),
    (["--seed", "1e20"], "train.seed: expected int"),
    (["--seed", str(2**70)], "train.seed: expected an integer in [0, 2**63)"),
    (["--epochs", "many"], "train.epochs: expected int, got str 'many' (--epochs sets train.epochs)"),
    (["--hidden", "8,x"], "(--hidden sets vae.hidden)"),
])
def test_bad_values_are_one_line(tmp_path, capsys, argv, needle):
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"), *argv]) == 2
    assert needle in one_line_error(capsys)


def test_unreadable_files_are_named(tmp_path, trained, capsys):
    toml = tmp_path / "c.toml"
    toml.write_bytes(b"[train]\nepochs = 1 # \xff\xfe\n")
    assert main(["train", "--config", str(toml), "--out", str(tmp_path / "r")]) == 2
    assert "c.toml" in one_line_error(capsys)
    (trained / "config.json").write_text("{ not json")
    assert main(["evaluate", str(trained)]) == 2
    assert "config.json' is not valid JSON" in one_line_error(capsys)


def test_evaluate_into_a_closed_pipe_is_quiet(trained):
    cmd = f"{sys.executable} -m vaekit.cli evaluate {trained} --num-samples 5 --no-progress | head -c 1"
    done = subprocess.run(cmd, shell=True, capture_output=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "Traceback" not in done.stderr.decode() and "BrokenPipe" not in done.stderr.decode()


def test_ctrl_c_during_training_says_how_to_go_on(tmp_path):
    import signal
    import time
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vaekit.cli", "train", *TINY, "--epochs", "100000",
                             "--out", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while not (run_dir / "checkpoint.safetensors").is_file() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert f"vaekit train --resume {run_dir}" in err and "last good checkpoint" in err


@pytest.mark.parametrize("num, dims", [(50, 5), (2, 5)])
def test_pictures_of_tiny_data_never_undo_a_finished_run(tmp_path, capsys, num, dims):
    import numpy as np
    x = np.random.default_rng(0).random((num, dims)).round()
    np.savez(tmp_path / "tiny.npz", train=x, test=x)
    run_dir = tmp_path / "run"
    assert main(["run", "--data", "npy", "--data-path", str(tmp_path / "tiny.npz"), *TINY, "--epochs", "1",
                 "--out", str(run_dir)]) == 0
    assert (run_dir / "eval.json").is_file()


def test_kill_9_at_random_moments_never_leaves_an_unusable_run(tmp_path):
    """SIGKILL a training process at random moments (checkpoint writes included): the run always loads,
    its checkpoint.json agrees with the checkpoint once read, and after a resume every epoch is logged once."""
    import random
    import signal
    import time
    rng = random.Random(0)
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = [sys.executable, "-m", "vaekit.cli", "train", *TINY, "--epochs", "100000", "--batch-size", "512"]
    proc = subprocess.Popen([*train, "--out", str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for attempt in range(4):
        deadline = time.time() + 60
        while checkpoint.metadata(run_dir) is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        groups, meta = checkpoint.load(run_dir)  # loadable, and the readable copy repaired if it lagged
        assert json.loads((run_dir / "checkpoint.json").read_text()) == meta
        proc = subprocess.Popen([sys.executable, "-m", "vaekit.cli", "train", "--resume", str(run_dir),
                                 "--epochs", "100000", "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = checkpoint.metadata(run_dir)["epoch"]
    assert main(["train", "--resume", str(run_dir), "--epochs", str(finished + 1), "--no-progress"]) == 0
    epochs = [r["epoch"] for r in rows(run_dir)]
    assert epochs == list(range(1, finished + 2)) and not list(run_dir.glob(".*.tmp"))
