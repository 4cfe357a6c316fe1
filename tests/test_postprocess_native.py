"""Batched C++/CUDA post-processing (gsmt_fast.postprocess.native) against the NumPy oracle, window by window.

* Candidates (steps 1–5): identical start/end/labels in the same order and bit-identical float64 scores.
* Detections (steps 1–6, SoftNMS in seconds): identical segments/labels/order; scores bit-identical. For gaussian
  SoftNMS that needs the ``exact_exp`` fixture, which makes the oracle use the extension's deterministic exp instead
  of ``np.exp`` (whose last bit depends on the CPU: NumPy's AVX-512 exp and glibc's differ for ~5 % of arguments,
  enough to reorder exact-looking near-ties). ``test_unpatched_reference_is_close`` covers the real ``np.exp``.
* CUDA (``@pytest.mark.gpu``): equal to the CPU op bit for bit.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsmt_fast.config import DEFAULT_MASK_THRESHOLDS, InferenceConfig
from gsmt_fast.postprocess import native, reference

pytestmark = pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")


# ---------------------------------------------------------------------------------------------------------------
# inputs


def make_batch(seed, batch, num_classes, num_snippets, mask_kind="quantised", prob_kind="softmax", valid_len=None,
               dtype=np.float32):  # fmt: skip
    """Random probs (B, K+1, T) and masks (B, T, T); padding beyond valid_len is NaN."""
    rng = np.random.default_rng(seed)
    B, K, T = batch, num_classes, num_snippets
    if prob_kind == "softmax":
        logits = rng.normal(size=(B, K + 1, T)) * 3.0
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    else:  # quantised: many ties in the argmax and in the foreground ranking
        probs = rng.integers(0, 5, size=(B, K + 1, T)) / 4.0
    if mask_kind == "quantised":  # multiples of 0.05: many exact ties
        masks = rng.integers(0, 21, size=(B, T, T)) * 0.05
    elif mask_kind == "thresholds":  # exactly at (float32 of) the thresholds and one float32 step around them
        base = np.array(DEFAULT_MASK_THRESHOLDS + (0.0, 1.0, 0.5, 0.25), dtype=np.float32)
        values = np.concatenate([base, np.nextafter(base, np.float32(0)), np.nextafter(base, np.float32(1))])
        masks = rng.choice(np.clip(values, 0, 1), size=(B, T, T))
    elif mask_kind == "blocky":
        masks = blocky_masks(rng, B, T)
    else:
        masks = rng.uniform(size=(B, T, T))
    probs = probs.astype(dtype)
    masks = masks.astype(dtype)
    if valid_len is None:
        valid_len = np.full(B, T)
    valid_len = np.asarray(valid_len)
    for b, v in enumerate(valid_len.tolist()):
        probs[b, :, v:] = np.nan
        masks[b, v:, :] = np.nan
        masks[b, :, v:] = np.nan
    return probs, masks, valid_len


def blocky_masks(rng, B, T):
    """Masks that look like trained output: a few foreground blocks per window, columns inside a block share it."""
    masks = rng.uniform(0.0, 0.15, size=(B, T, T))
    for b in range(B):
        for _ in range(int(rng.integers(1, 4))):
            a = int(rng.integers(0, T))
            e = min(T, a + int(rng.integers(1, max(2, T // 4))))
            level = rng.uniform(0.5, 1.0)
            masks[b, a:e, a:e] = np.clip(level + rng.normal(0, 0.1, size=(e - a, e - a)), 0, 1)
    return np.round(masks, 2)


def reference_detections(probs, masks, valid_len, scale, offset, cfg):
    cands = reference.window_candidates(probs, masks, valid_len, cfg)
    segments = offset + cands.segments_units() * scale  # SnippetGrid.to_seconds
    return reference.soft_nms(segments, cands.scores, cands.labels, method=cfg.nms_method, sigma=cfg.nms_sigma,
                              iou_threshold=cfg.nms_iou_threshold, min_score=cfg.nms_min_score,
                              max_seg_num=cfg.max_detections, multiclass=cfg.multiclass_nms)  # fmt: skip


def assert_candidates_equal(expected: reference.Candidates, got: reference.Candidates, where=""):
    for name in ("start", "end", "labels", "scores"):
        e, g = getattr(expected, name), getattr(got, name)
        assert e.dtype == g.dtype, (where, name)
        np.testing.assert_array_equal(g, e, err_msg=f"{where} {name}")


def assert_detections_equal(expected, got, where=""):
    for e, g, name in zip(expected, got, ("segments", "scores", "labels")):
        assert e.dtype == g.dtype and e.shape == g.shape, (where, name, e.shape, g.shape)
        np.testing.assert_array_equal(g, e, err_msg=f"{where} {name}")


def check_against_reference(probs, masks, valid_len, cfg, scale=None, offset=None, num_threads=None):
    B = probs.shape[0]
    scale = np.ones(B) if scale is None else np.asarray(scale, dtype=np.float64)
    offset = np.zeros(B) if offset is None else np.asarray(offset, dtype=np.float64)
    cands = native.window_candidates_batch(probs, masks, valid_len, cfg, num_threads=num_threads)
    dets = native.window_detections_batch(probs, masks, valid_len, scale, offset, cfg, num_threads=num_threads)
    assert cands.start.shape == (B, cfg.pre_nms_topk) and dets.segments.shape == (B, cfg.max_detections, 2)
    for b, (c, d) in enumerate(zip(cands.as_candidates(), dets.as_list())):
        v = int(np.asarray(valid_len)[b])
        assert_candidates_equal(reference.window_candidates(probs[b], masks[b], v, cfg), c, where=f"window {b}")
        assert_detections_equal(reference_detections(probs[b], masks[b], v, scale[b], offset[b], cfg), d,
                                where=f"window {b}")  # fmt: skip
        # padding
        n = int(cands.count[b])
        assert (cands.start[b, n:] == -1).all() and (cands.scores[b, n:] == 0).all()
        m = int(dets.count[b])
        assert (dets.labels[b, m:] == -1).all() and (dets.segments[b, m:] == 0).all()
    assert (cands.status == 0).all() and (dets.status == 0).all()
    return cands, dets


# ---------------------------------------------------------------------------------------------------------------
# property-based equality with the oracle

threshold_sets = st.sampled_from(
    [DEFAULT_MASK_THRESHOLDS, (0.5,), (0.05, 0.5, 0.95), (0.9, 0.1, 0.5, 0.5), (0.0,), (0.25, 0.75, 0.45, 0.3)]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    num_classes=st.integers(1, 4),
    num_snippets=st.one_of(st.integers(1, 16), st.integers(17, 128), st.integers(129, 1000)),
    mask_kind=st.sampled_from(["quantised", "thresholds", "blocky", "uniform"]),
    prob_kind=st.sampled_from(["softmax", "quantised"]),
    dtype=st.sampled_from([np.float32, np.float16]),
    padded=st.booleans(),
    mode=st.sampled_from(["short", "long"]),
    thresholds=threshold_sets,
    top_snippets=st.sampled_from([1, 3, 50, 5000]),
    score_threshold=st.sampled_from([0.0, 0.1, 0.3]),
    pre_nms_topk=st.sampled_from([1, 5, 200]),
    nms_method=st.sampled_from(["gaussian", "linear", "hard"]),
    nms_sigma=st.sampled_from([0.4, 0.6]),
    nms_iou_threshold=st.sampled_from([0.0, 0.3, 0.5]),
    nms_min_score=st.sampled_from([0.0, 0.001, 0.05]),
    max_detections=st.sampled_from([1, 7, 200]),
    multiclass=st.booleans(),
    num_threads=st.sampled_from([None, 1, 2, 3]),
)
def test_matches_reference_property(exact_exp, seed, batch, num_classes, num_snippets, mask_kind, prob_kind, dtype,
                                    padded, mode, thresholds, top_snippets, score_threshold, pre_nms_topk, nms_method,
                                    nms_sigma, nms_iou_threshold, nms_min_score, max_detections, multiclass,
                                    num_threads):  # fmt: skip
    rng = np.random.default_rng(seed + 1)
    valid = rng.integers(1, num_snippets + 1, size=batch) if padded else np.full(batch, num_snippets)
    if num_snippets > 400:  # keep the oracle (pure Python loops) fast
        top_snippets = min(top_snippets, 50)
    probs, masks, valid = make_batch(seed, batch, num_classes, num_snippets, mask_kind, prob_kind, valid, dtype)
    cfg = InferenceConfig(mode=mode, mask_thresholds=thresholds, top_snippets=top_snippets,
                          score_threshold=score_threshold, pre_nms_topk=pre_nms_topk, nms_method=nms_method,
                          nms_sigma=nms_sigma, nms_iou_threshold=nms_iou_threshold, nms_min_score=nms_min_score,
                          max_detections=max_detections, multiclass_nms=multiclass)  # fmt: skip
    scale = rng.uniform(0.1, 3.0, size=batch)
    offset = rng.uniform(-10.0, 10.0, size=batch)
    check_against_reference(probs, masks, valid, cfg, scale, offset, num_threads)


@pytest.mark.parametrize("mode", ["short", "long"])
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_default_config_realistic_batch(exact_exp, mode, method):
    probs, masks, valid = make_batch(7, 6, 20, 100, "blocky", "softmax", valid_len=[100, 100, 64, 1, 99, 37])
    cfg = InferenceConfig(mode=mode, nms_method=method, nms_iou_threshold=0.4)
    check_against_reference(probs, masks, valid, cfg, scale=np.full(6, 0.5), offset=np.arange(6.0))


def test_unpatched_reference_is_close():
    # The real np.exp in the oracle: same candidates; detections equal up to a few ulp in the scores (an exact
    # near-tie could in principle swap two disjoint detections, so this uses well separated random scores).
    probs, masks, valid = make_batch(11, 4, 5, 64, "uniform", "softmax")
    cfg = InferenceConfig()
    dets = native.window_detections_batch(probs, masks, valid, 1.0, 0.0, cfg).as_list()
    for b in range(4):
        expected = reference.window_detections(probs[b], masks[b], 64, cfg)
        np.testing.assert_array_equal(dets[b][0], expected[0])
        np.testing.assert_array_equal(dets[b][2], expected[2])
        np.testing.assert_allclose(dets[b][1], expected[1], rtol=1e-13, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# the oracle's hand cases (tests/test_postprocess_reference.py), inputs only: the oracle gives the expected output


def blank(T, K=2):
    probs = np.zeros((K + 1, T))
    probs[K] = 1.0
    return probs, np.zeros((T, T))


def hand_cases():
    cfg = dict(top_snippets=50, mask_thresholds=(0.5,), mode="short", score_threshold=0.0, pre_nms_topk=200)
    cases = []
    probs, masks = blank(8)
    probs[:, 2] = [0.0, 0.5, 0.5]
    masks[:, 2] = [0.75, 0.625, 0.25, 0.875, 0.625, 0.0, 0.0, 0.0]
    cases += [(probs, masks, 8, {**cfg, "top_snippets": 1, "mode": m}) for m in ("short", "long")]
    probs, masks = blank(6)
    probs[:, 0] = [0.75, 0.0, 0.25]
    masks[:, 0] = 0.5
    cases.append((probs, masks, 6, cfg))
    probs, masks = blank(6)
    probs[:, 1] = [0.5, 0.0, 0.5]
    probs[:, 2] = [0.75, 0.0, 0.25]
    masks[:, 1] = masks[:, 2] = [0.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    cases += [(probs, masks, 6, {**cfg, "mask_thresholds": t}) for t in ((0.1, 0.2, 0.3, 0.5), (0.5,))]
    probs, masks = blank(7)
    probs[:, 3] = [0.5, 0.0, 0.5]
    masks[:, 3] = [0.0, 0.25, 0.75, 0.25, 0.75, 0.0, 0.0]
    cases.append((probs, masks, 7, {**cfg, "mask_thresholds": (0.125, 0.5)}))
    probs, masks = blank(6)
    probs[:, 0] = [0.5, 0.0, 0.5]
    masks[:, 0] = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    probs[:, 3] = [0.0, 0.75, 0.25]
    masks[:, 3] = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0]
    cases.append((probs, masks, 6, {**cfg, "mask_thresholds": (0.25,), "score_threshold": 0.25}))
    probs, masks = blank(6)
    for t in (1, 3, 4):
        probs[:, t] = [0.5, 0.5, 0.0]
        masks[t, t] = 1.0
    probs[:, 5] = [0.25, 0.0, 0.75]
    masks[5, 5] = 1.0
    cases.append((probs, masks, 6, {**cfg, "top_snippets": 2}))
    probs, masks = blank(8)
    probs[:, 2] = [0.5, 0.0, 0.5]
    masks[:, 2] = [0.0, 0.75, 0.75, 0.0, 0.0, 0.75, 0.75, 0.75]
    probs[:, 5:] = [[1.0] * 3, [0.0] * 3, [0.0] * 3]
    masks[:, 5:] = 1.0
    masks[5:, :2] = np.nan
    cases += [(probs, masks, 5, {**cfg, "mode": m, "top_snippets": 8}) for m in ("short", "long")]
    probs, masks = blank(6)
    probs[:, 1] = [0.0, 0.5, 0.5]
    masks[:, 1] = [0.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    probs[:, 3] = [0.5, 0.0, 0.5]
    masks[:, 3] = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0]
    probs[:, 0] = [0.5, 0.0, 0.5]
    masks[:, 0] = [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    probs[:, 2] = [0.0, 0.5, 0.5]
    masks[:, 2] = [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    cases.append((probs, masks, 6, {**cfg, "mask_thresholds": (0.25,), "pre_nms_topk": 3}))
    probs, masks = blank(6)
    probs[:, 1] = [0.75, 0.0, 0.25]
    masks[:, 1] = [0.875, 0.875, 0.625, 0.0, 0.0, 0.0]
    cases.append((probs, masks, 6, {**cfg, "mask_thresholds": (0.5, 0.75), "nms_method": "hard",
                                    "nms_iou_threshold": 0.5, "multiclass_nms": False}))  # fmt: skip
    return cases


@pytest.mark.parametrize("index", range(len(hand_cases())))
def test_reference_hand_cases(exact_exp, index):
    probs, masks, valid, cfg = hand_cases()[index]
    cfg = InferenceConfig(**cfg)
    # dyadic values: exact in float32 (and float16)
    for dtype in (np.float32, np.float16):
        check_against_reference(probs[None].astype(dtype), masks[None].astype(dtype), np.array([valid]), cfg)


def test_hand_case_expected_values():
    probs, masks = blank(8)
    probs[:, 2] = [0.0, 0.5, 0.5]
    masks[:, 2] = [0.75, 0.625, 0.25, 0.875, 0.625, 0.0, 0.0, 0.0]
    cfg = InferenceConfig(top_snippets=1, mask_thresholds=(0.5,), score_threshold=0.0)
    (c,) = native.window_candidates_batch(probs[None].astype(np.float32), masks[None].astype(np.float32), 8,
                                          cfg).as_candidates()  # fmt: skip
    assert list(zip(c.start.tolist(), c.end.tolist(), c.labels.tolist(), c.scores.tolist())) == [
        (3, 4, 1, 0.4375),
        (0, 1, 1, 0.375),
    ]


def test_thresholds_compare_in_float64():
    # float32(0.1) = 0.10000000149 > 0.1 (active); float32(0.5) == 0.5 (not active); the one below 0.1 is not.
    T = 4
    probs = np.zeros((1, 2, T), np.float32)
    probs[0, 0, 0] = 1.0
    masks = np.zeros((1, T, T), np.float32)
    masks[0, :, 0] = [np.float32(0.1), np.nextafter(np.float32(0.1), np.float32(0)), 0.5, np.float32(0.1)]
    cfg = InferenceConfig(top_snippets=1, mask_thresholds=(0.1, 0.5), score_threshold=0.0)
    (c,) = native.window_candidates_batch(probs, masks, None, cfg).as_candidates()
    assert_candidates_equal(reference.window_candidates(probs[0], masks[0], T, cfg), c)
    # θ 0.1: rows 0, 2, 3 active -> runs 0..0 and 2..3; θ 0.5: nothing (0.5 > 0.5 is false)
    assert c.start.tolist() == [2, 0] and c.end.tolist() == [3, 0]


# ---------------------------------------------------------------------------------------------------------------
# API, layouts and errors


def test_empty_batch():
    cfg = InferenceConfig()
    probs, masks = np.zeros((0, 3, 5), np.float32), np.zeros((0, 5, 5), np.float32)
    cands = native.window_candidates_batch(probs, masks, np.zeros(0, np.int64), cfg)
    assert cands.start.shape == (0, cfg.pre_nms_topk) and cands.count.shape == (0,) and cands.as_candidates() == []
    dets = native.window_detections_batch(probs, masks, None, np.zeros(0) + 1.0, np.zeros(0), cfg)
    assert dets.segments.shape == (0, cfg.max_detections, 2) and dets.as_list() == []


def test_no_candidate_window():
    probs, masks, valid = make_batch(0, 2, 3, 10)
    masks[:] = 0.0
    cands = native.window_candidates_batch(probs, masks, valid)
    assert cands.count.tolist() == [0, 0] and (cands.labels == -1).all()
    dets = native.window_detections_batch(probs, masks, valid)
    assert dets.count.tolist() == [0, 0] and [len(d[0]) for d in dets.as_list()] == [0, 0]


@pytest.mark.parametrize("as_torch", [False, True])
def test_check_detections_recomputes_overflowed_windows_and_raises(as_torch):
    """The status step shared by the CUDA op (check=True) and the triton backend's graph replay, on results copied
    to the host (NumPy) or held as tensors: windows flagged as overflowed are replaced by the CPU op's exact
    detections, unflagged windows are left as they are, and a bad window status raises with its window."""
    import torch

    probs, masks, valid = make_batch(4, 3, 4, 30, "blocky")
    cfg = InferenceConfig()
    scale, offset = np.array([0.5, 1.0, 2.0]), np.array([0.0, 3.0, -1.0])
    exact = native.window_detections_batch(probs, masks, valid, scale, offset, cfg)
    assert exact.count[1] > 1
    damaged = exact.map(np.copy)
    damaged.segments[1], damaged.scores[1], damaged.labels[1] = 7.0, 0.5, 9
    damaged.count[1], damaged.status[1] = 1, native.STATUS_OVERFLOW
    damaged.scores[0, 0] += 1.0  # not flagged: must stay
    if as_torch:
        damaged = damaged.map(torch.from_numpy)
    inputs = tuple(torch.from_numpy(a) for a in (probs, masks, valid, scale, offset))
    assert native.check_detections(damaged, *inputs, cfg) is damaged
    for name in ("segments", "scores", "labels", "count", "status"):
        got, want = native.to_numpy(getattr(damaged, name)), getattr(exact, name)
        np.testing.assert_array_equal(got[1:], want[1:])
    assert native.to_numpy(damaged.scores)[0, 0] == exact.scores[0, 0] + 1.0
    bad = exact.map(np.copy)
    bad.status[2] = native.STATUS_BAD_VALID_LEN
    with pytest.raises(ValueError, match=r"valid_len must be in \[1, T=30\], got \d+ \(window 2\)"):
        native.check_detections(bad, *inputs, cfg)


def test_inputs_as_torch_noncontiguous_and_threads(exact_exp):
    import torch

    probs, masks, valid = make_batch(3, 5, 4, 40, "blocky")
    cfg = InferenceConfig()
    base = native.window_detections_batch(probs, masks, valid, 0.5, 1.0, cfg, num_threads=1)
    # torch CPU tensors, a non-contiguous view, many threads: same result
    masks_t = torch.from_numpy(np.ascontiguousarray(masks.transpose(0, 2, 1))).transpose(1, 2)
    assert not masks_t.is_contiguous()
    other = native.window_detections_batch(torch.from_numpy(probs), masks_t, torch.from_numpy(valid), 0.5, 1.0, cfg,
                                           num_threads=8)  # fmt: skip
    for name in ("segments", "scores", "labels", "count", "status"):
        np.testing.assert_array_equal(getattr(other, name), getattr(base, name))
    cands = native.window_candidates_batch(probs, masks, valid, cfg).as_candidates()
    assert cands[0].start.dtype == np.int64 and cands[0].scores.dtype == np.float64
    assert base.segments.dtype == np.float64 and base.labels.dtype == np.int32


def test_nan_in_padding_is_ignored_but_rejected_in_valid_part():
    probs, masks, valid = make_batch(1, 3, 2, 12, valid_len=[12, 5, 9])
    native.window_candidates_batch(probs, masks, valid)  # NaN padding: fine
    bad = probs.copy()
    bad[1, 0, 4] = np.nan
    with pytest.raises(ValueError, match=r"probs contain NaN or inf in the first valid_len=5 snippets \(window 1\)"):
        native.window_candidates_batch(bad, masks, valid)
    bad = masks.copy()
    bad[2, 8, 3] = np.inf
    with pytest.raises(ValueError, match=r"masks contain NaN or inf .*window 2"):
        native.window_detections_batch(probs, bad, valid)
    bad = masks.copy()
    bad[0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"masks must be probabilities in \[0, 1\].*window 0"):
        native.window_candidates_batch(probs, bad, valid)
    bad = probs.copy()
    bad[2, 1, 0] = -0.25
    with pytest.raises(ValueError, match=r"probs must be probabilities in \[0, 1\].*window 2"):
        native.window_candidates_batch(bad, masks, valid)
    # fp16 NaN / inf too
    bad = masks.astype(np.float16)
    bad[0, 1, 1] = np.inf
    with pytest.raises(ValueError, match="masks contain NaN or inf"):
        native.window_candidates_batch(probs, bad, valid)
    # validate=False skips the check (garbage in, garbage out, but no crash and no out-of-bounds access)
    native.window_detections_batch(probs, bad, valid, validate=False)
    nan_probs = probs.copy()
    nan_probs[:, :, :3] = np.nan
    nan_probs[0, 1, 5] = np.inf
    for method in ("gaussian", "hard"):
        native.window_detections_batch(nan_probs, masks, valid, cfg=InferenceConfig(nms_method=method), validate=False)
    # check=False returns the status instead of raising
    result = native.window_candidates_batch(probs, bad, valid, check=False)
    assert result.status.tolist() == [native.STATUS_MASKS_NONFINITE, 0, 0] and result.count[0] == 0


def test_dtype_and_shape_errors():
    probs, masks, valid = make_batch(2, 2, 3, 6)
    with pytest.raises(TypeError, match="probs must be float16 or float32, got float64"):
        native.window_candidates_batch(probs.astype(np.float64), masks, valid)
    with pytest.raises(TypeError, match="masks must be float16 or float32, got int64"):
        native.window_candidates_batch(probs, masks.astype(np.int64), valid)
    import torch

    with pytest.raises(TypeError, match="bfloat16"):
        native.window_candidates_batch(torch.from_numpy(probs).bfloat16(), torch.from_numpy(masks), valid)
    with pytest.raises(ValueError, match=r"probs must have shape \(B, K\+1, T\)"):
        native.window_candidates_batch(probs[0], masks, valid)
    with pytest.raises(ValueError, match=r"K >= 1"):
        native.window_candidates_batch(probs[:, :1], masks, valid)
    with pytest.raises(ValueError, match=r"masks must have shape \(B, T, T\) = \(2, 6, 6\)"):
        native.window_candidates_batch(probs, masks[:, :5], valid)
    with pytest.raises(ValueError, match=r"valid_len must be in \[1, T=6\], got 7 \(window 1\)"):
        native.window_candidates_batch(probs, masks, [6, 7])
    with pytest.raises(ValueError, match=r"valid_len must be in \[1, T=6\], got 0"):
        native.window_candidates_batch(probs, masks, 0)
    with pytest.raises(TypeError, match="valid_len must be an integer array"):
        native.window_candidates_batch(probs, masks, np.array([6.0, 6.0]))
    with pytest.raises(ValueError, match=r"valid_len must have shape \(2,\)"):
        native.window_candidates_batch(probs, masks, [6, 6, 6])
    with pytest.raises(ValueError, match="scale must be > 0"):
        native.window_detections_batch(probs, masks, valid, scale=[1.0, 0.0])
    with pytest.raises(ValueError, match="offset must be finite"):
        native.window_detections_batch(probs, masks, valid, offset=np.nan)
    with pytest.raises(ValueError, match="num_threads"):
        native.window_candidates_batch(probs, masks, valid, num_threads=0)
    with pytest.raises(TypeError, match="InferenceConfig"):
        native.window_candidates_batch(probs, masks, valid, cfg={"mode": "short"})
    with pytest.raises(ValueError, match="at most 64"):
        native.window_candidates_batch(probs, masks, valid, InferenceConfig(mask_thresholds=np.linspace(0, 0.99, 65)))


def test_direct_extension_call_is_checked():
    from gsmt_fast import _C

    probs, masks, valid = make_batch(2, 2, 3, 6)
    settings = _C.CandidateSettings([0.5], 50, False, 0.1, 200)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.window_candidates_cpu(probs, masks.transpose(0, 2, 1), valid.astype(np.int32), settings)
    with pytest.raises(ValueError, match=r"masks must have shape \(B, T, T\)"):
        _C.window_candidates_cpu(probs, masks[:1], valid.astype(np.int32), settings)
    # an out-of-range valid_len reaching C++ is reported as a status, never read out of bounds
    out = _C.window_candidates_cpu(probs, masks, np.array([0, 99], np.int32), settings)
    assert out[-1].tolist() == [native.STATUS_BAD_VALID_LEN] * 2
    # the settings are checked once, when built
    with pytest.raises(ValueError, match="top_snippets"):
        _C.CandidateSettings([0.5], 0, False, 0.1, 200)
    with pytest.raises(ValueError, match="NaN"):
        _C.CandidateSettings([float("nan")], 50, False, 0.1, 200)
    with pytest.raises(ValueError, match="max_detections"):
        _C.NmsSettings("gaussian", 0.5, 0.0, 0.001, 0, True)


def test_cuda_tensors_without_cuda_build(monkeypatch):
    fake = types.ModuleType("gsmt_fast._C")
    monkeypatch.setitem(sys.modules, "gsmt_fast._C", fake)

    class FakeCudaTensor:  # what window_inputs reads off a CUDA tensor
        __module__ = "torch"
        is_cuda, device, dtype, shape = True, "cuda:0", "torch.float32", (1, 3, 4)

        def data_ptr(self):
            return 0

        def detach(self):
            return self

        def contiguous(self):
            return self

    masks = FakeCudaTensor()
    masks.shape = (1, 4, 4)
    with pytest.raises(NotImplementedError, match="built without CUDA"):
        native.window_candidates_batch(FakeCudaTensor(), masks, 4, check=False)
    assert not native.cuda_available() and not native.available()


# ---------------------------------------------------------------------------------------------------------------
# GPU: CUDA == CPU exactly


def _cuda_ready() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and native.cuda_available()


def _assert_same_batch(cpu, cuda, names):
    for name in names:
        np.testing.assert_array_equal(getattr(cuda, name).cpu().numpy(), getattr(cpu, name), err_msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 7, 100, 256])
@pytest.mark.parametrize("mode", ["short", "long"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mask_kind", ["blocky", "quantised"])
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_cuda_equals_cpu(T, mode, dtype, mask_kind, method):
    if not _cuda_ready():
        pytest.skip("needs a CUDA GPU and the CUDA extension")
    if mask_kind == "quantised" and T > 100:
        pytest.skip("~7500 distinct candidates per window: beyond the GPU table (covered by the overflow test)")
    import torch

    B = 1024 if (T <= 100 and method == "gaussian" and dtype == np.float32) else 64
    rng = np.random.default_rng(T)
    valid = rng.integers(1, T + 1, size=B)
    probs, masks, valid = make_batch(T, B, 20, T, mask_kind, "softmax", valid, dtype)
    p, m = torch.from_numpy(probs).cuda(), torch.from_numpy(masks).cuda()
    for multiclass in (True, False):
        cfg = InferenceConfig(mode=mode, nms_method=method, nms_iou_threshold=0.4, multiclass_nms=multiclass)
        scale, offset = rng.uniform(0.1, 2, B), rng.uniform(-5, 5, B)
        cpu_c = native.window_candidates_batch(probs, masks, valid, cfg)
        cpu_d = native.window_detections_batch(probs, masks, valid, scale, offset, cfg)
        # check=False: the raw GPU result, no CPU fallback; these inputs fit the on-chip table
        cuda_c = native.window_candidates_batch(p, m, torch.from_numpy(valid).cuda(), cfg, check=False)
        cuda_d = native.window_detections_batch(p, m, valid, torch.from_numpy(scale).cuda(), offset, cfg, check=False)
        _assert_same_batch(cpu_c, cuda_c, ("start", "end", "labels", "scores", "count", "status"))
        _assert_same_batch(cpu_d, cuda_d, ("segments", "scores", "labels", "count", "status"))


@pytest.mark.gpu
def test_cuda_overflow_falls_back_to_cpu():
    if not _cuda_ready():
        pytest.skip("needs a CUDA GPU and the CUDA extension")
    import torch

    # Random uniform 1000x1000 masks: each of the 50 columns has ~100 runs per threshold -> far more than the
    # 2048 distinct candidates the GPU table holds.
    probs, masks, valid = make_batch(5, 2, 3, 1000, "uniform", "softmax")
    cfg = InferenceConfig(score_threshold=0.0)
    cpu = native.window_detections_batch(probs, masks, valid, 1.0, 0.0, cfg)
    raw = native.window_detections_batch(torch.from_numpy(probs).cuda(), torch.from_numpy(masks).cuda(), valid,
                                         cfg=cfg, check=False)  # fmt: skip
    assert (raw.status.cpu().numpy() & native.STATUS_OVERFLOW).all()
    cuda = native.window_detections_batch(torch.from_numpy(probs).cuda(), torch.from_numpy(masks).cuda(), valid,
                                          cfg=cfg)  # fmt: skip
    _assert_same_batch(cpu, cuda, ("segments", "scores", "labels", "count", "status"))


@pytest.mark.gpu
def test_cuda_status_and_graph_capture():
    if not _cuda_ready():
        pytest.skip("needs a CUDA GPU and the CUDA extension")
    import torch

    probs, masks, valid = make_batch(9, 8, 5, 64, "blocky", "softmax")
    p, m = torch.from_numpy(probs).cuda(), torch.from_numpy(masks).cuda()
    bad = m.clone()
    bad[3, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"masks contain NaN or inf .*window 3"):
        native.window_candidates_batch(p, bad, valid)
    with pytest.raises(ValueError, match=r"valid_len must be in \[1, T=64\]"):
        native.window_candidates_batch(p, m, torch.full((8,), 65, device="cuda"))
    cfg = InferenceConfig()
    cpu = native.window_detections_batch(probs, masks, valid, 0.5, 2.0, cfg)
    v = torch.from_numpy(valid).cuda()
    scale = torch.full((8,), 0.5, device="cuda", dtype=torch.float64)
    offset = torch.full((8,), 2.0, device="cuda", dtype=torch.float64)
    native.window_detections_batch(p, m, v, scale, offset, cfg, check=False)  # warm-up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = native.window_detections_batch(p, m, v, scale, offset, cfg, check=False)
    graph.replay()
    torch.cuda.synchronize()
    _assert_same_batch(cpu, captured, ("segments", "scores", "labels", "count", "status"))
