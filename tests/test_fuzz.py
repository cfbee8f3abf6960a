"""Fuzzing the data readers: random truncations and byte flips of small valid files either load an
array of the declared shape and dtype, or raise vaekit's own DataError; never another exception, never
a hang. For MNIST, whose canonical checksums are known, every changed byte is caught."""

import gzip
import random
import shutil
import time

import numpy as np
import pytest

from vaekit import data as D
from vaekit.data import DataError, load_dataset, read_idx

CASES = 300
BUDGET_S = 60.0


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def mutate(raw: bytes, rng: random.Random) -> bytes:
    """A truncation, a flipped byte, or both."""
    raw = bytearray(raw)
    if rng.random() < 0.5 and len(raw) > 1:
        raw = raw[:rng.randrange(len(raw))]
    if raw and rng.random() < 0.7:
        raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
    return bytes(raw)


@pytest.fixture
def originals(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    floats = rng.random((12, 3, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", floats)
    np.savez_compressed(tmp_path / "x.npz", train=floats, test=floats[:4], train_labels=np.arange(12) % 3)
    return {"idx": idx_bytes(images), "idx.gz": gzip.compress(idx_bytes(images)),
            ".npy": (tmp_path / "x.npy").read_bytes(), ".npz": (tmp_path / "x.npz").read_bytes()}


def read(kind: str, path):
    if kind.startswith("idx"):
        arr = read_idx(path)
        assert arr.dtype == np.uint8 and arr.ndim >= 1
        return
    sets = load_dataset("npy", path=path)
    for split in sets.values():  # a flipped pixel byte in a user's own file cannot be detected: the shape can
        assert split.x.dtype.is_floating_point and split.x.dim() == 2 and split.x.shape[1] == 9


def test_damaged_files_load_or_raise_data_error(tmp_path, originals):
    rng, start, outcomes = random.Random(0), time.perf_counter(), {"loaded": 0, "refused": 0}
    for case in range(CASES):
        kind = rng.choice(sorted(originals))
        path = tmp_path / f"case{case}{'.npy' if kind == '.npy' else '.npz' if kind == '.npz' else '.' + kind}"
        path.write_bytes(mutate(originals[kind], rng))
        try:
            read(kind, path)
            outcomes["loaded"] += 1
        except DataError:
            outcomes["refused"] += 1
        path.unlink()
        assert time.perf_counter() - start < BUDGET_S, f"too slow at case {case}"
    assert outcomes["refused"] > CASES // 2 and sum(outcomes.values()) == CASES, outcomes


@pytest.mark.parametrize("payload, needle", [
    (b"1,2,3\n4,5,6\n", "not a NumPy .npy file"),
    (b"", "not a NumPy .npy file"),
])
def test_a_text_file_named_npy_is_named_for_what_it_is(tmp_path, payload, needle):
    (tmp_path / "t.npy").write_bytes(payload)
    with pytest.raises(DataError, match=needle):
        load_dataset("npy", path=tmp_path / "t.npy")


def test_empty_and_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(DataError, match="holds no images"):
        load_dataset("npy", path=tmp_path / "empty.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="never unpickles"):
        load_dataset("npy", path=tmp_path / "objects.npy")


@pytest.mark.mnist
def test_every_changed_byte_of_mnist_is_caught(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "m"
    folder.mkdir()
    for stem in D._IDX_STEMS:
        shutil.copy(D._find_file(mnist_dir, stem), folder / D._find_file(mnist_dir, stem).name)
    load_dataset("mnist", folder)  # verified once, then cached by size and mtime
    rng = random.Random(1)
    for case in range(12):
        stem = rng.choice(["t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"])
        path = D._find_file(folder, stem)
        original = path.read_bytes()
        raw = bytearray(gzip.decompress(original) if original[:2] == b"\x1f\x8b" else original)
        raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
        path.write_bytes(gzip.compress(bytes(raw)) if original[:2] == b"\x1f\x8b" else bytes(raw))
        with pytest.raises(DataError):
            load_dataset("mnist", folder)
        path.write_bytes(original)
