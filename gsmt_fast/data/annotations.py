"""Annotation readers and writers for the three on-disk families in real use (docs/DESIGN.md, "Data formats").

1. ``activitynet``: the official ActivityNet JSON
   ``{"version", "taxonomy", "database": {vid: {"subset", "duration", "annotations": [{"segment", "label"}]}}}``.
2. ``actionformer`` (also OpenTAD): the same container plus per-video ``fps`` (and optionally ``frame``) and a
   ``label_id`` per annotation. THUMOS files use the subsets ``validation`` (train) and ``test``.
3. ``bmn`` (BSN/BMN): ``anet_anno_action.json`` keyed ``v_<id>`` with ``duration_second, duration_frame,
   feature_frame, annotations``, plus ``video_info_new.csv`` (``video,numFrame,seconds,fps,rfps,subset,featureFrame``)
   that gives each video's subset and fps.

Everything is read into one :class:`AnnotationSet` whose video ids never carry the ``v_`` prefix.
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gsmt_fast.files import atomic_write_json

FORMATS = ("activitynet", "actionformer", "bmn")
_FORMAT_ALIASES = {"opentad": "actionformer", "bsn": "bmn", "anet": "activitynet"}
BMN_VIDEO_INFO_NAME = "video_info_new.csv"
ACTIVITYNET_VERSION = "VERSION 1.3"


def canonical_video_id(vid: str) -> str:
    """The video id without one leading ``v_`` (BSN/BMN files and many feature folders add it)."""
    vid = str(vid)
    return vid[2:] if vid.startswith("v_") else vid


@dataclass
class VideoAnnotation:
    video_id: str  # canonical id, without a leading "v_"
    subset: str
    duration: float  # seconds
    fps: float | None  # None when the format does not say
    segments: np.ndarray  # (N, 2) float64 seconds, start <= end
    labels: list[str]  # N class names
    num_feature_frames: int | None = None  # BMN "feature_frame", ActionFormer/OpenTAD "frame", if given

    def __post_init__(self):
        self.segments = np.asarray(self.segments, dtype=np.float64).reshape(-1, 2)
        self.labels = list(self.labels)
        if len(self.labels) != len(self.segments):
            raise ValueError(f"video {self.video_id!r}: {len(self.segments)} segments but {len(self.labels)} labels")


def detect_kwargs(videos: Sequence[VideoAnnotation]) -> dict[str, list]:
    """Per-video ``fps``, ``duration`` and ``video_id`` of annotated videos, as :meth:`gsmt_fast.Detector.detect`
    takes them (training validation, the demo and ``gsmt-fast detect --annotations`` use the same metadata)."""
    return {"fps": [v.fps for v in videos], "duration": [v.duration for v in videos],
            "video_id": [v.video_id for v in videos]}


@dataclass
class AnnotationSet:
    videos: dict[str, VideoAnnotation]
    classes: list[str]  # index = label id
    _class_ids: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self._class_ids = {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.videos)

    def subsets(self) -> list[str]:
        """The distinct subset names, sorted."""
        return sorted({v.subset for v in self.videos.values()})

    def subset(self, name: str | Sequence[str]) -> list[VideoAnnotation]:
        """Videos whose subset is ``name`` (or one of several names), in file order."""
        wanted = {name} if isinstance(name, str) else set(name)
        selected = [v for v in self.videos.values() if v.subset in wanted]
        if not selected:
            raise KeyError(f"no video in subset {sorted(wanted)}; available subsets: {self.subsets()}")
        return selected

    def class_index(self, name: str) -> int:
        try:
            return self._class_ids[name]
        except KeyError:
            raise KeyError(f"unknown class {name!r}; known classes: {self.classes}") from None

    def to_activitynet(self, subset: str | Sequence[str] | None = None) -> dict[str, Any]:
        """The official ActivityNet ground-truth dict (ids without ``v_``; a flat taxonomy under "Root")."""
        videos = self.videos.values() if subset is None else self.subset(subset)
        database = {
            v.video_id: {
                "subset": v.subset,
                "duration": float(v.duration),
                "annotations": [
                    {"segment": [float(s), float(e)], "label": label}
                    for (s, e), label in zip(v.segments.tolist(), v.labels)
                ],
            }
            for v in videos
        }
        return {"version": ACTIVITYNET_VERSION, "taxonomy": _flat_taxonomy(self.classes), "database": database}

    def to_actionformer(self, subset: str | Sequence[str] | None = None) -> dict[str, Any]:
        """The ActionFormer/OpenTAD dict: the ActivityNet container plus ``fps``, ``frame`` and ``label_id``."""
        videos = self.videos.values() if subset is None else self.subset(subset)
        database = {}
        for v in videos:
            entry: dict[str, Any] = {"subset": v.subset, "duration": float(v.duration)}
            if v.fps is not None:
                entry["fps"] = float(v.fps)
            if v.num_feature_frames is not None:
                entry["frame"] = int(v.num_feature_frames)
            entry["annotations"] = [
                {"label": label, "segment": [float(s), float(e)], "label_id": self.class_index(label)}
                for (s, e), label in zip(v.segments.tolist(), v.labels)
            ]
            database[v.video_id] = entry
        return {"version": ACTIVITYNET_VERSION, "taxonomy": _flat_taxonomy(self.classes), "database": database}


def _flat_taxonomy(classes: Sequence[str]) -> list[dict[str, Any]]:
    # Every class is a leaf under one root, which is how the readers below recover the class list.
    if not classes:
        return []  # a lone root would read back as a leaf class
    nodes: list[dict[str, Any]] = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}]
    for i, name in enumerate(classes):
        nodes.append({"nodeId": i + 1, "nodeName": name, "parentId": 0, "parentName": "Root"})
    return nodes


def _taxonomy_leaves(taxonomy: Any, source: str) -> list[str]:
    """Leaf node names of an ActivityNet taxonomy (a node is a leaf when no node names it as parent). A taxonomy in
    another layout is ignored with a warning: the classes then come from the annotations alone."""
    if not taxonomy:
        return []
    if not isinstance(taxonomy, list) or not all(isinstance(n, Mapping) and "nodeName" in n for n in taxonomy):
        warnings.warn(f"{source}: 'taxonomy' is not an ActivityNet node list (nodes with 'nodeName'); ignored, the "
                      "classes are taken from the annotations", stacklevel=3)
        return []
    parents = {n.get("parentName") for n in taxonomy}
    return sorted({n["nodeName"] for n in taxonomy if n["nodeName"] not in parents})


# ----------------------------------------------------------------------------------------------------------- reading


def load_annotations(
    path: str | os.PathLike | Mapping[str, Any],
    video_info_csv: str | os.PathLike | None = None,
    format: str = "auto",
    skip_labels: Sequence[str] = ("Ambiguous",),
) -> AnnotationSet:
    """Read an annotation file of any supported family (``format="auto"`` detects it).

    ``path`` may also be an already-parsed dict. ``video_info_csv`` is only used by the BMN family; when it is not
    given, ``video_info_new.csv`` next to the JSON file is used. Annotations whose label is in ``skip_labels`` are
    dropped (THUMOS "Ambiguous").
    """
    if isinstance(path, Mapping):
        data, source, folder = path, "<annotation dict>", None
    else:
        source = str(path)
        folder = Path(path).parent
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"annotation file not found: {source}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")

    fmt = _FORMAT_ALIASES.get(format, format)
    if fmt == "auto":
        fmt = detect_format(data, source)
    elif fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {format!r}; choose 'auto' or one of {FORMATS}")
    skip = set(skip_labels or ())

    if fmt == "bmn":
        if video_info_csv is None:
            if folder is None:
                raise ValueError("BMN annotations given as a dict need video_info_csv (video_info_new.csv)")
            video_info_csv = folder / BMN_VIDEO_INFO_NAME
        return _read_bmn(data, source, Path(video_info_csv), skip)
    return _read_database(data, source, use_label_ids=(fmt == "actionformer"), skip=skip)


def detect_format(data: Mapping[str, Any], source: str = "<annotations>") -> str:
    """Which family a parsed annotation dict belongs to: ``activitynet``, ``actionformer`` or ``bmn``."""
    if "database" in data:
        database = data["database"]
        if not isinstance(database, Mapping):
            raise ValueError(f"{source}: 'database' must be an object keyed by video id")
        for entry in database.values():
            if not isinstance(entry, Mapping):
                continue
            if "fps" in entry or "frame" in entry:
                return "actionformer"
            for ann in entry.get("annotations") or ():
                if isinstance(ann, Mapping) and "label_id" in ann:
                    return "actionformer"
        return "activitynet"
    entries = list(data.values())
    if entries and all(isinstance(e, Mapping) and "duration_second" in e for e in entries[:10]):
        return "bmn"
    keys = sorted(data)[:5]
    raise ValueError(
        f"{source}: unknown annotation format (top-level keys {keys}); expected an ActivityNet/ActionFormer file "
        "with a 'database' object, or a BSN/BMN file keyed by 'v_<id>' with 'duration_second' per video"
    )


def _number(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} is not finite: {value!r}")
    return x


def _require(entry: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise KeyError(f"{where}: missing key {key!r} (present: {sorted(entry)})")
    return entry[key]


def _read_segments(anns: Any, vid: str, source: str, skip: set[str]):
    """Segments, labels and (possibly None) label ids of one video's annotation list."""
    if not isinstance(anns, list):
        raise ValueError(f"{source}, video {vid!r}: 'annotations' must be a list")
    segments, labels, label_ids = [], [], []
    for k, ann in enumerate(anns):
        where = f"{source}, video {vid!r}, annotation {k}"
        if not isinstance(ann, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(ann).__name__}")
        label = str(_require(ann, "label", where))
        if label in skip:
            continue
        seg = _require(ann, "segment", where)
        if not isinstance(seg, (list, tuple)) or len(seg) != 2:
            raise ValueError(f"{where}: 'segment' must be [start, end], got {seg!r}")
        start = _number(seg[0], f"{where}: segment start")
        end = _number(seg[1], f"{where}: segment end")
        if end < start:
            raise ValueError(f"{where}: segment end {end} is before its start {start}")
        segments.append((start, end))
        labels.append(label)
        label_ids.append(ann.get("label_id"))
    return np.asarray(segments, dtype=np.float64).reshape(-1, 2), labels, label_ids


def _check_duration(value: Any, where: str) -> float:
    duration = _number(value, f"{where}: duration")
    if duration <= 0:
        raise ValueError(f"{where}: duration must be > 0, got {duration}")
    return duration


def _add_video(videos: dict[str, VideoAnnotation], raw_id: str, video: VideoAnnotation, source: str) -> None:
    if video.video_id in videos:
        raise ValueError(f"{source}: video {raw_id!r} appears twice (ids are compared without a 'v_' prefix)")
    videos[video.video_id] = video


def _read_database(data: Mapping[str, Any], source: str, use_label_ids: bool, skip: set[str]) -> AnnotationSet:
    database = _require(data, "database", source)
    if not isinstance(database, Mapping):
        raise ValueError(f"{source}: 'database' must be an object keyed by video id")
    videos: dict[str, VideoAnnotation] = {}
    id_to_name: dict[int, str] = {}
    name_to_id: dict[str, int] = {}
    for raw_id, entry in database.items():
        where = f"{source}, video {raw_id!r}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        subset = str(_require(entry, "subset", where))
        duration = _check_duration(_require(entry, "duration", where), where)
        fps = _number(entry["fps"], f"{where}: fps") if entry.get("fps") is not None else None
        if fps is not None and fps <= 0:
            raise ValueError(f"{where}: fps must be > 0, got {fps}")
        frames = entry.get("frame")
        num_frames = int(_number(frames, f"{where}: frame")) if frames is not None else None
        segments, labels, label_ids = _read_segments(entry.get("annotations", []), raw_id, source, skip)
        if use_label_ids:
            for label, label_id in zip(labels, label_ids):
                if label_id is None:
                    continue
                _bind_label_id(label, label_id, id_to_name, name_to_id, where)
        video = VideoAnnotation(canonical_video_id(raw_id), subset, duration, fps, segments, labels, num_frames)
        _add_video(videos, raw_id, video, source)

    used = {label for v in videos.values() for label in v.labels}
    leaves = [name for name in _taxonomy_leaves(data.get("taxonomy"), source) if name not in skip]
    if id_to_name:
        classes = _classes_from_ids(id_to_name, leaves, used, source)
    else:
        classes = leaves if leaves else sorted(used)
        missing = sorted(used - set(classes))
        if missing:
            raise ValueError(f"{source}: labels {missing} are used by annotations but absent from the taxonomy")
    return AnnotationSet(videos, classes)


def _bind_label_id(label: str, label_id: Any, id_to_name: dict, name_to_id: dict, where: str) -> None:
    try:
        label_id = int(label_id)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: label_id of {label!r} is not an integer: {label_id!r}") from None
    if label_id < 0:
        raise ValueError(f"{where}: label_id of {label!r} is negative ({label_id})")
    if id_to_name.setdefault(label_id, label) != label:
        raise ValueError(f"{where}: label_id {label_id} is used for both {id_to_name[label_id]!r} and {label!r}")
    if name_to_id.setdefault(label, label_id) != label_id:
        raise ValueError(f"{where}: label {label!r} has both label_id {name_to_id[label]} and {label_id}")


def _classes_from_ids(id_to_name: dict[int, str], leaves: list[str], used: set[str], source: str) -> list[str]:
    """Class list with ``classes[label_id] == label``; ids no annotation uses are filled from the taxonomy."""
    without_id = sorted(used - set(id_to_name.values()))
    if without_id:
        raise ValueError(f"{source}: labels {without_id} have no label_id while other annotations have one")
    size = max(max(id_to_name) + 1, len(leaves))
    holes = [i for i in range(size) if i not in id_to_name]
    spare = [name for name in leaves if name not in set(id_to_name.values())]
    if holes and len(spare) != len(holes):
        raise ValueError(
            f"{source}: label ids {holes[:10]}{' ...' if len(holes) > 10 else ''} are used by no annotation "
            "and the taxonomy cannot fill them "
            f"(unassigned taxonomy classes: {spare})"
        )
    filled = dict(zip(holes, spare))
    return [id_to_name.get(i, filled.get(i)) for i in range(size)]


def _read_bmn(data: Mapping[str, Any], source: str, csv_path: Path, skip: set[str]) -> AnnotationSet:
    info = _read_video_info_csv(csv_path, source)
    videos: dict[str, VideoAnnotation] = {}
    for raw_id, entry in data.items():
        where = f"{source}, video {raw_id!r}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        duration = _check_duration(_require(entry, "duration_second", where), where)
        _require(entry, "duration_frame", where)
        feature_frame = entry.get("feature_frame")
        vid = canonical_video_id(raw_id)
        row = info.get(vid)
        if row is None:
            if "subset" not in entry:
                raise KeyError(f"{where}: no row for this video in {csv_path} and no 'subset' key in the JSON entry")
            row = {"subset": entry["subset"], "fps": entry.get("fps")}
        fps = _number(row["fps"], f"{csv_path}, video {raw_id!r}: fps") if row.get("fps") not in (None, "") else None
        if feature_frame is None and row.get("featureFrame") not in (None, ""):
            feature_frame = row["featureFrame"]
        num_frames = int(_number(feature_frame, f"{where}: feature_frame")) if feature_frame is not None else None
        segments, labels, _ = _read_segments(_require(entry, "annotations", where), raw_id, source, skip)
        video = VideoAnnotation(vid, str(row["subset"]), duration, fps, segments, labels, num_frames)
        _add_video(videos, raw_id, video, source)
    classes = sorted({label for v in videos.values() for label in v.labels})
    return AnnotationSet(videos, classes)


def _read_video_info_csv(path: Path, source: str) -> dict[str, dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{source} is a BSN/BMN annotation file; its video info CSV ({BMN_VIDEO_INFO_NAME}, giving each "
            f"video's subset and fps) was not found at {path}; pass video_info_csv="
        )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for needed in ("video", "subset"):
            if needed not in columns:
                raise KeyError(f"{path}: missing column {needed!r} (columns: {columns})")
        return {canonical_video_id(row["video"]): row for row in reader}


# ----------------------------------------------------------------------------------------------------------- writing


def save_annotations_activitynet(aset: AnnotationSet, path: str | os.PathLike) -> None:
    """Write the official ActivityNet JSON (atomically)."""
    atomic_write_json(path, aset.to_activitynet())


def save_annotations_actionformer(aset: AnnotationSet, path: str | os.PathLike) -> None:
    """Write the ActionFormer/OpenTAD JSON with ``fps``, ``frame`` and ``label_id`` (atomically)."""
    atomic_write_json(path, aset.to_actionformer())


__all__ = [
    "VideoAnnotation",
    "AnnotationSet",
    "canonical_video_id",
    "detect_format",
    "load_annotations",
    "save_annotations_activitynet",
    "save_annotations_actionformer",
    "FORMATS",
]
