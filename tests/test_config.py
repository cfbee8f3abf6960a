"""Typed config: unknown keys and wrong types are errors that name the key."""

import json

import pytest

from vaekit import config as configlib
from vaekit.config import ConfigError


def test_defaults_and_presets():
    cfg = configlib.from_dict({})
    assert cfg.data.name == "digits" and cfg.train.epochs > 0
    burda = configlib.from_dict({"vae": {"preset": "burda"}})
    assert (burda.family.hidden, burda.family.latent, burda.family.activation) == ([200, 200], 50, "tanh")
    examples = configlib.from_dict({"vae": {"preset": "examples", "latent": 2}})
    assert (examples.family.hidden, examples.family.latent, examples.family.activation) == ([400], 2, "relu")


@pytest.mark.parametrize("values, needle", [
    ({"train": {"epoch": 3}}, r"unknown key\(s\) train.epoch;"),
    ({"trian": {}}, "unknown section.*trian"),
    ({"train": {"epochs": "10"}}, "train.epochs: expected int, got str"),
    ({"train": {"epochs": 2.5}}, "train.epochs: expected int"),
    ({"train": {"epochs": True}}, "train.epochs: expected int, got bool"),
    ({"vae": {"hidden": [200, "x"]}}, r"vae.hidden\[1\]: expected int"),
    ({"vae": {"hidden": 200}}, "vae.hidden: expected a list"),
    ({"vae": {"preset": "huge"}}, "vae.preset: unknown preset 'huge'"),
    ({"model": {"name": "flow"}}, "model.name: unknown model family 'flow'"),
    ({"rbm": {"num_hidden": 3}}, r"unknown section\(s\) \['rbm'\].*\[vae\]"),
    ({"model": {"name": "rbm"}, "rbm": {"latent": 3}}, r"rbm.latent;.*num_hidden"),
    ({"model": {"latent": 3}}, r"model.latent: each model family now has its own section"),
    ({"train": {"cd_steps": 3}}, r"train.cd_steps: each model family"),
    ({"data": {"binarization": "random"}}, "data.binarization: 'random' is not one of"),
    ({"train": {"lr": -1.0}}, "train.lr: expected a positive finite number"),
    ({"train": {"adam_betas": [0.9]}}, "train.adam_betas"),
    ({"out": 3}, "out: expected str"),
])
def test_bad_config_names_the_key(values, needle):
    with pytest.raises(ConfigError, match=needle):
        configlib.from_dict(values)


def test_int_is_accepted_for_float():
    assert configlib.from_dict({"train": {"lr": 1}}).train.lr == 1.0


def test_toml_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[data]\nname = "mnist"\n[train]\nepochs = 5\nlr = 3e-4\n')
    cfg = configlib.load(path, ["train.epochs=7", "vae.hidden=[10, 20]", "data.binarization=static"])
    assert (cfg.data.name, cfg.train.epochs, cfg.train.lr, cfg.family.hidden) == ("mnist", 7, 3e-4, [10, 20])
    assert cfg.data.binarization == "static"
    with pytest.raises(ConfigError, match="train.epoch"):
        configlib.load(path, ["train.epoch=7"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        configlib.load(path, ["epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        configlib.load(tmp_path / "missing.toml")
    path.write_text("[data\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        configlib.load(path)


def test_saved_config_round_trips(tmp_path):
    cfg = configlib.from_dict({"vae": {"preset": "burda"}, "train": {"epochs": 3}})
    configlib.save(cfg, tmp_path / "config.json")
    assert configlib.load_json(tmp_path / "config.json") == cfg


def test_configs_saved_before_family_sections_are_migrated(tmp_path):
    """Run folders written when every model key lived in [model] (and the RBM's in [train]) still load."""
    old_model = {"name": "rbm", "preset": None, "hidden": [128, 128], "latent": 500, "activation": "tanh",
                 "likelihood": "bernoulli", "num_chains": 100, "init": "base_rate", "noise": "ppca", "min_scale": 1e-3}
    old = {"model": old_model, "train": {"epochs": 3, "cd_steps": 5, "persistent": True, "centering": 0.01}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = configlib.load_json(tmp_path / "config.json")
    assert cfg.model.name == "rbm" and cfg.train.epochs == 3
    c = cfg.family
    assert (c.num_hidden, c.num_chains, c.init, c.cd_steps, c.persistent, c.centering) == (500, 100, "base_rate", 5,
                                                                                          True, 0.01)
    old_vae = {"model": {**old_model, "name": "vae", "preset": "burda", "latent": 50, "hidden": [200, 200],
                         "init": "random"}, "train": {"cd_steps": 1, "persistent": False, "centering": 0.0}}
    cfg = configlib.from_dict(configlib.migrate(old_vae))
    assert (cfg.family.preset, cfg.family.latent, cfg.family.hidden, cfg.family.likelihood) == ("burda", 50, [200, 200],
                                                                                              "bernoulli")
    assert cfg.family.init == "default"  # the old [model].init was the RBM's and linear model's, not the VAE's
    assert configlib.migrate(configlib.to_dict(cfg)) == configlib.to_dict(cfg)  # a current config is left alone
