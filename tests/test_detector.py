import json

import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast.detector import results_to_json


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(1)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=3, temporal_scale=32, input_dim=8))
    path = tmp_path / "tiny.safetensors"
    gsmt_fast.save_checkpoint(model, path, class_names=["a", "b", "c"], grid={"convention": "stride"},
                              inference={"score_threshold": 0.0, "nms_min_score": 0.0})
    return path


def _sorted(segments, scores, labels):
    key = np.round(segments, 6)
    order = np.lexsort((-scores, labels, key[:, 1], key[:, 0]))
    return segments[order], scores[order], labels[order]


def test_window_mode_without_overlap_equals_windows_detected_alone(tiny_ckpt):
    """With disjoint windows, candidates of different windows never overlap in time (IoU 0: gaussian SoftNMS leaves
    them alone), so detecting the long video must give exactly the union of detecting each window by itself."""
    det = gsmt_fast.Detector(tiny_ckpt, inference={"window_overlap": 0.0, "max_detections": 10_000,
                                                   "pre_nms_topk": 10_000})
    x = np.random.default_rng(0).standard_normal((32 * 4 + 9, 8)).astype(np.float32)
    whole = det.detect(x, fps=30.0)
    parts = []
    for w in range(0, len(x), 32):
        # A window alone is a short video whose snippet 0 is native snippet w: shift its times by w * stride / fps.
        r = det.detect(x[w:w + 32], fps=30.0)
        parts.append((r.segments + w * 4 / 30.0, r.scores, r.labels))
    segs = np.concatenate([p[0] for p in parts])
    scores = np.concatenate([p[1] for p in parts])
    labels = np.concatenate([p[2] for p in parts])
    ws, wsc, wl = _sorted(whole.segments, whole.scores, whole.labels)
    ps, psc, pl = _sorted(segs, scores, labels)
    assert len(ws) == len(ps) > 0
    np.testing.assert_allclose(ws, ps, rtol=0, atol=1e-9)
    np.testing.assert_allclose(wsc, psc, rtol=1e-5)  # batched vs single forward: float32 summation order
    np.testing.assert_array_equal(wl, pl)


def test_window_mode_with_overlap_finds_the_instances_of_each_window(trained_run, small_thumos):
    """Default overlap on a video several windows long: the most confident detections of each window detected alone
    are found again (same label, tIoU ≥ 0.9) when the whole video is detected."""
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.features import FeatureStore
    from gsmt_fast.data.grid import window_starts

    run, _ = trained_run
    # No per-video cap: with the cap, the whole video (more windows) may legitimately keep fewer low scorers.
    det = gsmt_fast.Detector(run / "best.safetensors", inference={"max_detections": 100_000})
    aset = load_annotations(small_thumos / "annotations.json")
    store = FeatureStore(small_thumos / "features")
    v = max(aset.videos.values(), key=lambda v: store.load(v.video_id).shape[0])
    x = store.load(v.video_id)
    assert len(x) > 2 * 256
    whole = det.detect(x, fps=v.fps)
    checked = 0
    for w in window_starts(len(x), 256, det.inference.window_overlap):
        alone = det.detect(x[w:w + 256], fps=v.fps)
        top = np.argsort(-alone.scores, kind="stable")[:3]  # the window's most confident detections
        for (s, e), sc, lab in zip(alone.segments[top], alone.scores[top], alone.labels[top]):
            s, e = s + w * 4 / v.fps, e + w * 4 / v.fps
            inter = np.clip(np.minimum(e, whole.segments[:, 1]) - np.maximum(s, whole.segments[:, 0]), 0, None)
            iou = inter / ((e - s) + (whole.segments[:, 1] - whole.segments[:, 0]) - inter)
            assert ((iou >= 0.9) & (whole.labels == lab)).any(), (w, s, e, lab, sc)
            checked += 1
    assert checked > 0


def test_inputs_numpy_torch_list_and_resize(tiny_ckpt, tmp_path):
    det = gsmt_fast.Detector(tiny_ckpt)
    x = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    a = det.detect(x, fps=25.0)
    b = det.detect(torch.from_numpy(x), fps=25.0)
    np.testing.assert_array_equal(a.segments, b.segments)
    many = det.detect([x, x[:7]], fps=[25.0, 25.0], video_id=["v1", "v2"])
    assert isinstance(many, list) and [r.video_id for r in many] == ["v1", "v2"]
    np.testing.assert_array_equal(many[0].segments, a.segments)
    assert (many[1].segments[:, 1] <= (7 - 0.5) * 4 / 25 + 8 / 25 + 1e-9).all()
    payload = results_to_json(many)
    assert set(payload["results"]) == {"v1", "v2"} and payload["version"] == "VERSION 1.3"
    json.dumps(payload)
    rec = many[0].to_records()[0]
    assert set(rec) >= {"label", "score", "segment"} and rec["label"] in "abc"
    # Duration clamps in window mode: the last of the 50 snippets covers frames 196..211, i.e. up to 8.48 s.
    c = det.detect(x, fps=25.0, duration=8.0)
    assert (c.segments <= 8.0).all() and (c.segments >= 0).all() and c.segments.max() == 8.0
    with pytest.raises(ValueError, match="shorter than its features"):  # metadata that contradicts the features
        det.detect(x, fps=25.0, duration=3.0)


def test_resize_mode_checkpoint(tmp_path):
    torch.manual_seed(2)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=2, temporal_scale=16, input_dim=4))
    p = tmp_path / "r.safetensors"
    gsmt_fast.save_checkpoint(model, p, class_names=["x", "y"], grid={"convention": "resize"},
                              inference={"mode": "long", "score_threshold": 0.0})
    det = gsmt_fast.Detector(p)
    r = det.detect(np.random.default_rng(0).standard_normal((37, 4)), duration=12.5)
    assert len(r) > 0 and (r.segments >= 0).all() and (r.segments <= 12.5).all()
    with pytest.raises(ValueError, match="duration"):
        det.detect(np.zeros((10, 4), np.float32))


def test_inference_overrides_and_bad_inputs(tiny_ckpt):
    det = gsmt_fast.Detector(tiny_ckpt, inference={"max_detections": 3})
    assert det.inference.max_detections == 3
    assert len(det.detect(np.random.default_rng(0).standard_normal((40, 8)), fps=30.0)) <= 3
    with pytest.raises(ValueError, match="unknown InferenceConfig field"):
        gsmt_fast.Detector(tiny_ckpt, inference={"top_k": 3})
    with pytest.raises(ValueError, match="wrong feature dimension 9"):
        det.detect(np.zeros((10, 9), np.float32), fps=30.0)
    bad = np.zeros((10, 8), np.float32)
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        det.detect(bad, fps=30.0)
    with pytest.raises(ValueError, match="shape"):
        det.detect(np.zeros(8, np.float32), fps=30.0)
    with pytest.raises(TypeError, match="dtype"):
        det.detect(np.array([["a"] * 8]), fps=30.0)
    with pytest.raises(ValueError, match="fps"):
        det.detect(np.zeros((10, 8), np.float32))


def test_time_metadata_selects_the_input_mode(tiny_ckpt):
    """fps → window mode, duration alone → resize mode (the whole video resampled to T = 32)."""
    det = gsmt_fast.Detector(tiny_ckpt)
    x = np.random.default_rng(3).standard_normal((100, 8)).astype(np.float32)
    window = det.detect(x, fps=25.0, duration=16.0)
    resize = det.detect(x, duration=16.0)
    from gsmt_fast.data.grid import resize_features

    as_resized = det.detect(resize_features(x, 32), duration=16.0)  # already T long: resizing is the identity
    np.testing.assert_array_equal(resize.segments, as_resized.segments)
    assert not np.array_equal(window.segments, resize.segments)
    # Resize-mode segments lie on the grid [a, b+1] * duration / T.
    units = resize.segments * 32 / 16.0
    np.testing.assert_allclose(units, np.round(units), atol=1e-9)
    with pytest.raises(ValueError, match="unknown backend"):
        gsmt_fast.Detector(tiny_ckpt, backend="magic")
