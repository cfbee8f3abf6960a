"""Published models: the checkpoints behind figures of docs/benchmarks.md, shipped with vaekit and
loaded by name, offline.

    model = vaekit.load("digits-vae")                       # the trained model, as from a run folder
    vaekit zoo                                              # every entry with the figure it was published with
    vaekit evaluate zoo:digits-vae --num-samples 500        # check that figure yourself
    vaekit sample zoo:mnist-dcgan

An entry is a run folder vaekit/zoo/<name>/ holding what evaluating and drawing need: config.json, the
model's tensors with the checkpoint's metadata (checkpoint.safetensors and checkpoint.json; no optimizer
state, so no resuming), its training curves (metrics.jsonl) and published.json: the figures as typed results, the command that made them
and where docs/benchmarks.md reports them. Its data.data_dir is unset, so the data set is found the way
any run finds it (VAEKIT_MNIST_DIR, the cache, a checksum-verified download). Commands that write into a
run folder (evaluate, sample, quality) work on a copy in $VAEKIT_CACHE_DIR/zoo/<name>/, never in the
installed package.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).parent
PREFIX = "zoo:"
FILES = ("config.json", "checkpoint.safetensors", "checkpoint.json", "published.json")
OPTIONAL = ("metrics.jsonl",)  # the training curves, for `vaekit compare`


def names() -> list[str]:
    """Every entry of the zoo."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "published.json").is_file())


def entry(name: str) -> Path:
    """The (read-only) folder of an entry; a KeyError lists the names there are."""
    name = name.removeprefix(PREFIX)
    if name not in names():
        raise KeyError(f"no model {name!r} in the zoo; there are: {', '.join(names()) or 'none'}")
    return ROOT / name


def published(name: str) -> dict:
    """published.json of an entry: {"results": {name: Result dict}, "command", "docs", ...}."""
    return json.loads((entry(name) / "published.json").read_text())


def working_copy(name: str) -> Path:
    """A writable run folder of the entry in the cache (made on first use, renewed when the entry's
    checkpoint changes), for commands that write eval.json, quality.json or pictures."""
    from ..data import cache_dir
    source, target = entry(name), cache_dir("zoo") / name.removeprefix(PREFIX)
    fresh = (target / "checkpoint.json").is_file() and \
        (target / "checkpoint.json").read_bytes() == (source / "checkpoint.json").read_bytes()
    if not fresh:
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for file in FILES + tuple(f for f in OPTIONAL if (source / f).is_file()):
            shutil.copy2(source / file, target / file)
    return target


def resolve(run: str) -> str:
    """A command's RUN argument: "zoo:NAME" -> the working copy of that entry; anything else as given."""
    return str(working_copy(run)) if str(run).startswith(PREFIX) else run


def export(run_dir: str | os.PathLike, name: str, info: dict, root: Path = ROOT) -> Path:
    """Make run_dir's last checkpoint the zoo entry `name`: the model's tensors only, data.data_dir and
    out unset (paths of the machine it was trained on), and info (results, command, docs) as
    published.json. Refuses to replace an existing entry."""
    from .. import checkpoint
    from .. import config as configlib
    from ..runs import run_config
    folder = Path(root) / name
    if folder.exists():
        raise FileExistsError(f"zoo entry {name!r} exists at {str(folder)!r}: remove it first to replace it")
    values = configlib.to_dict(run_config(run_dir))
    values["data"]["data_dir"], values["out"] = None, None
    groups, meta = checkpoint.load(run_dir)
    meta = {**{k: v for k, v in meta.items() if k not in ("optimizers", "initial_metrics")}, "config": values}
    checkpoint.save(folder, {"model": groups["model"]}, meta)
    configlib.save(configlib.from_dict(values), folder / "config.json")
    (folder / "published.json").write_text(json.dumps(info, indent=2) + "\n")
    for file in OPTIONAL:
        if (Path(run_dir) / file).is_file():
            shutil.copy2(Path(run_dir) / file, folder / file)
    return folder
