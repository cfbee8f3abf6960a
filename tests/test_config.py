"""Typed config: unknown keys and wrong types are errors that name the key."""

import pytest

from vaekit import config as configlib
from vaekit.config import ConfigError


def test_defaults_and_presets():
    cfg = configlib.from_dict({})
    assert cfg.data.name == "digits" and cfg.train.epochs > 0
    burda = configlib.from_dict({"model": {"preset": "burda"}})
    assert (burda.model.hidden, burda.model.latent, burda.model.activation) == ([200, 200], 50, "tanh")
    examples = configlib.from_dict({"model": {"preset": "examples", "latent": 2}})
    assert (examples.model.hidden, examples.model.latent, examples.model.activation) == ([400], 2, "relu")


@pytest.mark.parametrize("values, needle", [
    ({"train": {"epoch": 3}}, r"unknown key\(s\) train.epoch;"),
    ({"trian": {}}, "unknown section.*trian"),
    ({"train": {"epochs": "10"}}, "train.epochs: expected int, got str"),
    ({"train": {"epochs": 2.5}}, "train.epochs: expected int"),
    ({"train": {"epochs": True}}, "train.epochs: expected int, got bool"),
    ({"model": {"hidden": [200, "x"]}}, r"model.hidden\[1\]: expected int"),
    ({"model": {"hidden": 200}}, "model.hidden: expected a list"),
    ({"model": {"preset": "huge"}}, "model.preset: unknown preset 'huge'"),
    ({"data": {"binarization": "random"}}, "data.binarization: 'random' is not one of"),
    ({"train": {"lr": -1.0}}, "train.lr: expected a positive number"),
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
    cfg = configlib.load(path, ["train.epochs=7", "model.hidden=[10, 20]", "data.binarization=static"])
    assert (cfg.data.name, cfg.train.epochs, cfg.train.lr, cfg.model.hidden) == ("mnist", 7, 3e-4, [10, 20])
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
    cfg = configlib.from_dict({"model": {"preset": "burda"}, "train": {"epochs": 3}})
    configlib.save(cfg, tmp_path / "config.json")
    assert configlib.load_json(tmp_path / "config.json") == cfg
