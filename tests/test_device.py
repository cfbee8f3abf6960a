"""The same code on every device: each test runs on the CPU and, where torch sees one, on CUDA
(bench/device_check.sh runs this file on a GPU machine)."""

import json

import pytest
import torch

from conftest import tiny_run
from vaekit import config as configlib
from vaekit.train import Trainer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_the_binarised_test_set_is_the_same_on_every_device(device):
    """Held-out data are binarised on the CPU by one seeded generator, then moved: a GPU evaluation
    scores the same binary test set as a CPU one."""
    from vaekit.runs import prepare_data
    cfg = configlib.from_dict({"data": {"name": "digits", "num_valid": 100}})
    on_cpu, on_device = prepare_data(cfg, "cpu"), prepare_data(cfg, device)
    assert on_device.test.x.device.type == device
    assert torch.equal(on_cpu.test.x, on_device.test.x.cpu()) and torch.equal(on_cpu.valid.x, on_device.valid.x.cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["vae", "linear", "rbm", "gan"])
def test_every_family_trains_evaluates_and_resumes_on(device, family, tmp_path):
    sections = {"vae": {}, "linear": {"linear": {"latent": 2}, "data": {"binarization": "none"}},
                "rbm": {"rbm": {"num_hidden": 8, "persistent": True}, "eval": {"ais_betas": 100, "ais_runs": 10,
                                                                               "raise_examples": 10, "raise_betas": 100}},
                "gan": {"gan": {"width": 8, "latent": 4, "ema": 0.9}, "eval": {"quality_samples": 200}}}[family]
    values = tiny_run(tmp_path, model={"name": family}, train={"epochs": 2, "device": device}, **sections)
    if family != "vae":
        del values["vae"]
    trainer = Trainer(configlib.from_dict(values))
    trainer.fit()
    assert all(t.device.type == device for t in trainer.model.state_dict().values())
    values["train"]["epochs"] = 3
    resumed = Trainer(configlib.from_dict(values), resume=True)
    resumed.fit()
    rows = [json.loads(line) for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(t).all() for t in resumed.model.state_dict().values() if t.is_floating_point())
