"""Official ActivityNet results JSON: exact float round trip, atomic writes, the variants we read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gsmt_fast.results import (
    arrays_to_records,
    canonical_video_id,
    read_results,
    results_to_arrays,
    write_results,
)

AWKWARD_FLOATS = [0.1 + 0.2, 1 / 3, float(np.float32(0.7)), 1e-300, 123456.78901234567, 5e-324, 2.0**53 + 2]


def test_round_trip_is_bit_identical(tmp_path):
    path = tmp_path / "results.json"
    records = [
        {"label": "Jump", "score": np.float32(0.7), "segment": np.array([1 / 3, 2 / 3])},
        *({"label": "Run", "score": x, "segment": [x, x + 1.0]} for x in AWKWARD_FLOATS),
    ]
    write_results(path, {"v_abc": records, "xyz": []})
    data = json.loads(path.read_text())
    assert data["version"] == "VERSION 1.3"
    assert data["external_data"] == {"used": False, "details": ""}
    assert list(data["results"]) == ["abc", "xyz"]  # v_ dropped, order kept
    back = read_results(path)
    assert list(back) == ["abc", "xyz"] and back["xyz"] == []
    got = back["abc"]
    assert got[0]["score"] == float(np.float32(0.7)) and got[0]["segment"] == [1 / 3, 2 / 3]
    for record, x in zip(got[1:], AWKWARD_FLOATS):
        assert record["label"] == "Run"
        assert record["score"] == x and np.float64(record["score"]).tobytes() == np.float64(x).tobytes()
        assert record["segment"] == [x, x + 1.0]
    assert read_results(data) == back  # a parsed dict reads the same


def test_write_is_atomic(tmp_path):
    path = tmp_path / "results.json"
    write_results(path, {"a": [{"label": "Jump", "score": 0.5, "segment": [0, 1]}]})
    original = path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind
    # serialisation fails (not JSON-serialisable external_data): old file intact, no temporary file
    with pytest.raises(TypeError):
        write_results(path, {"a": []}, external_data={"details": object()})
    # validation fails before anything is written
    with pytest.raises(ValueError, match="score must be finite"):
        write_results(path, {"a": [{"label": "Jump", "score": float("nan"), "segment": [0, 1]}]})
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_read_opentad_variant(tmp_path):
    # OpenTAD: only "results" (rounded numbers), v_ ids possible
    path = tmp_path / "opentad.json"
    path.write_text(json.dumps({"results": {"v_abc": [{"label": "Jump", "score": 0.9123, "segment": [1.25, 3.5]}]}}))
    assert read_results(path) == {"abc": [{"label": "Jump", "score": 0.9123, "segment": [1.25, 3.5]}]}


def test_read_actionformer_columns():
    columns = {
        "video-id": ["a", "a", "v_b"],
        "t-start": [0.0, 1.0, 2.0],
        "t-end": [1.0, 2.0, 3.0],
        "label": ["Jump", "Run", "Jump"],
        "score": [0.9, 0.8, 0.7],
    }
    results = read_results(columns)
    assert list(results) == ["a", "b"]
    assert results["a"][1] == {"label": "Run", "score": 0.8, "segment": [1.0, 2.0]}
    with pytest.raises(ValueError, match="labels must be class names"):
        read_results({**columns, "label": [0, 1, 0]})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"version": "VERSION 1.3"}, "not a results file.*'results' key"),
        ({"results": [1, 2]}, "'results' must map video ids"),
        ({"results": {"a": {"label": "x"}}}, "detections of video 'a' must be a list"),
        ({"results": {"a": [{"label": "x", "segment": [0, 1]}]}}, "missing score"),
        ({"results": {"a": [{"label": 3, "score": 0.5, "segment": [0, 1]}]}}, "label must be a class name"),
        ({"results": {"a": [{"label": "x", "score": 0.5, "segment": [0]}]}}, r"segment must be \[start, end\]"),
        ({"results": {"a": [{"label": "x", "score": 0.5, "segment": [2, 1]}]}}, "is after its end"),
        ({"results": {"v_a": [], "a": []}}, "are the same video"),
    ],
)
def test_read_errors_name_the_problem(data, match):
    with pytest.raises(ValueError, match=match):
        read_results(data)


def test_read_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_results(path)


def test_arrays_conversion():
    records = [
        {"label": "Jump", "score": 0.9, "segment": [0.0, 1.5]},
        {"label": "Run", "score": 0.25, "segment": [2.0, 4.0]},
    ]
    segments, scores, labels = results_to_arrays(records)
    assert segments.shape == (2, 2) and segments.dtype == np.float64
    np.testing.assert_array_equal(scores, [0.9, 0.25])
    assert labels.tolist() == ["Jump", "Run"]
    assert arrays_to_records(segments, scores, labels) == records
    assert arrays_to_records(segments, scores, [0, 1], class_names=["Jump", "Run"]) == records
    with pytest.raises(ValueError, match="out of range"):
        arrays_to_records(segments, scores, [0, 2], class_names=["Jump", "Run"])
    empty_segments, empty_scores, empty_labels = results_to_arrays([])
    assert empty_segments.shape == (0, 2) and empty_scores.shape == (0,) and empty_labels.shape == (0,)


def test_canonical_video_id():
    assert canonical_video_id("v_abc") == "abc"
    assert canonical_video_id("video_test_0000004") == "video_test_0000004"
