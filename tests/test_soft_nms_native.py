"""SoftNMS of the compiled extension (backend "cpp", and "cuda" on a GPU) against the NumPy oracle.

Exactness: segments, labels and their order are identical. Scores are bit-identical for ``hard`` and ``linear``;
for ``gaussian`` the extension uses one deterministic ``exp`` (``_C._deterministic_exp``, the same bits on CPU and
GPU) while the oracle uses ``np.exp``, whose last bit depends on the CPU (AVX-512 SIMD vs glibc). With the
``exact_exp`` fixture the oracle's ``np.exp`` is replaced by that same function and gaussian scores must be
bit-identical too; without it they agree to a few ulp.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsmt_fast.postprocess import native
from gsmt_fast.postprocess.soft_nms import soft_nms

pytestmark = pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")


def run_both(segments, scores, labels, backend="cpp", **kwargs):
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    expected = soft_nms(segments, scores, labels, backend="reference", **kwargs)
    got = soft_nms(segments, scores, labels, backend=backend, **kwargs)
    return expected, got


def assert_same(expected, got):
    for e, g, name in zip(expected, got, ("segments", "scores", "labels")):
        assert e.dtype == g.dtype, name
        assert e.shape == g.shape, (name, e.shape, g.shape)
        np.testing.assert_array_equal(g, e, err_msg=name)


# The hand cases of tests/test_soft_nms.py (inputs only; the oracle gives the expected output).
ABCD = ([[0, 10], [1, 11], [20, 30], [5, 15]], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])
HAND_CASES = [
    (ABCD, dict(method="hard", iou_threshold=0.5, multiclass=False)),
    (ABCD, dict(method="linear", iou_threshold=0.3, multiclass=False)),
    (([[0, 4], [2, 6], [10, 12], [1, 5]], [0.9, 0.85, 0.5, 0.3], [0] * 4), dict(sigma=0.5, multiclass=False)),
    (([[0, 4], [2, 6]], [0.9, 0.85], [0, 0]), dict(sigma=0.5, iou_threshold=0.9, multiclass=False)),
    (([[0, 5], [0, 2]], [0.9, 0.8], [0, 0]), dict(method="hard", iou_threshold=0.4, multiclass=False)),
    (([[0, 5], [0, 2]], [0.9, 0.8], [0, 0]), dict(method="linear", iou_threshold=0.4, multiclass=False)),
    (([[0, 5], [0, 2]], [0.9, 0.8], [0, 0]), dict(method="linear", iou_threshold=0.41, multiclass=False)),
    (
        ([[4, 5], [2, 3], [10, 11], [10, 11], [6, 8], [6, 7]], [0.5] * 6, [0, 0, 3, 1, 0, 0]),
        dict(sigma=0.5, multiclass=False),
    ),
    (([[3, 4], [1, 3], [1, 2], [1, 2]], [0.5] * 4, [0, 1, 2, 0]), dict(method="hard", iou_threshold=0.9)),
    (([[0, 10], [0, 10]], [0.9, 0.9], [0, 0]), dict(method="hard", iou_threshold=0.5, multiclass=False)),
    (([[0, 10], [0, 10]], [0.9, 0.9], [0, 0]), dict(sigma=0.5, multiclass=False)),
    (
        ([[3, 3], [3, 3], [4, 4], [0, 10]], [0.9, 0.8, 0.7, 0.6], [0] * 4),
        dict(method="hard", iou_threshold=0.5, multiclass=False),
    ),
    (([[0, 10], [0, 10]], [0.9, 0.8], [0, 1]), dict(method="hard", iou_threshold=0.5, multiclass=False)),
    (([[0, 10], [0, 10]], [0.9, 0.8], [0, 1]), dict(method="hard", iou_threshold=0.5, multiclass=True)),
    (([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], [0.5, 0.4, 0.3, 0.2, 0.1], [0] * 5), dict(max_seg_num=3)),
    (
        ([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], [0.5, 0.4, 0.3, 0.2, 0.1], [0, 1, 0, 1, 0]),
        dict(max_seg_num=2, multiclass=True),
    ),
    (([[0, 10], [0, 10]], [0.9, 0.1], [0, 0]), dict(sigma=0.5, min_score=0.02, multiclass=False)),
    (([[0, 10], [0, 10]], [0.9, 0.1], [0, 0]), dict(sigma=0.5, min_score=0.01, multiclass=False)),
    (([[0, 1]], [0.0005], [0]), dict(min_score=0.001)),
    # hard decay to exactly 0 is kept (and emitted) when min_score <= 0
    (([[0, 10], [0, 10], [1, 9]], [0.9, 0.8, 0.7], [0, 0, 0]), dict(method="hard", min_score=0.0, multiclass=False)),
    # negative and large labels, per class
    (([[0, 2], [1, 3], [0, 2]], [0.3, 0.6, 0.6], [-5, 2**40, -5]), dict(method="linear", iou_threshold=0.1)),
]


@pytest.mark.parametrize(("case", "kwargs"), HAND_CASES)
def test_hand_cases_match_reference(exact_exp, case, kwargs):
    assert_same(*run_both(*case, **kwargs))


def test_hand_case_values_without_patching():
    # Same expected values as tests/test_soft_nms.py, computed by hand, through backend="cpp".
    segments, scores, labels = soft_nms(*map(np.array, ABCD), method="linear", iou_threshold=0.3,
                                        multiclass=False, backend="cpp")  # fmt: skip
    np.testing.assert_array_equal(segments, [[0, 10], [20, 30], [5, 15], [1, 11]])
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.4, 6.4 / 77], rtol=1e-15)
    segments, scores, _ = soft_nms(np.array([[0.0, 4], [2, 6], [10, 12], [1, 5]]), np.array([0.9, 0.85, 0.5, 0.3]),
                                   np.zeros(4, np.int64), sigma=0.5, multiclass=False, backend="cpp")  # fmt: skip
    np.testing.assert_array_equal(segments, [[0, 4], [2, 6], [10, 12], [1, 5]])
    np.testing.assert_allclose(scores, [0.9, 0.85 * math.exp(-2 / 9), 0.5, 0.3 * math.exp(-1.44)], rtol=1e-15)
    assert scores[2] == 0.5  # a disjoint segment decays by exactly exp(-0) == 1


@pytest.mark.parametrize("multiclass", [True, False])
def test_empty_input(multiclass):
    for empty in (([], [], []), (np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64))):
        segments, scores, labels = soft_nms(*empty, multiclass=multiclass, backend="cpp")
        assert segments.shape == (0, 2) and segments.dtype == np.float64
        assert scores.shape == (0,) and scores.dtype == np.float64
        assert labels.shape == (0,) and labels.dtype == np.int64


def test_bad_input_is_rejected_before_the_extension():
    with pytest.raises(ValueError, match="scores contain NaN"):
        soft_nms(np.array([[0.0, 1.0]]), np.array([np.nan]), np.array([0]), backend="cpp")
    with pytest.raises(ValueError, match="unknown SoftNMS method"):
        soft_nms(np.array([[0.0, 1.0]]), np.array([0.5]), np.array([0]), method="cosine", backend="cpp")


def test_extension_checks_shapes_itself():
    from gsmt_fast import _C

    with pytest.raises(ValueError, match=r"segments \(N, 2\)"):
        _C.soft_nms_cpu(np.zeros((3, 3)), np.zeros(3), np.zeros(3, np.int64), _C.NmsSettings("hard", 0.5, 0.5, 0.0, 10,
                                                                                             True))
    with pytest.raises(ValueError, match="unknown SoftNMS method"):
        _C.NmsSettings("x", 0.5, 0.5, 0.0, 10, True)


def test_missing_cuda_op_raises_not_implemented(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("gsmt_fast._C")
    monkeypatch.setitem(sys.modules, "gsmt_fast._C", fake)
    with pytest.raises(NotImplementedError, match="built without CUDA"):
        soft_nms([[0, 1]], [0.5], [0], backend="cuda")


def test_deterministic_exp_accuracy():
    from gsmt_fast import _C

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-50, 0, 3000), rng.uniform(-1e-6, 0, 200), [0.0, -0.0, -745.2, -1000.0]])
    got = np.array([_C._deterministic_exp(float(v)) for v in x])
    want = np.array([math.exp(float(v)) for v in x])
    ulp = np.spacing(np.maximum(want, np.finfo(np.float64).tiny))
    assert np.all(np.abs(got - want) <= ulp)  # within one ulp of glibc
    assert _C._deterministic_exp(-0.0) == 1.0 and _C._deterministic_exp(0.0) == 1.0


segment_rows = st.tuples(st.integers(0, 20), st.integers(0, 8)).map(lambda r: (float(r[0]), float(r[0] + r[1])))
score_values = st.one_of(st.sampled_from([0.0, 0.001, 0.25, 0.5, 0.75, 1.0]), st.floats(0.0, 1.0))
candidate_sets = st.lists(st.tuples(segment_rows, score_values, st.integers(-1, 3)), min_size=0, max_size=40)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    candidates=candidate_sets,
    method=st.sampled_from(["gaussian", "linear", "hard"]),
    multiclass=st.booleans(),
    max_seg_num=st.integers(1, 45),
    sigma=st.sampled_from([0.05, 0.4, 0.5, 1.0]),
    iou_threshold=st.sampled_from([0.0, 0.3, 0.4, 0.5, 1.0]),
    min_score=st.sampled_from([0.0, 0.001, 0.1, 0.3]),
)
def test_matches_reference_property(exact_exp, candidates, method, multiclass, max_seg_num, sigma, iou_threshold,
                                    min_score):  # fmt: skip
    segments = [c[0] for c in candidates]
    scores = [c[1] for c in candidates]
    labels = [c[2] for c in candidates]
    kwargs = dict(method=method, sigma=sigma, iou_threshold=iou_threshold, min_score=min_score,
                  max_seg_num=max_seg_num, multiclass=multiclass)  # fmt: skip
    assert_same(*run_both(segments, scores, labels, **kwargs))


def test_unpatched_gaussian_is_close():
    # Without the fixture: real np.exp in the oracle. Well separated scores, so no near-tie can reorder the output.
    rng = np.random.default_rng(5)
    starts = rng.uniform(0, 100, 60)
    segments = np.stack([starts, starts + rng.uniform(0.5, 10, 60)], axis=1)
    scores = np.sort(rng.uniform(0.2, 1.0, 60))[::-1] + np.arange(60)[::-1] * 1e-3
    labels = rng.integers(0, 3, 60)
    for multiclass in (True, False):
        expected = soft_nms(segments, scores, labels, sigma=0.5, multiclass=multiclass)
        got = soft_nms(segments, scores, labels, sigma=0.5, multiclass=multiclass, backend="cpp")
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[2], expected[2])
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-13, atol=0)


def test_large_input_runs():
    rng = np.random.default_rng(1)
    n = 3000
    starts = rng.integers(0, 1000, n).astype(np.float64)
    segments = np.stack([starts, starts + rng.integers(0, 30, n)], axis=1)
    scores = rng.integers(1, 20, n) / 20.0
    labels = rng.integers(0, 5, n)
    for method in ("hard", "linear"):
        expected = soft_nms(segments, scores, labels, method=method, iou_threshold=0.5, max_seg_num=100)
        got = soft_nms(segments, scores, labels, method=method, iou_threshold=0.5, max_seg_num=100, backend="cpp")
        assert_same(expected, got)


# ---- GPU ----

gpu = pytest.mark.gpu


def _cuda_ready() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and native.cuda_available()


@gpu
@pytest.mark.skipif(not _cuda_ready(), reason="needs a CUDA GPU and an extension built with CUDA")
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
@pytest.mark.parametrize("multiclass", [True, False])
def test_cuda_equals_cpu(method, multiclass):
    rng = np.random.default_rng(2)
    for n in (0, 1, 5, 33, 200, 1000):
        starts = rng.integers(0, 100, n).astype(np.float64)
        segments = np.stack([starts, starts + rng.integers(0, 15, n)], axis=1)
        scores = rng.integers(0, 21, n) / 20.0
        labels = rng.integers(0, 4, n)
        kwargs = dict(method=method, sigma=0.5, iou_threshold=0.4, min_score=0.001, max_seg_num=150,
                      multiclass=multiclass)  # fmt: skip
        cpu = soft_nms(segments, scores, labels, backend="cpp", **kwargs)
        cuda = soft_nms(segments, scores, labels, backend="cuda", **kwargs)
        assert_same(cpu, cuda)
