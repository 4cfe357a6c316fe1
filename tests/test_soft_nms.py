"""SoftNMS reference semantics (docs/DESIGN.md, "SoftNMS") on hand-computed cases; expected scores are derived in the
comments."""

from __future__ import annotations

import math
import sys
import types
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gsmt_fast.postprocess.reference import segment_iou
from gsmt_fast.postprocess.soft_nms import soft_nms


def run(segments, scores, labels, **kwargs):
    return soft_nms(np.array(segments, dtype=np.float64), np.array(scores), np.array(labels, dtype=np.int64), **kwargs)


# A [0,10] 0.9, B [1,11] 0.8, C [20,30] 0.7, D [5,15] 0.6, all label 0.
# IoU(A,B) = 9 / (10+10-9) = 9/11; IoU(A,C) = 0; IoU(A,D) = 5 / 15 = 1/3; IoU(C,*) = 0 except C itself;
# IoU(D,B) = 6 / (10+10-6) = 3/7.
ABCD = ([[0, 10], [1, 11], [20, 30], [5, 15]], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])


def test_hard_hand_case():
    # thr 0.5: pick A; B (9/11 >= 0.5) -> 0, dropped (< min_score); D (1/3) kept. Then C, then D, undecayed.
    segments, scores, labels = run(*ABCD, method="hard", iou_threshold=0.5, multiclass=False)
    np.testing.assert_array_equal(segments, [[0, 10], [20, 30], [5, 15]])
    np.testing.assert_array_equal(scores, [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(labels, [0, 0, 0])


def test_linear_hand_case():
    # thr 0.3: pick A 0.9; B -> 0.8 * (1 - 9/11) = 1.6/11 ~ 0.1455; D -> 0.6 * (1 - 1/3) = 0.4; C stays 0.7.
    # pick C 0.7 (no overlap with B or D). pick D 0.4; B -> 1.6/11 * (1 - 3/7) = 6.4/77 ~ 0.0831. pick B.
    segments, scores, labels = run(*ABCD, method="linear", iou_threshold=0.3, multiclass=False)
    np.testing.assert_array_equal(segments, [[0, 10], [20, 30], [5, 15], [1, 11]])
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.4, 6.4 / 77], rtol=1e-12)


def test_gaussian_hand_case():
    # sigma 0.5. A [0,4] 0.9, B [2,6] 0.85, C [10,12] 0.5, D [1,5] 0.3.
    # pick A: IoU(A,B) = 2/6 = 1/3 -> B = 0.85 * exp(-(1/9)/0.5) = 0.85 e^{-2/9} ~ 0.6806;
    #         IoU(A,D) = 3/5 -> D = 0.3 e^{-0.36/0.5} = 0.3 e^{-0.72}; C unchanged (w = e^0 = 1).
    # pick B: IoU(B,D) = 3/5 -> D = 0.3 e^{-1.44} ~ 0.0710. pick C 0.5 (no overlap), then D.
    segments, scores, labels = run(
        [[0, 4], [2, 6], [10, 12], [1, 5]], [0.9, 0.85, 0.5, 0.3], [0, 0, 0, 0], sigma=0.5, multiclass=False
    )
    np.testing.assert_array_equal(segments, [[0, 4], [2, 6], [10, 12], [1, 5]])
    np.testing.assert_allclose(scores, [0.9, 0.85 * math.exp(-2 / 9), 0.5, 0.3 * math.exp(-1.44)], rtol=1e-12)


def test_gaussian_ignores_iou_threshold():
    a = run([[0, 4], [2, 6]], [0.9, 0.85], [0, 0], sigma=0.5, iou_threshold=0.9, multiclass=False)
    np.testing.assert_allclose(a[1], [0.9, 0.85 * math.exp(-2 / 9)], rtol=1e-12)


@pytest.mark.parametrize("method", ["hard", "linear"])
def test_iou_exactly_at_threshold_is_suppressed(method):
    # [0,5] vs [0,2]: IoU = 2/5, which rounds to the same double as the literal 0.4.
    pair = ([[0, 5], [0, 2]], [0.9, 0.8], [0, 0])
    assert segment_iou(np.array([0.0, 5.0]), np.array([[0.0, 2.0]]))[0] == 0.4
    segments, scores, _ = run(*pair, method=method, iou_threshold=0.4, multiclass=False)
    if method == "hard":
        np.testing.assert_array_equal(scores, [0.9])  # 0.8 * 0 -> dropped
    else:
        np.testing.assert_allclose(scores, [0.9, 0.8 * 0.6], rtol=1e-12)  # 0.8 * (1 - 0.4)
    # just above the IoU: no decay at all
    _, scores, _ = run(*pair, method=method, iou_threshold=0.41, multiclass=False)
    np.testing.assert_array_equal(scores, [0.9, 0.8])


def test_ties_smaller_start_then_end_then_label():
    # All scores 0.5, gaussian sigma 0.5, class-agnostic. Disjoint segments decay by e^0 = 1 exactly.
    segments = [[4, 5], [2, 3], [10, 11], [10, 11], [6, 8], [6, 7]]
    labels = [0, 0, 3, 1, 0, 0]
    out_segments, out_scores, out_labels = run(segments, [0.5] * 6, labels, sigma=0.5, multiclass=False)
    # start 2, start 4, then start 6 with the smaller end [6,7]; it decays [6,8] by IoU 1/2: 0.5 e^{-0.25/0.5}.
    # then [10,11] label 1 before label 3; it decays label 3's identical segment by IoU 1: 0.5 e^{-2}.
    np.testing.assert_array_equal(out_segments, [[2, 3], [4, 5], [6, 7], [10, 11], [6, 8], [10, 11]])
    np.testing.assert_array_equal(out_labels, [0, 0, 0, 1, 0, 3])
    np.testing.assert_allclose(out_scores, [0.5, 0.5, 0.5, 0.5, 0.5 * math.exp(-0.5), 0.5 * math.exp(-2)], rtol=1e-12)


def test_ties_in_per_class_merge():
    # Per-class runs, merged and re-sorted: equal scores -> smaller start, then smaller end, then smaller label.
    segments = [[3, 4], [1, 3], [1, 2], [1, 2]]
    labels = [0, 1, 2, 0]
    out_segments, _, out_labels = run(segments, [0.5] * 4, labels, method="hard", iou_threshold=0.9)
    np.testing.assert_array_equal(out_segments, [[1, 2], [1, 2], [1, 3], [3, 4]])
    np.testing.assert_array_equal(out_labels, [0, 2, 1, 0])


def test_identical_segments():
    pair = ([[0, 10], [0, 10]], [0.9, 0.9], [0, 0])
    _, scores, _ = run(*pair, method="hard", iou_threshold=0.5, multiclass=False)
    np.testing.assert_array_equal(scores, [0.9])
    _, scores, _ = run(*pair, sigma=0.5, multiclass=False)  # IoU 1 -> 0.9 e^{-1/0.5}
    np.testing.assert_allclose(scores, [0.9, 0.9 * math.exp(-2)], rtol=1e-12)


def test_zero_length_segments():
    # 0/0 IoU: identical points -> 1 (suppressed by hard 0.5), distinct points -> 0; a point vs [0,10] -> 0/10 = 0.
    segments, scores, _ = run(
        [[3, 3], [3, 3], [4, 4], [0, 10]],
        [0.9, 0.8, 0.7, 0.6],
        [0, 0, 0, 0],
        method="hard",
        iou_threshold=0.5,
        multiclass=False,
    )
    np.testing.assert_array_equal(segments, [[3, 3], [4, 4], [0, 10]])
    np.testing.assert_array_equal(scores, [0.9, 0.7, 0.6])
    iou = segment_iou(np.array([3.0, 3.0]), np.array([[3.0, 3.0], [4.0, 4.0], [0.0, 10.0]]))
    np.testing.assert_array_equal(iou, [1.0, 0.0, 0.0])


@pytest.mark.parametrize("multiclass", [True, False])
def test_empty_input(multiclass):
    for empty in (([], [], []), (np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64))):
        segments, scores, labels = soft_nms(*empty, multiclass=multiclass)
        assert segments.shape == (0, 2) and segments.dtype == np.float64
        assert scores.shape == (0,) and scores.dtype == np.float64
        assert labels.shape == (0,) and labels.dtype == np.int64


def test_per_class_versus_class_agnostic():
    pair = ([[0, 10], [0, 10]], [0.9, 0.8], [0, 1])
    _, scores, labels = run(*pair, method="hard", iou_threshold=0.5, multiclass=False)
    np.testing.assert_array_equal(labels, [0])  # label 1 suppressed across classes
    _, scores, labels = run(*pair, method="hard", iou_threshold=0.5, multiclass=True)
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_array_equal(scores, [0.9, 0.8])


def test_max_seg_num():
    disjoint = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    _, scores, _ = run(disjoint, [0.5, 0.4, 0.3, 0.2, 0.1], [0] * 5, max_seg_num=3, multiclass=False)
    np.testing.assert_array_equal(scores, [0.5, 0.4, 0.3])
    # per class: class 0 (0.5, 0.3, 0.1) capped to (0.5, 0.3), class 1 (0.4, 0.2); merged, capped at 2.
    _, scores, labels = run(disjoint, [0.5, 0.4, 0.3, 0.2, 0.1], [0, 1, 0, 1, 0], max_seg_num=2, multiclass=True)
    np.testing.assert_array_equal(scores, [0.5, 0.4])
    np.testing.assert_array_equal(labels, [0, 1])


def test_min_score():
    # B decays to 0.1 e^{-2} ~ 0.01353 under A (identical segment, sigma 0.5).
    pair = ([[0, 10], [0, 10]], [0.9, 0.1], [0, 0])
    _, scores, _ = run(*pair, sigma=0.5, min_score=0.02, multiclass=False)
    np.testing.assert_array_equal(scores, [0.9])
    _, scores, _ = run(*pair, sigma=0.5, min_score=0.01, multiclass=False)
    np.testing.assert_allclose(scores, [0.9, 0.1 * math.exp(-2)], rtol=1e-12)
    # an input score already below min_score is never emitted
    _, scores, _ = run([[0, 1]], [0.0005], [0], min_score=0.001)
    assert len(scores) == 0


@pytest.mark.parametrize(
    ("segments", "scores", "labels", "kwargs", "error", "match"),
    [
        ([0, 1, 2], [0.5, 0.5, 0.5], [0, 0, 0], {}, ValueError, r"segments must have shape \(N, 2\)"),
        ([[0, 1]], [0.5, 0.4], [0], {}, ValueError, "scores must have shape"),
        ([[0, 1]], [0.5], [0, 1], {}, ValueError, "labels must have shape"),
        ([[0, 1]], [np.nan], [0], {}, ValueError, "scores contain NaN"),
        ([[0, np.inf]], [0.5], [0], {}, ValueError, "segments contain NaN or inf"),
        ([[2, 1]], [0.5], [0], {}, ValueError, "start <= end"),
        ([[0, 1]], [0.5], [0.0], {}, TypeError, "labels must be an integer"),
        ([[0, 1]], [0.5], [0], {"method": "cosine"}, ValueError, "unknown SoftNMS method"),
        ([[0, 1]], [0.5], [0], {"sigma": 0.0}, ValueError, "sigma must be > 0"),
        ([[0, 1]], [0.5], [0], {"max_seg_num": 0}, ValueError, "max_seg_num"),
        ([[0, 1]], [0.5], [0], {"min_score": float("nan")}, ValueError, "min_score must be finite"),
    ],
)
def test_bad_input(segments, scores, labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        soft_nms(np.array(segments, dtype=np.float64), np.array(scores), np.array(labels), **kwargs)


def test_unknown_backend():
    with pytest.raises(ValueError, match="valid backends.*reference"):
        soft_nms([[0, 1]], [0.5], [0], backend="gpu")


@pytest.mark.parametrize("backend", ["cpp", "cuda"])
def test_compiled_backend_missing_function(monkeypatch, backend):
    monkeypatch.setitem(sys.modules, "gsmt_fast._C", types.ModuleType("gsmt_fast._C"))
    with pytest.raises(RuntimeError, match="soft_nms op is not built"):
        soft_nms([[0, 1]], [0.5], [0], backend=backend)


def test_compiled_backend_extension_not_importable(monkeypatch):
    monkeypatch.setitem(sys.modules, "gsmt_fast._C", None)  # makes `import gsmt_fast._C` raise ImportError
    with pytest.raises(RuntimeError, match="could not be imported"):
        soft_nms([[0, 1]], [0.5], [0], backend="cpp")


def test_compiled_backend_dispatch(monkeypatch):
    """backend="cpp" hands the checked float64/float64/int64 arrays and one settings object to the extension."""
    from gsmt_fast.postprocess import native

    calls = []

    def fake_soft_nms_cpu(segments, scores, labels, nms):
        calls.append((segments.dtype, scores.dtype, labels.dtype, nms))
        return segments[:1], scores[:1], labels[:1]

    fake = types.ModuleType("gsmt_fast._C")
    fake.soft_nms_cpu = fake_soft_nms_cpu
    fake.NmsSettings = lambda *settings: settings
    monkeypatch.setitem(sys.modules, "gsmt_fast._C", fake)
    native.nms_settings.cache_clear()  # settings objects of the real extension must not be reused, nor these kept
    try:
        segments, scores, labels = soft_nms([[0, 1], [2, 3]], [0.5, 0.4], [0, 1], method="linear", sigma=0.3,
                                            iou_threshold=0.2, min_score=0.01, max_seg_num=7, multiclass=False,
                                            backend="cpp")
    finally:
        native.nms_settings.cache_clear()
    assert calls == [(np.float64, np.float64, np.int64, ("linear", 0.3, 0.2, 0.01, 7, False))]
    assert segments.shape == (1, 2) and labels.dtype == np.int64


segment_rows = st.tuples(st.integers(0, 20), st.integers(0, 8)).map(lambda r: (float(r[0]), float(r[0] + r[1])))
candidate_sets = st.lists(
    st.tuples(segment_rows, st.floats(0.0, 1.0, allow_nan=False), st.integers(0, 2)), min_size=0, max_size=25
)


@settings(max_examples=150, deadline=None)
@given(
    candidates=candidate_sets,
    method=st.sampled_from(["gaussian", "linear", "hard"]),
    multiclass=st.booleans(),
    max_seg_num=st.integers(1, 30),
)
def test_properties(candidates, method, multiclass, max_seg_num):
    segments = np.array([c[0] for c in candidates], dtype=np.float64).reshape(-1, 2)
    scores = np.array([c[1] for c in candidates], dtype=np.float64)
    labels = np.array([c[2] for c in candidates], dtype=np.int64)
    out_segments, out_scores, out_labels = soft_nms(
        segments,
        scores,
        labels,
        method=method,
        sigma=0.5,
        iou_threshold=0.3,
        min_score=0.001,
        max_seg_num=max_seg_num,
        multiclass=multiclass,
    )
    assert len(out_scores) <= min(max_seg_num, len(scores))
    # emitted in non-increasing score order (weights are in [0, 1]; per-class output is re-sorted)
    assert np.all(np.diff(out_scores) <= 0)
    assert np.all(out_scores >= 0.001)
    # output is a sub-multiset of the input (segment, label), each score at most its input score
    available = Counter(zip(map(tuple, segments.tolist()), labels.tolist()))
    emitted = Counter(zip(map(tuple, out_segments.tolist()), out_labels.tolist()))
    assert all(available[key] >= count for key, count in emitted.items())
    for segment, score, label in zip(out_segments.tolist(), out_scores, out_labels):
        same = (segments[:, 0] == segment[0]) & (segments[:, 1] == segment[1]) & (labels == label)
        assert score <= scores[same].max()
