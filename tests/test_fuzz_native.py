"""Property-based fuzzing of the native post-processing ops and their bindings (also run by tests/run_sanitized.sh
under ASan + UBSan): random shapes and values — zero sizes, NaN, inf, negative and huge values, invalid valid_len,
T up to 4096 — give either the oracle's result or a documented exception (TypeError / ValueError), never a crash,
a hang or an out-of-bounds access."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsmt_fast.config import InferenceConfig
from gsmt_fast.postprocess import native, reference
from gsmt_fast.postprocess.soft_nms import soft_nms

pytestmark = pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE_VALUES = [np.nan, np.inf, -np.inf, -1.0, 2.0, 1e30, -0.0, 0.0, 1.0, 0.5]


@st.composite
def window_batches(draw, max_t=24):
    """(probs, masks, valid_len): mostly valid probabilities, sometimes special values or bad valid lengths."""
    b = draw(st.integers(0, 3))
    k = draw(st.integers(1, 4))
    t = draw(st.integers(1, max_t))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    probs = rng.dirichlet(np.ones(k + 1), size=(b, t)).transpose(0, 2, 1)
    masks = np.round(rng.random((b, t, t)) * 20) / 20
    if draw(st.booleans()):  # poison a few entries (maybe in the padding, maybe in the valid part)
        for _ in range(draw(st.integers(1, 3))):
            target = probs if draw(st.booleans()) else masks
            if target.size:
                target.flat[draw(st.integers(0, target.size - 1))] = draw(st.sampled_from(EDGE_VALUES))
    valid = rng.integers(1, t + 1, size=b)
    if b and draw(st.integers(0, 9)) == 0:
        valid[draw(st.integers(0, b - 1))] = draw(st.sampled_from([0, -1, t + 1, 2**31 - 1]))
    return probs.astype(dtype), masks.astype(dtype), valid


def _oracle(probs, masks, valid, cfg):
    """Per window: the reference's candidates, or the exception it raises (None when valid_len is out of range)."""
    out = []
    for b in range(len(valid)):
        try:
            out.append(reference.window_candidates(probs[b], masks[b], int(valid[b]), cfg))
        except ValueError as error:
            out.append(error)
    return out


@FUZZ
@given(window_batches(), st.sampled_from(["short", "long"]))
def test_candidates_are_the_oracles_or_a_clear_error(batch, mode):
    probs, masks, valid = batch
    cfg = InferenceConfig(mode=mode, top_snippets=5, mask_thresholds=(0.3, 0.6))
    expected = _oracle(probs, masks, valid, cfg)
    try:
        got = native.window_candidates_batch(probs, masks, valid, cfg, num_threads=1).as_candidates()
    except ValueError as error:
        # The op names the first bad window; the oracle must reject that window too.
        assert any(isinstance(e, ValueError) for e in expected), error
        return
    for e, g in zip(expected, got):
        assert not isinstance(e, ValueError), e
        for name in ("start", "end", "labels", "scores"):
            np.testing.assert_array_equal(getattr(e, name), getattr(g, name))


@FUZZ
@given(window_batches(), st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True,
                                                                                    allow_infinity=True))
def test_detections_never_crash_on_any_time_map(batch, scale, offset):
    probs, masks, valid = batch
    cfg = InferenceConfig(top_snippets=4, mask_thresholds=(0.5,), nms_method="hard", nms_iou_threshold=0.5)
    try:
        out = native.window_detections_batch(probs, masks, valid, scale, offset, cfg, num_threads=1)
    except ValueError:
        return
    assert len(valid) == 0 or (np.isfinite(scale) and scale > 0 and np.isfinite(offset))
    for (segments, scores, _labels), n in zip(out.as_list(), out.count.tolist()):
        assert len(segments) == n <= cfg.max_detections
        assert (segments[:, 0] <= segments[:, 1]).all() and np.isfinite(segments).all()
        assert ((scores > 0) & (scores <= 1)).all()


@settings(max_examples=20, deadline=None)
@given(st.integers(1000, 4096), st.integers(0, 2**32 - 1))
def test_long_windows(t, seed):
    """Windows up to 4096 snippets (the masks are 64 MB): the op agrees with the oracle on the valid part."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=(1, t)).transpose(0, 2, 1).astype(np.float32)
    masks = np.zeros((1, t, t), np.float32)
    for a in rng.integers(0, t - 20, size=8):  # a few block-shaped instances
        masks[0, a:a + 20, a:a + 20] = 0.8
    valid = np.array([int(rng.integers(1, t + 1))])
    cfg = InferenceConfig(top_snippets=20)
    got = native.window_candidates_batch(probs, masks, valid, cfg).as_candidates()[0]
    want = reference.window_candidates(probs[0], masks[0], int(valid[0]), cfg)
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.start, want.start)


segment_values = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from(EDGE_VALUES)


@settings(max_examples=2000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(segment_values, segment_values, segment_values, st.integers(-3, 3)), max_size=30),
       st.sampled_from(["gaussian", "linear", "hard"]), st.booleans(),
       st.integers(-5, 2**40) | st.sampled_from([0, 1, 100_000, 100_001, 2**31]))
def test_soft_nms_binding_matches_the_oracle_or_rejects(exact_exp, rows, method, multiclass, max_seg_num):
    segments = np.array([[r[0], r[1]] for r in rows], dtype=np.float64).reshape(-1, 2)
    scores = np.array([r[2] for r in rows], dtype=np.float64)
    labels = np.array([r[3] for r in rows], dtype=np.int64)
    kwargs = dict(method=method, sigma=0.5, iou_threshold=0.3, min_score=0.001, max_seg_num=max_seg_num,
                  multiclass=multiclass)
    try:
        want = soft_nms(segments, scores, labels, backend="reference", **kwargs)
    except ValueError:
        with pytest.raises(ValueError):
            soft_nms(segments, scores, labels, backend="cpp", **kwargs)
        return
    got = soft_nms(segments, scores, labels, backend="cpp", **kwargs)
    np.testing.assert_array_equal(want[0], got[0])
    np.testing.assert_array_equal(want[2], got[2])
    np.testing.assert_array_equal(want[1], got[1])  # exact_exp: the oracle uses the extension's exp


@FUZZ
@given(st.integers(-2, 2**40), st.integers(-2, 2**40), st.floats(allow_nan=True),
       st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=70))
def test_settings_objects_validate_every_field(top_snippets, pre_nms_topk, score_threshold, thresholds):
    """The extension's settings constructors reject every out-of-range value with ValueError or TypeError, whatever
    reaches them (direct callers skip the Python checks)."""
    ext = native.extension()
    try:
        ext.CandidateSettings(thresholds, top_snippets, False, score_threshold, pre_nms_topk)
    except (ValueError, TypeError):
        return
    assert 1 <= top_snippets < 2**31 and 1 <= pre_nms_topk < 2**31 and not np.isnan(score_threshold)
    assert thresholds and not any(np.isnan(thresholds))
