"""Typed run configuration: dataclasses where unknown keys and wrong types are errors.

A run is described by one `RunConfig` made of sections ([data], [model], [train], [eval]). It is built
from a TOML file, then overridden by `section.key=value` strings from the command line, and the resolved
result is saved as JSON in every run folder and checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration key is unknown, has the wrong type or an invalid value."""


@dataclass
class DataConfig:
    name: str = "digits"
    data_dir: str | None = None  # folder with the IDX files (mnist, fashion-mnist)
    path: str | None = None  # a user's .npy / .npz images (name = "npy")
    binarization: str = "dynamic"  # dynamic | static | threshold | none
    num_valid: int = 0  # examples taken from train for validation
    allow_nonbinary_bernoulli: bool = False  # Bernoulli likelihood on grey levels: only when asked
    download: bool = True


@dataclass
class ModelConfig:
    name: str = "vae"
    preset: str | None = None  # fills the fields below; explicit keys still win
    hidden: list[int] = field(default_factory=lambda: [128, 128])
    latent: int = 2  # latent dimension (vae, linear) or number of hidden units (rbm)
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # bernoulli | gaussian (the linear model is always gaussian)
    num_chains: int = 100  # rbm: persistent Gibbs chains (train.persistent)
    # random | ppca (linear: closed-form maximum likelihood) | base_rate (rbm: visible biases at the data log-odds)
    init: str = "random"
    noise: str = "ppca"  # linear model: ppca (one sigma) | fa (diagonal) | none (direct generator, latent = D)
    min_scale: float = 1e-3  # floor on every Gaussian scale: keeps log-densities finite


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # constant | cosine | linear
    lr_final_factor: float = 0.05  # lr at the end of a decaying schedule, as a fraction of lr
    warmup_steps: int = 0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-4  # Burda et al. 2016
    objective: str = "elbo"  # elbo | iwae
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0  # L2 penalty on weight matrices (biases are not decayed)
    cd_steps: int = 1  # rbm: Gibbs sweeps of CD-k / PCD-k
    persistent: bool = False  # rbm: persistent chains (PCD, Tieleman 2008) instead of CD
    # rbm: > 0 follows the centred gradient (Melchior, Fischer & Wiskott 2016), the offsets tracking the data
    # means of v and p(h|v) as sliding averages at this rate (0.01 in the paper); 0 = the plain gradient
    centering: float = 0.0
    num_samples: int = 1  # importance samples per example in the objective
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # 0 = torch's default
    checkpoint_every: int = 1  # epochs
    time_limit_minutes: float = 0.0  # > 0: stop after the first epoch that ends past this wall time
    progress: bool = True
    compile: bool = False  # torch.compile the step: fuses the element-wise work around the matmuls


@dataclass
class EvalConfig:
    num_samples: int = 5000  # importance samples for log p(x)
    batch_size: int = 100  # data points at a time
    chunk_size: int = 500  # samples at a time: memory ~ batch_size * chunk_size * D floats
    iwae_samples: list[int] = field(default_factory=lambda: [1, 5, 50])
    elbo_samples: int = 10  # samples for the reconstruction term of the test ELBO
    monitor_samples: int = 100  # each epoch: IWAE bound with this K on held-out data (0: off)
    monitor_examples: int = 1000  # ... on this many held-out examples
    ais_betas: int = 10000  # rbm: inverse temperatures of annealed importance sampling
    ais_runs: int = 100  # rbm: forward AIS runs
    raise_examples: int = 500  # rbm: test points scored by RAISE, the conservative side of the bracket (0: off)
    raise_betas: int = 10000  # rbm: inverse temperatures of each RAISE run
    seed: int = 1234


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str | None = None  # run folder; default runs/<data>-<model>-<time>


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # pytorch/examples VAE: 784-400-20, ReLU
    "examples": {"hidden": [400], "latent": 20, "activation": "relu"},
    # Burda, Grosse & Salakhutdinov 2016, one stochastic layer: 784-200-200-50, tanh
    "burda": {"hidden": [200, 200], "latent": 50, "activation": "tanh"},
}


def _check_type(value: Any, hint: Any, key: str) -> Any:
    """Return `value` as type `hint` (int accepted for float), or raise ConfigError naming `key`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(value, inner, key)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_type(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _section(cls: type, values: dict[str, Any], name: str) -> Any:
    """Build dataclass `cls` from a dict, refusing unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}]: expected a table of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                          f"known keys of [{name}]: {', '.join(sorted(known))}")
    return cls(**{k: _check_type(v, hints[k], f"{name}.{k}") for k, v in values.items()})


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


def from_dict(values: dict[str, Any]) -> RunConfig:
    """RunConfig from nested dicts (as read from TOML or a saved config.json), presets applied."""
    values = dict(values)
    unknown = sorted(set(values) - set(SECTIONS) - {"out"})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(SECTIONS)} and 'out'")
    model = dict(values.get("model", {}))
    preset = model.get("preset")
    if preset is not None:
        if preset not in MODEL_PRESETS:
            raise ConfigError(f"model.preset: unknown preset {preset!r}; known: {sorted(MODEL_PRESETS)}")
        model = {**MODEL_PRESETS[preset], **model}
    values["model"] = model
    sections = {k: _section(cls, values.get(k, {}), k) for k, cls in SECTIONS.items()}
    out = _check_type(values.get("out"), str | None, "out")
    return validate(RunConfig(**sections, out=out))


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=3e-4' -> (['train', 'lr'], 3e-4); the value is read as TOML, else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. train.epochs=10")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str] | tuple) -> dict[str, Any]:
    """Set each `section.key=value` of overrides in the nested dict `values` (in place)."""
    for text in overrides:
        keys, value = parse_override(text)
        target = values
        for k in keys[:-1]:
            target = target.setdefault(k, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
        target[keys[-1]] = value
    return values


def is_string_key(key: str) -> bool:
    """Whether `section.key` holds a string: a command-line value for it is never read as TOML."""
    *section, name = key.split(".")
    cls = SECTIONS[section[0]] if section else RunConfig
    hint = typing.get_type_hints(cls).get(name)
    return hint is str or str in typing.get_args(hint)


def load(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> RunConfig:
    """Read a TOML file (optional) and apply `section.key=value` overrides; validate the result."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        with open(path, "rb") as f:
            try:
                values = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    return from_dict(apply_overrides(values, overrides))


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_json(path: str | Path) -> RunConfig:
    return from_dict(json.loads(Path(path).read_text()))


def _choice(value: str, allowed: typing.Iterable[str], key: str) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {allowed}")


def _positive(value: float, key: str) -> None:
    if not value > 0:
        raise ConfigError(f"{key}: expected a positive number, got {value!r}")


def validate(config: RunConfig) -> RunConfig:
    """Value checks that types alone cannot express."""
    d, m, t, e = config.data, config.model, config.train, config.eval
    _choice(d.binarization, ("dynamic", "static", "threshold", "none"), "data.binarization")
    _choice(m.likelihood, ("bernoulli", "gaussian"), "model.likelihood")
    _choice(m.noise, ("ppca", "fa", "none"), "model.noise")
    _choice(m.init, ("random", "ppca", "base_rate"), "model.init")
    if m.init == "ppca" and (m.name != "linear" or m.noise != "ppca"):
        raise ConfigError("model.init: 'ppca' is the closed-form fit of the linear model with model.noise = 'ppca'")
    if m.init == "base_rate" and m.name != "rbm":
        raise ConfigError("model.init: 'base_rate' sets an RBM's visible biases; model.name is not 'rbm'")
    if m.name == "linear" and m.likelihood != "gaussian":
        raise ConfigError("model.likelihood: the linear-Gaussian model has a Gaussian likelihood; "
                          "set model.likelihood = 'gaussian' (and usually data.binarization = 'none')")
    _choice(t.lr_schedule, ("constant", "cosine", "linear"), "train.lr_schedule")
    _choice(t.objective, ("elbo", "iwae"), "train.objective")
    _choice(t.optimizer, ("adam", "sgd"), "train.optimizer")
    for key, value in [("model.latent", m.latent), ("model.min_scale", m.min_scale),
                       ("train.epochs", t.epochs), ("train.batch_size", t.batch_size), ("train.lr", t.lr),
                       ("train.num_samples", t.num_samples), ("train.checkpoint_every", t.checkpoint_every),
                       ("eval.num_samples", e.num_samples), ("eval.batch_size", e.batch_size),
                       ("eval.chunk_size", e.chunk_size), ("eval.elbo_samples", e.elbo_samples),
                       ("model.num_chains", m.num_chains), ("train.cd_steps", t.cd_steps),
                       ("eval.ais_runs", e.ais_runs)]:
        _positive(value, key)
    for i, h in enumerate(m.hidden):
        _positive(h, f"model.hidden[{i}]")
    for i, k in enumerate(e.iwae_samples):
        _positive(k, f"eval.iwae_samples[{i}]")
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        raise ConfigError(f"train.adam_betas: expected two numbers in [0, 1), got {t.adam_betas}")
    if not 0 < t.lr_final_factor <= 1:
        raise ConfigError(f"train.lr_final_factor: expected a number in (0, 1], got {t.lr_final_factor}")
    for key, value in [("eval.ais_betas", e.ais_betas), ("eval.raise_betas", e.raise_betas)]:
        if value < 2:
            raise ConfigError(f"{key}: expected at least 2 inverse temperatures, got {value}")
    if e.raise_examples < 0:
        raise ConfigError(f"eval.raise_examples: expected a count >= 0, got {e.raise_examples}")
    if not 0 <= t.centering <= 1:
        raise ConfigError(f"train.centering: expected an offset update rate in [0, 1], got {t.centering}")
    if t.centering and m.name != "rbm":
        raise ConfigError("train.centering: the centred gradient is for RBMs; model.name is not 'rbm'")
    if t.momentum < 0 or t.weight_decay < 0:
        raise ConfigError("train.momentum and train.weight_decay must be >= 0")
    if e.monitor_samples < 0 or e.monitor_examples < 0:
        raise ConfigError("eval.monitor_samples and eval.monitor_examples must be >= 0")
    if d.num_valid < 0 or t.warmup_steps < 0 or t.num_threads < 0 or t.time_limit_minutes < 0:
        raise ConfigError("data.num_valid, train.warmup_steps, train.num_threads and train.time_limit_minutes "
                          "must be >= 0")
    return config
