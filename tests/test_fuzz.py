"""Property-based fuzzing of the public Python entry points: random shapes and values (zero sizes, NaN, inf, huge and
negative numbers, wrong types) give either a well-formed result or a documented exception (TypeError, ValueError,
FileNotFoundError), never another exception, a crash or a hang."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gsmt_fast
from gsmt_fast.config import GSMTConfig, InferenceConfig
from gsmt_fast.evaluation import evaluate, parse_thresholds

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOCUMENTED = (TypeError, ValueError)
numbers = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**12, 10**12)
           | st.sampled_from([0, -1, 0.0, -0.0, 1e-300, 1e300, float("nan"), float("inf")]))


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(GSMTConfig.preset("tiny", num_classes=2, temporal_scale=8, input_dim=3))
    with torch.no_grad():
        model.cls_head.weight.mul_(8)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    gsmt_fast.save_checkpoint(model, path, class_names=["a", "b"])
    return gsmt_fast.Detector(path, backend="torch", precision="fp32", batch_size=4)


@st.composite
def feature_arrays(draw):
    n = draw(st.integers(0, 30))
    d = draw(st.sampled_from([3, 3, 3, 2, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.bool_]))
    x = (rng.standard_normal((n, d)) * draw(st.sampled_from([1.0, 1e3, 1e-3]))).astype(dtype)
    if x.size and draw(st.integers(0, 4)) == 0:
        x = x.astype(np.float64)
        x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x if draw(st.integers(0, 9)) else x[None]  # sometimes the wrong rank


@FUZZ
@given(feature_arrays(), numbers | st.none(), numbers | st.none(), st.sampled_from([None, 4, 2.5, -4]),
       st.sampled_from([None, 16, 0]))
def test_detect(detector, x, fps, duration, feat_stride, num_frames):
    try:
        res = detector.detect(x, fps=fps, duration=duration, feat_stride=feat_stride, num_frames=num_frames)
    except DOCUMENTED:
        return
    assert x.ndim == 2 and len(x) >= 1 and x.shape[1] == 3 and np.isfinite(x.astype(np.float64)).all()
    assert res.segments.shape == (len(res), 2) and np.isfinite(res.segments).all()
    assert (res.segments[:, 0] <= res.segments[:, 1]).all() and (res.segments >= 0).all()
    if duration is not None:
        assert (res.segments <= float(duration)).all()
    assert ((res.scores > 0) & (res.scores <= 1)).all() and set(res.labels.tolist()) <= {0, 1}


labels = st.sampled_from(["Run", "Jump", "", "Run"]) | st.text(max_size=5)
segments = st.lists(numbers, min_size=0, max_size=3)


@st.composite
def annotation_dicts(draw):
    videos = draw(st.lists(st.sampled_from(["v1", "v2", "v3"]), min_size=0, max_size=3, unique=True))
    return {"version": "x", "database": {
        v: {"subset": draw(st.sampled_from(["validation", "test"])), "duration": draw(numbers),
            "annotations": [{"segment": draw(segments), "label": draw(labels)}
                            for _ in range(draw(st.integers(0, 3)))]}
        for v in videos}}


@st.composite
def result_dicts(draw):
    videos = draw(st.lists(st.sampled_from(["v1", "v2", "v9"]), max_size=3, unique=True))
    return {"version": "x", "external_data": {}, "results": {
        v: [{"label": draw(labels), "score": draw(numbers), "segment": draw(segments)}
            for _ in range(draw(st.integers(0, 4)))] for v in videos}}


@FUZZ
@given(annotation_dicts(), result_dicts(), st.sampled_from([None, "validation", "nosuch"]),
       st.sampled_from([(0.5,), (0.3, 0.7), (0.0,), (1.5,), (float("nan"),)]))
def test_evaluate(gt, pred, subset, tious):
    try:
        r = evaluate(gt, pred, tiou_thresholds=tious, subset=subset, warn=False)
    except DOCUMENTED:
        return
    assert r.mAP.shape == (len(tious),) and ((r.mAP >= 0) & (r.mAP <= 1)).all()
    assert 0 <= r.average_mAP <= 1


@FUZZ
@given(st.text(max_size=20) | st.sampled_from(["0.3:0.1:0.7", "0.1:1e-9:0.2", "1:-1:2", "0.5", "a,b", "0.5:0.5"]))
def test_parse_thresholds(text):
    try:
        values = parse_thresholds(text)
    except DOCUMENTED:
        return
    assert 1 <= len(values) <= 1000 and all(0 < v <= 1 for v in values)


@FUZZ
@given(st.dictionaries(st.sampled_from(["top_snippets", "pre_nms_topk", "max_detections", "score_threshold",
                                        "nms_sigma", "mode", "nms_method", "window_overlap", "mask_thresholds",
                                        "bogus"]),
                       numbers | st.text(max_size=3) | st.lists(numbers, max_size=3) | st.booleans(), max_size=4))
def test_inference_config(fields):
    try:
        cfg = InferenceConfig(**fields)
    except DOCUMENTED:
        return
    assert 1 <= cfg.top_snippets <= 65536 and 1 <= cfg.max_detections <= 100_000
    assert InferenceConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 10**6))
def test_checkpoint_files(detector, tmp_path_factory, data, cut):
    """Random bytes, and real checkpoints cut or overwritten anywhere: a clear error or a working detector."""
    path = tmp_path_factory.mktemp("fuzz") / "c.safetensors"
    real = next(iter(tmp_path_factory.getbasetemp().glob("ckpt*/m.safetensors"))).read_bytes()
    choice = cut % 3
    if choice == 0:
        blob = data
    elif choice == 1:
        blob = real[: cut % len(real)]
    else:
        at = cut % len(real)
        blob = real[:at] + data + real[at + len(data):]
    path.write_bytes(blob)
    try:
        det = gsmt_fast.Detector(path, backend="reference")
        det.detect(np.zeros((5, 3), np.float32), fps=30.0)  # damaged weights (NaN) are caught by the post-processing
    except DOCUMENTED:
        return
