from pathlib import Path

import pytest

THUMOS_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "synthetic_thumos.yaml"

# The shipped thumos config shrunk so that a test can train it in seconds.
TINY = ["model.preset=tiny", "model.mask_dim=32", "model.num_layers=1", "train.batch_size=8"]


@pytest.fixture(scope="session")
def small_thumos(tmp_path_factory):
    """A small thumos-like benchmark (30 videos) written to disk once per test session."""
    from gsmt_fast.data.synthetic import generate

    root = tmp_path_factory.mktemp("thumos_small")
    generate("thumos-like", root, seed=3, num_videos=30, progress=False)
    return root


@pytest.fixture(scope="session")
def trained_run(small_thumos, tmp_path_factory):
    """A tiny GSMT trained for 3 epochs on ``small_thumos``; returns (run_dir, config dict)."""
    from gsmt_fast.train import load_config, train

    out = tmp_path_factory.mktemp("run")
    cfg = load_config(THUMOS_CONFIG, TINY + ["train.epochs=3"])
    train(cfg, out, data_root=small_thumos, progress=False, log=lambda *a: None)
    return out, cfg
