"""Error diagnosis (gsmt_fast.analysis, `gsmt-fast analyze`) against hand-built cases with hand-computed answers.

The ground truth below has one video ``v1`` (fps 10; with feat_stride 4 a snippet lasts 0.4 s) with three instances:

    g0  A  [10, 20]     25 snippets  -> bucket L (16, 32]
    g1  B  [40, 42]      5 snippets  -> bucket S (4, 8]
    g2  A  [70, 72.4]    6 snippets  -> bucket S

and the detections, one of each type at tIoU 0.5 (their tIoU with the instance they overlap best in brackets):

    A [70, 76]     0.95  localization              (g2: 2.4 / 6 = 0.4)
    A [9, 21.5]    0.90  true positive             (g0: 10 / 12.5 = 0.8)
    A [10.5, 20]   0.80  double detection          (g0: 0.95, already matched)
    B [10, 20]     0.60  wrong label               (g0, class A: 1.0)
    B [40.4, 42]   0.55  true positive             (g1: 1.6 / 2 = 0.8)
    B [70, 77]     0.50  wrong label + localization (g2, class A: 2.4 / 7 = 0.34)
    A [30, 35]     0.40  background                (nothing)
    A [1, 2] on v2 0.30  background                (v2 has no instance)
"""

import json
import warnings

import numpy as np
import pytest

from gsmt_fast.analysis import CATEGORIES, LengthBuckets, analyze, resolve_length_buckets
from gsmt_fast.cli import main
from gsmt_fast.evaluation import evaluate

EXPECTED_TYPE = {
    (70.0, 76.0): "localization",
    (9.0, 21.5): "true_positive",
    (10.5, 20.0): "double_detection",
    (10.0, 20.0): "wrong_label",
    (40.4, 42.0): "true_positive",
    (70.0, 77.0): "wrong_label_localization",
    (30.0, 35.0): "background",
    (1.0, 2.0): "background",
}


def _annotations():
    def video(subset, annotations):
        return {"subset": subset, "duration": 100.0, "fps": 10.0,
                "annotations": [{"segment": list(seg), "label": lab} for seg, lab in annotations]}

    return {"version": "VERSION 1.3", "taxonomy": [], "database": {
        "v1": video("validation", [((10.0, 20.0), "A"), ((40.0, 42.0), "B"), ((70.0, 72.4), "A")]),
        "v2": video("validation", []),
        "v3": video("training", [((5.0, 9.0), "A")]),
    }}


def _results(extra=True):
    v1 = [("A", 0.95, [70.0, 76.0]), ("A", 0.90, [9.0, 21.5]), ("A", 0.80, [10.5, 20.0]), ("B", 0.60, [10.0, 20.0]),
          ("B", 0.55, [40.4, 42.0]), ("B", 0.50, [70.0, 77.0]), ("A", 0.40, [30.0, 35.0])]
    results = {"v1": [{"label": lab, "score": s, "segment": seg} for lab, s, seg in v1],
               "v2": [{"label": "A", "score": 0.30, "segment": [1.0, 2.0]}]}
    if extra:
        results["v1"].append({"label": "Q", "score": 0.99, "segment": [10.0, 20.0]})  # unknown label
        results["v3"] = [{"label": "A", "score": 0.9, "segment": [5.0, 9.0]}]  # another split
        results["zz"] = [{"label": "A", "score": 0.9, "segment": [5.0, 9.0]}]  # unknown video
    return {"version": "VERSION 1.3", "results": results, "external_data": {}}


@pytest.fixture
def report():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return analyze(_results(), _annotations(), split="validation", feat_stride=4, warn=False)


def test_each_detection_gets_its_error_type():
    """Each hand-built detection alone (plus the true positive it must come after) is classified as expected."""
    base = _results(extra=False)["results"]
    by_segment = {tuple(r["segment"]): (vid, r) for vid, records in base.items() for r in records}
    matched_first = {"double_detection": (9.0, 21.5)}  # a double needs the match it duplicates
    for segment, expected in EXPECTED_TYPE.items():
        chosen = [segment] + ([matched_first[expected]] if expected in matched_first else [])
        results = {}
        for seg in chosen:
            vid, record = by_segment[seg]
            results.setdefault(vid, []).append(record)
        r = analyze({"results": results}, _annotations(), split="validation", warn=False)
        counts = r.false_positives["counts"]
        want = {k: 0 for k in CATEGORIES}
        want[expected] += 1
        if expected in matched_first:
            want["true_positive"] += 1
        assert counts == want, (segment, counts)


def test_breakdown_counts_profile_and_removal_gain(report):
    fp = report.false_positives
    assert fp["counts"] == {"true_positive": 2, "double_detection": 1, "wrong_label": 1, "localization": 1,
                            "wrong_label_localization": 1, "background": 2}
    assert fp["detections"] == 8
    # Rank groups: G_A = 2, G_B = 1. A by score: loc, TP | double, bg(v1), bg(v2); B: wrong label | TP | wl+loc.
    profile = {p["group"]: p["counts"] for p in fp["profile"] if p["detections"]}
    assert profile["1G"] == dict.fromkeys(CATEGORIES, 0) | {"localization": 1, "true_positive": 1, "wrong_label": 1}
    assert profile["2G"] == dict.fromkeys(CATEGORIES, 0) | {"double_detection": 1, "background": 1,
                                                            "true_positive": 1}
    assert profile["3G"] == dict.fromkeys(CATEGORIES, 0) | {"background": 1, "wrong_label_localization": 1}
    assert set(profile) == {"1G", "2G", "3G"}
    # mAP@0.5 by hand: AP_A = 0.5 (recall 0.5 reached at precision 1/2), AP_B = 0.5 -> 0.375. Without the
    # localization error AP_A = 0.5 (+0.125 on the mean); without the wrong label AP_B = 1 (+0.25); others 0.
    assert fp["top_k_mAP"] == pytest.approx(0.375)
    assert fp["mAP_gain_if_removed"] == pytest.approx({"double_detection": 0.0, "wrong_label": 0.25,
                                                       "localization": 0.125, "wrong_label_localization": 0.0,
                                                       "background": 0.0})
    assert fp["per_class"]["B"] == dict.fromkeys(CATEGORIES, 0) | {"wrong_label": 1, "true_positive": 1,
                                                                   "wrong_label_localization": 1}


def test_top_factor_limits_each_class_to_n_times_its_instances():
    r = analyze(_results(extra=False), _annotations(), split="validation", top_factor=1, warn=False)
    # A: the top 2 (localization, true positive); B: the top 1 (wrong label).
    assert r.false_positives["counts"] == dict.fromkeys(CATEGORIES, 0) | {"localization": 1, "true_positive": 1,
                                                                          "wrong_label": 1}
    with pytest.raises(ValueError, match="top_factor"):
        analyze(_results(extra=False), _annotations(), top_factor=0)


def test_ignored_detections_are_counted_and_warned_about():
    with pytest.warns(UserWarning) as caught:
        r = analyze(_results(), _annotations(), split="validation", feat_stride=4)
    text = " ".join(str(w.message) for w in caught)
    assert "absent from the annotations" in text and "'zz'" in text and "'Q' (1)" in text
    assert r.counts["on_unknown_videos"] == 1 and r.counts["unknown_videos"] == 1
    assert r.counts["on_other_splits"] == 1
    assert r.counts["unknown_labels"] == {"Q": 1}
    assert r.counts["detections_read"] == 11 and r.counts["detections_analyzed"] == 8


def test_tie_between_classes_goes_to_the_detections_own_class():
    """Identical instances with two labels (THUMOS' CliffDiving inside Diving): a second detection of the same
    instance is a double detection whichever label is listed first."""
    gt = {"database": {"v": {"subset": "test", "duration": 30.0, "annotations": [
        {"segment": [5.0, 9.0], "label": "C"}, {"segment": [5.0, 9.0], "label": "A"}]}}}
    res = {"results": {"v": [{"label": "A", "score": 0.9, "segment": [5.0, 9.0]},
                             {"label": "A", "score": 0.8, "segment": [5.0, 9.0]}]}}
    r = analyze(res, gt, warn=False)
    assert r.false_positives["per_class"]["A"]["double_detection"] == 1
    assert r.false_positives["per_class"]["A"]["true_positive"] == 1


def test_boundary_error_by_hand(report):
    be = report.boundary_error
    by = {row["bucket"]: row for row in be["by_length"]}
    # A [9, 21.5] vs g0 [10, 20] (bucket L): start -1 s = -2.5 snippets, end +1.5 s = +3.75 snippets.
    assert by["L"]["true_positives"] == 1
    assert by["L"]["seconds"]["start_mean"] == pytest.approx(-1.0)
    assert by["L"]["seconds"]["end_mean"] == pytest.approx(1.5)
    assert by["L"]["snippets"]["start_mean"] == pytest.approx(-2.5)
    assert by["L"]["snippets"]["end_mean"] == pytest.approx(3.75)
    assert by["L"]["snippets"]["width_mean"] == pytest.approx(6.25)
    # B [40.4, 42] vs g1 [40, 42] (bucket S): start +0.4 s = +1 snippet, end 0.
    assert by["S"]["true_positives"] == 1
    assert by["S"]["snippets"]["start_mean"] == pytest.approx(1.0)
    assert by["S"]["snippets"]["end_mean"] == pytest.approx(0.0, abs=1e-12)
    assert by["XS"]["true_positives"] == 0 and by["XS"]["seconds"]["start_mae"] is None
    allrow = be["all"]
    assert allrow["true_positives"] == 2
    assert allrow["snippets"]["start_mean"] == pytest.approx(-0.75)
    assert allrow["snippets"]["start_mae"] == pytest.approx(1.75)
    assert allrow["snippets"]["end_mae"] == pytest.approx(1.875)
    assert allrow["snippets"]["mae"] == pytest.approx((1.75 + 1.875) / 2)
    assert report.length_buckets["unit"] == "snippets"


def test_boundary_error_without_snippet_unit_is_in_seconds_only():
    r = analyze(_results(extra=False), _annotations(), split="validation", warn=False)
    assert r.snippet_unit is None
    assert r.boundary_error["all"]["snippets"] is None
    assert r.boundary_error["all"]["seconds"]["start_mae"] == pytest.approx((1.0 + 0.4) / 2)
    assert r.length_buckets["unit"] == "seconds"  # median coverage 2.4 % < 10 %
    with pytest.raises(ValueError, match="snippet duration"):
        analyze(_results(extra=False), _annotations(), split="validation", length_buckets="snippets")


def test_map_by_length_equals_the_evaluator_on_the_filtered_sets(report):
    thresholds = (0.3, 0.4, 0.5, 0.6, 0.7)
    rows = {row["bucket"]: row for row in report.map_by_length}
    base = _results(extra=False)["results"]

    def without(*segments):
        return {"results": {vid: [r for r in records if tuple(r["segment"]) not in segments]
                            for vid, records in base.items()}}

    def gt_only(*kept):
        gt = _annotations()
        gt["database"] = {vid: entry for vid, entry in gt["database"].items() if entry["subset"] == "validation"}
        for entry in gt["database"].values():
            entry["annotations"] = [a for a in entry["annotations"] if tuple(a["segment"]) in kept]
        return gt

    # L holds g0 only; the localization detection matched g2 (bucket S) at tIoU 0.3 and 0.4, the B true positive
    # matched g1 (S): both leave. The A true positive is then first: AP 1 at every threshold.
    expected_l = evaluate(gt_only((10.0, 20.0)), without((70.0, 76.0), (40.4, 42.0)), thresholds, warn=False)
    assert rows["L"]["ground_truth"] == 1
    assert rows["L"]["average_mAP"] == expected_l.average_mAP == pytest.approx(1.0)
    # S holds g1 and g2; the A true positive matched g0 (L) and leaves. AP_A = 1 at 0.3 and 0.4 (the localization
    # detection matches g2 there), 0 above; AP_B = 0.5 -> mean over thresholds (0.75 * 2 + 0.25 * 3) / 5 = 0.45.
    expected_s = evaluate(gt_only((40.0, 42.0), (70.0, 72.4)), without((9.0, 21.5)), thresholds, warn=False)
    assert rows["S"]["average_mAP"] == expected_s.average_mAP == pytest.approx(0.45)
    assert rows["S"]["mAP"] == pytest.approx([0.75, 0.75, 0.25, 0.25, 0.25])
    assert rows["XS"]["ground_truth"] == 0 and rows["XS"]["average_mAP"] is None
    overall = evaluate(gt_only((10.0, 20.0), (40.0, 42.0), (70.0, 72.4)), {"results": base}, thresholds, warn=False)
    assert report.overall["average_mAP"] == overall.average_mAP


def test_length_bucket_rules():
    buckets = LengthBuckets("snippets", (4, 8, 16, 32))
    assert buckets.names == ["XS", "S", "M", "L", "XL"]
    assert buckets.assign(np.array([0.0, 4.0, 4.01, 8.0, 32.0, 33.0])).tolist() == [0, 0, 1, 1, 3, 4]
    assert LengthBuckets.parse("coverage:0.1,0.5") == ("coverage", (0.1, 0.5))
    assert LengthBuckets("coverage", (0.1, 0.5)).names == ["B1", "B2", "B3"]
    assert resolve_length_buckets("auto", None, np.array([0.3, 0.5])).unit == "coverage"
    assert resolve_length_buckets("auto", None, np.array([0.01, 0.02])).unit == "seconds"
    for bad in ("minutes", "snippets:8,4", "auto:1,2", "seconds:a"):
        with pytest.raises(ValueError):
            resolve_length_buckets(bad, None, np.array([0.1]))


def test_perfect_results_on_a_synthetic_split(tmp_path):
    """The ground truth itself as detections: all true positives, zero boundary error, mAP 1 in every bucket; the
    snippet unit comes from the dataset.json that `gsmt-fast synth` writes."""
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.synthetic import generate

    root = generate("thumos-like", tmp_path / "data", seed=1, num_videos=8, progress=False)
    aset = load_annotations(root / "annotations.json")
    videos = aset.subset("validation")
    results = {"results": {v.video_id: [{"label": lab, "score": 1.0 - 0.001 * i, "segment": seg}
                                        for i, (seg, lab) in enumerate(zip(v.segments.tolist(), v.labels))]
                           for v in videos}}
    r = analyze(results, root / "annotations.json", split="validation", warn=False)
    assert "dataset.json" in r.snippet_unit and r.length_buckets["unit"] == "snippets"
    n = sum(len(v.segments) for v in videos)
    assert r.false_positives["counts"]["true_positive"] == n == r.boundary_error["all"]["true_positives"]
    assert r.boundary_error["all"]["snippets"]["mae"] == 0.0
    assert r.overall["average_mAP"] == 1.0
    assert all(row["average_mAP"] in (1.0, None) for row in r.map_by_length)
    assert sum(row["ground_truth"] for row in r.map_by_length) == n


def test_cli_writes_report_and_pngs(tmp_path, capsys):
    ann, res, out = tmp_path / "ann.json", tmp_path / "res.json", tmp_path / "report"
    ann.write_text(json.dumps(_annotations()))
    res.write_text(json.dumps(_results()))
    assert main(["analyze", "--results", str(res), "--annotations", str(ann), "--split", "validation",
                 "--feat-stride", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "wrong label + localization" in captured.out and "1 detection(s) on 1 video(s)" in captured.err
    report = json.loads((out / "analysis.json").read_text())
    expected = analyze(str(res), str(ann), split="validation", feat_stride=4, warn=False).to_dict()
    assert report == json.loads(json.dumps(expected))
    for name in ("analysis.png", "false_positives.png", "boundary_error.png", "map_by_length.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_cli_errors(tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_annotations()))
    out = tmp_path / "o"
    args = ["analyze", "--annotations", str(ann), "--out", str(out), "--no-plot"]
    assert main(args + ["--results", str(tmp_path / "missing.json")]) == 2
    assert "results file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": {"v1": [')
    assert main(args + ["--results", str(bad)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps({"results": {"v1": [{"label": "7", "score": 0.5, "segment": [1, 2]}]}}))
    assert main(args + ["--results", str(ids)]) == 2
    assert "none of the results' labels is a class of the annotations" in capsys.readouterr().err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_results(extra=False)))
    assert main(args + ["--results", str(good), "--split", "test"]) == 2
    assert "splits present" in capsys.readouterr().err
    assert not out.exists()  # nothing written on error


def test_actionformer_columns_with_label_ids_give_the_same_report():
    """A peer's results in ActionFormer's column layout with integer label ids (what its evaluation keeps), read
    through the annotations' label_id, analyse exactly like the same detections in the official format."""
    ann = _annotations()
    ids = {"A": 0, "B": 1}
    for entry in ann["database"].values():
        for a in entry["annotations"]:
            a["label_id"] = ids[a["label"]]
    official = _results(extra=False)
    columns = {"video-id": [], "t-start": [], "t-end": [], "label": [], "score": []}
    for vid, records in official["results"].items():
        for r in records:
            columns["video-id"].append(vid)
            columns["t-start"].append(r["segment"][0])
            columns["t-end"].append(r["segment"][1])
            columns["label"].append(ids[r["label"]])
            columns["score"].append(r["score"])
    from_columns = analyze(columns, ann, split="validation", feat_stride=4, warn=False).to_dict()
    from_official = analyze(official, ann, split="validation", feat_stride=4, warn=False).to_dict()
    assert from_columns == from_official
    # Without label ids in the annotations an integer label is an error, not a guess.
    with pytest.raises(ValueError, match="class names"):
        analyze(columns, _annotations(), split="validation")
    columns["label"][0] = 5
    with pytest.raises(ValueError, match="label id 5 out of range"):
        analyze(columns, ann, split="validation")


def test_analyze_help():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "gsmt_fast.cli", "analyze", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for option in ("--results", "--annotations", "--split", "--tiou", "--error-tiou", "--top-factor",
                   "--length-buckets", "--ckpt", "--feat-stride", "--temporal-scale", "--snippet-seconds", "--out"):
        assert option in r.stdout


def test_snippet_duration_sources(tmp_path):
    import gsmt_fast
    from gsmt_fast.analysis import SnippetUnit, resolve_snippet_unit

    with pytest.raises(ValueError, match="at most one"):
        resolve_snippet_unit(None, snippet_seconds=0.5, feat_stride=4)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("small", num_classes=2, temporal_scale=50, input_dim=8))
    resized = gsmt_fast.save_checkpoint(model, tmp_path / "r.safetensors", class_names=["A", "B"],
                                        grid={"convention": "resize"})
    strided = gsmt_fast.save_checkpoint(model, tmp_path / "s.safetensors", class_names=["A", "B"],
                                        grid={"convention": "stride", "feat_stride": 8, "default_fps": 20.0})
    assert resolve_snippet_unit(None, checkpoint=resized) == SnippetUnit("resize", 50.0, f"checkpoint {resized}")
    unit = resolve_snippet_unit(None, checkpoint=strided)
    assert unit.seconds(100.0, 10.0, "v") == 0.8  # the video's own fps first
    assert unit.seconds(100.0, None, "v") == 0.4  # then the grid's default fps
    with pytest.raises(ValueError, match="no fps"):
        SnippetUnit("stride", 4.0, "feat_stride").seconds(100.0, None, "v")
    # Resize: v1 lasts 100 s, so 1 snippet = 2 s; the A true positive starts 1 s early = -0.5 snippets.
    r = analyze(_results(extra=False), _annotations(), split="validation", checkpoint=resized, warn=False)
    assert r.length_buckets["unit"] == "coverage"
    assert r.boundary_error["all"]["snippets"]["start_mae"] == pytest.approx((0.5 + 0.2) / 2)
    same = analyze(_results(extra=False), _annotations(), split="validation", temporal_scale=50, warn=False)
    assert same.boundary_error == r.boundary_error
