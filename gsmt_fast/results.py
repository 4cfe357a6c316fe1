"""Detection results in the official ActivityNet results JSON (docs/DESIGN.md, "Evaluation").

Written format::

    {"version": "VERSION 1.3",
     "results": {video_id: [{"label": name, "score": s, "segment": [t0, t1]}, ...]},
     "external_data": {"used": false, "details": ""}}

* Video ids are written and read without the ``v_`` prefix of the BSN/BMN family (:func:`canonical_video_id`).
* Floats are written with Python's shortest round-trip representation (never rounded), so reading a file back
  gives bit-identical float64 values (float32 inputs are widened exactly first).
* Only ``label``, ``score`` and ``segment`` are written per record; other keys are not part of the format.

Readable variants: the official format; OpenTAD's (``results`` only, no ``version``/``external_data``); the
column layout ActionFormer keeps in memory (``{"video-id": [...], "t-start": [...], "t-end": [...],
"label": [...], "score": [...]}``, labels as class names, or as integer label ids given the class names).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gsmt_fast.data.annotations import canonical_video_id
from gsmt_fast.files import atomic_write_json

RESULTS_VERSION = "VERSION 1.3"
_ACTIONFORMER_COLUMNS = ("video-id", "t-start", "t-end", "label", "score")


def _finite_float(value: Any, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


def _clean_record(record: Any, where: str) -> dict[str, Any]:
    """A validated ``{"label": str, "score": float, "segment": [float, float]}`` copy of one record."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: a detection must be a dict with label, score and segment, got {record!r}")
    missing = [key for key in ("label", "score", "segment") if key not in record]
    if missing:
        raise ValueError(f"{where}: detection is missing {', '.join(missing)}: {dict(record)!r}")
    label = record["label"]
    if isinstance(label, np.str_):
        label = str(label)
    if not isinstance(label, str):
        raise ValueError(f"{where}: label must be a class name (str), got {label!r}")
    score = _finite_float(record["score"], f"{where}: score")
    segment = record["segment"]
    if isinstance(segment, np.ndarray):
        segment = segment.tolist()
    if isinstance(segment, (str, bytes)) or not isinstance(segment, Sequence) or len(segment) != 2:
        raise ValueError(f"{where}: segment must be [start, end], got {segment!r}")
    start = _finite_float(segment[0], f"{where}: segment start")
    end = _finite_float(segment[1], f"{where}: segment end")
    if start > end:
        raise ValueError(f"{where}: segment start {start} is after its end {end}")
    return {"label": label, "score": score, "segment": [start, end]}


def _clean_results(results: Any, source: str) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(results, Mapping):
        raise ValueError(f"{source}: 'results' must map video ids to lists of detections, got {type(results).__name__}")
    cleaned: dict[str, list[dict[str, Any]]] = {}
    original_ids: dict[str, str] = {}
    for video_id, records in results.items():
        canonical = canonical_video_id(video_id)
        if canonical in cleaned:
            raise ValueError(
                f"{source}: video ids {original_ids[canonical]!r} and {video_id!r} are the same video "
                f"({canonical!r} without the 'v_' prefix)"
            )
        if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
            raise ValueError(f"{source}: detections of video {video_id!r} must be a list, got {type(records).__name__}")
        original_ids[canonical] = video_id
        cleaned[canonical] = [
            _clean_record(record, f"{source}: video {video_id!r} detection {i}") for i, record in enumerate(records)
        ]
    return cleaned


def write_results(
    path: str | os.PathLike,
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    external_data: Mapping[str, Any] | None = None,
) -> None:
    """Write ``results`` ({video_id: [{"label", "score", "segment"}]}) as the official results JSON, atomically.

    The file is replaced only after the whole content was serialised; a failure leaves the old file intact.
    ``external_data`` defaults to ``{"used": False, "details": ""}``.
    """
    cleaned = _clean_results(results, "results")
    if external_data is None:
        external_data = {"used": False, "details": ""}
    document = {"version": RESULTS_VERSION, "results": cleaned, "external_data": dict(external_data)}
    # allow_nan is irrelevant (all floats were checked finite); atomic_write_json serialises before writing.
    atomic_write_json(path, document)


def _results_from_columns(
    data: Mapping[str, Any], source: str, class_names: Sequence[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    columns = {name: list(np.asarray(data[name]).tolist()) for name in _ACTIONFORMER_COLUMNS}
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{source}: ActionFormer-style columns have different lengths: {lengths}")
    results: dict[str, list[dict[str, Any]]] = {}
    for i, video_id in enumerate(columns["video-id"]):
        record = {
            "label": columns["label"][i],
            "score": columns["score"][i],
            "segment": [columns["t-start"][i], columns["t-end"][i]],
        }
        label = record["label"]
        if class_names is not None and isinstance(label, int) and not isinstance(label, bool):
            if not 0 <= label < len(class_names):
                raise ValueError(f"{source}: label id {label} out of range for {len(class_names)} class names")
            record["label"] = str(class_names[label])
        if not isinstance(record["label"], str):
            raise ValueError(
                f"{source}: ActionFormer-style labels must be class names to be read as results, "
                f"got {record['label']!r} (map label ids to names first, or pass class_names)"
            )
        results.setdefault(str(video_id), []).append(record)
    return _clean_results(results, source)


def read_results(
    path_or_dict: str | os.PathLike | Mapping[str, Any], class_names: Sequence[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Read a results JSON (file path or already-parsed dict) into ``{video_id: [{"label", "score", "segment"}]}``.

    Accepts the official format, OpenTAD's variant without ``version``/``external_data``, and ActionFormer's
    column layout. Video ids come back without ``v_``; records keep their order; every record is validated
    (class-name label, finite score, finite ``[start, end]`` with ``start <= end``). ActionFormer keeps integer
    label ids in its columns: with ``class_names`` (indexed by label id) they are mapped to names.
    """
    if isinstance(path_or_dict, Mapping):
        data, source = path_or_dict, "results"
    elif isinstance(path_or_dict, (str, os.PathLike)):
        source = str(path_or_dict)
        try:
            with open(Path(path_or_dict), encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error})") from error
    else:
        raise TypeError(f"read_results takes a path or a dict, got {type(path_or_dict).__name__}")
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a JSON object with a 'results' key, got {type(data).__name__}")
    if "results" in data:
        return _clean_results(data["results"], source)
    if all(name in data for name in _ACTIONFORMER_COLUMNS):
        return _results_from_columns(data, source, class_names)
    raise ValueError(
        f"{source}: not a results file: expected a 'results' key (official ActivityNet / OpenTAD format) or the "
        f"ActionFormer columns {list(_ACTIONFORMER_COLUMNS)}; found keys {sorted(map(str, data))[:10]}"
    )


def results_to_arrays(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The records of one video as ``(segments (N, 2) float64, scores (N,) float64, labels (N,) str array)``."""
    cleaned = [_clean_record(record, f"detection {i}") for i, record in enumerate(records)]
    segments = np.array([r["segment"] for r in cleaned], dtype=np.float64).reshape(-1, 2)
    scores = np.array([r["score"] for r in cleaned], dtype=np.float64)
    labels = np.array([r["label"] for r in cleaned], dtype=str)
    return segments, scores, labels


def arrays_to_records(segments, scores, labels, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The inverse of :func:`results_to_arrays`; integer ``labels`` are mapped through ``class_names``."""
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if not (len(segments) == len(scores) == len(labels)):
        raise ValueError(f"segments, scores and labels differ in length: {len(segments)}, {len(scores)}, {len(labels)}")
    if labels.dtype.kind in "iu":
        if class_names is None:
            raise ValueError("integer labels need class_names to be written as results")
        bad = [int(label) for label in labels if not 0 <= int(label) < len(class_names)]
        if bad:
            raise ValueError(f"label id(s) {sorted(set(bad))} out of range for {len(class_names)} class names")
        names = [str(class_names[int(label)]) for label in labels]
    else:
        names = [str(label) for label in labels]
    records = [
        {"label": name, "score": float(score), "segment": [float(segment[0]), float(segment[1])]}
        for name, score, segment in zip(names, scores, segments)
    ]
    return [_clean_record(record, f"detection {i}") for i, record in enumerate(records)]


__all__ = [
    "RESULTS_VERSION",
    "canonical_video_id",
    "write_results",
    "read_results",
    "results_to_arrays",
    "arrays_to_records",
]
