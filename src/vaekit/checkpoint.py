"""Checkpoints that never unpickle: tensors in safetensors, metadata in JSON, written atomically.

One file, `checkpoint.safetensors`, holds every tensor (model parameters and buffers, optimizer
state, random-number-generator states) under prefixed names, and the JSON metadata (config, epoch,
optimizer hyper-parameters) in its header, so tensors and metadata can never
disagree. `checkpoint.json` beside it is a readable copy of the metadata. Both are written to a
temporary file first and renamed into place, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

CHECKPOINT = "checkpoint.safetensors"
METADATA_KEY = "vaekit"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path onto path (atomic on POSIX). The file gets the mode
    any other file of the run gets (mkstemp's are private, 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
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


def _file(path: str | Path) -> Path:
    return Path(path) / CHECKPOINT if Path(path).is_dir() else Path(path)


def metadata(path: str | Path) -> dict | None:
    """The metadata of a run folder's (or file's) checkpoint without reading its tensors; None if absent."""
    file = _file(path)
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as f:
            header = f.metadata() or {}
        if METADATA_KEY not in header:
            raise ValueError(f"{str(file)!r} is not a vaekit checkpoint: its header lacks {METADATA_KEY!r}")
        return json.loads(header[METADATA_KEY])
    except (SafetensorError, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(file)!r} is not a readable checkpoint (truncated, empty or garbled: {e})") from None


def describe(path: str | Path) -> dict | None:
    """Which checkpoint: its epoch, step and the SHA-256 of its file (for eval.json); None if absent."""
    meta = metadata(path)
    if meta is None:
        return None
    digest = hashlib.sha256()
    with open(_file(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"epoch": meta["epoch"], "step": meta["step"], "sha256": digest.hexdigest()}


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of writes that were interrupted (a killed process leaves them as
    large as a checkpoint); returns what was removed. Call only when no other writer can be running."""
    stale = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Read a checkpoint written by `save` -> (tensor groups, metadata). No pickle is involved."""
    file = _file(path)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(file)!r}: has this run saved an epoch yet?")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            if METADATA_KEY not in header:
                raise ValueError(f"{str(file)!r} is not a vaekit checkpoint: its header lacks {METADATA_KEY!r}")
            for key in f.keys():
                group, name = key.split("/", 1)
                groups.setdefault(group, {})[name] = f.get_tensor(key)
        text = header[METADATA_KEY]
        meta = json.loads(text)
    except (SafetensorError, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(file)!r} is not a readable checkpoint (truncated, empty or garbled: {e})") from None
    copy = file.parent / "checkpoint.json"
    if file.name == CHECKPOINT and (not copy.is_file() or copy.read_text() != text + "\n"):
        # a crash between the two renames of save() leaves the readable copy behind: the header is the truth
        atomic_write(copy, lambda tmp: Path(tmp).write_text(text + "\n"))
    return groups, meta
