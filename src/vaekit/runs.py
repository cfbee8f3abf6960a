"""Run folders: the data a config names, the device, and loading a trained model back.

A run folder holds config.json (the resolved config), metrics.jsonl (one row per epoch),
checkpoint.safetensors + checkpoint.json, eval.json and pictures/*.png.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import checkpoint
from . import config as configlib
from . import families
from .data import DataSpec, ImageSet, binarize, is_binary, load_dataset, split_validation

# Held-out data is binarised once with this seed, whatever the training seed, so every model in
# vaekit is scored on the same binary test set (the protocol of the published MNIST likelihoods).
HELD_OUT_SEED = 0
HELD_OUT_BINARIZATION = {"dynamic": "static", "static": "static", "threshold": "threshold", "none": "none"}


@dataclass
class Splits:
    train: ImageSet  # kept in [0, 1]: the training Loader binarises it
    valid: ImageSet | None  # binarised once (see HELD_OUT_SEED)
    test: ImageSet | None  # binarised once; None for in-memory training without held-out data


def configure_process(cfg: configlib.TrainConfig) -> None:
    """Process-wide settings, made once by the CLI and the library entry points (never by a Trainer,
    which may live inside a user's program): the thread count and the denormal flush."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    # Adam's second moments underflow into denormals after an epoch or so; on x86 CPUs arithmetic on
    # them is >10x slower. Flushing them to zero changes nothing measurable in the result. The flag
    # is per thread and worker threads copy it when they start: set it before any parallel work.
    torch.set_flush_denormal(True)


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is checked against what exists. key: the
    setting or option the name came from, for the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{key}: {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}: {name!r} asked for, but torch sees no CUDA device")
    return device


def hardware_text(device: torch.device) -> str:
    """What trained an epoch, for its metrics row: the GPU's name, or the CPU and its torch threads
    (training times of runs are only comparable on the same hardware)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"cpu: {threads} thread{'s' if threads > 1 else ''}"


@contextlib.contextmanager
def seeded_stream(seed: int, device: torch.device | str):
    """Run a block on its own random stream, seeded, leaving the global one as it was: evaluation and
    monitoring then neither depend on nor change the training draws."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def binarize_held_out(data: ImageSet, mode: str) -> ImageSet:
    """One fixed binarisation of a validation or test set (seed HELD_OUT_SEED), drawn on the CPU
    whatever device the data sit on: a CUDA generator is another random stream, and every device must
    score the same binary test set."""
    generator = torch.Generator().manual_seed(HELD_OUT_SEED)
    x = binarize(data.x.cpu(), HELD_OUT_BINARIZATION[mode], generator).to(data.x.device)
    return ImageSet(x, data.y, data.image_shape, data.name)


def load_sets(d: configlib.DataConfig) -> dict[str, ImageSet]:
    """The data set a config's data section names, as read ({"train", "test"}; no split, no binarisation)."""
    return load_dataset(d.name, d.data_dir, download=d.download, path=d.path, verify=d.verify)


def prepare_data(cfg: configlib.RunConfig, device: torch.device | str = "cpu") -> Splits:
    """Load the data set a config names, split validation off, binarise the held-out sets."""
    d = cfg.data
    sets = load_sets(d)
    train, test = sets["train"], sets["test"]
    binary_model = families.get(cfg.model.name).binary_data(cfg.family)
    if binary_model and d.binarization == "none" and not d.allow_nonbinary_bernoulli and not is_binary(train.x):
        raise ValueError(
            f"data {d.name!r} has grey levels but the {cfg.model.name!r} model's likelihood is for binary data "
            "and data.binarization is 'none': binarise it (data.binarization=dynamic|static|threshold), "
            "choose a likelihood for grey levels (e.g. vae.likelihood=gaussian), or set "
            "data.allow_nonbinary_bernoulli=true to fit a Bernoulli to grey levels on purpose")
    valid = None
    if d.num_valid > 0:
        train, valid = split_validation(train, d.num_valid, seed=HELD_OUT_SEED)
    train, test = train.to(device), test.to(device)
    valid = None if valid is None else binarize_held_out(valid.to(device), d.binarization)
    return Splits(train, valid, binarize_held_out(test, d.binarization))


def as_image_set(x, name: str, device: torch.device | str = "cpu") -> ImageSet:
    """An array-like [N, D] of values in [0, 1] (numpy, torch, nested lists) as an ImageSet of N
    1 x 1 x D images; errors name `name`, the shape and the values found."""
    try:
        x = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: expected a 2-D array of numbers in [0, 1], got {type(x).__name__} ({e})") from None
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array [n_samples, n_features], got shape {tuple(x.shape)}")
    x = x.to(device=device, dtype=torch.float32).contiguous()
    return ImageSet(x, None, (1, 1, x.shape[1]), name)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked: it holds another run, or its files disagree."""


def default_run_dir(cfg: configlib.RunConfig) -> Path:
    preset = getattr(cfg.family, "preset", None) or cfg.model.name
    return Path("runs") / f"{cfg.data.name}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


LOCK_FILE = ".lock"  # in a run folder: held by the process training there (lock_run_dir)


def _claim(base: Path) -> Path:
    """Create base, or base-2, base-3, ...: mkdir without exist_ok is atomic, so runs started in the
    same second (the default names' resolution) each get a folder of their own."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in itertools.count(1):
        candidate = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def fresh_folder(path: str | Path | None, default: Path, force: bool, what: str, occupied: str,
                 error: type[Exception] = RunFolderError) -> Path:
    """A new folder for one run or report (`what`): `path` if it is empty or absent, else `error` with
    `occupied`, the likely owner and the way out (two never share a folder; force=True first moves the old one aside to
    <path>.replaced-<time>); `default`, made unique, when path is None."""
    if path is None:
        return _claim(default)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"--out {str(path)!r}: a file is in the way of the {what} folder")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise error(f"--out {str(path)!r} already holds files {occupied}, or pass --force to move it aside "
                        "first")
        aside = _claim(path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"))
        path.replace(aside)  # onto the empty folder just claimed: the name is ours alone
        print(f"moved what was in {str(path)!r} to {str(aside)!r}", flush=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_run_dir(path: str | Path | None, cfg: configlib.RunConfig, force: bool = False) -> Path:
    """The folder of a new run (fresh_folder): two runs never share one."""
    occupied = f"(another run?): continue that run with `vaekit train --resume {path}`, choose another folder"
    return fresh_folder(path, default_run_dir(cfg), force, "run", occupied)


def lock_run_dir(run_dir: Path):
    """An exclusive lock on a run folder, held while the returned file stays open (closing it, or the
    process ending in any way, releases it): a second process training in the same folder (a resume
    started while the first run still trains) is refused instead of interleaving two runs' checkpoints
    and metrics. Where the OS has no flock (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(run_dir / LOCK_FILE, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunFolderError(f"{str(run_dir)!r} is in use: another vaekit process is training in it; wait for it "
                             "to end (or stop it) before resuming, or choose another folder") from None
    return handle


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], run_dir: str | Path) -> None:
    """model.load_state_dict(state), a mismatch reported as a one-line error naming the run."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
        raise RunFolderError(f"{str(run_dir)!r}: the checkpoint's tensors do not fit the model its config "
                             f"builds ({detail})") from None


def run_config(run_dir: str | Path) -> configlib.RunConfig:
    """A run's config as its checkpoint records it (the truth the weights were made with); config.json
    must agree with it, else an error names the keys that differ. Without a checkpoint: config.json."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a vaekit run folder: it has no config.json")
    written = configlib.load_json(run_dir / "config.json")
    meta = checkpoint.metadata(run_dir)
    if meta is None:
        return written
    saved = configlib.from_dict(configlib.migrate(meta["config"]))
    differ = configlib.differences(saved, written)
    if differ:
        listed = ", ".join(f"{k} ({a!r} in the checkpoint, {b!r} in config.json)" for k, (a, b) in differ.items())
        raise RunFolderError(f"{str(run_dir)!r}: config.json disagrees with the checkpoint's own config on {listed}; "
                             "the checkpoint's is the one its weights were trained with: restore config.json")
    return saved


def load_run(run_dir: str | Path, device: str = "auto", device_key: str = "--device", data_dir: str | None = None
             ) -> tuple[configlib.RunConfig, torch.nn.Module]:
    """The resolved config and the model with its last checkpoint's weights, in eval mode (device_key: the
    option the device came from, for an error). data_dir: where the run's data set lives on this machine,
    if not where it was trained (its data.data_dir; the files are checked against their checksums)."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    if data_dir is not None:
        cfg = replace(cfg, data=replace(cfg.data, data_dir=data_dir))
    dev = resolve_device(device, device_key)
    groups, meta = checkpoint.load(run_dir, device=dev)
    # checkpoints written before the data spec existed: binary unless the data were kept as grey levels
    spec = DataSpec(meta["data_dim"], tuple(meta["image_shape"]),
                    meta.get("binary", cfg.data.binarization != "none"))
    model = families.get(cfg.model.name).build(cfg.family, spec).to(dev)
    load_weights(model, groups["model"], run_dir)
    return cfg, model.eval()
