"""Model families as plug-ins: one `Family` record per family names everything the rest of vaekit
needs from it (its config section, how to build, train, monitor, evaluate and draw it).

A family is registered once:
- built in: a module under vaekit/families/ defining `FAMILY = Family(...)`, named in BUILTIN below;
- from another package: an entry point in the group "vaekit.families" pointing at a Family;
- at run time (a notebook, a test): `vaekit.families.register(Family(...))`.
Nothing else in vaekit tests a family's name.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from torch import nn

from ..data import DataSpec

# name -> module defining FAMILY; imported on first use, so `vaekit --help` loads no model code
BUILTIN = {"vae": "vaekit.families.vae", "linear": "vaekit.families.linear", "rbm": "vaekit.families.rbm",
           "gan": "vaekit.families.gan", "hvae": "vaekit.families.hvae",
           "topdown": "vaekit.families.topdown"}
ENTRY_POINT_GROUP = "vaekit.families"


@dataclass(frozen=True)
class Family:
    """Everything vaekit needs from a model family.

    config: the dataclass of its config section [<name>] (typed; unknown keys are errors); it may
        define `validate(self)` for value checks.
    build(section, spec) -> nn.Module: the model for data described by a DataSpec.
    step(state, x) -> {name: per-batch scalar tensor}: one training step that owns its updates
        (vaekit.train.StepState holds the model, its optimizers, the config and the step count); the
        first metric is the objective, watched for a run that explodes.
    evaluate(model, data, cfg, progress) -> {"results": {name: Result}, ...}: the held-out evaluation.
    monitor(model, x, cfg) -> {name: float}: cheap held-out terms logged every epoch.
    pictures: name -> fn(run_dir, model, data) -> [paths]; `no_pictures` says why a family lacks one.
    players(model) -> {name: module}: one optimizer each (default: the whole model).
    init(model, data, section): a data-dependent start after the random one (e.g. a closed-form fit).
    binary_data(section) -> bool: whether its likelihood needs 0/1 data.
    defaults: {"train": {...}, "data": {...}, "eval": {...}} under the user's values, over vaekit's.
    presets: name -> values of its section (the key `preset` selects one).
    diagnose(rows) -> [warnings]: a look at the logged rows, this epoch's last (e.g. a GAN's collapse).
    epoch_end(trainer): after each epoch's log row (e.g. a picture from fixed latents).
    legacy_keys: old key -> its name in the section (None: dropped), for configs saved before families had
        sections.
    observation_model(model, data, cfg, progress) -> (p(z) p(x|z) model, {name: Result}): for a
        decoder without a likelihood of its own (a GAN), the model with an observation model added,
        for `vaekit evaluate --ais`, and the results of choosing it (e.g. the noise scale).
    """

    name: str
    help: str
    config: type
    build: Callable[[Any, DataSpec], nn.Module]
    step: Callable[..., dict]
    evaluate: Callable[..., dict]
    monitor: Callable[..., dict] | None = None
    pictures: dict[str, Callable] = field(default_factory=dict)
    no_pictures: dict[str, str] = field(default_factory=dict)
    players: Callable[[nn.Module], dict[str, nn.Module]] = lambda model: {"model": model}
    init: Callable[..., None] | None = None
    binary_data: Callable[[Any], bool] = lambda section: False
    defaults: dict[str, dict] = field(default_factory=dict)
    presets: dict[str, dict] = field(default_factory=dict)
    diagnose: Callable[[list[dict]], list[str]] | None = None
    epoch_end: Callable[..., None] | None = None
    legacy_keys: dict[str, str] = field(default_factory=dict)
    observation_model: Callable[..., tuple[nn.Module, dict]] | None = None


REGISTRY: dict[str, Family] = {}


def register(family: Family, replace: bool = False) -> Family:
    """Add a family; a second family of the same name is an error unless replace=True."""
    if not isinstance(family, Family):
        raise TypeError(f"register: expected a vaekit.families.Family, got {type(family).__name__}")
    if family.name in names() and REGISTRY.get(family.name) is not family and not replace:
        raise ValueError(f"register: a family named {family.name!r} is already registered")
    REGISTRY[family.name] = family
    return family


@functools.cache  # reading every installed package's metadata takes ~70 ms; the CLI asks dozens of times
def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Every family that can be used, without importing any of them."""
    return sorted({*BUILTIN, *_plugins(), *REGISTRY})


def get(name: str) -> Family:
    """The family registered as `name` (built-in and entry-point families load on first use)."""
    if name not in REGISTRY:
        if name in BUILTIN:
            REGISTRY[name] = importlib.import_module(BUILTIN[name]).FAMILY
        elif name in _plugins():
            REGISTRY[name] = _plugins()[name].load()
        else:
            raise KeyError(name)
    return REGISTRY[name]
