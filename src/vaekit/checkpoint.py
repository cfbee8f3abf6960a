"""Checkpoints that never unpickle: tensors in safetensors, metadata in JSON, written atomically.

One file, `checkpoint.safetensors`, holds every tensor (model parameters and buffers, optimizer
state, random-number-generator states) under prefixed names, and the JSON metadata (config, epoch,
optimizer hyper-parameters) in its header, so tensors and metadata can never
disagree. `checkpoint.json` beside it is a readable copy of the metadata. Both are written to a
temporary file first and renamed into place, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CHECKPOINT = "checkpoint.safetensors"
METADATA_KEY = "vaekit"


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path onto path (atomic on POSIX)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors {"<param>.<name>": t} and JSON (param_groups)."""
    tensors = {f"{index}.{name}": value.detach().cpu() for index, slots in state["state"].items()
               for name, value in slots.items()}
    return tensors, {"param_groups": state["param_groups"]}


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of optimizer_tensors."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save(path: str | Path, tensors: dict[str, dict[str, torch.Tensor]], metadata: dict[str, Any]) -> None:
    """Write groups of tensors {"model": {...}, "optimizer": {...}} and JSON metadata atomically.

    `path` is the run folder: writes checkpoint.safetensors and checkpoint.json there.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {f"{group}/{name}": t.detach().cpu().contiguous()
            for group, items in tensors.items() for name, t in items.items()}
    text = json.dumps(metadata, indent=2)
    atomic_write(folder / CHECKPOINT, lambda tmp: save_file(flat, tmp, metadata={METADATA_KEY: text}))
    atomic_write(folder / "checkpoint.json", lambda tmp: Path(tmp).write_text(text + "\n"))


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Read a checkpoint written by `save` -> (tensor groups, metadata). No pickle is involved."""
    file = Path(path) / CHECKPOINT if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(file)!r}: has this run saved an epoch yet?")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(file), framework="pt", device=str(device)) as f:
        header = f.metadata() or {}
        if METADATA_KEY not in header:
            raise ValueError(f"{str(file)!r} is not a vaekit checkpoint: its header lacks {METADATA_KEY!r}")
        for key in f.keys():
            group, name = key.split("/", 1)
            groups.setdefault(group, {})[name] = f.get_tensor(key)
    return groups, json.loads(header[METADATA_KEY])
