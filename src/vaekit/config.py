"""Typed run configuration: dataclasses where unknown keys and wrong types are errors.

A run is described by one `RunConfig` made of sections ([data], [model], [train], [eval]). It is built
from a TOML file, then overridden by `section.key=value` strings from the command line, and the resolved
result is saved as JSON in every run folder and checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
    verify: bool = True  # check MNIST / Fashion-MNIST files against their canonical SHA-256 (cached)


@dataclass
class ModelConfig:
    name: str = "vae"  # the model family; its own settings live in the section named after it


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
    objective: str = "elbo"  # elbo | iwae (latent-variable models)
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0  # L2 penalty on weight matrices (biases are not decayed)
    num_samples: int = 1  # importance samples per example in the objective (latent-variable models)
    gradient: str = "reparam"  # iwae: reparam (Burda et al.'s estimator) | dreg (doubly reparameterised, any q)
    kl_warmup_steps: int = 0  # elbo: the KL's weight rises linearly from 0 to 1 over these steps
    free_bits: float = 0.0  # elbo: nats per latent group (layer) under which its KL is not pushed down
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
    compile: bool = False  # torch.compile the log importance weights (same draws, fused element-wise work)
    iwae_samples: list[int] = field(default_factory=lambda: [1, 5, 50])
    elbo_samples: int = 10  # samples for the reconstruction term of the test ELBO
    monitor_samples: int = 100  # each epoch: IWAE bound with this K on held-out data (0: off)
    monitor_examples: int = 1000  # ... on this many held-out examples
    monitor_every: int = 1  # epochs between held-out monitors (the last epoch is always monitored)
    ais_betas: int = 10000  # inverse temperatures of annealed importance sampling (the RBM's log Z)
    ais_runs: int = 100  # forward AIS runs
    raise_examples: int = 500  # test points scored by RAISE, the conservative side of the bracket (0: off)
    raise_betas: int = 10000  # inverse temperatures of each RAISE run
    quality_samples: int = 10000  # generated images judged by sample-quality measures
    # `vaekit evaluate --ais`: log p(x) of decoder-based models by AIS with HMC (vaekit.decoder_ais)
    decoder_ais_steps: int = 1000  # intermediate distributions, sigmoid-spaced
    decoder_ais_chains: int = 16  # chains per test image
    decoder_ais_examples: int = 100  # test images scored (the first ones)
    hmc_leapfrog: int = 10  # leapfrog steps per HMC transition
    hmc_step_size: float = 0.05  # initial step size, adapted per chain towards 65 % acceptance
    bdmc_examples: int = 20  # images simulated from the model for the BDMC bracket (0: off)
    observation_scales: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2])  # sigma grid
    observation_examples: int = 20  # held-out images the sigma of a generator's Gaussian is chosen on
    seed: int = 1234


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str | None = None  # run folder; default runs/<data>-<model>-<time>
    family: Any = None  # the section [<model.name>]: the dataclass its family registers

    @property
    def family_name(self) -> str:
        return self.model.name


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


def _family(name: Any):
    from . import families  # imported on use: reading a config loads the family's code, --help does not
    if not isinstance(name, str) or name not in families.names():
        raise ConfigError(f"model.name: unknown model family {name!r}; known: {families.names()}")
    return families.get(name)


def _family_section(family, values: dict[str, Any]) -> Any:
    """The family's section with its preset (if any) under the explicit keys."""
    values = dict(values)
    preset = values.get("preset")
    if preset is not None:
        if preset not in family.presets:
            raise ConfigError(f"{family.name}.preset: unknown preset {preset!r}; known: {sorted(family.presets)}")
        values = {**family.presets[preset], **values}
    return _section(family.config, values, family.name)


def from_dict(values: dict[str, Any]) -> RunConfig:
    """RunConfig from nested dicts (as read from TOML or a saved config.json): the family named by
    model.name supplies its section, its presets and its defaults for the shared sections."""
    values = dict(values)
    model = values.get("model", {})
    if not isinstance(model, dict):
        raise ConfigError(f"[model]: expected a table of keys, got {model!r}")
    _refuse_moved_keys(values)
    family = _family(model.get("name", ModelConfig.name))
    unknown = sorted(set(values) - set(SECTIONS) - {"out", family.name})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: {sorted(SECTIONS)}, 'out' and the section "
                          f"of model.name = {family.name!r}: [{family.name}]")
    for name, defaults in family.defaults.items():
        values[name] = {**defaults, **values.get(name, {})}
    sections = {k: _section(cls, values.get(k, {}), k) for k, cls in SECTIONS.items()}
    out = _check_type(values.get("out"), str | None, "out")
    section = _family_section(family, values.get(family.name, {}))
    return validate(RunConfig(**sections, out=out, family=section))


# keys that lived in [model] / [train] before each family had its own section
MOVED = {"model": ("preset", "hidden", "latent", "activation", "likelihood", "num_chains", "init", "noise",
                   "min_scale"),
         "train": ("cd_steps", "persistent", "centering")}


def _refuse_moved_keys(values: dict[str, Any]) -> None:
    for section, keys in MOVED.items():
        moved = sorted(set(values.get(section) or {}) & set(keys))
        if moved:
            raise ConfigError(f"{', '.join(f'{section}.{k}' for k in moved)}: each model family now has its own "
                              "section, named after model.name: e.g. [vae] latent / hidden / preset, [rbm] "
                              "num_hidden / cd_steps / persistent, [linear] noise / init")


def migrate(values: dict[str, Any]) -> dict[str, Any]:
    """A config saved before families had sections (every model key in [model], the RBM's training
    keys in [train]) rewritten into the family's section; a current config is returned as it is."""
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    model, train = values.get("model", {}), values.get("train", {})
    if not set(model) - {"name"} and not set(train) & set(MOVED["train"]):
        return values
    name = model.get("name", ModelConfig.name)
    family = _family(name)
    known, renames = {f.name for f in dataclasses.fields(family.config)}, family.legacy_keys
    section = values.setdefault(name, {})
    for key in [*MOVED["model"], *MOVED["train"]]:
        source = model if key in MOVED["model"] else train
        if key in source:
            value = source.pop(key)
            target = renames.get(key, key)
            if target is not None and target in known and not (key == "preset" and value is None):
                section[target] = value
    return values


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
    cls = (SECTIONS.get(section[0]) or _family(section[0]).config) if section else RunConfig
    hint = typing.get_type_hints(cls).get(name)
    return hint is str or str in typing.get_args(hint)


def read_toml(path: str | Path | None) -> dict[str, Any]:
    """The nested dict of a TOML config file ({} for None)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML (UTF-8 text): {e}") from None


def load(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> RunConfig:
    """Read a TOML file (optional) and apply `section.key=value` overrides; validate the result."""
    return from_dict(apply_overrides(read_toml(path), overrides))


def to_dict(config: RunConfig) -> dict[str, Any]:
    """Nested dicts with the family's section under its name, as from_dict reads them."""
    values = {k: dataclasses.asdict(getattr(config, k)) for k in SECTIONS}
    values[config.model.name] = dataclasses.asdict(config.family)
    values["out"] = config.out
    return values


def flat_keys(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(a: RunConfig, b: RunConfig) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ between two configs: {"train.lr": (a's, b's)}."""
    fa, fb = flat_keys(to_dict(a)), flat_keys(to_dict(b))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


# what a resumed run may change: how long and how it runs, never what it computes
RESUMABLE = ("train.epochs", "train.time_limit_minutes", "train.checkpoint_every", "train.progress",
             "train.num_threads", "train.device", "eval.")


def resume_changes(saved: RunConfig, new: RunConfig) -> dict[str, tuple[Any, Any]]:
    """The changes a resume makes to a run's saved config; any change to data, model or optimisation
    is an error naming the keys (those would make the resumed run another run)."""
    changes = differences(saved, new)
    refused = [k for k in changes if not k.startswith(RESUMABLE)]
    if refused:
        listed = ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in refused)
        raise ConfigError(f"--resume: {listed} would change what the run computes; a resumed run may change "
                          f"only {', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE)}: start a new "
                          "run for other settings")
    return changes


def save(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_json(path: str | Path) -> RunConfig:
    """A saved config (config.json); configs of older vaekit versions are migrated."""
    try:
        values = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON ({e}): restore the file") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{str(path)!r}: expected a JSON object of config sections, got {type(values).__name__}")
    return from_dict(migrate(values))


def check_choice(value: str, allowed: typing.Iterable[str], key: str) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {allowed}")


def _positive(value: float, key: str) -> None:
    if not 0 < value < math.inf:
        raise ConfigError(f"{key}: expected a positive finite number, got {value!r}")


def check_positive(section: Any, prefix: str, names: typing.Iterable[str]) -> None:
    """Each named field of a section (a number or a list of numbers) is > 0."""
    for name in names:
        value = getattr(section, name)
        for i, v in enumerate(value) if isinstance(value, list) else [(None, value)]:
            _positive(v, f"{prefix}.{name}" + ("" if i is None else f"[{i}]"))


def validate(config: RunConfig) -> RunConfig:
    """Value checks that types alone cannot express; the family's section checks itself."""
    d, t, e = config.data, config.train, config.eval
    check_choice(d.binarization, ("dynamic", "static", "threshold", "none"), "data.binarization")
    check_choice(t.lr_schedule, ("constant", "cosine", "linear"), "train.lr_schedule")
    check_choice(t.objective, ("elbo", "iwae"), "train.objective")
    check_choice(t.gradient, ("reparam", "dreg"), "train.gradient")
    if t.gradient == "dreg" and t.objective != "iwae":
        raise ConfigError(f"train.gradient: 'dreg' is a gradient of the IWAE bound; train.objective is {t.objective!r}")
    check_choice(t.optimizer, ("adam", "sgd"), "train.optimizer")
    if not (0 <= t.free_bits < math.inf and t.kl_warmup_steps >= 0):
        raise ConfigError(f"train.free_bits and train.kl_warmup_steps: expected finite numbers >= 0, got "
                          f"{t.free_bits!r} and {t.kl_warmup_steps!r}")
    if (t.free_bits or t.kl_warmup_steps) and t.objective != "elbo":
        raise ConfigError(f"train.free_bits and train.kl_warmup_steps weight the ELBO's KL terms; train.objective "
                          f"is {t.objective!r} (set them to 0, or use objective 'elbo')")
    check_positive(t, "train", ("epochs", "batch_size", "lr", "num_samples", "checkpoint_every"))
    check_positive(e, "eval", ("monitor_every",))
    check_positive(e, "eval", ("num_samples", "batch_size", "chunk_size", "elbo_samples", "ais_runs",
                               "iwae_samples", "quality_samples", "decoder_ais_steps", "decoder_ais_chains",
                               "decoder_ais_examples", "hmc_leapfrog", "hmc_step_size", "observation_scales",
                               "observation_examples"))
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        raise ConfigError(f"train.adam_betas: expected two numbers in [0, 1), got {t.adam_betas}")
    if not 0 < t.lr_final_factor <= 1:
        raise ConfigError(f"train.lr_final_factor: expected a number in (0, 1], got {t.lr_final_factor}")
    for key, value in [("eval.ais_betas", e.ais_betas), ("eval.raise_betas", e.raise_betas)]:
        if value < 2:
            raise ConfigError(f"{key}: expected at least 2 inverse temperatures, got {value}")
    for key in ("raise_examples", "bdmc_examples"):
        if getattr(e, key) < 0:
            raise ConfigError(f"eval.{key}: expected a count >= 0, got {getattr(e, key)}")
    for key, value in (("train.momentum", t.momentum), ("train.weight_decay", t.weight_decay)):
        if not 0 <= value < math.inf:
            raise ConfigError(f"{key}: expected a finite number >= 0, got {value!r}")
    check_positive(t, "train", ("adam_eps",))
    if e.monitor_samples < 0 or e.monitor_examples < 0:
        raise ConfigError("eval.monitor_samples and eval.monitor_examples must be >= 0")
    if not 0 <= t.seed < 2**63:
        raise ConfigError(f"train.seed: expected an integer in [0, 2**63), got {t.seed}")
    if not 0 <= e.seed < 2**63:
        raise ConfigError(f"eval.seed: expected an integer in [0, 2**63), got {e.seed}")
    if d.num_valid < 0 or t.warmup_steps < 0 or t.num_threads < 0 or t.time_limit_minutes < 0:
        raise ConfigError("data.num_valid, train.warmup_steps, train.num_threads and train.time_limit_minutes "
                          "must be >= 0")
    if hasattr(config.family, "validate"):
        config.family.validate()
    return config
