"""Annotation readers and writers: the three families, their error messages and the ActivityNet export."""

import json

import numpy as np
import pytest

from gsmt_fast.data.annotations import (
    AnnotationSet,
    VideoAnnotation,
    canonical_video_id,
    load_annotations,
    save_annotations_actionformer,
    save_annotations_activitynet,
)

TAXONOMY = [
    {"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
    {"nodeId": 1, "nodeName": "Sports", "parentId": 0, "parentName": "Root"},
    {"nodeId": 2, "nodeName": "Surfing", "parentId": 1, "parentName": "Sports"},
    {"nodeId": 3, "nodeName": "Archery", "parentId": 1, "parentName": "Sports"},
    {"nodeId": 4, "nodeName": "Knitting", "parentId": 0, "parentName": "Root"},
]


def activitynet_dict():
    return {
        "version": "VERSION 1.3",
        "taxonomy": TAXONOMY,
        "database": {
            "abc123XYZ_-": {
                "subset": "training",
                "duration": 120.5,
                "url": "https://www.youtube.com/watch?v=abc123XYZ_-",
                "annotations": [
                    {"segment": [1.5, 20.0], "label": "Surfing"},
                    {"segment": [30.0, 44.25], "label": "Surfing"},
                ],
            },
            "def456": {
                "subset": "validation",
                "duration": 60.0,
                "annotations": [{"segment": [0.0, 59.0], "label": "Archery"}],
            },
            "noann": {"subset": "testing", "duration": 10.0, "annotations": []},
        },
    }


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_activitynet_official(tmp_path):
    aset = load_annotations(write_json(tmp_path / "anet.json", activitynet_dict()))
    # Leaves of the taxonomy, sorted; "Knitting" has no annotation but is a class.
    assert aset.classes == ["Archery", "Knitting", "Surfing"]
    assert set(aset.videos) == {"abc123XYZ_-", "def456", "noann"}
    v = aset.videos["abc123XYZ_-"]
    assert v.subset == "training" and v.duration == 120.5 and v.fps is None
    np.testing.assert_array_equal(v.segments, [[1.5, 20.0], [30.0, 44.25]])
    assert v.segments.dtype == np.float64 and v.labels == ["Surfing", "Surfing"]
    assert aset.videos["noann"].segments.shape == (0, 2)
    assert [x.video_id for x in aset.subset("validation")] == ["def456"]
    assert len(aset.subset(["training", "validation"])) == 2
    assert aset.class_index("Surfing") == 2


def test_activitynet_without_taxonomy_uses_labels(tmp_path):
    data = activitynet_dict()
    del data["taxonomy"]
    aset = load_annotations(write_json(tmp_path / "a.json", data))
    assert aset.classes == ["Archery", "Surfing"]


def test_unknown_subset_lists_available(tmp_path):
    aset = load_annotations(write_json(tmp_path / "a.json", activitynet_dict()))
    with pytest.raises(KeyError, match="training.*validation"):
        aset.subset("test")
    with pytest.raises(KeyError, match="Dancing"):
        aset.class_index("Dancing")


def thumos_actionformer_dict():
    return {
        "version": "Thumos14-30fps",
        "database": {
            "video_validation_0000051": {
                "subset": "Validation",
                "duration": 169.79,
                "fps": 30.0,
                "annotations": [
                    {"label": "Diving", "segment": [10.0, 12.5], "segment(frames)": [300, 375], "label_id": 1},
                    {"label": "CliffDiving", "segment": [10.0, 12.5], "segment(frames)": [300, 375], "label_id": 0},
                    {"label": "Ambiguous", "segment": [40.0, 41.0], "label_id": 99},
                ],
            },
            "video_test_0000004": {
                "subset": "Test",
                "duration": 33.4,
                "fps": 29.97,
                "frame": 1001,
                "annotations": [{"label": "Billiards", "segment": [0.2, 1.1], "label_id": 2}],
            },
        },
    }


def test_actionformer_label_ids_fps_and_two_labels_on_one_segment(tmp_path):
    aset = load_annotations(write_json(tmp_path / "thumos.json", thumos_actionformer_dict()))
    # The class list follows label_id, not alphabetical order.
    assert aset.classes == ["CliffDiving", "Diving", "Billiards"]
    v = aset.videos["video_validation_0000051"]
    assert v.fps == 30.0 and v.subset == "Validation"
    # Identical segments with two labels are both kept; Ambiguous is skipped (and not a class).
    assert v.labels == ["Diving", "CliffDiving"]
    np.testing.assert_array_equal(v.segments, [[10.0, 12.5], [10.0, 12.5]])
    t = aset.videos["video_test_0000004"]
    assert t.fps == 29.97 and t.num_feature_frames == 1001


def test_ambiguous_kept_when_not_skipped(tmp_path):
    data = thumos_actionformer_dict()
    data["database"]["video_validation_0000051"]["annotations"][2]["label_id"] = 3
    aset = load_annotations(write_json(tmp_path / "t.json", data), skip_labels=())
    assert "Ambiguous" in aset.videos["video_validation_0000051"].labels
    assert aset.classes == ["CliffDiving", "Diving", "Billiards", "Ambiguous"]


def test_label_id_gap_filled_from_taxonomy(tmp_path):
    data = thumos_actionformer_dict()
    data["database"]["video_test_0000004"]["annotations"][0]["label_id"] = 3  # id 2 is used by no annotation
    data["taxonomy"] = [
        {"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
        *(
            {"nodeId": i + 1, "nodeName": n, "parentId": 0, "parentName": "Root"}
            for i, n in enumerate(["Billiards", "CliffDiving", "Diving", "GolfSwing"])
        ),
    ]
    aset = load_annotations(write_json(tmp_path / "t.json", data))
    assert aset.classes == ["CliffDiving", "Diving", "GolfSwing", "Billiards"]


def test_label_id_gap_without_taxonomy_is_an_error(tmp_path):
    data = thumos_actionformer_dict()  # Ambiguous has label_id 99: ids 3..98 would have no name
    with pytest.raises(ValueError, match=r"label ids \[3, 4, .*used by no annotation"):
        load_annotations(write_json(tmp_path / "t.json", data), skip_labels=())


def test_conflicting_label_ids_are_errors(tmp_path):
    data = thumos_actionformer_dict()
    data["database"]["video_test_0000004"]["annotations"][0]["label_id"] = 1  # Billiards takes Diving's id
    with pytest.raises(ValueError, match="label_id 1 is used for both"):
        load_annotations(write_json(tmp_path / "t.json", data))
    data = thumos_actionformer_dict()
    data["database"]["video_test_0000004"]["annotations"][0].update(label="Diving", label_id=2)
    with pytest.raises(ValueError, match="'Diving' has both label_id"):
        load_annotations(write_json(tmp_path / "t.json", data))


VIDEO_INFO_CSV = """video,numFrame,seconds,fps,rfps,subset,featureFrame
v_QOlSCBRmfWY,2067,82.73,25.0,24.98,training,2064
v_ehGHCYKzyZ8,1890,61.72,30.0,30.62,validation,1888
v_nwznKOuZM7w,1000,33.3,30.0,30.0,testing,992
"""


def bmn_dict():
    return {
        "v_QOlSCBRmfWY": {
            "duration_second": 82.73,
            "duration_frame": 2067,
            "feature_frame": 2064,
            "annotations": [{"segment": [6.19, 77.74], "label": "Ballet"}],
        },
        "v_ehGHCYKzyZ8": {
            "duration_second": 61.72,
            "duration_frame": 1890,
            "feature_frame": 1888,
            "annotations": [
                {"segment": [0.0, 20.5], "label": "Doing crunches"},
                {"segment": [30.0, 61.0], "label": "Doing crunches"},
            ],
        },
    }


def test_bmn_with_csv_next_to_json(tmp_path):
    (tmp_path / "video_info_new.csv").write_text(VIDEO_INFO_CSV)
    aset = load_annotations(write_json(tmp_path / "anet_anno_action.json", bmn_dict()))
    assert set(aset.videos) == {"QOlSCBRmfWY", "ehGHCYKzyZ8"}  # no "v_"
    v = aset.videos["QOlSCBRmfWY"]
    assert v.subset == "training" and v.fps == 25.0 and v.duration == 82.73 and v.num_feature_frames == 2064
    assert aset.videos["ehGHCYKzyZ8"].subset == "validation"
    assert aset.classes == ["Ballet", "Doing crunches"]


def test_bmn_with_explicit_csv_and_missing_csv(tmp_path):
    csv_path = tmp_path / "elsewhere" / "info.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(VIDEO_INFO_CSV)
    json_path = write_json(tmp_path / "anno.json", bmn_dict())
    aset = load_annotations(json_path, video_info_csv=csv_path, format="bmn")
    assert len(aset.subset("training")) == 1
    with pytest.raises(FileNotFoundError, match="video_info_new.csv"):
        load_annotations(json_path)


def test_missing_key_names_video_and_key(tmp_path):
    data = activitynet_dict()
    del data["database"]["def456"]["duration"]
    with pytest.raises(KeyError, match=r"def456.*'duration'"):
        load_annotations(write_json(tmp_path / "a.json", data))
    data = activitynet_dict()
    del data["database"]["def456"]["annotations"][0]["segment"]
    with pytest.raises(KeyError, match=r"def456.*'segment'"):
        load_annotations(write_json(tmp_path / "a.json", data))


def test_end_before_start_is_an_error(tmp_path):
    data = activitynet_dict()
    data["database"]["def456"]["annotations"][0]["segment"] = [30.0, 20.0]
    with pytest.raises(ValueError, match=r"def456.*end 20.0 is before its start 30.0"):
        load_annotations(write_json(tmp_path / "a.json", data))


@pytest.mark.parametrize("where", ["segment", "duration"])
def test_non_finite_numbers_are_errors(tmp_path, where):
    data = activitynet_dict()
    if where == "segment":
        data["database"]["def456"]["annotations"][0]["segment"] = [float("nan"), 3.0]
    else:
        data["database"]["def456"]["duration"] = float("inf")
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))  # json writes NaN / Infinity, as Python's own reader accepts
    with pytest.raises(ValueError, match="def456.*not finite"):
        load_annotations(path)


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unknown annotation format"):
        load_annotations(write_json(tmp_path / "x.json", {"videos": [1, 2]}))
    with pytest.raises(ValueError, match="unknown annotation format 'coco'"):
        load_annotations(write_json(tmp_path / "a.json", activitynet_dict()), format="coco")


def test_duplicate_ids_with_and_without_prefix(tmp_path):
    data = activitynet_dict()
    data["database"]["v_def456"] = data["database"]["def456"]
    with pytest.raises(ValueError, match="appears twice"):
        load_annotations(write_json(tmp_path / "a.json", data))


def test_canonical_video_id():
    assert canonical_video_id("v_abc") == "abc"
    assert canonical_video_id("abc") == "abc"
    assert canonical_video_id("v_v_abc") == "v_abc"  # only one prefix is stripped


def test_to_activitynet_round_trip(tmp_path):
    original = load_annotations(write_json(tmp_path / "thumos.json", thumos_actionformer_dict()))
    save_annotations_activitynet(original, tmp_path / "gt.json")
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert set(gt) == {"version", "taxonomy", "database"}
    assert all("fps" not in v for v in gt["database"].values())
    back = load_annotations(tmp_path / "gt.json")
    assert set(back.videos) == set(original.videos)
    for vid, v in original.videos.items():
        np.testing.assert_array_equal(back.videos[vid].segments, v.segments)
        assert back.videos[vid].labels == v.labels
        assert back.videos[vid].duration == v.duration
    assert sorted(back.classes) == sorted(original.classes)

    only_test = original.to_activitynet(subset="Test")
    assert list(only_test["database"]) == ["video_test_0000004"]


def test_actionformer_writer_round_trip_keeps_ids_and_fps(tmp_path):
    videos = {
        "b": VideoAnnotation("b", "training", 10.0, 25.0, np.array([[1.0, 2.0]]), ["zeta"]),
        "a": VideoAnnotation("a", "validation", 5.0, None, np.zeros((0, 2)), [], num_feature_frames=40),
    }
    aset = AnnotationSet(videos, ["zeta", "alpha"])  # deliberately not alphabetical
    save_annotations_actionformer(aset, tmp_path / "af.json")
    back = load_annotations(tmp_path / "af.json")
    assert back.classes == ["zeta", "alpha"]
    assert back.videos["b"].fps == 25.0 and back.videos["a"].fps is None
    assert back.videos["a"].num_feature_frames == 40
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left nothing behind


def test_load_from_dict():
    aset = load_annotations(activitynet_dict())
    assert len(aset) == 3
