"""Image data sets held as one float tensor in memory, and a loader that slices them.

Every data set is a dict {"train": ImageSet, "test": ImageSet}; an ImageSet is a
[N, D] float32 tensor in [0, 1] (plus optional [N] int64 labels). Mini-batches
are index slices of that tensor, so the hot path has no per-sample Python.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import http.client
import math
import os
import shutil
import tempfile
import tokenize
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

__all__ = [
    "IDXError", "read_idx", "ImageSet", "load_dataset", "DATASETS", "split_validation",
    "BINARIZATIONS", "binarize", "bernoulli_draw", "is_binary", "Loader",
]

# -----------------------------------------------------------------------------
# IDX files (the MNIST container format)


class DataError(ValueError):
    """A data file or array vaekit cannot use; the message names the file and what was wrong."""


class IDXError(DataError):
    """A malformed IDX file; the message names the file and what was wrong."""


_IDX_DTYPES = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# what a corrupt or truncated gzip stream raises, depending on where it breaks
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_contents(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except _GZIP_ERRORS as e:
        raise IDXError(f"{path}: corrupt or truncated gzip data ({e})") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (raw or gzip) into a native-endian, writable array of the stored shape."""
    path = Path(path)
    buf = _read_contents(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise IDXError(f"{path}: not an IDX file: expected magic 00 00 <dtype> <ndim>, "
                       f"found {buf[:4].hex(' ') or 'an empty file'}")
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IDXError(f"{path}: unknown IDX dtype code 0x{code:02X}, expected one of {known}")
    if ndim < 1:
        raise IDXError(f"{path}: IDX header declares ndim={ndim}, expected at least 1")
    start = 4 + 4 * ndim
    if len(buf) < start:
        raise IDXError(f"{path}: truncated header: expected {start} bytes for {ndim} dims, found {len(buf)}")
    shape = tuple(int(d) for d in np.frombuffer(buf, ">u4", ndim, 4))
    dtype = _IDX_DTYPES[code]
    expected, found = math.prod(shape) * dtype.itemsize, len(buf) - start
    if found != expected:
        raise IDXError(f"{path}: expected {expected} bytes of {dtype.name} data for shape {shape}, found {found}")
    # frombuffer views immutable bytes; the copy makes it writable and native-endian
    return np.frombuffer(buf, dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))


# -----------------------------------------------------------------------------
# ImageSet


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on tensors would raise
class ImageSet:
    """N images as rows of one tensor.

    x: [N, D] float32 in [0, 1], contiguous; y: [N] int64 labels or None;
    image_shape: (C, H, W) with C*H*W == D.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    image_shape: tuple[int, int, int]
    name: str

    def __post_init__(self):
        x, y = self.x, self.y
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.float32:
            raise ValueError(f"ImageSet {self.name!r}: x must be a [N, D] float32 tensor, "
                             f"got {getattr(x, 'dtype', type(x).__name__)} of shape {tuple(getattr(x, 'shape', ()))}")
        if not x.is_contiguous():
            raise ValueError(f"ImageSet {self.name!r}: x must be contiguous (call .contiguous())")
        shape = tuple(int(s) for s in self.image_shape)
        if len(shape) != 3 or math.prod(shape) != x.shape[1]:
            raise ValueError(f"ImageSet {self.name!r}: image_shape must be (C, H, W) with C*H*W == D={x.shape[1]}, "
                             f"got {self.image_shape}")
        object.__setattr__(self, "image_shape", shape)
        if x.numel():
            lo, hi = torch.aminmax(x)
            if not (lo >= 0 and hi <= 1):  # written so that NaN fails too
                raise ValueError(f"ImageSet {self.name!r}: x must lie in [0, 1], found min {lo:g}, max {hi:g}")
        if y is not None and (not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != (len(x),)):
            raise ValueError(f"ImageSet {self.name!r}: y must be None or a [{len(x)}] int64 tensor, "
                             f"got {getattr(y, 'dtype', type(y).__name__)} of shape {tuple(getattr(y, 'shape', ()))}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> "ImageSet":
        """The same images and labels on another device."""
        return ImageSet(self.x.to(device), None if self.y is None else self.y.to(device), self.image_shape, self.name)


@dataclass(frozen=True)
class DataSpec:
    """What a model builder needs to know of its data: num_dims D, image_shape (C, H, W) with
    C*H*W == D (1 x 1 x D for data without image structure), and whether the values the model sees
    are binary (0/1) or grey levels."""

    num_dims: int
    image_shape: tuple[int, int, int]
    binary: bool

    @classmethod
    def of(cls, data: ImageSet, binarization: str) -> "DataSpec":
        """The spec of a training set as a model sees it: binarised draws, or the values themselves."""
        binary = binarization != "none" or is_binary(data.x)
        return cls(data.x.shape[1], tuple(data.image_shape), binary)


def _to_unit_float(images: np.ndarray) -> torch.Tensor:
    """[N, ...] uint8 or [0, 1] float array -> [N, D] contiguous float32 tensor in [0, 1]."""
    flat = images.reshape(len(images), -1)
    if flat.dtype == np.uint8:
        return torch.from_numpy(flat.astype(np.float32) / np.float32(255.0))
    return torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))


def _subset(data: ImageSet, idx: torch.Tensor) -> ImageSet:
    """The rows idx ([K] int64) of data, as a new ImageSet (copies)."""
    y = None if data.y is None else data.y[idx]
    return ImageSet(data.x[idx].contiguous(), y, data.image_shape, data.name)


def _permutation(n: int, seed: int) -> torch.Tensor:
    """[n] int64 permutation for fixed splits; RandomState's stream is frozen by NumPy, so the
    split is the same on every machine and every NumPy/torch version."""
    return torch.from_numpy(np.random.RandomState(seed).permutation(n).astype(np.int64))


def _split(data: ImageSet, num_second: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """(rest, num_second random rows) of data; each part keeps the original row order."""
    perm = _permutation(len(data), seed)
    rest, second = perm[num_second:].sort().values, perm[:num_second].sort().values
    return _subset(data, rest), _subset(data, second)


def split_validation(data: ImageSet, num_valid: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Splits data into (train_rest, valid) with len(valid) == num_valid, by a seeded permutation."""
    n = len(data)
    if isinstance(num_valid, bool) or not isinstance(num_valid, int) or not 1 <= num_valid <= n - 1:
        raise ValueError(f"num_valid must be an int in [1, {n - 1}] for {data.name!r} with {n} examples, "
                         f"got {num_valid!r}")
    return _split(data, num_valid, seed)


# -----------------------------------------------------------------------------
# digits: sklearn's embedded 8x8 digits, so everything runs offline

_DIGITS_NUM_TEST = 360  # of 1797, leaving 1437 for training


def _load_digits(*, data_dir=None, download=True, path=None, verify=True) -> dict[str, ImageSet]:
    """1797 8x8 digits (values 0..16 scaled to [0, 1]), split 1437 train / 360 test by seed 0."""
    _reject_path("digits", path)
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

    d = load_digits()
    x = torch.from_numpy((d.data / 16.0).astype(np.float32))
    full = ImageSet(x, torch.from_numpy(d.target.astype(np.int64)), (1, 8, 8), "digits")
    train, test = _split(full, _DIGITS_NUM_TEST, seed=0)
    return {"train": train, "test": test}


def _reject_path(name: str, path) -> None:
    if path is not None:
        raise ValueError(f"path={str(path)!r} is only used by the 'npy' data set, not by {name!r}")


# -----------------------------------------------------------------------------
# mnist / fashion-mnist: the four standard IDX files, found on disk or downloaded

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_STEMS = tuple(stem for pair in _IDX_FILES.values() for stem in pair)

# SHA-256 of the DECOMPRESSED files: robust to re-compression (Debian's .gz differ from upstream's)
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
# tried in order; each serves <stem>.gz
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
# environment variables naming the folder that holds one data set's files directly
ENV_DIRS = {"mnist": "VAEKIT_MNIST_DIR", "fashion-mnist": "VAEKIT_FASHION_MNIST_DIR"}
# where distributions install the files (Debian: apt-get install dataset-fashion-mnist)
SYSTEM_DIRS = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}
_DOWNLOAD_TIMEOUT_S = 60
_NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError and timeouts are OSErrors


def cache_dir(name: str) -> Path:
    """vaekit's cache for `name` (a data set, the classifiers, the zoo's working copies):
    $VAEKIT_CACHE_DIR/name, else ~/.cache/vaekit/name."""
    return Path(os.environ.get("VAEKIT_CACHE_DIR") or "~/.cache/vaekit").expanduser() / name


def _search_dirs(name: str) -> list[Path]:
    """Where to look when no folder is given, in priority order: the environment, system folders, the cache."""
    dirs = []
    if os.environ.get(ENV_DIRS[name]):
        dirs.append(Path(os.environ[ENV_DIRS[name]]).expanduser())
    if os.environ.get("VAEKIT_DATA_DIR"):
        root = Path(os.environ["VAEKIT_DATA_DIR"]).expanduser()
        dirs += [root, root / name]
    return dirs + [Path(d) for d in SYSTEM_DIRS.get(name, ())] + [cache_dir(name)]


def _find_file(folder: Path, stem: str) -> Path | None:
    """folder/stem or folder/stem.gz, whichever exists (uncompressed first)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _content_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's decompressed contents (the file itself if not gzip)."""
    h = hashlib.sha256()
    with (gzip.open if _is_gzip(path) else open)(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, dest: Path, sha256: str) -> None:
    """Downloads url to dest; dest appears (atomically) only once its checksum is verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        try:
            digest = _content_sha256(Path(tmp))
        except _GZIP_ERRORS as e:
            raise ValueError(f"{url}: downloaded file is not valid gzip data ({e}); it was discarded") from e
        if digest != sha256:
            raise ValueError(f"{url}: SHA-256 of the decompressed download is {digest}, expected {sha256}; "
                             f"the file was discarded")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _download(name: str, stem: str, folder: Path) -> None:
    """Fetches folder/<stem>.gz from the first mirror that answers; OSError listing all if none does.
    A checksum mismatch is not retried elsewhere: it raises ValueError at once."""
    failures = []
    for base in MIRRORS[name]:
        url = base + stem + ".gz"
        try:
            return _fetch(url, folder / f"{stem}.gz", SHA256[name][stem])
        except _NETWORK_ERRORS as e:
            failures.append(f"{url} ({e})")
    raise OSError("; ".join(failures))


def _missing_error(name: str, searched: list[Path], why: str) -> FileNotFoundError:
    files = ", ".join(f"{stem}[.gz]" for stem in _IDX_STEMS)
    folders = "\n  ".join(str(d) for d in searched)
    return FileNotFoundError(
        f"{name}: could not find the IDX files {files} (all four, gzipped or not) in any of:\n  {folders}\n"
        f"and {why}. Put the four files in a folder and pass it with --data-dir DIR (data_dir=DIR), "
        f"or set VAEKIT_DATA_DIR=DIR (DIR may hold the files or a {name}/ subfolder with them)"
        + (f", or set {ENV_DIRS[name]} to the folder holding them." if name in ENV_DIRS else "."))


def _explicit_folder(name: str, data_dir) -> Path:
    """data_dir (or its <name>/ subfolder) when it holds all four files; else an error naming the files
    it lacks. An explicit choice is used as given: no search elsewhere, no download."""
    folders = [Path(data_dir).expanduser(), Path(data_dir).expanduser() / name]
    for folder in folders:
        if all(_find_file(folder, stem) for stem in _IDX_STEMS):
            return folder
    best = max(folders, key=lambda f: sum(_find_file(f, stem) is not None for stem in _IDX_STEMS))
    missing = [f"{stem}[.gz]" for stem in _IDX_STEMS if _find_file(best, stem) is None]
    where = "does not exist" if not best.is_dir() else f"lacks {', '.join(missing)}"
    raise FileNotFoundError(f"{name}: data_dir {str(best)!r} {where}; a folder given explicitly is used as "
                            "given (nothing else is searched or downloaded)")


def _locate_idx_files(name: str, data_dir, download: bool) -> Path:
    """The folder given, else the first folder of the search holding all four files, else the cache after
    downloading the missing files into it (if allowed)."""
    if data_dir is not None:
        return _explicit_folder(name, data_dir)
    searched = _search_dirs(name)
    for folder in searched:
        if all(_find_file(folder, stem) for stem in _IDX_STEMS):
            return folder
    if not download:
        raise _missing_error(name, searched, "download=False")
    cache = cache_dir(name)
    try:
        for stem in _IDX_STEMS:
            if _find_file(cache, stem) is None:
                _download(name, stem, cache)
    except _NETWORK_ERRORS as e:
        raise _missing_error(name, searched, f"downloading them failed: {e}") from e
    return cache


def _read_idx_split(name: str, images_path: Path, labels_path: Path) -> ImageSet:
    """One split from its two IDX files: images [N, 28, 28] uint8, labels [N] in 0..9."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IDXError(f"{images_path}: expected uint8 images of shape [N, 28, 28], "
                       f"found {images.dtype} of shape {images.shape}")
    if labels.dtype != np.uint8 or labels.shape != (len(images),):
        raise IDXError(f"{labels_path}: expected [{len(images)}] uint8 labels to match {images_path.name}, "
                       f"found {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.max() > 9:
        raise IDXError(f"{labels_path}: expected labels in 0..9, found {labels.max()}")
    return ImageSet(_to_unit_float(images), torch.from_numpy(labels.astype(np.int64)), (1, 28, 28), name)


def _verified_record() -> Path:
    return cache_dir("verified.json")


def _verify_file(name: str, stem: str, path: Path, seen: dict) -> bool:
    """Check path against the canonical SHA-256 of its contents, unless `seen` (the cache of verified
    files) already holds it at this size and modification time. True when it was hashed now."""
    stat = path.stat()
    key, mark = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    if seen.get(key) == mark:
        return False
    try:
        digest = _content_sha256(path)
    except _GZIP_ERRORS as e:
        raise IDXError(f"{path}: not readable as {'gzip' if _is_gzip(path) else 'raw'} data ({e})") from None
    if digest != SHA256[name][stem]:
        raise IDXError(f"{path}: its contents differ from the canonical {name} file {stem} (SHA-256 {digest[:16]}..., "
                       f"expected {SHA256[name][stem][:16]}...): a damaged file, a file under another's name "
                       "(train and test swapped?) or another variant; to use it anyway, set data.verify = false "
                       "(load_dataset(..., verify=False))")
    seen[key] = mark
    return True


def _verify_folder(name: str, folder: Path) -> None:
    """The four files of folder checked against the known checksums, the first time each is seen: the
    result is cached by size and mtime in the cache folder, so later runs hash nothing."""
    record = _verified_record()
    try:
        seen = json.loads(record.read_text()) if record.is_file() else {}
    except (OSError, ValueError):
        seen = {}
    hashed = [_verify_file(name, stem, _find_file(folder, stem), seen) for stem in _IDX_STEMS]
    if any(hashed):
        with contextlib.suppress(OSError):  # a read-only cache only costs the hashing next time
            record.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=".verified.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(seen, f)
            os.replace(tmp, record)


def _load_idx_dataset(name: str, *, data_dir=None, download=True, path=None, verify=True) -> dict[str, ImageSet]:
    """MNIST-format data set: 60000 train / 10000 test images (1, 28, 28), uint8 scaled to [0, 1]."""
    _reject_path(name, path)
    folder = _locate_idx_files(name, data_dir, download)
    if verify:
        _verify_folder(name, folder)
    return {split: _read_idx_split(name, _find_file(folder, images), _find_file(folder, labels))
            for split, (images, labels) in _IDX_FILES.items()}


# -----------------------------------------------------------------------------
# npy: the user's own images from a .npy or .npz file

_NPY_TEST_FRACTION = 0.1


def _image_shape(arr: np.ndarray, where: str) -> tuple[int, int, int]:
    """(C, H, W) for an [N, H, W], [N, C, H, W] or [N, D] array (D a perfect square -> (1, s, s))."""
    if arr.ndim == 2:
        d, s = arr.shape[1], math.isqrt(arr.shape[1])
        return (1, s, s) if s * s == d else (1, 1, d)
    if arr.ndim == 3:
        return (1, *arr.shape[1:])
    if arr.ndim == 4:
        return tuple(arr.shape[1:])
    raise DataError(f"{where}: expected an array of shape [N, H, W], [N, C, H, W] or [N, D], got {arr.shape}")


def _npy_images(arr: np.ndarray, where: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Validated [N, D] float32 tensor in [0, 1] and its image_shape from a uint8 or float array."""
    shape = _image_shape(arr, where)
    if arr.shape[0] == 0 or math.prod(shape) == 0:
        raise DataError(f"{where}: holds no images (shape {arr.shape})")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{where}: expected uint8 (0..255) or float (in [0, 1]) values, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and arr.size:
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (lo >= 0 and hi <= 1):  # written so that NaN fails too
            raise DataError(f"{where}: float images must lie in [0, 1], found min {lo:g}, max {hi:g}")
    return _to_unit_float(arr), shape


def _npy_labels(arr: np.ndarray | None, n: int, where: str) -> torch.Tensor | None:
    if arr is None:
        return None
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{where}: expected [{n}] integer labels, got {arr.dtype} of shape {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


_NPY_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK\x03\x04"}
# what numpy raises on a damaged .npy / .npz, depending on where the damage is
# tokenize.TokenError and SyntaxError: numpy >= 2.4 tokenises the .npy header dict and lets these escape
_NUMPY_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError, KeyError,
                 tokenize.TokenError, SyntaxError)


def _read_numpy(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a .npy ({"": array}) or .npz file, read without unpickling; DataError naming the
    file for anything that is not such a file, whole."""
    kind = path.suffix.lower()
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC[kind]))
    if head != _NPY_MAGIC[kind]:
        raise DataError(f"{path}: not a NumPy {kind} file (it starts with {head!r}, not {_NPY_MAGIC[kind]!r})")
    try:
        if kind == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except _NUMPY_ERRORS as e:
        why = "it holds Python objects, which vaekit never unpickles" if "pickle" in str(e) else str(e) or type(e).__name__
        raise DataError(f"{path}: not a readable {kind} file ({why})") from None


def _npz_splits(path: Path) -> dict[str, ImageSet]:
    """train/test ImageSets from the arrays train, test (and optional train_labels, test_labels)."""
    arrays = _read_numpy(path)
    if "train" not in arrays or "test" not in arrays:
        raise DataError(f"{path}: expected arrays 'train' and 'test' (optional 'train_labels', 'test_labels'), "
                         f"found {sorted(arrays)}")
    out = {}
    for split in ("train", "test"):
        x, shape = _npy_images(arrays[split], f"{path}[{split!r}]")
        y = _npy_labels(arrays.get(f"{split}_labels"), len(x), f"{path}[{split + '_labels'!r}]")
        out[split] = ImageSet(x, y, shape, "npy")
    if out["train"].image_shape != out["test"].image_shape:
        raise DataError(f"{path}: train images have shape {out['train'].image_shape} "
                         f"but test images have {out['test'].image_shape}")
    return out


def _npy_splits(path: Path) -> dict[str, ImageSet]:
    """One array split 90/10 into train/test by a fixed seed-0 permutation."""
    arr = _read_numpy(path)[""]
    x, shape = _npy_images(arr, str(path))
    if len(x) < 2:
        raise DataError(f"{path}: need at least 2 images to split into train and test, found {len(x)}")
    train, test = _split(ImageSet(x, None, shape, "npy"), max(1, int(len(x) * _NPY_TEST_FRACTION)), seed=0)
    return {"train": train, "test": test}


_NPY_READERS = {".npy": _npy_splits, ".npz": _npz_splits}


def _load_npy(*, data_dir=None, download=True, path=None, verify=True) -> dict[str, ImageSet]:
    """The user's images from path (.npy: one array split 90/10; .npz: arrays train and test)."""
    if path is None:
        raise ValueError("the 'npy' data set needs path=<file.npy or file.npz>")
    path = Path(path).expanduser()
    if path.suffix.lower() not in _NPY_READERS:
        raise ValueError(f"path={str(path)!r}: expected a {' or '.join(_NPY_READERS)} file")
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no such file")
    return _NPY_READERS[path.suffix.lower()](path)


# -----------------------------------------------------------------------------
# registry

DATASETS: dict[str, Callable[..., dict[str, ImageSet]]] = {
    "digits": _load_digits,
    "mnist": partial(_load_idx_dataset, "mnist"),
    "fashion-mnist": partial(_load_idx_dataset, "fashion-mnist"),
    "npy": _load_npy,
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 path: str | os.PathLike | None = None, verify: bool = True) -> dict[str, ImageSet]:
    """{"train": ImageSet, "test": ImageSet} of the named data set (see DATASETS). Files of data sets
    whose canonical checksums are known (MNIST, Fashion-MNIST) are verified unless verify=False."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}, expected one of {sorted(DATASETS)}")
    return DATASETS[name](data_dir=data_dir, download=download, path=path, verify=verify)


# -----------------------------------------------------------------------------
# binarisation

BINARIZATIONS = ("dynamic", "static", "threshold", "none")


def bernoulli_draw(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw of every entry: 1 where u < p, u ~ U[0, 1).

    On CPU this is draw for draw what torch.bernoulli(p, generator=g) gives from the same generator
    state (it compares the same uniforms), about 3x faster: the draw of a training batch would
    otherwise cost a quarter of a VAE step."""
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return (u < p).to(p.dtype)


_BINARIZERS = {
    # a Bernoulli draw of every pixel with p = intensity; "static" is the same draw made once
    "dynamic": bernoulli_draw,
    "static": bernoulli_draw,
    "threshold": lambda x, g: (x > 0.5).to(x.dtype),
    "none": lambda x, g: x,
}


def _check_binarization(mode: str) -> None:
    if mode not in _BINARIZERS:
        raise ValueError(f"binarization must be one of {BINARIZATIONS}, got {mode!r}")


def binarize(x: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """x (any shape, values in [0, 1]) binarised by mode; same shape and dtype ("none" returns x)."""
    _check_binarization(mode)
    return _BINARIZERS[mode](x, generator)


def is_binary(x: torch.Tensor) -> bool:
    """True when every value of x is 0 or 1."""
    return bool(((x == 0) | (x == 1)).all())


# -----------------------------------------------------------------------------
# Loader


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank's part when n rows are split over world ranks as torch.tensor_split does:
    the first n % world parts one row longer."""
    size, extra = divmod(n, world)
    lo = rank * size + min(rank, extra)
    return lo, lo + size + (rank < extra)


class Loader:
    """Mini-batches of one ImageSet as index slices of its in-memory tensor.

    shard = (rank, world): every rank draws the same global batch (the same shuffle and, for dynamic
    binarisation, the same uniforms for all of it) and yields its tensor_split part, so the parts of
    one step, taken in rank order, are the batch one process yields with the same seed, draw for draw."""

    def __init__(self, data: ImageSet, batch_size: int, *, binarization: str = "none", shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, shard: tuple[int, int] = (0, 1)):
        if not isinstance(data, ImageSet):
            raise TypeError(f"data must be an ImageSet, got {type(data).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if drop_last and batch_size > len(data):
            raise ValueError(f"batch_size={batch_size} with drop_last=True yields no batch from "
                             f"{data.name!r} with {len(data)} examples")
        rank, world = shard
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in shard) or not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world) ints with 0 <= rank < world, got {shard!r}")
        if batch_size < world:
            raise ValueError(f"batch_size={batch_size} is the global batch, split over {world} ranks: expected "
                             f">= {world}, so that every rank has examples")
        self.shard = (rank, world)
        _check_binarization(binarization)
        if binarization in ("static", "threshold"):
            # once, from its own generator: the binary data depend on the seed alone
            x = binarize(data.x, binarization, torch.Generator(device=data.x.device).manual_seed(seed))
            data = replace(data, x=x)
        self.data, self.batch_size, self.binarization = data, batch_size, binarization
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        # shuffling and dynamic draws; on the data's device so a GPU run never copies batches back and forth
        self.generator = torch.Generator(device=data.x.device).manual_seed(seed)

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """One epoch of [B, D] float32 batches (the last one smaller unless drop_last)."""
        x, g, n, b = self.data.x, self.generator, len(self.data), self.batch_size
        order = torch.randperm(n, generator=g, device=x.device) if self.shuffle else torch.arange(n, device=x.device)
        stop = n - n % b if self.drop_last else n
        for i in range(0, stop, b):
            rows = order[i:i + b]
            lo, hi = shard_bounds(len(rows), *self.shard)
            batch = x[rows[lo:hi]]  # a copy: callers may modify it in place
            if self.binarization == "dynamic":
                # the uniforms of the whole global batch: each rank's generator stays in step with one process's
                u = torch.rand((len(rows), *x.shape[1:]), generator=g, device=x.device, dtype=x.dtype)
                batch = (u[lo:hi] < batch).to(x.dtype)
            yield batch

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator state; save it between epochs to resume bit-for-bit."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        g = state.get("generator") if isinstance(state, dict) else None
        if not isinstance(g, torch.Tensor) or g.dtype != torch.uint8:
            raise ValueError(f"Loader state must be {{'generator': uint8 tensor}}, got {state!r:.200}")
        self.generator.set_state(g.cpu())
