import os
from pathlib import Path

import pytest
import torch

# Tiny models run fastest on one thread, and the suite then leaves the other core free.
torch.set_num_threads(1)

MNIST_DIR = Path(os.environ.get("VAEKIT_MNIST_DIR") or Path(__file__).parents[2] / "shared/data/mnist")
FASHION_MNIST_DIRS = [Path(d) for d in (os.environ.get("VAEKIT_FASHION_MNIST_DIR"),
                                        Path(__file__).parents[2] / "shared/data/fashion-mnist",
                                        "/usr/share/datasets/fashion-mnist") if d]


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST files (CI: ../shared/data/mnist); tests needing them skip without them."""
    if not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file() and not (MNIST_DIR / "t10k-labels-idx1-ubyte").is_file():
        pytest.skip(f"MNIST files not found in {MNIST_DIR} (set VAEKIT_MNIST_DIR)")
    return MNIST_DIR


@pytest.fixture
def fashion_mnist_dir() -> Path:
    """The Fashion-MNIST files (CI: ../shared/data/fashion-mnist; Debian: dataset-fashion-mnist)."""
    for folder in FASHION_MNIST_DIRS:
        if (folder / "t10k-labels-idx1-ubyte.gz").is_file() or (folder / "t10k-labels-idx1-ubyte").is_file():
            return folder
    pytest.skip(f"Fashion-MNIST files not found in {[str(d) for d in FASHION_MNIST_DIRS]} "
                "(set VAEKIT_FASHION_MNIST_DIR)")


@pytest.fixture
def float64():
    """Oracles compared to tight tolerances: float64 throughout a test (use with pytestmark)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny_run(tmp_path: Path, **sections) -> dict:
    """Config dict of a few-second digits run; keyword sections update the defaults."""
    values = {"data": {"name": "digits"},
              "vae": {"hidden": [32], "latent": 2},
              "train": {"epochs": 2, "batch_size": 64, "progress": False, "device": "cpu"},
              "eval": {"num_samples": 20, "chunk_size": 8, "iwae_samples": [1, 5]},
              "out": str(tmp_path / "run")}
    for name, update in sections.items():
        values[name] = {**values.get(name, {}), **update}
    return values
