import os

import pytest  # does not import triton


# Triton kernels run on the CPU under the interpreter when no GPU is present; the variable must be set before any
# module imports triton (torch may import it lazily), so it is set here, before the tests import anything.
def _cuda_usable() -> bool:
    if not os.path.exists("/dev/nvidiactl") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False
    import torch  # importing torch does not import triton

    return torch.cuda.is_available()


if not _cuda_usable():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from training_setup import THUMOS_CONFIG, TINY  # noqa: E402  (after TRITON_INTERPRET is set)


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


@pytest.fixture
def exact_exp(monkeypatch):
    """Make the oracle's gaussian SoftNMS weights use the extension's exp (NumPy's exp differs from glibc's in the
    last bit for some arguments), so that the compiled backends must match the reference bit for bit."""
    import numpy as np

    from gsmt_fast import _C
    from gsmt_fast.postprocess import reference

    original = reference.decay_weights

    def decay_weights(iou, method, sigma, iou_threshold):
        if method != "gaussian":
            return original(iou, method, sigma, iou_threshold)
        arguments = -(iou * iou) / sigma  # the oracle's exact expression, then the extension's exp
        return np.array([_C._deterministic_exp(float(a)) for a in arguments], dtype=np.float64)

    monkeypatch.setattr(reference, "decay_weights", decay_weights)


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """ONNX exports and engines made by tests go to a session folder, never to the user's cache."""
    folder = tmp_path_factory.mktemp("gsmt_fast_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GSMT_FAST_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def thumos_seed0(tmp_path_factory):
    """The thumos-like benchmark at its default size and seed 0 — the data bench/assets/thumos.safetensors (the
    README's trained checkpoint) was trained on; its validation split is what the accuracy tests evaluate."""
    from gsmt_fast.data.synthetic import generate

    root = tmp_path_factory.mktemp("thumos_seed0")
    generate("thumos-like", root, seed=0, progress=False)
    return root


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A random 2-class tiny model (T 8, d_in 4) saved as ``tmp_path/m.safetensors``: for argument and policy checks."""
    import gsmt_fast

    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=2, temporal_scale=8, input_dim=4))
    path = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(model, path, class_names=["a", "b"])
    return path
