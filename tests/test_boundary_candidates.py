"""Boundary candidates (the boundary-refined variant, docs/DESIGN.md "Boundary candidates"): the oracle on hand-built
windows, then the C++ op against the oracle bit for bit (property-based), the status checks, and the CUDA op against
the C++ one (``@pytest.mark.gpu``; it needs a GPU, so it does not run on CPU-only machines).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsmt_fast.config import InferenceConfig
from gsmt_fast.postprocess import native, reference

needs_native = pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")


def blank(T, K=2):
    probs = np.zeros((K + 1, T))
    probs[K] = 1.0
    return probs, np.zeros((T, T)), np.zeros((2, T))


# ---------------------------------------------------------------------------------------------------------------
# the oracle by hand


def test_one_candidate_per_selected_snippet_from_its_distances():
    probs, masks, bounds = blank(10)
    probs[:, 4] = [0.75, 0.0, 0.25]  # fg 0.75, label 0
    bounds[:, 4] = [2.25, 1.5]       # centre 4.5 -> [2.25, 6.0]
    probs[:, 7] = [0.0, 0.5, 0.5]    # fg 0.5, label 1
    bounds[:, 7] = [0.5, 9.0]        # [7.0, 16.5] clamped to valid_len 10
    probs[:, 1] = [0.25, 0.0, 0.75]  # fg 0.25, label 0
    bounds[:, 1] = [4.0, 0.0]        # [-2.5, 1.5] clamped to 0
    cfg = InferenceConfig(score_threshold=0.1)
    c = reference.window_candidates(probs, masks, 10, cfg, bounds)
    assert c.start.tolist() == [4, 7, 1] and c.end.tolist() == [4, 7, 1]  # the source snippets
    assert c.labels.tolist() == [0, 1, 0]
    assert c.scores.tolist() == [0.75, 0.5, 0.25]
    assert c.segments_units().tolist() == [[2.25, 6.0], [7.0, 10.0], [0.0, 1.5]]
    # the background snippets (fg 0) fall below the score threshold
    assert len(c) == 3


def test_ties_order_by_source_snippet_and_top_k_and_threshold():
    probs, masks, bounds = blank(6)
    for t in (5, 2, 3):
        probs[:, t] = [0.5, 0.0, 0.5]
        bounds[:, t] = [0.5, 0.5]
    probs[:, 0] = [0.0, 0.25, 0.75]
    c = reference.window_candidates(probs, masks, 6, InferenceConfig(score_threshold=0.0, pre_nms_topk=2), bounds)
    assert c.start.tolist() == [2, 3]  # three ties at 0.5: lower snippets first, cut at M2 = 2
    c = reference.window_candidates(probs, masks, 6, InferenceConfig(score_threshold=0.5, top_snippets=6), bounds)
    assert len(c) == 0  # score <= threshold is dropped
    c = reference.window_candidates(probs, masks, 6, InferenceConfig(score_threshold=0.0, top_snippets=1), bounds)
    assert c.start.tolist() == [2]  # M1 = 1: the top snippet only


def test_detections_are_soft_nms_of_the_segments():
    probs, masks, bounds = blank(8)
    probs[:, 2] = [0.75, 0.0, 0.25]
    bounds[:, 2] = [1.5, 2.5]  # [1, 5]
    probs[:, 3] = [0.5, 0.0, 0.5]
    bounds[:, 3] = [2.5, 1.5]  # [1, 5]: the same segment, lower score -> suppressed by hard NMS
    cfg = InferenceConfig(score_threshold=0.1, nms_method="hard", nms_iou_threshold=0.5)
    segments, scores, labels = reference.window_detections(probs, masks, 8, cfg, bounds)
    assert segments.tolist() == [[1.0, 5.0]] and scores.tolist() == [0.75] and labels.tolist() == [0]


def test_candidate_source_setting():
    probs, masks, bounds = blank(6)
    probs[:, 1] = [0.75, 0.0, 0.25]
    masks[1:4, 1] = 0.75
    bounds[:, 1] = [0.25, 0.25]
    masks_only = reference.window_candidates(probs, masks, 6, InferenceConfig(candidates="masks"), bounds)
    paper = reference.window_candidates(probs, masks, 6, InferenceConfig())
    assert masks_only.segments_units().tolist() == paper.segments_units().tolist() == [[1.0, 4.0]]
    auto = reference.window_candidates(probs, masks, 6, InferenceConfig(), bounds)
    assert auto.segments_units().tolist() == [[1.25, 1.75]]
    with pytest.raises(ValueError, match="needs a model with the boundary head"):
        reference.window_candidates(probs, masks, 6, InferenceConfig(candidates="boundaries"))
    with pytest.raises(ValueError, match="candidates must be one of"):
        InferenceConfig(candidates="regression")


def test_bad_boundaries_are_named_and_padding_is_ignored():
    probs, masks, bounds = blank(6)
    cfg = InferenceConfig()
    bounds[:, 4:] = np.nan
    assert len(reference.window_candidates(probs, masks, 4, cfg, bounds)) == 0  # NaN only in the padding
    with pytest.raises(ValueError, match="boundaries contain NaN"):
        reference.window_candidates(probs, masks, 5, cfg, bounds)
    bounds[:] = 0.0
    bounds[1, 2] = -0.5
    with pytest.raises(ValueError, match="distances >= 0"):
        reference.window_candidates(probs, masks, 6, cfg, bounds)
    with pytest.raises(ValueError, match=r"shape \(2, T\)"):
        reference.window_candidates(probs, masks, 6, cfg, bounds[:, :5])


# ---------------------------------------------------------------------------------------------------------------
# the C++ op against the oracle


def random_batch(seed, batch, num_classes, T, valid, prob_kind, bound_kind, dtype):
    rng = np.random.default_rng(seed)
    if prob_kind == "softmax":
        logits = rng.normal(size=(batch, num_classes + 1, T)) * 3.0
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    else:  # many ties in the labels and the ranking
        probs = rng.integers(0, 5, size=(batch, num_classes + 1, T)) / 4.0
    masks = rng.uniform(size=(batch, T, T))
    if bound_kind == "uniform":
        bounds = rng.uniform(0, T / 3, size=(batch, 2, T))
    elif bound_kind == "quantised":  # exact halves: segments that coincide, touch the clamps, zero lengths
        bounds = rng.integers(0, 9, size=(batch, 2, T)) * 0.5
    else:  # far beyond the window, and -0.0
        bounds = rng.choice([0.0, -0.0, 1e-30, 3.0, 1e6], size=(batch, 2, T))
    probs, masks, bounds = probs.astype(dtype), masks.astype(dtype), bounds.astype(np.float32)
    for b, v in enumerate(valid):
        probs[b, :, v:] = np.nan
        masks[b, v:, :] = np.nan
        masks[b, :, v:] = np.nan
        bounds[b, :, v:] = np.nan
    return probs, masks, bounds


def assert_same_candidates(expected: reference.Candidates, got: reference.Candidates, where: str):
    for name in ("start", "end", "labels", "scores"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=f"{where} {name}")
    np.testing.assert_array_equal(got.segments_units(), expected.segments_units(), err_msg=f"{where} units")


@needs_native
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**31),
    batch=st.integers(1, 3),
    num_classes=st.integers(1, 4),
    T=st.one_of(st.integers(1, 16), st.integers(17, 300)),
    padded=st.booleans(),
    prob_kind=st.sampled_from(["softmax", "quantised"]),
    bound_kind=st.sampled_from(["uniform", "quantised", "extreme"]),
    dtype=st.sampled_from([np.float32, np.float16]),
    top_snippets=st.sampled_from([1, 5, 50, 5000]),
    score_threshold=st.sampled_from([0.0, 0.1, 0.3]),
    pre_nms_topk=st.sampled_from([1, 7, 200]),
    nms_method=st.sampled_from(["gaussian", "linear", "hard"]),
    multiclass=st.booleans(),
    num_threads=st.sampled_from([None, 1, 2]),
)
def test_cpu_op_matches_the_oracle(exact_exp, seed, batch, num_classes, T, padded, prob_kind, bound_kind, dtype,
                                   top_snippets, score_threshold, pre_nms_topk, nms_method, multiclass, num_threads):
    rng = np.random.default_rng(seed + 1)
    valid = rng.integers(1, T + 1, size=batch) if padded else np.full(batch, T)
    probs, masks, bounds = random_batch(seed, batch, num_classes, T, valid, prob_kind, bound_kind, dtype)
    cfg = InferenceConfig(top_snippets=top_snippets, score_threshold=score_threshold, pre_nms_topk=pre_nms_topk,
                          nms_method=nms_method, nms_iou_threshold=0.4, multiclass_nms=multiclass, max_detections=50)
    scale, offset = rng.uniform(0.1, 3.0, size=batch), rng.uniform(-10.0, 10.0, size=batch)
    cands = native.window_candidates_batch(probs, masks, valid, cfg, num_threads, boundaries=bounds)
    dets = native.window_detections_batch(probs, masks, valid, scale, offset, cfg, num_threads, boundaries=bounds)
    for b, (c, d) in enumerate(zip(cands.as_candidates(), dets.as_list())):
        v = int(valid[b])
        expected = reference.window_candidates(probs[b], masks[b], v, cfg, bounds[b])
        assert_same_candidates(expected, c, f"window {b}")
        segments = offset[b] + expected.segments_units() * scale[b]
        expected_dets = reference.soft_nms(segments, expected.scores, expected.labels, **cfg.nms_kwargs())
        for e, g, name in zip(expected_dets, d, ("segments", "scores", "labels")):
            np.testing.assert_array_equal(g, e, err_msg=f"window {b} {name}")
        n = int(cands.count[b])
        assert (cands.units[b, n:] == 0).all() and (cands.start[b, n:] == -1).all()
    assert (cands.status == 0).all() and (dets.status == 0).all()


@needs_native
def test_mask_candidates_report_their_runs_as_units():
    probs, masks, bounds = random_batch(3, 2, 3, 40, [40, 17], "softmax", "uniform", np.float32)
    cfg = InferenceConfig(candidates="masks")
    got = native.window_candidates_batch(probs, masks, [40, 17], cfg, boundaries=bounds).as_candidates()
    for b, v in enumerate((40, 17)):
        expected = reference.window_candidates(probs[b], masks[b], v, cfg)
        assert expected.units is None
        assert_same_candidates(expected, got[b], f"window {b}")
        np.testing.assert_array_equal(got[b].units, np.stack([got[b].start, got[b].end + 1], 1).astype(float))


@needs_native
def test_op_status_and_argument_errors():
    probs, masks, bounds = random_batch(5, 3, 2, 12, [12, 12, 8], "softmax", "uniform", np.float32)
    bounds[2, 0, 10] = np.nan  # padding of window 2: never read
    native.window_detections_batch(probs, masks, [12, 12, 8], boundaries=bounds)
    bad = bounds.copy()
    bad[1, 1, 3] = -1.0
    with pytest.raises(ValueError, match=r"boundaries must be finite distances >= 0 .*window 1"):
        native.window_candidates_batch(probs, masks, [12, 12, 8], boundaries=bad)
    bad[1, 1, 3] = np.inf
    with pytest.raises(ValueError, match=r"boundaries must be finite distances >= 0 .*window 1"):
        native.window_detections_batch(probs, masks, [12, 12, 8], boundaries=bad)
    # a bad mask is reported first, as the oracle does
    bad_masks = masks.copy()
    bad_masks[1, 0, 0] = 2.0
    with pytest.raises(ValueError, match="masks must be probabilities"):
        native.window_candidates_batch(probs, bad_masks, [12, 12, 8], boundaries=bad)
    with pytest.raises(TypeError, match="boundaries must be float32"):
        native.window_candidates_batch(probs, masks, 12, boundaries=bounds.astype(np.float64))
    with pytest.raises(ValueError, match=r"boundaries must have shape \(B, 2, T\) = \(3, 2, 12\)"):
        native.window_candidates_batch(probs, masks, 12, boundaries=bounds[:, :, :11])
    with pytest.raises(ValueError, match="needs a model with the boundary head"):
        native.window_candidates_batch(probs, masks, 12, InferenceConfig(candidates="boundaries"))
    # "masks" ignores the distances entirely, even invalid ones
    masks_only = native.window_candidates_batch(probs, masks, [12, 12, 8], InferenceConfig(candidates="masks"),
                                                boundaries=bad)
    assert (masks_only.status == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# CUDA (needs a GPU)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 100, 256])
@pytest.mark.parametrize("method", ["gaussian", "hard"])
def test_cuda_equals_cpu(T, method):
    import torch

    if not native.cuda_available():
        pytest.skip("needs a CUDA GPU and the CUDA extension")
    B = 256
    rng = np.random.default_rng(T)
    valid = rng.integers(1, T + 1, size=B)
    probs, masks, bounds = random_batch(T, B, 20, T, valid, "softmax", "uniform", np.float32)
    cfg = InferenceConfig(nms_method=method, nms_iou_threshold=0.4, score_threshold=0.05)
    scale, offset = rng.uniform(0.1, 2, B), rng.uniform(-5, 5, B)
    cpu_c = native.window_candidates_batch(probs, masks, valid, cfg, boundaries=bounds)
    cpu_d = native.window_detections_batch(probs, masks, valid, scale, offset, cfg, boundaries=bounds)
    p, m, d = (torch.from_numpy(a).cuda() for a in (probs, masks, bounds))
    cuda_c = native.window_candidates_batch(p, m, torch.from_numpy(valid).cuda(), cfg, check=False, boundaries=d)
    cuda_d = native.window_detections_batch(p, m, valid, torch.from_numpy(scale).cuda(), offset, cfg, check=False,
                                            boundaries=d)
    for name in ("start", "end", "labels", "scores", "units", "count", "status"):
        np.testing.assert_array_equal(getattr(cuda_c, name).cpu().numpy(), getattr(cpu_c, name), err_msg=name)
    for name in ("segments", "scores", "labels", "count", "status"):
        np.testing.assert_array_equal(getattr(cuda_d, name).cpu().numpy(), getattr(cpu_d, name), err_msg=name)
    bad = d.clone()
    bad[3, 0, 0] = -1.0
    with pytest.raises(ValueError, match=r"boundaries must be finite distances >= 0 .*window 3"):
        native.window_candidates_batch(p, m, valid, cfg, boundaries=bad)
