"""How latent-variable models start: Glorot's weights (section.init) and the decoder's output bias from
the training data's mean (section.output_bias), as in Burda et al. 2016's code."""

import math

import pytest
import torch
from torch import nn

from conftest import tiny_run
from vaekit import config as configlib
from vaekit.config import ConfigError
from vaekit.families.latent import DATA_BIAS_CLIP, data_bias
from vaekit.nets import glorot_, mlp
from vaekit.train import Trainer

FAMILIES = {"vae": {"hidden": [32], "latent": 4}, "hvae": {"latents": [4, 2], "hidden": [[16], [8]]},
            "topdown": {"latents": [4, 2], "width": 16}}


def trainer(tmp_path, family, **settings):
    values = tiny_run(tmp_path)
    del values["vae"]
    values.update(model={"name": family}, **{family: {**FAMILIES[family], **settings}})
    return Trainer(configlib.from_dict(values), save=False)


def test_glorot_draws_every_linear_layer_uniformly_within_its_bound_with_zero_biases():
    torch.manual_seed(0)
    net = glorot_(mlp([300, 200, 100], "tanh"))
    for layer in (m for m in net if isinstance(m, nn.Linear)):
        bound = math.sqrt(6 / (layer.in_features + layer.out_features))
        assert layer.weight.abs().max() <= bound
        # U(-a, a) has standard deviation a / sqrt(3): 20k+ draws put it within 2 %
        assert float(layer.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_the_data_bias_gives_the_mean_of_the_data_at_zero_features():
    x = torch.tensor([[0.0, 1.0, 0.2], [0.0, 1.0, 0.6]])
    bias = data_bias(x, "bernoulli")
    expected = torch.tensor([DATA_BIAS_CLIP, 1 - DATA_BIAS_CLIP, 0.4])  # a constant pixel keeps a finite logit
    assert torch.allclose(torch.sigmoid(bias), expected, atol=1e-6)
    assert torch.allclose(data_bias(x, "gaussian"), x.mean(dim=0))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_starts_at_the_mean_pixel_with_output_bias_data(tmp_path, family):
    t = trainer(tmp_path, family, output_bias="data")
    layer = t.model.output_layer()
    assert torch.allclose(torch.sigmoid(layer.bias), t.data.train.x.mean(dim=0).clamp(DATA_BIAS_CLIP, 1 - DATA_BIAS_CLIP),
                          atol=1e-5)
    other = trainer(tmp_path, family).model.state_dict()  # the default start: only that bias differs
    for name, value in t.model.state_dict().items():
        assert torch.equal(value, other[name]) != name.endswith(name_of(t.model, layer) + ".bias"), name


def name_of(model, layer) -> str:
    return next(name for name, module in model.named_modules() if module is layer)


@pytest.mark.parametrize("family", ["vae", "hvae"])
def test_glorot_is_drawn_from_the_seed_of_the_run(tmp_path, family):
    first, second = (trainer(tmp_path, family, init="glorot").model for _ in range(2))
    default = trainer(tmp_path, family).model
    for (name, a), b, c in zip(first.state_dict().items(), second.state_dict().values(), default.state_dict().values()):
        assert torch.equal(a, b), name
    weights = [m.weight for m in first.modules() if isinstance(m, nn.Linear)]
    assert all(bool((w.abs().max() <= math.sqrt(6 / sum(w.shape)))) for w in weights)
    assert not all(torch.equal(a, c) for a, c in zip(first.state_dict().values(), default.state_dict().values()))


def test_the_burda2_preset_starts_from_the_data_bias_as_burda_et_al():
    section = configlib.from_dict({"model": {"name": "hvae"}, "hvae": {"preset": "burda2"}}).family
    assert (section.init, section.output_bias) == ("default", "data")


@pytest.mark.parametrize("values, key", [
    ({"vae": {"architecture": "conv", "init": "glorot"}}, "vae.init"),
    ({"vae": {"architecture": "conv", "output_bias": "data"}}, "vae.output_bias"),
    ({"vae": {"init": "he"}}, "vae.init"),
    ({"model": {"name": "hvae"}, "hvae": {"output_bias": "mean"}}, "hvae.output_bias"),
])
def test_an_unknown_or_unusable_start_is_refused_by_name(values, key):
    with pytest.raises(ConfigError, match=key):
        configlib.from_dict(values)
