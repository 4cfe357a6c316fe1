"""Hostile-but-fair inputs: every case is rejected with an error that names the problem, before any work or
allocation it would waste, or handled by a documented rule (docs/RELIABILITY.md lists the guarantees)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast.checkpoint import METADATA_KEY, read_checkpoint
from gsmt_fast.config import MAX_DETECTIONS, GSMTConfig, InferenceConfig
from gsmt_fast.detector import results_to_json
from gsmt_fast.files import atomic_write_text


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(GSMTConfig.preset("tiny", num_classes=3, temporal_scale=16, input_dim=8))
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    gsmt_fast.save_checkpoint(model, path, class_names=["a", "b", "c"])
    return path


@pytest.fixture(scope="module")
def detector(tiny_ckpt):
    return gsmt_fast.Detector(tiny_ckpt, backend="reference")


def _rewrite_metadata(src, dst, edit):
    """A copy of checkpoint ``src`` whose gsmt_fast metadata is ``edit(metadata dict)`` (any JSON value)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()[METADATA_KEY])
    save_file(tensors, str(dst), metadata={METADATA_KEY: json.dumps(edit(meta))})
    return dst


# ------------------------------------------------------------------------------------------------ time metadata
@pytest.mark.parametrize("kwargs, match", [
    ({"duration": 0}, "duration must be a finite number > 0"),
    ({"duration": -5}, "duration must be a finite number > 0"),
    ({"duration": float("nan")}, "duration must be a finite number > 0"),
    ({"fps": float("inf")}, "fps must be a finite number > 0"),
    ({"fps": float("nan")}, "fps must be a finite number > 0"),
    ({"feat_stride": float("nan")}, "feat_stride must be a finite number > 0"),
    ({"num_frames": -1000}, "num_frames must be a finite number > 0"),
    ({"num_frames": float("nan")}, "num_frames must be a finite number > 0"),
    ({"fps": "30"}, "fps must be a number"),
])
def test_time_metadata_is_checked_and_named(detector, kwargs, match):
    x = np.zeros((40, 8), np.float32)
    call = {"fps": 30.0, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        detector.detect(x, **call)


def test_window_mode_duration_shorter_than_the_features_is_rejected(detector):
    """300 snippets at fps 30, stride 4: the last one starts at frame 299*4 = 1196, i.e. 39.87 s."""
    x = np.zeros((300, 8), np.float32)
    with pytest.raises(ValueError, match=r"duration 10 s is shorter than its features.*39\.8"):
        detector.detect(x, fps=30, feat_stride=4, num_frames=16, duration=10)
    res = detector.detect(x, fps=30, feat_stride=4, num_frames=16, duration=41.0)
    assert (res.segments <= 41.0).all()


def test_zero_dimensional_arrays_are_scalars(detector):
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    a = detector.detect(x, fps=np.array(30.0), feat_stride=np.array(4), num_frames=np.float32(16))
    b = detector.detect(x, fps=30.0, feat_stride=4, num_frames=16)
    np.testing.assert_array_equal(a.segments, b.segments)


def test_video_ids_must_be_unique(detector):
    x = np.zeros((20, 8), np.float32)
    with pytest.raises(ValueError, match="video_id must be unique.*abc"):
        detector.detect([x, x], fps=30, video_id="abc")
    with pytest.raises(ValueError, match="video_id must be unique.*'x'"):
        detector.detect([x, x], fps=30, video_id=["x", "x"])
    one = detector.detect(x, fps=30, video_id="v")
    with pytest.raises(ValueError, match="two results have video_id 'v'"):
        results_to_json([one, one])


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_batch_size_must_be_a_positive_integer(tiny_ckpt, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        gsmt_fast.Detector(tiny_ckpt, backend="reference", batch_size=batch_size)


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("names, match", [
    ([1, 2, 3], "class_names must be a list of non-empty strings"),
    ("abc", "class_names must be a list"),
    (["a", "a", "a"], r"class_names must be unique; repeated: \['a'\]"),
    (["a", "", "c"], "non-empty strings"),
])
def test_class_names_are_checked_on_save_and_on_load(tiny_ckpt, tmp_path, names, match):
    model, _ = gsmt_fast.load_checkpoint(tiny_ckpt)
    with pytest.raises((ValueError, TypeError), match=match):
        gsmt_fast.save_checkpoint(model, tmp_path / "bad.safetensors", class_names=names)
    assert not (tmp_path / "bad.safetensors").exists()
    bad = _rewrite_metadata(tiny_ckpt, tmp_path / "crafted.safetensors", lambda m: {**m, "class_names": names})
    with pytest.raises(ValueError, match="corrupt gsmt_fast metadata"):
        read_checkpoint(bad)


@pytest.mark.parametrize("edit, match", [
    (lambda m: [1, 2, 3], "must be a JSON object"),
    (lambda m: None, "must be a JSON object"),
    (lambda m: {**m, "model": {**m["model"], "num_heads": 0}}, r"num_heads must be in \[1, 1024\]"),
    (lambda m: {**m, "model": {**m["model"], "input_dim": "16"}}, "input_dim must be an integer"),
    (lambda m: {**m, "model": {**m["model"], "temporal_scale": 2_000_000}}, r"temporal_scale must be in"),
    (lambda m: {**m, "model": {**m["model"], "num_classes": 5}}, "class names for a model with 5 classes"),
    (lambda m: {**m, "model": {**m["model"], "temporal_scale": 32}}, r"weight 'mask_head.4.weight' has shape"),
    (lambda m: {**m, "model": {**m["model"], "num_layers": 0}}, r"unexpected \['blocks.0"),
    (lambda m: {**m, "inference": "x"}, "'inference' must be a JSON dict"),
])
def test_metadata_that_does_not_fit_the_weights_is_one_clear_error(tiny_ckpt, tmp_path, edit, match):
    bad = _rewrite_metadata(tiny_ckpt, tmp_path / "crafted.safetensors", edit)
    with pytest.raises(ValueError, match=match):
        read_checkpoint(bad)
    with pytest.raises(ValueError, match=match):
        gsmt_fast.Detector(bad)


def test_huge_metadata_is_rejected_without_allocating(tiny_ckpt, tmp_path):
    """T = 65536 and C_m = 65536 (in range) would make a 16 GB mask head; the header comparison rejects the file
    before any model is built: the process stays small."""
    bad = _rewrite_metadata(tiny_ckpt, tmp_path / "huge.safetensors",
                            lambda m: {**m, "model": {**m["model"], "temporal_scale": 65536, "mask_dim": 65536}})
    code = ("import resource, sys; from gsmt_fast.checkpoint import read_checkpoint\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try:\n    read_checkpoint({str(bad)!r})\nexcept ValueError as e:\n    print('rejected:', e)\n"
            "print('growth_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "rejected:" in out and "has shape" in out
    assert int(out.split("growth_kb")[1]) < 200_000, out  # well under the gigabytes the metadata asks for


# ------------------------------------------------------------------------------------------------ limits
@pytest.mark.parametrize("field, value", [("max_detections", 10**30), ("top_snippets", 10**12),
                                          ("pre_nms_topk", 0), ("max_detections", 2.5)])
def test_inference_settings_are_bounded(field, value):
    with pytest.raises(ValueError, match=f"{field} must be an integer in"):
        InferenceConfig(**{field: value})


def test_soft_nms_max_seg_num_is_bounded():
    with pytest.raises(ValueError, match=f"max_seg_num must be an integer in \\[1, {MAX_DETECTIONS}\\]"):
        gsmt_fast.soft_nms([[0, 1]], [0.5], [0], max_seg_num=2**31)


# ------------------------------------------------------------------------------------------------ files
def test_written_files_honour_the_umask_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write_text(new, "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
        atomic_write_text(new, "[]")  # overwriting keeps the file's own mode
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------------ readers
def test_foreign_taxonomy_is_ignored_with_a_warning(tmp_path):
    from gsmt_fast.data.annotations import load_annotations

    data = {"version": "x", "taxonomy": [{"name": "Run", "id": 0}], "database": {
        "v1": {"subset": "validation", "duration": 10.0, "fps": 30.0,
               "annotations": [{"segment": [1.0, 2.0], "label": "Run", "label_id": 0}]}}}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aset = load_annotations(path)
    assert aset.classes == ["Run"]
    assert any("not an ActivityNet node list" in str(w.message) for w in caught)


def test_plot_checks_top_k_and_writes_the_format_of_its_suffix(tmp_path):
    from gsmt_fast.plot import plot_timeline

    gt = {"version": "x", "database": {"v": {"subset": "validation", "duration": 10.0,
                                             "annotations": [{"segment": [1.0, 3.0], "label": "Run"}]}}}
    res = {"version": "x", "results": {"v": [{"label": "Run", "score": 0.9, "segment": [1.0, 2.5]}]},
           "external_data": {}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    for bad in (-1, 0, 201):
        with pytest.raises(ValueError, match=r"top_k must be an integer in \[1, 200\]"):
            plot_timeline(res, tmp_path / "gt.json", "v", tmp_path / "t.png", top_k=bad)
    with pytest.raises(ValueError, match="the plot format follows the suffix"):
        plot_timeline(res, tmp_path / "gt.json", "v", tmp_path / "t.jpg")
    assert plot_timeline(res, tmp_path / "gt.json", "v", tmp_path / "t.pdf").read_bytes()[:5] == b"%PDF-"
    assert plot_timeline(res, tmp_path / "gt.json", "v", tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


def test_a_batch_that_runs_out_of_device_memory_is_split_and_retried(tiny_ckpt):
    """A backend that cannot hold more than 2 windows at once: the batch is halved until it fits, with the
    detections of an unconstrained run; a single window that does not fit is one clear error."""
    det = gsmt_fast.Detector(tiny_ckpt, backend="reference", batch_size=8)
    rng = np.random.default_rng(1)
    videos = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 16, 40, 12, 9)]
    expected = det.detect(videos, fps=30)
    run_windows, calls = det.backend.run_windows, []

    def limited(windows, final, cfg, limit=2):
        calls.append(len(windows))
        if len(windows) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return run_windows(windows, final, cfg)

    det.backend.run_windows = limited
    got = det.detect(videos, fps=30)
    assert calls[0] > 2  # the whole batch first, then halves until they fit
    assert sum(c for c in calls if c <= 2) == calls[0]  # the calls that ran cover every window exactly once
    for a, b in zip(expected, got):  # a GEMM's summation order depends on the batch: scores agree to ~1e-8
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    det.backend.run_windows = lambda windows, final, cfg: limited(windows, final, cfg, limit=0)
    with pytest.raises(RuntimeError, match="one window of T=16 snippets does not fit"):
        det.detect(videos[0], fps=30)


def test_one_detector_shared_by_eight_threads_gives_the_serial_results(tiny_ckpt):
    from concurrent.futures import ThreadPoolExecutor

    det = gsmt_fast.Detector(tiny_ckpt, backend="torch", precision="fp32")
    rng = np.random.default_rng(7)
    videos = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in rng.integers(5, 60, size=32)]
    serial = [det.detect(v, fps=30.0) for v in videos]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda v: det.detect(v, fps=30.0), videos))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.labels, b.labels)
