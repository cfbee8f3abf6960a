"""vaekit: deep generative models around the variational autoencoder."""

__version__ = "0.1.0"


def load(name_or_path, device: str = "cpu"):
    """The trained model of a run folder (an nn.Module in eval mode, its last checkpoint's weights) on
    `device` ("cpu", "cuda", "cuda:N" or "auto"). Its methods are its family's: `sample`, `log_prob`
    or the bound it has, `encode_mean` / `decode_mean` where they exist (see vaekit.protocols).

        model = vaekit.load("runs/digits-vae-20250101-120000")
        x = model.sample(16)
    """
    from .runs import load_run  # imported on use: `import vaekit` does no work (nor loads torch)
    return load_run(_run_folder(name_or_path), device, "load: device")[1]


def _run_folder(name_or_path):
    """Where a model named by the user lives: a run folder's path, or a published model's name
    ("digits-vae", also as "zoo:digits-vae"; vaekit.zoo) when no such path exists."""
    import os
    from pathlib import Path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load: expected the path of a run folder (str or os.PathLike), got "
                        f"{type(name_or_path).__name__}")
    from . import zoo
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path).removeprefix(zoo.PREFIX) in zoo.names():
        return zoo.entry(str(name_or_path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"load: {str(path)!r} is not a vaekit run folder: it has no config.json")
        return path
    what = "a file, not a folder" if path.exists() else "no such folder"
    raise ValueError(f"load: {str(name_or_path)!r}: {what}; load accepts the path of a run folder written by "
                     "`vaekit train` (config.json + checkpoint.safetensors) or the name of a published model: "
                     f"{', '.join(zoo.names()) or 'none'} (`vaekit zoo` lists them with their figures)")

