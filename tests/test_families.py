"""Model families as plug-ins: a family defined here, in a test file, trains, checkpoints, resumes and
evaluates through the CLI with no edit to vaekit's modules; every built-in family registers the same way."""

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.distributions import Bernoulli, Independent

from vaekit import families, pictures
from vaekit.cli import main
from vaekit.families import Family
from vaekit.protocols import ExactDensity, LatentVariableModel, Sampler
from vaekit.results import Result
from vaekit.train import ascend


class PixelBernoulli(nn.Module):
    """Independent pixels p(x) = prod_i Bernoulli(x_i; sigmoid(l_i)): exact log p(x), exact maximum."""

    def __init__(self, num_dims: int, init_logit: float):
        super().__init__()
        self.logits = nn.Parameter(torch.full((num_dims,), init_logit))

    def distribution(self):
        return Independent(Bernoulli(logits=self.logits), 1)

    def log_prob(self, x):
        return self.distribution().log_prob(x)

    @torch.no_grad()
    def sample(self, num_samples):
        return self.distribution().sample((num_samples,))


@dataclass
class ToyConfig:
    init_logit: float = 0.0


def toy_step(state, x):
    return ascend(state, lambda model, x, cfg: model.log_prob(x), x, "log_px")


def toy_evaluate(model, data, cfg, progress=True):
    log_px = model.log_prob(data.test.x).detach().double()
    nll = Result(-float(log_px.mean()), float(log_px.std() / len(log_px) ** 0.5), "exact", "exact", None, len(log_px))
    return {"results": {"nll": nll}, "nll": nll.value, "estimator": "exact", "num_examples": len(log_px)}


TOY = Family(name="toy", help="independent Bernoulli pixels (a test's family)", config=ToyConfig,
             build=lambda c, spec: PixelBernoulli(spec.num_dims, c.init_logit), step=toy_step,
             evaluate=toy_evaluate, monitor=lambda model, x, cfg: {"log_px": float(model.log_prob(x).detach().mean())},
             pictures=pictures.pick("samples", "curves"), binary_data=lambda c: True,
             defaults={"train": {"lr": 0.05, "lr_schedule": "constant"}})


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(families.REGISTRY, "toy", TOY)
    return TOY


def test_a_family_defined_in_a_test_runs_through_the_cli(toy, tmp_path, capsys):
    common = ["--model", "toy", "--set", "toy.init_logit=-1.0", "--batch-size", "128", "--no-progress",
              "--device", "cpu", "--set", "eval.monitor_samples=0"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", *common, "--epochs", "4", "--out", str(full)]) == 0
    result = json.loads((full / "eval.json").read_text())
    assert result["family"] == "toy" and result["results"]["nll"]["side"] == "exact"
    saved = json.loads((full / "config.json").read_text())
    assert saved["toy"] == {"init_logit": -1.0} and saved["train"]["lr"] == 0.05  # the family's default
    assert sorted(p.name for p in (full / "pictures").glob("*.png")) == ["samples.png", "training_curves.png"]

    assert main(["train", *common, "--epochs", "2", "--out", str(cut)]) == 0
    assert main(["train", "--resume", str(cut), "--epochs", "4", "--no-progress"]) == 0
    weights = lambda run: load_file(str(run / "checkpoint.safetensors"))["model/logits"]
    assert torch.equal(weights(full), weights(cut))  # resumed = uninterrupted, bit for bit
    assert main(["evaluate", str(cut)]) == 0
    assert "test NLL" in capsys.readouterr().out
    assert main(["reconstruct", str(cut)]) == 2
    assert "the 'toy' family does not draw it" in capsys.readouterr().err


def test_the_trained_toy_reaches_the_data_marginals(toy, tmp_path):
    """The exact maximum-likelihood logits are the log-odds of the pixel means: training gets close."""
    from vaekit import config as configlib
    from vaekit.train import Trainer
    cfg = configlib.from_dict({"model": {"name": "toy"}, "data": {"binarization": "static"},
                               "train": {"epochs": 30, "progress": False, "device": "cpu"}, "out": str(tmp_path)})
    trainer = Trainer(cfg)
    trainer.fit()
    p = trainer.loader.data.x.mean(0).clamp(1e-3, 1 - 1e-3)
    fitted = torch.sigmoid(trainer.model.logits.detach())
    assert float((fitted - p).abs().max()) < 0.05


def test_registry_lists_and_refuses():
    assert {"vae", "linear", "rbm", "gan"} <= set(families.names())
    with pytest.raises(ValueError, match="already registered"):
        families.register(Family(name="vae", help="", config=ToyConfig, build=None, step=None, evaluate=None))
    with pytest.raises(TypeError, match="Family"):
        families.register("vae")
    with pytest.raises(KeyError):
        families.get("no-such-family")


def test_help_lists_the_registered_families(toy, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "gan" in capsys.readouterr().out.replace("\n", " ")


@pytest.mark.parametrize("name, protocols", [
    ("vae", (LatentVariableModel, Sampler)), ("linear", (LatentVariableModel, ExactDensity, Sampler)),
    ("rbm", (Sampler,)), ("gan", (Sampler,))])
def test_built_in_families_build_models_that_keep_their_protocols(name, protocols):
    from vaekit import config as configlib
    from vaekit.data import DataSpec
    cfg = configlib.from_dict({"model": {"name": name}})
    model = families.get(name).build(cfg.family, DataSpec(64, (1, 8, 8), True))
    assert all(isinstance(model, p) for p in protocols)
    assert not isinstance(model, ExactDensity) or name == "linear"  # one name, one signature: log_prob(x)
