"""KL warm-up and free bits (train.kl_warmup_steps, train.free_bits): what they change is the gradient
of the ELBO's KL terms, never the value logged, and they refuse objectives they do not apply to; the
held-out monitor's interval (eval.monitor_every)."""

import json

import pytest
import torch

from conftest import tiny_run
from vaekit import config as configlib
from vaekit.config import ConfigError
from vaekit.families.latent import annealed_elbo
from vaekit.models.topdown import TopDownVAE
from vaekit.models.vae import VAE
from vaekit.train import Trainer


def setting(**train):
    return configlib.from_dict({"model": {"name": "vae"}, "train": train})


def gradients(model, value):
    grads = torch.autograd.grad(value.sum(), list(model.parameters()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, model.parameters())]


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_the_value_is_the_elbo_and_the_gradient_weighs_the_kl_by_beta(beta):
    torch.manual_seed(0)
    model = VAE(10, [8], 3).double()
    x = (torch.rand(16, 10, dtype=torch.float64) < 0.5).double()
    cfg = setting(kl_warmup_steps=100)
    torch.manual_seed(1)
    value = annealed_elbo(model, x, cfg, torch.tensor(beta, dtype=torch.float64))
    torch.manual_seed(1)
    reconstruction, kl = model.elbo_terms(x)
    assert torch.allclose(value, reconstruction - kl)  # the logged value: the bound itself
    expected = gradients(model, reconstruction - beta * kl)
    torch.manual_seed(1)
    got = gradients(model, annealed_elbo(model, x, cfg, torch.tensor(beta, dtype=torch.float64)))
    assert all(torch.allclose(g, e) for g, e in zip(got, expected))


def test_free_bits_stop_pushing_down_the_kl_of_a_group_under_the_floor():
    torch.manual_seed(0)
    model = TopDownVAE(10, [3, 2], width=8).double()
    x = (torch.rand(16, 10, dtype=torch.float64) < 0.5).double()
    torch.manual_seed(1)
    reconstruction, kls = model.kl_terms(x)
    floor = float((kls[0].mean() + kls[1].mean()).detach() / 2)  # between the two groups' rates
    low, high = sorted(range(2), key=lambda i: float(kls[i].mean()))
    torch.manual_seed(1)
    got = gradients(model, annealed_elbo(model, x, setting(free_bits=floor), torch.tensor(1.0, dtype=torch.float64)))
    torch.manual_seed(1)
    reconstruction, kls = model.kl_terms(x)
    expected = gradients(model, reconstruction - kls[high])  # the group under the floor: no KL gradient
    assert all(torch.allclose(g, e) for g, e in zip(got, expected))


@pytest.mark.parametrize("train", [{"kl_warmup_steps": 10, "objective": "iwae"},
                                   {"free_bits": 0.5, "objective": "iwae"}, {"free_bits": -1.0}, {"kl_warmup_steps": -5}])
def test_settings_that_do_not_apply_are_refused_by_name(train):
    with pytest.raises(ConfigError, match="train.free_bits and train.kl_warmup_steps"):
        setting(**train)


def test_the_warm_up_trains_and_logs_the_bound(tmp_path):
    trainer = Trainer(configlib.from_dict(tiny_run(tmp_path, train={"kl_warmup_steps": 20})))
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/elbo"] > rows[0]["train/elbo"] and rows[-1]["train/elbo"] < 0


def test_the_held_out_monitor_runs_every_n_epochs_and_at_the_end(tmp_path):
    trainer = Trainer(configlib.from_dict(tiny_run(tmp_path, train={"epochs": 5}, eval={"monitor_every": 2})))
    trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "test/elbo" in r] == [2, 4, 5]
    with pytest.raises(ConfigError, match="eval.monitor_every"):
        configlib.from_dict({"eval": {"monitor_every": 0}})
