"""Every ready config in bench/configs/ loads (typed, unknown keys refused) and trains a step on the
embedded digits: a documented benchmark command cannot rot unnoticed."""

from pathlib import Path

import pytest

from vaekit import config as configlib
from vaekit.train import Trainer

CONFIGS = sorted((Path(__file__).parent.parent / "bench" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_a_bench_config_loads_and_trains_briefly_on_digits(path, tmp_path):
    cfg = configlib.load(path, ["data.name=\"digits\"", "data.binarization=\"dynamic\"", "train.epochs=1",
                                "train.time_limit_minutes=0", "train.device=\"cpu\"", "train.progress=false",
                                "train.compile=false"])  # compiling each config would cost the suite minutes
    trainer = Trainer(cfg, tmp_path / "run")
    assert trainer.fit() == tmp_path / "run" and len(trainer.history) == 1
