"""Reference candidate generation (steps 1–5) on hand-built probabilities and masks.

Values are dyadic fractions (0.5, 0.75, 0.625, ...) so that every product is exact and scores compare with ==.
"""

from __future__ import annotations

import numpy as np
import pytest

from gsmt_fast.config import InferenceConfig
from gsmt_fast.postprocess.reference import Candidates, window_candidates, window_detections


def make_cfg(**overrides) -> InferenceConfig:
    base = dict(top_snippets=50, mask_thresholds=(0.5,), mode="short", score_threshold=0.0, pre_nms_topk=200)
    return InferenceConfig(**{**base, **overrides})


def blank(num_snippets: int, num_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """probs (K+1, T) all background, masks (T, T) all zero."""
    probs = np.zeros((num_classes + 1, num_snippets))
    probs[num_classes] = 1.0
    masks = np.zeros((num_snippets, num_snippets))
    return probs, masks


def as_tuples(candidates: Candidates) -> list[tuple[int, int, int, float]]:
    return list(
        zip(candidates.start.tolist(), candidates.end.tolist(), candidates.labels.tolist(), candidates.scores.tolist())
    )


def test_short_and_long_mode():
    probs, masks = blank(8)
    probs[:, 2] = [0.0, 0.5, 0.5]  # snippet 2: class 1, P = 0.5
    masks[:, 2] = [0.75, 0.625, 0.25, 0.875, 0.625, 0.0, 0.0, 0.0]  # active (> 0.5): rows 0, 1, 3, 4
    short = window_candidates(probs, masks, 8, make_cfg(top_snippets=1, mode="short"))
    # runs 0..1 (max 0.75) and 3..4 (max 0.875): scores 0.5 * 0.875 = 0.4375, 0.5 * 0.75 = 0.375
    assert as_tuples(short) == [(3, 4, 1, 0.4375), (0, 1, 1, 0.375)]
    long = window_candidates(probs, masks, 8, make_cfg(top_snippets=1, mode="long"))
    # first to last active row: 0..4, max over rows 0..4 = 0.875
    assert as_tuples(long) == [(0, 4, 1, 0.4375)]
    np.testing.assert_array_equal(long.segments_units(), [[0.0, 5.0]])
    assert long.start.dtype == np.int64 and long.scores.dtype == np.float64


def test_no_active_snippet_gives_no_candidate():
    probs, masks = blank(6)
    probs[:, 0] = [0.75, 0.0, 0.25]
    masks[:, 0] = 0.5  # never > 0.5
    assert len(window_candidates(probs, masks, 6, make_cfg())) == 0


def test_thresholds_are_strict_and_duplicates_merge():
    probs, masks = blank(6)
    probs[:, 1] = [0.5, 0.0, 0.5]
    probs[:, 2] = [0.75, 0.0, 0.25]
    column = [0.0, 0.5, 0.5, 0.0, 0.0, 0.0]
    masks[:, 1] = column
    masks[:, 2] = column
    # θ 0.1, 0.2, 0.3 all give the run 1..2; θ 0.5 gives nothing (0.5 > 0.5 is false).
    # snippet 1: 0.5 * 0.5 = 0.25, snippet 2: 0.75 * 0.5 = 0.375 -> one candidate, the higher score.
    cands = window_candidates(probs, masks, 6, make_cfg(mask_thresholds=(0.1, 0.2, 0.3, 0.5)))
    assert as_tuples(cands) == [(1, 2, 0, 0.375)]
    assert len(window_candidates(probs, masks, 6, make_cfg(mask_thresholds=(0.5,)))) == 0


def test_multiple_thresholds_short_runs():
    probs, masks = blank(7)
    probs[:, 3] = [0.5, 0.0, 0.5]
    masks[:, 3] = [0.0, 0.25, 0.75, 0.25, 0.75, 0.0, 0.0]
    # θ 0.125: run 1..4 (max 0.75); θ 0.5: runs 2..2 and 4..4 (each max 0.75). All score 0.375.
    cands = window_candidates(probs, masks, 7, make_cfg(mask_thresholds=(0.125, 0.5)))
    # equal scores: smaller start first, then smaller end
    assert as_tuples(cands) == [(1, 4, 0, 0.375), (2, 2, 0, 0.375), (4, 4, 0, 0.375)]


def test_score_threshold_drops_equal_scores():
    probs, masks = blank(6)
    probs[:, 0] = [0.5, 0.0, 0.5]
    masks[:, 0] = [0.5, 0.0, 0.0, 0.0, 0.0, 0.0]  # 0.5 * 0.5 = 0.25
    probs[:, 3] = [0.0, 0.75, 0.25]
    masks[:, 3] = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0]  # 0.75 * 0.5 = 0.375
    cfg = make_cfg(mask_thresholds=(0.25,), score_threshold=0.25)
    assert as_tuples(window_candidates(probs, masks, 6, cfg)) == [(3, 3, 1, 0.375)]


def test_top_snippets_tie_order_and_label_tie():
    probs, masks = blank(6)
    for t in (1, 3, 4):
        probs[:, t] = [0.5, 0.5, 0.0]  # fg 0.5 for all three; label tie -> class 0
        masks[t, t] = 1.0  # each snippet's mask is the snippet itself
    probs[:, 5] = [0.25, 0.0, 0.75]
    masks[5, 5] = 1.0
    # M1 = 2 of the fg ties 1, 3, 4: the lower t first -> 1 and 3, never 4 (nor 5, fg 0.25).
    cands = window_candidates(probs, masks, 6, make_cfg(top_snippets=2))
    assert as_tuples(cands) == [(1, 1, 0, 0.5), (3, 3, 0, 0.5)]


def test_valid_len_ignores_padding():
    probs, masks = blank(8)
    probs[:, 2] = [0.5, 0.0, 0.5]
    masks[:, 2] = [0.0, 0.75, 0.75, 0.0, 0.0, 0.75, 0.75, 0.75]  # rows 5..7 are padding
    probs[:, 5:] = [[1.0] * 3, [0.0] * 3, [0.0] * 3]  # padded snippets with the highest fg
    masks[:, 5:] = 1.0
    masks[5:, :2] = np.nan  # padded values are never read nor checked
    for mode in ("short", "long"):
        cands = window_candidates(probs, masks, 5, make_cfg(mode=mode, top_snippets=8))
        assert as_tuples(cands) == [(1, 2, 0, 0.375)]
    with pytest.raises(ValueError, match="NaN or inf"):
        window_candidates(probs, masks, 8, make_cfg())
    for bad in (0, 9):
        with pytest.raises(ValueError, match="valid_len must be in"):
            window_candidates(probs, masks, bad, make_cfg())


def test_pre_nms_topk_cut_with_ties():
    probs, masks = blank(6)
    probs[:, 1] = [0.0, 0.5, 0.5]
    masks[:, 1] = [0.0, 0.5, 0.5, 0.0, 0.0, 0.0]  # (1, 2, label 1)
    probs[:, 3] = [0.5, 0.0, 0.5]
    masks[:, 3] = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0]  # (3, 3, label 0)
    probs[:, 0] = [0.5, 0.0, 0.5]
    masks[:, 0] = [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]  # (1, 1, label 0)
    probs[:, 2] = [0.0, 0.5, 0.5]
    masks[:, 2] = [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]  # (1, 1, label 1)
    # all scores 0.5 * 0.5 = 0.25; order (start, end, label): (1,1,0) (1,1,1) (1,2,1) (3,3,0)
    cfg = make_cfg(mask_thresholds=(0.25,), pre_nms_topk=3)
    assert as_tuples(window_candidates(probs, masks, 6, cfg)) == [
        (1, 1, 0, 0.25),
        (1, 1, 1, 0.25),
        (1, 2, 1, 0.25),
    ]


def test_window_detections_runs_soft_nms():
    probs, masks = blank(6)
    probs[:, 1] = [0.75, 0.0, 0.25]
    masks[:, 1] = [0.875, 0.875, 0.625, 0.0, 0.0, 0.0]
    # θ 0.5: run 0..2 (0.75 * 0.875 = 0.65625); θ 0.75: run 0..1 (same score) -> [0,3] and [0,2] in units.
    cfg = make_cfg(mask_thresholds=(0.5, 0.75), nms_method="hard", nms_iou_threshold=0.5, multiclass_nms=False)
    segments, scores, labels = window_detections(probs, masks, 6, cfg)
    # tie on score: smaller start (0), then smaller end -> [0, 2] wins; IoU([0,2],[0,3]) = 2/3 >= 0.5 suppresses.
    np.testing.assert_array_equal(segments, [[0.0, 2.0]])
    np.testing.assert_array_equal(scores, [0.65625])
    np.testing.assert_array_equal(labels, [0])


@pytest.mark.parametrize(
    ("probs_shape", "masks_shape", "match"),
    [((3, 6), (6, 5), r"masks must have shape \(T, T\)"), ((1, 6), (6, 6), r"K >= 1"), ((3,), (6, 6), "probs")],
)
def test_shape_errors(probs_shape, masks_shape, match):
    with pytest.raises(ValueError, match=match):
        window_candidates(np.zeros(probs_shape), np.zeros(masks_shape), 1, make_cfg())


def test_value_errors():
    probs, masks = blank(6)
    bad_probs = probs.copy()
    bad_probs[0, 3] = np.nan
    with pytest.raises(ValueError, match="probs contain NaN"):
        window_candidates(bad_probs, masks, 6, make_cfg())
    bad_masks = masks.copy()
    bad_masks[2, 2] = np.inf
    with pytest.raises(ValueError, match="masks contain NaN"):
        window_candidates(probs, bad_masks, 6, make_cfg())
    with pytest.raises(ValueError, match=r"masks must be probabilities in \[0, 1\]"):
        window_candidates(probs, masks + 1.5, 6, make_cfg())
    with pytest.raises(TypeError, match="masks must be a floating-point array"):
        window_candidates(probs, masks.astype(np.int64), 6, make_cfg())
