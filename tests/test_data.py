"""Tests for vaekit.data: IDX parsing, data set loading/search/download, binarisation, Loader."""

import gzip
import hashlib
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit import data as D
from vaekit.data import (BINARIZATIONS, DATASETS, IDXError, ImageSet, Loader, binarize, is_binary,
                         load_dataset, read_idx, split_validation)

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of arr, written independently of the reader under test."""
    big = arr.astype(arr.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[big.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + big.tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_fake_mnist(folder: Path, n_train: int, n_test: int, gz: bool = True, seed: int = 0) -> dict[str, str]:
    """The four IDX files with random content; returns the SHA-256 of each decompressed file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        STEMS[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        STEMS[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        STEMS[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    digests = {}
    for stem, arr in arrays.items():
        raw = idx_bytes(arr)
        write(folder / (stem + ".gz" if gz else stem), raw, gz)
        digests[stem] = hashlib.sha256(raw).hexdigest()
    return digests


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No user data folders, no system folders, an empty cache: data set search is hermetic."""
    for var in ("VAEKIT_DATA_DIR", "VAEKIT_MNIST_DIR", "VAEKIT_FASHION_MNIST_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VAEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(D, "SYSTEM_DIRS", {})
    return tmp_path / "cache"


def make_set(x, y=None, shape=None, name="t"):
    x = torch.as_tensor(x, dtype=torch.float32).contiguous()
    return ImageSet(x, y, shape or (1, 1, x.shape[1]), name)


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype,shape", [("u1", (3, 4, 5)), ("i1", (7,)), (">i2", (2, 3)),
                                         (">i4", (4, 1)), (">f4", (2, 2, 2)), (">f8", (5,))])
def test_read_idx_round_trip(tmp_path, gz, dtype, shape):
    rng = np.random.default_rng(1)
    arr = (rng.normal(size=shape) * 100).astype(dtype)
    # the name says nothing: gzip must be detected from the magic bytes
    out = read_idx(write(tmp_path / "f.idx", idx_bytes(arr), gz))
    assert out.shape == shape and out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_read_idx_gz_named_file_that_is_raw(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "x.gz", idx_bytes(arr))), arr)


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize("payload,needle", [
    (b"\x01\x00" + GOOD[2:], "magic"),
    (GOOD[:2] + b"\x0a" + GOOD[3:], "dtype code 0x0A"),
    (GOOD[:3] + b"\x00", "ndim=0"),
    (GOOD[:-1], "expected 12 bytes of uint8 data for shape (3, 4), found 11"),
    (GOOD + b"\x00", "expected 12 bytes of uint8 data for shape (3, 4), found 13"),
    (GOOD[:4] + struct.pack(">2I", 5, 4) + GOOD[12:], "expected 20 bytes of uint8 data for shape (5, 4), found 12"),
    (GOOD[:10], "truncated header"),
    (b"", "empty"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_malformed(tmp_path, payload, needle, gz):
    path = write(tmp_path / "bad-idx1-ubyte", payload, gz)
    with pytest.raises(IDXError, match="bad-idx1-ubyte") as info:
        read_idx(path)
    assert needle in str(info.value)


def test_read_idx_truncated_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8)))
    path = write(tmp_path / "cut.gz", blob[: len(blob) // 2])
    with pytest.raises(IDXError, match=r"cut\.gz.*gzip"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    blob = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8))))
    blob[len(blob) // 2] ^= 0xFF
    blob[len(blob) // 2 + 1] ^= 0xFF
    with pytest.raises(IDXError, match=r"flipped\.gz.*gzip"):
        read_idx(write(tmp_path / "flipped.gz", bytes(blob)))


# ---------------------------------------------------------------- ImageSet / split_validation


def test_imageset_validation():
    ok = make_set(torch.rand(4, 6), shape=(1, 2, 3))
    assert len(ok) == 4 and ok.image_shape == (1, 2, 3)
    with pytest.raises(ValueError, match="float32"):
        ImageSet(torch.rand(4, 6, dtype=torch.float64), None, (1, 2, 3), "t")
    with pytest.raises(ValueError, match="C\\*H\\*W"):
        make_set(torch.rand(4, 6), shape=(1, 2, 2))
    with pytest.raises(ValueError, match="max 2"):
        make_set(torch.full((4, 6), 2.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_set(torch.full((4, 6), float("nan")))
    with pytest.raises(ValueError, match="int64"):
        make_set(torch.rand(4, 6), y=torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="contiguous"):
        ImageSet(torch.rand(6, 4).t(), None, (1, 1, 6), "t")


def test_split_validation_sizes_disjoint_and_seeded():
    n = 50
    data = make_set(torch.arange(n).float()[:, None] / n, y=torch.arange(n))
    rest, valid = split_validation(data, 12, seed=3)
    assert (len(rest), len(valid)) == (38, 12)
    ids = torch.cat([rest.y, valid.y])
    assert sorted(ids.tolist()) == list(range(n))
    torch.testing.assert_close(rest.x[:, 0] * n, rest.y.float())  # x and y stay paired
    again = split_validation(data, 12, seed=3)[1]
    other = split_validation(data, 12, seed=4)[1]
    assert torch.equal(again.y, valid.y) and not torch.equal(other.y, valid.y)
    for bad in (0, n, -1, 2.5):
        with pytest.raises(ValueError, match="num_valid"):
            split_validation(data, bad)


# ---------------------------------------------------------------- digits / npy


def test_digits():
    ds = load_dataset("digits")
    train, test = ds["train"], ds["test"]
    assert (len(train), len(test)) == (1437, 360)
    for s in (train, test):
        assert s.x.shape[1] == 64 and s.image_shape == (1, 8, 8) and s.x.dtype == torch.float32
        assert s.x.min() == 0 and s.x.max() == 1 and s.y.min() == 0 and s.y.max() == 9
    # values are k/16: scaling is exact
    assert torch.equal(train.x * 16, (train.x * 16).round())
    from sklearn.datasets import load_digits
    total = torch.cat([train.x, test.x]).sum().item()
    assert total == pytest.approx(load_digits().data.sum() / 16.0, rel=1e-6)
    assert torch.equal(load_dataset("digits")["test"].y, test.y)  # fixed split


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="digits.*fashion-mnist.*mnist.*npy"):
        load_dataset("cifar")
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "npy"}


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (20, 3, 4, 5), dtype=np.uint8)
    test = rng.random((6, 3, 4, 5)).astype(np.float64)
    path = tmp_path / "mine.npz"
    np.savez(path, train=train, test=test, train_labels=np.arange(20))
    ds = load_dataset("npy", path=path)
    assert ds["train"].image_shape == (3, 4, 5) and ds["train"].x.shape == (20, 60)
    torch.testing.assert_close(ds["train"].x * 255, torch.from_numpy(train.reshape(20, -1)).float())
    torch.testing.assert_close(ds["test"].x, torch.from_numpy(test.reshape(6, -1)).float())
    assert torch.equal(ds["train"].y, torch.arange(20)) and ds["test"].y is None


@pytest.mark.parametrize("shape,image_shape", [((30, 7, 9), (1, 7, 9)), ((30, 49), (1, 7, 7)),
                                               ((30, 10), (1, 1, 10))])
def test_npy_split_and_shapes(tmp_path, shape, image_shape):
    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    path = tmp_path / "mine.npy"
    np.save(path, arr)
    ds = load_dataset("npy", path=path)
    assert (len(ds["train"]), len(ds["test"])) == (27, 3)
    assert ds["train"].image_shape == image_shape
    rows = torch.cat([ds["train"].x, ds["test"].x])
    flat = torch.from_numpy(arr.reshape(30, -1))
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, flat.tolist()))  # a partition
    assert torch.equal(load_dataset("npy", path=path)["test"].x, ds["test"].x)  # fixed split


def test_npy_bad_range_names_path_and_values(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.linspace(-0.5, 3.0, 40).reshape(10, 4))
    with pytest.raises(ValueError, match=r"big\.npy.*min -0\.5, max 3"):
        load_dataset("npy", path=path)


def test_npy_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="path="):
        load_dataset("npy")
    np.savez(tmp_path / "a.npz", images=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="'train' and 'test'.*images"):
        load_dataset("npy", path=tmp_path / "a.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="[Pp]ickle"):  # numpy refuses: no pickle
        load_dataset("npy", path=tmp_path / "obj.npy")
    with pytest.raises(ValueError, match=r"\.npy or \.npz"):
        load_dataset("npy", path=tmp_path / "x.txt")


# ---------------------------------------------------------------- mnist search and download


def test_idx_search_order(tmp_path, clean_env, monkeypatch):
    write_fake_mnist(tmp_path / "direct", 5, 2, gz=False)
    write_fake_mnist(tmp_path / "parent" / "mnist", 6, 2)
    write_fake_mnist(tmp_path / "env", 7, 2)
    write_fake_mnist(tmp_path / "envmnist", 8, 2)
    write_fake_mnist(clean_env / "mnist", 9, 2)
    load = lambda *args: load_dataset("mnist", *args, download=False, verify=False)  # fake files
    assert len(load()["train"]) == 9  # the cache, last resort
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "env"))
    assert len(load()["train"]) == 7
    monkeypatch.setenv("VAEKIT_MNIST_DIR", str(tmp_path / "envmnist"))
    assert len(load()["train"]) == 8
    assert len(load(tmp_path / "parent")["train"]) == 6
    ds = load(str(tmp_path / "direct"))
    assert len(ds["train"]) == 5 and len(ds["test"]) == 2 and ds["train"].image_shape == (1, 28, 28)


def test_idx_values_and_labels(tmp_path, clean_env):
    write_fake_mnist(tmp_path / "m", 4, 3, seed=5)
    ds = load_dataset("mnist", tmp_path / "m", download=False, verify=False)
    images = read_idx(tmp_path / "m" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(tmp_path / "m" / "t10k-labels-idx1-ubyte.gz")
    torch.testing.assert_close(ds["test"].x * 255, torch.from_numpy(images.reshape(3, -1)).float())
    assert ds["test"].y.tolist() == labels.tolist()


def test_idx_label_count_mismatch_names_file(tmp_path, clean_env):
    write_fake_mnist(tmp_path / "m", 4, 3)
    write(tmp_path / "m" / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.zeros(2, np.uint8)), gz=True)
    with pytest.raises(IDXError, match=r"t10k-labels-idx1-ubyte\.gz.*\[3\]"):
        load_dataset("mnist", tmp_path / "m", download=False, verify=False)


def test_missing_files_error(tmp_path, clean_env):
    write_fake_mnist(tmp_path / "partial", 4, 3)
    os.remove(tmp_path / "partial" / "t10k-images-idx3-ubyte.gz")  # three of four is not enough
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", download=False)
    msg = str(info.value)
    for stem in STEMS:
        assert stem in msg
    assert str(clean_env / "mnist") in msg
    assert "--data-dir" in msg and "VAEKIT_DATA_DIR" in msg and "download=False" in msg


def test_an_explicit_folder_is_used_as_given(tmp_path, clean_env):
    """A --data-dir that lacks a file is an error naming that file, even with a complete copy in the
    cache and downloads allowed: an explicit choice is never replaced by a guess."""
    write_fake_mnist(clean_env / "mnist", 9, 2)
    write_fake_mnist(tmp_path / "partial", 4, 3)
    os.remove(tmp_path / "partial" / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(FileNotFoundError, match=r"partial' lacks t10k-images-idx3-ubyte\[\.gz\]; a folder given"):
        load_dataset("mnist", tmp_path / "partial", verify=False)
    with pytest.raises(FileNotFoundError, match="nowhere' does not exist"):
        load_dataset("mnist", tmp_path / "nowhere", verify=False)


def test_local_files_are_verified_once_and_damage_is_named(tmp_path, clean_env, monkeypatch):
    digests = write_fake_mnist(tmp_path / "m", 4, 3)
    monkeypatch.setitem(D.SHA256, "mnist", digests)  # the fake files play the canonical ones
    assert len(load_dataset("mnist", tmp_path / "m")["train"]) == 4
    monkeypatch.setattr(D, "_content_sha256", lambda path: pytest.fail("hashed again"))
    assert len(load_dataset("mnist", tmp_path / "m")["train"]) == 4  # cached by size and mtime
    monkeypatch.undo()
    monkeypatch.setitem(D.SHA256, "mnist", digests)
    path = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 0xFF  # one pixel byte: a valid IDX file, the wrong contents
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(IDXError, match="train-images-idx3-ubyte.gz: its contents differ.*data.verify = false"):
        load_dataset("mnist", tmp_path / "m")
    assert len(load_dataset("mnist", tmp_path / "m", verify=False)["train"]) == 4  # the user's own variant


@pytest.mark.mnist
def test_swapped_train_and_test_files_are_refused(tmp_path, clean_env, mnist_dir):
    import shutil
    swap = {"train-images-idx3-ubyte": "t10k-images-idx3-ubyte", "train-labels-idx1-ubyte": "t10k-labels-idx1-ubyte"}
    swap.update({v: k for k, v in swap.items()})
    (tmp_path / "m").mkdir()
    for stem, other in swap.items():
        shutil.copy(D._find_file(mnist_dir, stem), tmp_path / "m" / (other + ".gz"))
    with pytest.raises(IDXError, match="its contents differ from the canonical mnist file"):
        load_dataset("mnist", tmp_path / "m")


def test_no_network_error(tmp_path, clean_env, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setitem(D.MIRRORS, "fashion-mnist", ((tmp_path / "empty").as_uri() + "/",))
    with pytest.raises(FileNotFoundError, match="(?s)t10k-labels-idx1-ubyte.*downloading them failed"):
        load_dataset("fashion-mnist")
    assert not list((clean_env / "fashion-mnist").glob("*"))


def test_download_from_file_mirror(tmp_path, clean_env, monkeypatch):
    digests = write_fake_mnist(tmp_path / "mirror2", 6, 3, seed=2)
    dead = (tmp_path / "nowhere").as_uri() + "/"  # first mirror fails: the second one is used
    monkeypatch.setitem(D.MIRRORS, "mnist", (dead, (tmp_path / "mirror2").as_uri() + "/"))
    monkeypatch.setitem(D.SHA256, "mnist", digests)
    ds = load_dataset("mnist")
    assert (len(ds["train"]), len(ds["test"])) == (6, 3)
    assert sorted(p.name for p in (clean_env / "mnist").iterdir()) == sorted(s + ".gz" for s in STEMS)
    expected = read_idx(tmp_path / "mirror2" / "train-images-idx3-ubyte.gz")
    torch.testing.assert_close(ds["train"].x * 255, torch.from_numpy(expected.reshape(6, -1)).float())


def test_download_checksum_mismatch_leaves_nothing(tmp_path, clean_env, monkeypatch):
    digests = write_fake_mnist(tmp_path / "mirror", 6, 3)
    digests["train-labels-idx1-ubyte"] = "0" * 64
    monkeypatch.setitem(D.MIRRORS, "mnist", ((tmp_path / "mirror").as_uri() + "/",))
    monkeypatch.setitem(D.SHA256, "mnist", digests)
    with pytest.raises(ValueError, match="(?s)train-labels-idx1-ubyte.gz.*SHA-256.*expected 0000"):
        load_dataset("mnist")
    # the verified file stays, the bad one leaves no trace (no partial or temporary file)
    assert [p.name for p in (clean_env / "mnist").iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_path_rejected_for_builtin_sets(tmp_path):
    with pytest.raises(ValueError, match="only used by the 'npy'"):
        load_dataset("digits", path=tmp_path / "x.npy")


# ---------------------------------------------------------------- binarisation


def test_binarize_modes():
    x = torch.tensor([[0.0, 0.2, 0.5, 0.51, 1.0]])
    assert torch.equal(binarize(x, "threshold"), torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]))
    assert binarize(x, "none") is x
    for mode in ("dynamic", "static"):
        b = binarize(x.expand(1000, 5), mode, torch.Generator().manual_seed(0))
        assert is_binary(b) and (b[:, 0] == 0).all() and (b[:, 4] == 1).all()
    assert is_binary(torch.tensor([0.0, 1.0])) and not is_binary(torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="dynamic.*static.*threshold.*none"):
        binarize(x, "bernoulli")
    assert BINARIZATIONS == ("dynamic", "static", "threshold", "none")


def constant_set(value=0.3, n=200, d=100):
    return make_set(torch.full((n, d), value))


def test_dynamic_mean_matches_intensity_and_batches_differ():
    p, n, d, epochs = 0.3, 200, 100, 5
    loader = Loader(constant_set(p, n, d), 64, binarization="dynamic", shuffle=False, seed=1)
    draws = [torch.cat(list(loader)) for _ in range(epochs)]
    allx = torch.stack(draws)
    assert is_binary(allx)
    se = (p * (1 - p) / allx.numel()) ** 0.5
    assert abs(allx.mean().item() - p) < 4 * se
    # per pixel too: each pixel's mean over 5 epochs x 200 rows
    per_pixel = allx.mean(dim=(0, 1))
    assert (per_pixel - p).abs().max() < 5 * (p * (1 - p) / (epochs * n)) ** 0.5
    assert not torch.equal(draws[0], draws[1])  # fresh draws every epoch
    batches = list(loader)
    assert not torch.equal(batches[0], batches[1])


def test_static_fixed_across_epochs_and_reproducible():
    data = constant_set(0.3)
    loader = Loader(data, 64, binarization="static", shuffle=False, seed=7)
    first, second = torch.cat(list(loader)), torch.cat(list(loader))
    assert is_binary(first) and torch.equal(first, second)
    assert torch.equal(loader.data.x, first) and is_binary(loader.data.x)
    assert abs(first.mean().item() - 0.3) < 4 * (0.21 / first.numel()) ** 0.5
    assert torch.equal(Loader(data, 10, binarization="static", seed=7).data.x, first)
    assert not torch.equal(Loader(data, 10, binarization="static", seed=8).data.x, first)
    assert torch.equal(data.x, torch.full((200, 100), 0.3))  # the source set is untouched


def test_threshold_loader_exact():
    x = torch.rand(50, 8, generator=torch.Generator().manual_seed(0))
    loader = Loader(make_set(x), 16, binarization="threshold", shuffle=False)
    assert torch.equal(torch.cat(list(loader)), (x > 0.5).float())
    assert loader.binarization == "threshold" and loader.batch_size == 16


def indexed_set(n):
    """Row i holds i/n, so a batch tells which examples it contains."""
    return make_set(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3) / n)


def batch_ids(batch, n):
    return (batch[:, 0] * n).round().long()


@pytest.mark.parametrize("n,b", [(103, 10), (100, 10), (5, 8)])
def test_loader_epoch_covers_every_example_once(n, b):
    loader = Loader(indexed_set(n), b, seed=3)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == -(-n // b)
        assert all(bt.shape[0] == b for bt in batches[:-1]) and batches[0].dtype == torch.float32
        ids = torch.cat([batch_ids(bt, n) for bt in batches])
        assert sorted(ids.tolist()) == list(range(n))
    assert not torch.equal(ids, torch.arange(n))  # it did shuffle


def test_loader_no_shuffle_and_drop_last():
    n = 103
    assert torch.equal(batch_ids(torch.cat(list(Loader(indexed_set(n), 10, shuffle=False))), n), torch.arange(n))
    loader = Loader(indexed_set(n), 10, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 10 and all(bt.shape == (10, 3) for bt in batches)
    assert len(set(torch.cat([batch_ids(bt, n) for bt in batches]).tolist())) == 100


def test_loader_reproducible_from_seed():
    a = [torch.cat(list(Loader(constant_set(0.5), 32, binarization="dynamic", seed=s))) for s in (4, 4, 5)]
    assert torch.equal(a[0], a[1]) and not torch.equal(a[0], a[2])


def test_loader_state_dict_resumes_exactly():
    data = make_set(torch.rand(90, 20, generator=torch.Generator().manual_seed(0)))
    run = Loader(data, 16, binarization="dynamic", seed=11)
    list(run)
    buf = io.BytesIO()
    torch.save(run.state_dict(), buf)  # through a checkpoint, as a real resume would
    expected = list(run)
    resumed = Loader(data, 16, binarization="dynamic", seed=999)
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    got = list(resumed)
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))
    assert run.state_dict()["generator"].dtype == torch.uint8
    with pytest.raises(ValueError, match="generator"):
        resumed.load_state_dict({"rng": 1})


def test_loader_validates_arguments():
    data = indexed_set(10)
    with pytest.raises(ValueError, match="batch_size"):
        Loader(data, 0)
    with pytest.raises(ValueError, match="binarization"):
        Loader(data, 4, binarization="stochastic")
    with pytest.raises(ValueError, match="drop_last"):
        Loader(data, 11, drop_last=True)


# ---------------------------------------------------------------- real data


def mnist_dir() -> Path:
    return Path(os.environ.get("VAEKIT_MNIST_DIR") or Path(__file__).parents[2] / "shared/data/mnist")


@pytest.fixture(scope="module")
def mnist():
    folder = mnist_dir()
    if not all(D._find_file(folder, stem) for stem in STEMS):
        pytest.skip(f"MNIST IDX files not found in {folder} (set VAEKIT_MNIST_DIR)")
    return folder, load_dataset("mnist", folder, download=False)


@pytest.mark.mnist
def test_mnist_shapes_and_values(mnist):
    _, ds = mnist
    assert (len(ds["train"]), len(ds["test"])) == (60000, 10000)
    for s in ds.values():
        assert s.image_shape == (1, 28, 28) and s.x.shape[1] == 784 and s.x.dtype == torch.float32
        assert s.x.min() == 0 and s.x.max() == 1
        assert s.y.min() == 0 and s.y.max() == 9 and torch.bincount(s.y).min() > 800
    assert ds["train"].y[:5].tolist() == [5, 0, 4, 1, 9]  # the famous first training labels


@pytest.mark.mnist
def test_mnist_checksums(mnist):
    folder, _ = mnist
    for stem in STEMS:
        path = D._find_file(folder, stem)
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        assert hashlib.sha256(raw).hexdigest() == D.SHA256["mnist"][stem], path


@pytest.mark.mnist
def test_fashion_mnist_checksums_and_splits(fashion_mnist_dir):
    """The files CI and Debian's dataset-fashion-mnist provide are the canonical ones, and load."""
    for stem in STEMS:
        path = D._find_file(fashion_mnist_dir, stem)
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        assert hashlib.sha256(raw).hexdigest() == D.SHA256["fashion-mnist"][stem], stem
    sets = load_dataset("fashion-mnist", fashion_mnist_dir, download=False)
    assert sets["train"].x.shape == (60000, 784) and sets["test"].x.shape == (10000, 784)
    assert sets["test"].y.bincount().tolist() == [1000] * 10


def test_fast_bernoulli_draws_what_torch_bernoulli_draws():
    """The held-out binarisation must stay the same draw that torch.bernoulli made before it."""
    p = torch.rand(300, 50, generator=torch.Generator().manual_seed(3))
    expected = torch.bernoulli(p, generator=torch.Generator().manual_seed(7))
    assert torch.equal(binarize(p, "static", torch.Generator().manual_seed(7)), expected)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("binarization", ["dynamic", "none"])
def test_the_ranks_shards_of_each_step_make_up_the_batch_of_one_process(world, binarization):
    data = make_set(torch.rand(103, 12))  # 103 = 10 full batches and one of 3 rows: uneven shards at the end
    single = Loader(data, 10, binarization=binarization, seed=3)
    one = [b for _ in range(2) for b in single]
    loaders = [Loader(data, 10, binarization=binarization, seed=3, shard=(r, world)) for r in range(world)]
    parts = [[b for _ in range(2) for b in loader] for loader in loaders]  # two epochs: the generator goes on
    assert all(len(p) == len(one) == 2 * len(loaders[0]) for p in parts)
    for step, batch in enumerate(one):
        shards = [p[step] for p in parts]
        assert torch.equal(torch.cat(shards), batch), step
        assert [len(s) for s in shards] == [len(t) for t in batch.tensor_split(world)]


@pytest.mark.parametrize("shard, batch_size", [((2, 2), 10), ((-1, 2), 10), ((0, 0), 10), ((0, 4), 3), ((0.0, 2), 10)])
def test_a_shard_outside_its_world_is_refused(shard, batch_size):
    with pytest.raises(ValueError, match="shard|batch_size"):
        Loader(make_set(torch.rand(20, 4)), batch_size, shard=shard)
