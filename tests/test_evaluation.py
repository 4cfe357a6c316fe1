"""Detection mAP (official ActivityNet algorithm); every AP is computed by hand in the comments.

AP reminder: walk predictions by score; precision p_i = TP_i / i, recall r_i = TP_i / #GT; AP = sum over recall
steps of (r_i - r_{i-1}) * max_{j >= i} p_j.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from gsmt_fast.evaluation import (
    ANET_THRESHOLDS,
    THUMOS_THRESHOLDS,
    EvaluationResult,
    evaluate,
    normalize_thresholds,
    parse_thresholds,
)


def make_gt(videos: dict[str, list[tuple[float, float, str]]], subset: str = "validation", **other_subsets) -> dict:
    """ActivityNet-style ground truth: ``videos`` in ``subset``, ``other_subsets`` as {subset: {video: [...]}}."""
    database = {}
    for video_subset, subset_videos in [(subset, videos), *other_subsets.items()]:
        for vid, instances in subset_videos.items():
            database[vid] = {
                "subset": video_subset,
                "annotations": [{"segment": [s, e], "label": label} for s, e, label in instances],
            }
    return {"version": "VERSION 1.3", "database": database}


def make_pred(videos: dict[str, list[tuple[float, float, str, float]]]) -> dict:
    return {
        "version": "VERSION 1.3",
        "results": {
            vid: [{"label": label, "score": score, "segment": [s, e]} for s, e, label, score in dets]
            for vid, dets in videos.items()
        },
        "external_data": {"used": False, "details": ""},
    }


def test_perfect_detection(tmp_path):
    gt = make_gt({"a": [(0, 10, "Jump"), (20, 30, "Run")], "b": [(5, 6, "Run")]})
    pred = make_pred({"a": [(0, 10, "Jump", 0.9), (20, 30, "Run", 0.8)], "b": [(5, 6, "Run", 0.1)]})
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(pred))
    result = evaluate(str(gt_path), pred_path)  # paths (str and Path) as well as dicts
    assert isinstance(result, EvaluationResult)
    np.testing.assert_array_equal(result.tiou_thresholds, THUMOS_THRESHOLDS)
    np.testing.assert_array_equal(result.mAP, np.ones(5))
    assert result.average_mAP == 1.0
    assert sorted(result.per_class_ap) == ["Jump", "Run"]
    assert result.num_ground_truth == 3 and result.num_predictions == 3
    table = result.format_table(per_class=True)
    assert "average" in table and "100.00" in table and "Jump" in table


def test_duplicate_detection_is_false_positive():
    gt = make_gt({"a": [(0, 10, "Jump"), (20, 30, "Jump")]})
    pred = make_pred({"a": [(0, 10, "Jump", 0.9), (0, 10, "Jump", 0.8), (20, 30, "Jump", 0.7)]})
    # TP, FP (GT 0 locked, GT 1 has IoU 0), TP: precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # envelope 1, 2/3, 2/3 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    result = evaluate(gt, pred, tiou_thresholds=[0.5])
    assert result.mAP[0] == pytest.approx(5 / 6, abs=1e-12)


def test_locked_ground_truth_passes_to_next_best():
    gt = make_gt({"a": [(0, 10, "Jump"), (2, 12, "Jump")]})
    pred = make_pred({"a": [(0, 10, "Jump", 0.9), (0, 10, "Jump", 0.8)]})
    # prediction 1: IoU 1 with GT 0, 8/12 with GT 1 -> GT 0. prediction 2: GT 0 locked -> GT 1 (IoU 2/3).
    # @0.5: TP, TP -> AP 1.   @0.7: 2/3 < 0.7 -> TP, FP; recall 1/2 at precision 1 -> AP 1/2.
    result = evaluate(gt, pred, tiou_thresholds=[0.5, 0.7])
    np.testing.assert_allclose(result.mAP, [1.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(result.per_class_ap["Jump"], [1.0, 0.5], atol=1e-12)


def test_class_without_predictions_counts_as_zero():
    gt = make_gt({"a": [(0, 10, "Jump"), (20, 30, "Run")]})
    pred = make_pred({"a": [(0, 10, "Jump", 0.9)]})
    result = evaluate(gt, pred, tiou_thresholds=[0.5])
    assert result.per_class_ap["Run"][0] == 0.0
    assert result.mAP[0] == 0.5  # (1 + 0) / 2


def test_videos_without_ground_truth():
    # "a" has Jump; "empty" is in the subset but has no GT -> its predictions are false positives;
    # "train_vid" is another subset and "unknown_vid" is not in the database -> their predictions are ignored.
    gt = make_gt({"a": [(0, 10, "Jump")], "empty": []}, training={"train_vid": [(0, 10, "Jump")]})
    pred = make_pred(
        {
            "unknown_vid": [(0, 10, "Jump", 0.99)],
            "train_vid": [(0, 10, "Jump", 0.95)],
            "empty": [(0, 10, "Jump", 0.9)],
            "a": [(0, 10, "Jump", 0.8)],
        }
    )
    # evaluated: FP (0.9), TP (0.8): precision 0, 1/2; recall 0, 1 -> AP = 1 * 1/2
    result = evaluate(gt, pred, tiou_thresholds=[0.5], subset="validation")
    assert result.mAP[0] == 0.5
    assert result.num_predictions == 2 and result.num_ground_truth == 1
    # a video of the subset with GT of another class only: the prediction is a false positive as well
    gt2 = make_gt({"a": [(0, 10, "Jump")], "b": [(0, 10, "Run")]})
    pred2 = make_pred({"b": [(0, 10, "Jump", 0.9)], "a": [(0, 10, "Jump", 0.8)]})
    # Jump: FP, TP -> 1/2; Run: no predictions -> 0; mAP 1/4
    assert evaluate(gt2, pred2, tiou_thresholds=[0.5]).mAP[0] == 0.25


def test_unknown_classes_are_ignored_with_a_warning():
    gt = make_gt({"a": [(0, 10, "Jump")]})
    pred = make_pred({"a": [(0, 10, "Dance", 0.99), (0, 10, "Jump", 0.5), (3, 4, "Dance", 0.98), (0, 1, "Fly", 0.9)]})
    with pytest.warns(UserWarning, match=r"ignored 3 prediction\(s\) of 2 class\(es\).*'Dance' \(2\), 'Fly' \(1\)"):
        result = evaluate(gt, pred, tiou_thresholds=[0.5])
    assert result.mAP[0] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(gt, pred, tiou_thresholds=[0.5], warn=False)


def test_iou_exactly_at_decimal_threshold():
    # GT [0,5], prediction [0,2]: IoU = 2/5, the double nearest to 0.4. GT [10,15] vs [10,13]: IoU 3/5 (0.6).
    gt = make_gt({"a": [(0, 5, "Jump")], "b": [(10, 15, "Run")]})
    pred = make_pred({"a": [(0, 2, "Jump", 0.9)], "b": [(10, 13, "Run", 0.9)]})
    # thresholds computed in floating point land one ulp off the decimal, on either side
    thresholds = [0.3, float(np.nextafter(0.4, 1.0)), 0.5, 0.1 * 6, 0.7]
    assert thresholds[1] > 0.4 and thresholds[3] > 0.6 and np.linspace(0.3, 0.7, 5)[1] < 0.4
    result = evaluate(gt, pred, tiou_thresholds=thresholds)
    # Jump matches at 0.3 and 0.4 only; Run at 0.3..0.6 -> mAP (1, 1, 1/2, 1/2, 0)
    np.testing.assert_array_equal(result.per_class_ap["Jump"], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(result.per_class_ap["Run"], [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(result.mAP, [1, 1, 0.5, 0.5, 0])
    np.testing.assert_array_equal(result.tiou_thresholds, [0.3, 0.4, 0.5, 0.6, 0.7])
    below = evaluate(gt, pred, tiou_thresholds=np.linspace(0.3, 0.7, 5))  # [1] is 0.39999999999999997
    np.testing.assert_array_equal(below.mAP, [1, 1, 0.5, 0.5, 0])


def test_tie_order_is_stable():
    # equal scores keep the input order: videos in results-dict order, then list order.
    gt = make_gt({"a": [(0, 10, "Jump")], "b": []})
    fp_first = make_pred({"b": [(0, 10, "Jump", 0.5)], "a": [(0, 10, "Jump", 0.5)]})
    tp_first = make_pred({"a": [(0, 10, "Jump", 0.5)], "b": [(0, 10, "Jump", 0.5)]})
    # FP, TP -> precision 0, 1/2 at recall 0, 1 -> 1/2;   TP, FP -> recall 1 at precision 1 -> 1
    assert evaluate(gt, fp_first, tiou_thresholds=[0.5]).mAP[0] == 0.5
    assert evaluate(gt, tp_first, tiou_thresholds=[0.5]).mAP[0] == 1.0
    # within one video's list as well
    gt2 = make_gt({"a": [(0, 10, "Jump")]})
    in_list = make_pred({"a": [(50, 60, "Jump", 0.5), (0, 10, "Jump", 0.5)]})
    assert evaluate(gt2, in_list, tiou_thresholds=[0.5]).mAP[0] == 0.5


def test_subset_filtering():
    gt = make_gt({"a": [(0, 10, "Jump")]}, test={"t": [(0, 10, "Run"), (20, 30, "Run")]})
    pred = make_pred({"a": [(0, 10, "Jump", 0.9)], "t": [(0, 10, "Run", 0.9)]})
    # validation: only Jump (AP 1). test: only Run, 1 of 2 GT found at precision 1 -> AP 1/2.
    assert evaluate(gt, pred, tiou_thresholds=[0.5], subset="validation").mAP[0] == 1.0
    test = evaluate(gt, pred, tiou_thresholds=[0.5], subset="test")
    assert list(test.per_class_ap) == ["Run"] and test.mAP[0] == 0.5
    # all videos: Jump 1, Run 1/2 -> 3/4
    assert evaluate(gt, pred, tiou_thresholds=[0.5]).mAP[0] == 0.75
    with pytest.raises(ValueError, match="no ground-truth video has subset 'training'"):
        evaluate(gt, pred, subset="training")


def test_v_prefix_on_either_side():
    gt = make_gt({"v_abc": [(0, 10, "Jump")], "xyz": [(0, 10, "Jump")]})
    pred = make_pred({"abc": [(0, 10, "Jump", 0.9)], "v_xyz": [(0, 10, "Jump", 0.8)]})
    assert evaluate(gt, pred, tiou_thresholds=[0.5]).mAP[0] == 1.0


def test_threshold_parsing():
    assert parse_thresholds("0.3:0.1:0.7") == THUMOS_THRESHOLDS == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert parse_thresholds("0.5:0.05:0.95") == ANET_THRESHOLDS
    assert ANET_THRESHOLDS == tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
    assert parse_thresholds("0.5, 0.75") == (0.5, 0.75)
    assert normalize_thresholds(np.arange(0.5, 0.96, 0.05)) == ANET_THRESHOLDS
    with pytest.raises(ValueError, match="cannot parse"):
        parse_thresholds("a:b:c")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        normalize_thresholds([0.0, 0.5])


def test_bad_ground_truth():
    with pytest.raises(ValueError, match="ActivityNet-style"):
        evaluate({"database": {"a": {"subset": "validation"}}}, make_pred({}))


def test_precision_envelope_when_precision_rises_after_a_false_positive():
    """TP, FP, TP, TP against 3 instances: precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1. With the
    envelope (running maximum of precision from the right) AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 0.8333; without
    it, 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/4 = 0.8056."""
    gt = make_gt({"a": [(0, 10, "Jump"), (20, 30, "Jump"), (40, 50, "Jump")]})
    pred = make_pred({"a": [(0, 10, "Jump", 0.9), (60, 70, "Jump", 0.8), (20, 30, "Jump", 0.7),
                            (40, 50, "Jump", 0.6)]})
    result = evaluate(gt, pred, tiou_thresholds=(0.5,))
    assert result.average_mAP == pytest.approx(1 / 3 + 0.25 + 0.25, abs=1e-12)


def test_threshold_ranges_are_bounded():
    with pytest.raises(ValueError, match="more than 1000 values"):
        parse_thresholds("0.1:1e-9:0.2")
    with pytest.raises(ValueError, match="at most 1000"):
        normalize_thresholds(np.linspace(0.1, 0.9, 1001))
    assert len(parse_thresholds("0.001:0.001:1")) == 1000
