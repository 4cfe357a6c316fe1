"""Error diagnosis of temporal action detections (after DETAD, Alwassel et al., ECCV 2018), for any results JSON.

:func:`analyze` reads a results JSON (ours, or a peer's: official ActivityNet, OpenTAD or ActionFormer columns, see
:func:`gsmt_fast.results.read_results`) and ActivityNet-style annotations (any family
:func:`gsmt_fast.data.annotations.load_annotations` reads; ``Ambiguous`` labels are skipped as everywhere in
gsmt_fast) and reports three things. ``gsmt-fast analyze`` writes them to a folder (``docs/ANALYSIS.md``).

**Which detections.** Those on videos of the chosen split whose label is a class of the annotations. Detections
on videos absent from the annotations are counted and warned about; on videos of another split, counted; with a
label the annotations do not know, counted and warned about; of a known class without ground truth (GT) in the
split, counted (they cannot be right). ActionFormer's integer label ids are read as the classes of the same
``label_id`` when the annotations carry label ids (ActionFormer/OpenTAD JSON); otherwise they are an error.

mAP is computed by :func:`gsmt_fast.evaluation.evaluate`, whose matching
(:func:`gsmt_fast.evaluation.match_class_predictions`, the official ActivityNet one) also decides the true
positives below: detections of a class in score order (stable), each takes the highest-tIoU unmatched GT of its
class and video with tIoU >= the threshold.

**1. False-positive breakdown** at one tIoU ``α`` (``error_tiou``, default 0.5) and the background limit
``β = 0.1``. For each class c with ``G_c`` GT instances in the split, the top ``k_c = n · G_c`` detections of c by
score (``n`` = ``top_factor``, default 10, as DETAD; fewer when c has fewer detections; ties in input order, as the
evaluator) are each given one type:

1. ``true_positive``: the official matching at ``α`` matched it to a GT of class c (within the top k_c this is
   the same matching as over all detections, because it runs in score order).
2. Otherwise let ``m`` be its largest tIoU with any GT of its video, of any class, and ``G*`` that GT (ties: a GT
   of class c first, then annotation order; DETAD takes the first in annotation order):

   * ``m >= α`` and ``G*`` has label c: ``double_detection`` (a duplicate: ``G*`` was matched by a higher-scoring
     detection, or the matching would have taken it);
   * ``m >= α`` and ``G*`` has another label: ``wrong_label`` (right place, confused with another class; DETAD's
     "wrong label error");
   * ``β <= m < α`` and ``G*`` has label c: ``localization``;
   * ``β <= m < α`` and ``G*`` has another label: ``wrong_label_localization`` (wrong class and badly placed;
     DETAD's "confusion error");
   * ``m < β``, or no GT in the video: ``background``.

Because only ``G*`` decides, a detection that overlaps another class's instance best is ``wrong_label`` even when
an already-matched instance of its own class also passes ``α`` (DETAD's rule). Reported: counts and shares over all
classes' top-k_c pooled, the profile over rank groups (group g holds ranks ``[(g-1)·G_c, g·G_c)`` of every class),
per-class counts, and, as DETAD's "removing error impact", the gain in mAP@α of the top-k_c set when the
detections of one type are deleted (computed by the evaluator on the reduced set; deleting false positives never
changes which detections are true positives).

**2. Boundary error of the true positives** of part 1 (top-k_c, tIoU ≥ α): ``start error = detection start − GT
start``, ``end error = detection end − GT end`` (negative start / positive end: the detection is too wide on that
side), in seconds and in snippets, by the matched GT's length bucket: count, mean signed error, mean absolute error
(MAE) per end, their average, and the mean width error (``end error − start error``).

A snippet's duration in seconds, per video (the first source given wins; none: snippet columns are null):
``snippet_seconds`` (the same for every video); ``feat_stride`` (``feat_stride / fps``, the fps from the
annotations, for native-stride features); ``temporal_scale`` (``duration / T``, for videos resized to T snippets);
``checkpoint`` (its grid: ``feat_stride`` with the stride convention, the grid's ``default_fps`` for videos
without fps; ``temporal_scale`` with resize); otherwise a ``dataset.json`` beside the annotation file that names it
(what ``gsmt-fast synth`` writes), read the same way.

**3. Average mAP by instance-length bucket**, at ``tiou_thresholds`` (default 0.3:0.1:0.7). Lengths bucket GT
instances into ``(e_{i-1}, e_i]`` (the first bucket includes 0), five buckets named XS, S, M, L, XL unless custom
edges give another count. Units and default edges: ``snippets`` 4, 8, 16, 32 (the scale a snippet-based detector
resolves); ``seconds`` 3, 6, 12, 18 (DETAD's THUMOS14 length buckets); ``coverage`` (length / video duration)
0.2, 0.4, 0.6, 0.8 (DETAD's ActivityNet coverage buckets). ``auto``: ``snippets`` with a stride-type snippet unit
(``snippet_seconds``, ``feat_stride``, a stride grid); ``coverage`` with a resize grid (T snippets per video, so
coverage is length in snippets / T) or, without any snippet unit, when the median instance covers ≥ 10 % of its
video (ActivityNet-like); else ``seconds``. For bucket b the evaluator is called on filtered sets, DETAD's
convention: the GT keeps only instances of b (every video of the split stays, so detections elsewhere remain false
positives), and a detection is removed when the full evaluation matched it, at any of the thresholds, to a GT
instance of another bucket; all other detections stay. The bucket's mAP averages over the classes with GT in b.
(DETAD reports a normalised mAP_N there; this is the plain mAP.)
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data.annotations import AnnotationSet, load_annotations
from .evaluation import (
    THUMOS_THRESHOLDS,
    evaluate,
    ground_truth_by_class,
    load_ground_truth,
    match_class_predictions,
    normalize_thresholds,
)
from .files import atomic_path, atomic_write_json
from .postprocess.reference import segment_iou
from .results import read_results

REPORT_FORMAT = "gsmt_fast.analysis/1"
REPORT_NAME = "analysis.json"
FIGURE_NAME = "analysis.png"
PANEL_NAMES = ("false_positives.png", "boundary_error.png", "map_by_length.png")

CATEGORIES = (
    "true_positive",
    "double_detection",
    "wrong_label",
    "localization",
    "wrong_label_localization",
    "background",
)
CATEGORY_TITLES = {
    "true_positive": "true positive",
    "double_detection": "double detection",
    "wrong_label": "wrong label",
    "localization": "localization",
    "wrong_label_localization": "wrong label + localization",
    "background": "background",
}
BACKGROUND_TIOU = 0.1
BUCKET_UNITS = ("snippets", "seconds", "coverage")
DEFAULT_EDGES = {
    "snippets": (4.0, 8.0, 16.0, 32.0),
    "seconds": (3.0, 6.0, 12.0, 18.0),  # DETAD's THUMOS14 length buckets
    "coverage": (0.2, 0.4, 0.6, 0.8),  # DETAD's ActivityNet coverage buckets
}
FIVE_BUCKET_NAMES = ("XS", "S", "M", "L", "XL")
ACTIVITYNET_LIKE_COVERAGE = 0.1  # median instance/video length ratio above which `auto` buckets by coverage


# ------------------------------------------------------------------------------------------------ snippet unit


@dataclass(frozen=True)
class SnippetUnit:
    """How long one snippet is, per video: ``fixed`` seconds, ``stride`` (value / fps) or ``resize`` (duration /
    value); ``source`` says where it came from (printed and stored in the report)."""

    kind: str
    value: float
    source: str
    default_fps: float | None = None  # stride: for videos whose annotation has no fps (a grid's default_fps)

    def __post_init__(self):
        if self.kind not in ("fixed", "stride", "resize"):
            raise ValueError(f"snippet unit kind must be fixed, stride or resize, got {self.kind!r}")
        if not (math.isfinite(self.value) and self.value > 0):
            raise ValueError(f"snippet unit value must be a positive number, got {self.value!r} ({self.source})")

    def seconds(self, duration: float, fps: float | None, video_id: str) -> float:
        """Seconds per snippet in one video."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "resize":
            return duration / self.value
        fps = fps or self.default_fps
        if not fps:
            raise ValueError(f"video {video_id!r} has no fps in the annotations, so a snippet of feat_stride "
                             f"{self.value:g} frames has no duration; pass snippet_seconds (--snippet-seconds)")
        return self.value / fps

    def describe(self) -> str:
        rule = {"fixed": f"{self.value:g} s", "stride": f"feat_stride {self.value:g} / the video's fps",
                "resize": f"the video's duration / {self.value:g}"}[self.kind]
        return f"{rule} (from {self.source})"


def _unit_from_grid(grid: Mapping[str, Any], temporal_scale: Any, default_fps: Any, source: str) -> SnippetUnit | None:
    convention = grid.get("convention", "stride")
    if convention == "resize":
        return SnippetUnit("resize", float(temporal_scale), source) if temporal_scale else None
    return SnippetUnit("stride", float(grid.get("feat_stride", 4)), source,
                       float(default_fps) if default_fps else None)


def snippet_unit_from_checkpoint(path: str | os.PathLike) -> SnippetUnit:
    """The snippet unit of the grid stored in a checkpoint (stride: feat_stride / fps; resize: duration / T)."""
    from .checkpoint import read_checkpoint

    _, meta = read_checkpoint(path)
    grid = meta.grid.to_dict()
    unit = _unit_from_grid(grid, meta.model.temporal_scale, grid.get("default_fps"), f"checkpoint {path}")
    assert unit is not None  # a checkpoint always stores T
    return unit


def snippet_unit_from_dataset(annotations: str | os.PathLike) -> SnippetUnit | None:
    """The snippet unit of a ``dataset.json`` in the annotation file's folder that names that file, else None."""
    annotations = Path(annotations)
    meta_path = annotations.parent / "dataset.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        named = Path(meta_path.parent / meta["annotations"]).resolve()
    except (ValueError, KeyError, TypeError, OSError):
        return None  # not a gsmt_fast dataset description: no snippet unit from it
    if named != annotations.resolve() or not isinstance(meta.get("grid", {}), Mapping):
        return None
    return _unit_from_grid(meta.get("grid", {}), meta.get("temporal_scale"), (meta.get("grid") or {}).get(
        "default_fps"), str(meta_path))


def resolve_snippet_unit(annotations, snippet_seconds: float | None = None, feat_stride: float | None = None,
                         temporal_scale: int | None = None,
                         checkpoint: str | os.PathLike | None = None) -> SnippetUnit | None:
    """The snippet unit from the first source given (module docstring), or from a ``dataset.json``, or None."""
    given = [name for name, value in (("snippet_seconds", snippet_seconds), ("feat_stride", feat_stride),
                                      ("temporal_scale", temporal_scale), ("checkpoint", checkpoint))
             if value is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one snippet unit source, got {', '.join(given)}")
    if snippet_seconds is not None:
        return SnippetUnit("fixed", float(snippet_seconds), "snippet_seconds")
    if feat_stride is not None:
        return SnippetUnit("stride", float(feat_stride), "feat_stride")
    if temporal_scale is not None:
        return SnippetUnit("resize", float(temporal_scale), "temporal_scale")
    if checkpoint is not None:
        return snippet_unit_from_checkpoint(checkpoint)
    if isinstance(annotations, (str, os.PathLike)):
        return snippet_unit_from_dataset(annotations)
    return None


# ------------------------------------------------------------------------------------------------ length buckets


@dataclass(frozen=True)
class LengthBuckets:
    """Instance-length buckets ``(edges[i-1], edges[i]]`` in ``unit`` (the first from 0, the last to infinity)."""

    unit: str
    edges: tuple[float, ...]
    source: str = "given"

    def __post_init__(self):
        if self.unit not in BUCKET_UNITS:
            raise ValueError(f"length bucket unit must be one of {BUCKET_UNITS}, got {self.unit!r}")
        edges = tuple(float(e) for e in self.edges)
        if not edges or any(not math.isfinite(e) or e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
            raise ValueError(f"length bucket edges must be positive and increasing, got {list(self.edges)}")
        object.__setattr__(self, "edges", edges)

    @property
    def names(self) -> list[str]:
        if len(self.edges) + 1 == len(FIVE_BUCKET_NAMES):
            return list(FIVE_BUCKET_NAMES)
        return [f"B{i + 1}" for i in range(len(self.edges) + 1)]

    @property
    def ranges(self) -> list[str]:
        bounds = (0.0,) + self.edges
        out = [f"({lo:g}, {hi:g}]" if i else f"[0, {hi:g}]" for i, (lo, hi) in enumerate(zip(bounds, self.edges))]
        return out + [f"> {self.edges[-1]:g}"]

    def assign(self, lengths: np.ndarray) -> np.ndarray:
        """Bucket index of each length (``(lo, hi]``; a length of 0 falls in the first bucket)."""
        return np.searchsorted(np.asarray(self.edges), np.asarray(lengths, dtype=np.float64), side="left")

    @classmethod
    def parse(cls, text: str) -> tuple[str, tuple[float, ...] | None]:
        """``"auto"``, ``"UNIT"`` or ``"UNIT:e1,e2,..."`` -> (unit or "auto", edges or None)."""
        text = text.strip()
        unit, _, edge_text = text.partition(":")
        unit = unit.strip()
        if unit != "auto" and unit not in BUCKET_UNITS:
            raise ValueError(f"length buckets must be 'auto', a unit ({', '.join(BUCKET_UNITS)}) or 'UNIT:e1,e2,...', "
                             f"got {text!r}")
        if not edge_text:
            return unit, None
        if unit == "auto":
            raise ValueError("'auto' length buckets take no edges; name a unit, e.g. 'snippets:4,8,16,32'")
        try:
            edges = tuple(float(e) for e in edge_text.split(",") if e.strip())
        except ValueError:
            raise ValueError(f"cannot parse length bucket edges {edge_text!r}: expected e.g. 4,8,16,32") from None
        return unit, edges


def resolve_length_buckets(spec: str | LengthBuckets, unit: SnippetUnit | None,
                           coverages: np.ndarray) -> LengthBuckets:
    """The buckets for ``spec`` (``auto``, a unit, or ``UNIT:edges``) given the snippet unit and GT coverages."""
    if isinstance(spec, LengthBuckets):
        buckets = spec
    else:
        name, edges = LengthBuckets.parse(spec)
        if name == "auto":
            if unit is not None and unit.kind in ("fixed", "stride"):
                name, why = "snippets", "auto: the snippet unit is known"
            elif unit is not None:
                name, why = "coverage", "auto: videos are resized to a fixed number of snippets"
            elif len(coverages) and float(np.median(coverages)) >= ACTIVITYNET_LIKE_COVERAGE:
                name, why = "coverage", (f"auto: no snippet unit, median instance covers "
                                         f"{100 * float(np.median(coverages)):.0f}% of its video")
            else:
                name, why = "seconds", "auto: no snippet unit"
            buckets = LengthBuckets(name, DEFAULT_EDGES[name], why)
        else:
            buckets = LengthBuckets(name, edges if edges is not None else DEFAULT_EDGES[name],
                                    "given" if edges is not None else "default edges")
    if buckets.unit == "snippets" and unit is None:
        raise ValueError("length buckets in snippets need the snippet duration: pass snippet_seconds, feat_stride, "
                         "temporal_scale or checkpoint (--snippet-seconds, --feat-stride, --temporal-scale, --ckpt)")
    return buckets


# ------------------------------------------------------------------------------------------------ the report


@dataclass
class AnalysisReport:
    """What :func:`analyze` found; :meth:`to_dict` is the JSON report, :meth:`format_summary` the text summary."""

    inputs: dict[str, Any]
    counts: dict[str, Any]
    snippet_unit: str | None
    length_buckets: dict[str, Any]
    overall: dict[str, Any]
    false_positives: dict[str, Any]
    boundary_error: dict[str, Any]
    map_by_length: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "inputs": self.inputs,
            "counts": self.counts,
            "snippet_unit": self.snippet_unit,
            "length_buckets": self.length_buckets,
            "overall": self.overall,
            "false_positives": self.false_positives,
            "boundary_error": self.boundary_error,
            "map_by_length": self.map_by_length,
            "warnings": self.warnings,
        }

    def format_summary(self) -> str:
        return format_summary(self.to_dict())

    def write(self, out_dir: str | os.PathLike, plots: bool = True) -> list[Path]:
        """Write the PNGs (when ``plots``) and then ``analysis.json`` to ``out_dir``, each file atomically; the JSON
        is written last, so its presence marks a complete folder. Returns the paths written."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = write_figures(self.to_dict(), out_dir) if plots else []
        atomic_write_json(out_dir / REPORT_NAME, self.to_dict())
        return written + [out_dir / REPORT_NAME]


@dataclass
class _Detections:
    """The analysed detections, flat, in results order (videos in file order, then each video's list)."""

    video: list[str]
    label: list[str]
    segment: np.ndarray  # (N, 2)
    score: np.ndarray  # (N,)

    def for_class(self, indices: list[int]) -> list[tuple[str, float, float, float]]:
        """``(video, start, end, score)`` of the given detections, as the evaluator's matching takes them."""
        return [(self.video[i], self.segment[i, 0], self.segment[i, 1], self.score[i]) for i in indices]

    def records(self, keep: np.ndarray) -> dict[str, Any]:
        """The kept detections as a results dict, in the original order (so the evaluator breaks ties the same)."""
        results: dict[str, list[dict[str, Any]]] = {}
        for i in np.flatnonzero(keep):
            results.setdefault(self.video[i], []).append(
                {"label": self.label[i], "score": float(self.score[i]), "segment": self.segment[i].tolist()})
        return {"results": results}


def _label_id_names(annotations, aset: AnnotationSet) -> list[str] | None:
    """The class names indexed by label id when the annotations carry ActionFormer/OpenTAD ``label_id``s (then
    ActionFormer's integer labels can be read), else None (integer labels stay an error rather than a guess)."""
    if isinstance(annotations, AnnotationSet):
        return None
    data = annotations
    if isinstance(annotations, (str, os.PathLike)):
        try:
            data = json.loads(Path(annotations).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    if not isinstance(data, Mapping) or not isinstance(data.get("database"), Mapping):
        return None
    has_ids = any(isinstance(a, Mapping) and "label_id" in a for entry in data["database"].values()
                  if isinstance(entry, Mapping) for a in entry.get("annotations") or ())
    return list(aset.classes) if has_ids else None


def _load_inputs(results, annotations, split):
    if isinstance(results, (str, os.PathLike)) and not Path(results).is_file():
        raise FileNotFoundError(f"results file not found: {results}")
    aset = annotations if isinstance(annotations, AnnotationSet) else load_annotations(annotations)
    if split is not None and split not in aset.subsets():
        raise ValueError(f"no annotated video has split {split!r}; splits present: {aset.subsets()}")
    detections = read_results(results, class_names=_label_id_names(annotations, aset))
    return aset, detections


def _select_detections(detections: Mapping[str, list], aset: AnnotationSet, split: str | None,
                       gt_classes: set[str]) -> tuple[_Detections, dict[str, Any], list[str]]:
    """The detections to analyse, the counts of those left out and the warnings about them."""
    split_videos = {v.video_id for v in (aset.subset(split) if split is not None else aset.videos.values())}
    known_classes = set(aset.classes)
    unknown_videos: Counter[str] = Counter()
    other_split = 0
    unknown_labels: Counter[str] = Counter()
    without_gt: Counter[str] = Counter()
    video, label, segment, score = [], [], [], []
    total = 0
    for video_id, records in detections.items():
        total += len(records)
        if video_id not in aset.videos:
            unknown_videos[video_id] += len(records)
            continue
        if video_id not in split_videos:
            other_split += len(records)
            continue
        for record in records:
            name = record["label"]
            if name not in known_classes:
                unknown_labels[name] += 1
            elif name not in gt_classes:
                without_gt[name] += 1
            else:
                video.append(video_id)
                label.append(name)
                segment.append(record["segment"])
                score.append(record["score"])
    counts = {
        "detections_read": total,
        "detections_analyzed": len(video),
        "on_unknown_videos": sum(unknown_videos.values()),
        "unknown_videos": len(unknown_videos),
        "on_other_splits": other_split,
        "unknown_labels": dict(sorted(unknown_labels.items())),
        "of_classes_without_ground_truth": dict(sorted(without_gt.items())),
    }
    messages = []
    if unknown_videos:
        listed = ", ".join(repr(v) for v in list(unknown_videos)[:5]) + (" ..." if len(unknown_videos) > 5 else "")
        messages.append(f"{sum(unknown_videos.values())} detection(s) on {len(unknown_videos)} video(s) absent from "
                        f"the annotations were ignored: {listed}")
    if unknown_labels:
        listed = ", ".join(f"{k!r} ({n})" for k, n in sorted(unknown_labels.items())[:10])
        messages.append(f"{sum(unknown_labels.values())} detection(s) with label(s) that are not classes of the "
                        f"annotations were ignored: {listed}")
    in_split = total - counts["on_unknown_videos"] - other_split
    if total and not video:
        if in_split and sum(unknown_labels.values()) == in_split:
            raise ValueError(f"none of the results' labels is a class of the annotations (results use "
                             f"{sorted(unknown_labels)[:5]}; annotations have {aset.classes[:5]} ...): labels must "
                             "be class names of the annotation file")
        raise ValueError(
            f"none of the {total} detections is on a video of split {split!r} with a class that has ground truth "
            f"there ({counts['on_unknown_videos']} on videos absent from the annotations, {other_split} on other "
            f"splits, {sum(unknown_labels.values())} with unknown labels, {sum(without_gt.values())} of classes "
            "without ground truth); check the split and that results and annotations belong together")
    arrays = _Detections(video, label, np.array(segment, dtype=np.float64).reshape(-1, 2),
                         np.array(score, dtype=np.float64))
    return arrays, counts, messages


def _classify(det: _Detections, idx: int, gt_arrays: Mapping[str, tuple[np.ndarray, np.ndarray]],
              alpha: float) -> str:
    """Type of a detection that the matching left unmatched (module docstring, rule 2); ``gt_arrays``: per video,
    its ground truth as (segments (G, 2), labels (G,))."""
    if det.video[idx] not in gt_arrays:
        return "background"
    segments, labels = gt_arrays[det.video[idx]]
    iou = segment_iou(det.segment[idx], segments)
    same = labels == det.label[idx]
    best = float(iou.max())
    # Among the GT with the largest tIoU, one of the detection's own class wins.
    own_class_best = bool(np.any(same & (iou == best)))
    if best >= alpha:
        return "double_detection" if own_class_best else "wrong_label"
    if best >= BACKGROUND_TIOU:
        return "localization" if own_class_best else "wrong_label_localization"
    return "background"


def _error_stats(start: np.ndarray | None, end: np.ndarray | None) -> dict[str, float | None] | None:
    if start is None:
        return None
    if len(start) == 0:
        return {key: None for key in ("start_mean", "end_mean", "start_mae", "end_mae", "mae", "width_mean")}
    return {
        "start_mean": float(np.mean(start)),
        "end_mean": float(np.mean(end)),
        "start_mae": float(np.mean(np.abs(start))),
        "end_mae": float(np.mean(np.abs(end))),
        "mae": float((np.mean(np.abs(start)) + np.mean(np.abs(end))) / 2),
        "width_mean": float(np.mean(end - start)),
    }


def analyze(
    results,
    annotations,
    split: str | None = None,
    tiou_thresholds=THUMOS_THRESHOLDS,
    error_tiou: float = 0.5,
    top_factor: int = 10,
    length_buckets: str | LengthBuckets = "auto",
    snippet_seconds: float | None = None,
    feat_stride: float | None = None,
    temporal_scale: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    warn: bool = True,
) -> AnalysisReport:
    """Diagnose ``results`` against ``annotations`` (module docstring: every rule).

    Args:
        results: results JSON path or dict (official ActivityNet, OpenTAD or ActionFormer columns).
        annotations: annotation file (ActivityNet, ActionFormer/OpenTAD, BSN/BMN), parsed dict or AnnotationSet.
        split: the subset to analyse (e.g. ``"validation"``); None: every annotated video.
        tiou_thresholds: thresholds of the mAP (overall and by length), floats or ``"0.3:0.1:0.7"``.
        error_tiou: ``α`` of the false-positive breakdown and of the true positives whose boundaries are measured.
        top_factor: ``n`` in ``k_c = n · G_c`` detections analysed per class.
        length_buckets: ``"auto"``, ``"snippets"``, ``"seconds"``, ``"coverage"``, ``"UNIT:e1,e2,..."`` or a
            :class:`LengthBuckets`.
        snippet_seconds, feat_stride, temporal_scale, checkpoint: at most one; the snippet duration.
        warn: also emit the warnings (ignored detections) with ``warnings.warn``; they are in the report anyway.
    """
    thresholds = normalize_thresholds(tiou_thresholds)
    (alpha,) = normalize_thresholds([error_tiou])
    if isinstance(top_factor, bool) or not isinstance(top_factor, (int, np.integer)) or top_factor < 1:
        raise ValueError(f"top_factor must be a positive integer, got {top_factor!r}")
    unit = resolve_snippet_unit(annotations, snippet_seconds, feat_stride, temporal_scale, checkpoint)
    aset, raw = _load_inputs(results, annotations, split)

    gt_dict = aset.to_activitynet(split)
    gt_videos = load_ground_truth(gt_dict)
    gt_by_class = ground_truth_by_class(gt_videos)
    det, counts, messages = _select_detections(raw, aset, split, set(gt_by_class))
    if warn:
        for message in messages:
            warnings.warn(message, stacklevel=2)

    snippet_s = {}
    if unit is not None:
        snippet_s = {vid: unit.seconds(aset.videos[vid].duration, aset.videos[vid].fps, vid) for vid in gt_videos}
    coverages = np.array([(e - s) / aset.videos[vid].duration for vid, gt in gt_videos.items() for s, e, _ in gt])
    buckets = resolve_length_buckets(length_buckets, unit, coverages)

    def bucket_of(video_id: str, segments: np.ndarray) -> np.ndarray:
        seconds = segments[:, 1] - segments[:, 0]
        if buckets.unit == "coverage":
            return buckets.assign(seconds / aset.videos[video_id].duration)
        if buckets.unit == "snippets":
            return buckets.assign(seconds / snippet_s[video_id])
        return buckets.assign(seconds)

    # gt_bucket[class][video][g]: bucket of GT g of gt_by_class[class][video]
    gt_bucket = {c: {vid: bucket_of(vid, segments) for vid, segments in per_video.items()}
                 for c, per_video in gt_by_class.items()}
    class_indices: dict[str, list[int]] = {c: [] for c in gt_by_class}
    for i, name in enumerate(det.label):
        class_indices[name].append(i)

    # ---- 1. false-positive breakdown of each class's top k_c (and the true positives for part 2)
    category = np.full(len(det.video), "", dtype=object)  # "" = outside the top k_c
    group = np.full(len(det.video), -1, dtype=np.int64)
    per_class_counts = {}
    tp_rows = []  # (detection index, GT start, GT end, GT bucket)
    gt_arrays = {vid: (np.array([(s, e) for s, e, _ in video_gt], dtype=np.float64),
                       np.array([lab for _, _, lab in video_gt], dtype=object))
                 for vid, video_gt in gt_videos.items() if video_gt}
    for c, indices in class_indices.items():
        g_c = sum(len(segments) for segments in gt_by_class[c].values())
        order, matched = match_class_predictions(gt_by_class[c], det.for_class(indices), (alpha,))
        class_counts: Counter[str] = Counter()
        for rank, local in enumerate(order[: top_factor * g_c]):
            i = indices[local]
            group[i] = rank // g_c
            gt_index = matched[0, local]
            if gt_index >= 0:
                kind = "true_positive"
                start, end = gt_by_class[c][det.video[i]][gt_index]
                tp_rows.append((i, start, end, gt_bucket[c][det.video[i]][gt_index]))
            else:
                kind = _classify(det, i, gt_arrays, alpha)
            category[i] = kind
            class_counts[kind] += 1
        per_class_counts[c] = {k: int(class_counts[k]) for k in CATEGORIES}
    in_top = category != ""
    totals = {k: int(np.sum(category == k)) for k in CATEGORIES}
    num_top = int(in_top.sum())
    profile = []
    for g in range(top_factor):
        members = group == g
        n = int(members.sum())
        group_counts = {k: int(np.sum(members & (category == k))) for k in CATEGORIES}
        profile.append({"group": f"{g + 1}G", "detections": n, "counts": group_counts,
                        "fractions": {k: (v / n if n else None) for k, v in group_counts.items()}})
    top_eval = evaluate(gt_dict, det.records(in_top), (alpha,), warn=False)
    removal_gain = {}
    for k in CATEGORIES[1:]:
        reduced = evaluate(gt_dict, det.records(in_top & (category != k)), (alpha,), warn=False)
        removal_gain[k] = float(reduced.average_mAP - top_eval.average_mAP)
    false_positives = {
        "tiou": alpha,
        "background_tiou": BACKGROUND_TIOU,
        "top_factor": int(top_factor),
        "detections": num_top,
        "counts": totals,
        "fractions": {k: (v / num_top if num_top else None) for k, v in totals.items()},
        "profile": profile,
        "per_class": per_class_counts,
        "top_k_mAP": float(top_eval.average_mAP),
        "mAP_gain_if_removed": removal_gain,
    }

    # ---- 2. boundary error of those true positives
    tp_index = np.array([r[0] for r in tp_rows], dtype=np.int64)
    tp_gt = np.array([(r[1], r[2]) for r in tp_rows], dtype=np.float64).reshape(-1, 2)
    tp_bucket = np.array([r[3] for r in tp_rows], dtype=np.int64)
    start_err = det.segment[tp_index, 0] - tp_gt[:, 0]
    end_err = det.segment[tp_index, 1] - tp_gt[:, 1]
    start_units = end_units = None
    if unit is not None:
        per_snippet = np.array([snippet_s[det.video[i]] for i in tp_index], dtype=np.float64)
        start_units, end_units = start_err / per_snippet, end_err / per_snippet
    rows = []
    for b, (name, span) in enumerate(zip(buckets.names + ["all"], buckets.ranges + ["all"])):
        members = tp_bucket == b if name != "all" else np.ones(len(tp_index), dtype=bool)
        rows.append({
            "bucket": name,
            "range": span,
            "true_positives": int(members.sum()),
            "seconds": _error_stats(start_err[members], end_err[members]),
            "snippets": _error_stats(None if unit is None else start_units[members],
                                     None if unit is None else end_units[members]),
        })
    boundary_error = {"tiou": alpha, "by_length": rows[:-1], "all": rows[-1]}

    # ---- 3. mAP overall and by length bucket
    overall = evaluate(gt_dict, det.records(np.ones(len(det.video), dtype=bool)), thresholds, warn=False)
    # matched_bucket[k, i]: bucket of the GT detection i matched at threshold k in the full evaluation, -1 if none
    matched_bucket = np.full((len(thresholds), len(det.video)), -1, dtype=np.int64)
    for c, indices in class_indices.items():
        _, matched = match_class_predictions(gt_by_class[c], det.for_class(indices), thresholds)
        for local, i in enumerate(indices):
            video_buckets = gt_bucket[c].get(det.video[i])
            for k in np.flatnonzero(matched[:, local] >= 0):
                matched_bucket[k, i] = video_buckets[matched[k, local]]
    map_by_length = []
    annotation_buckets = {  # the length bucket of every ground-truth annotation, per video
        vid: bucket_of(vid, np.array([a["segment"] for a in entry["annotations"]], dtype=np.float64).reshape(-1, 2))
        for vid, entry in gt_dict["database"].items()}
    for b, (name, span) in enumerate(zip(buckets.names, buckets.ranges)):
        database = {}
        for vid, entry in gt_dict["database"].items():
            in_bucket = annotation_buckets[vid] == b
            database[vid] = dict(entry, annotations=[a for a, keep in zip(entry["annotations"], in_bucket) if keep])
        num_gt = sum(len(entry["annotations"]) for entry in database.values())
        keep = ~np.any((matched_bucket >= 0) & (matched_bucket != b), axis=0)
        row: dict[str, Any] = {"bucket": name, "range": span, "ground_truth": num_gt,
                               "detections": int(keep.sum()), "average_mAP": None, "mAP": None}
        if num_gt:
            r = evaluate({"database": database}, det.records(keep), thresholds, warn=False)
            row["average_mAP"] = float(r.average_mAP)
            row["mAP"] = [float(v) for v in r.mAP]
        map_by_length.append(row)

    counts.update({
        "videos": len(gt_videos),
        "ground_truth": sum(len(v) for v in gt_videos.values()),
        "classes_with_ground_truth": len(gt_by_class),
    })
    inputs = {
        "results": str(results) if isinstance(results, (str, os.PathLike)) else "<dict>",
        "annotations": str(annotations) if isinstance(annotations, (str, os.PathLike)) else "<object>",
        "split": split,
        "tiou_thresholds": list(thresholds),
        "error_tiou": alpha,
        "top_factor": int(top_factor),
    }
    bucket_info = {"unit": buckets.unit, "edges": list(buckets.edges), "names": buckets.names,
                   "ranges": buckets.ranges, "source": buckets.source}
    return AnalysisReport(inputs, counts, unit.describe() if unit is not None else None, bucket_info,
                          overall.to_dict(), false_positives, boundary_error, map_by_length, messages)


# ------------------------------------------------------------------------------------------------ text summary


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _error_cells(stats: Mapping[str, Any] | None) -> str:
    keys = ("start_mean", "end_mean", "start_mae", "end_mae")
    if stats is None:
        return ""
    return " ".join(f"{_fmt(stats[k], '.2f'):>7}" for k in keys)


def format_summary(report: Mapping[str, Any]) -> str:
    """A plain-text summary of a report dict (what ``gsmt-fast analyze`` prints)."""
    counts, fp, be = report["counts"], report["false_positives"], report["boundary_error"]
    split = report["inputs"]["split"]
    lines = [
        f"{counts['videos']} videos{f' of split {split!r}' if split else ''}, {counts['ground_truth']} ground-truth "
        f"instances of {counts['classes_with_ground_truth']} classes; {counts['detections_analyzed']} of "
        f"{counts['detections_read']} detections analysed",
    ]
    ignored = [(counts["on_unknown_videos"], "on videos absent from the annotations"),
               (counts["on_other_splits"], "on videos of other splits"),
               (sum(counts["unknown_labels"].values()), "with labels absent from the annotations"),
               (sum(counts["of_classes_without_ground_truth"].values()), "of classes without ground truth here")]
    ignored_text = "; ".join(f"{n} {why}" for n, why in ignored if n)
    if ignored_text:
        lines.append(f"ignored: {ignored_text}")
    overall = report["overall"]
    per_t = " / ".join(f"{100 * v:.2f}" for v in overall["mAP"])
    tious = ", ".join(f"{t:g}" for t in overall["tiou_thresholds"])
    lines.append(f"mAP (%) at tIoU {tious}: {per_t}; average {100 * overall['average_mAP']:.2f}")

    alpha = f"{fp['tiou']:g}"
    lines += ["", f"False positives among the top {fp['top_factor']}G detections of each class (G: its ground-truth "
              f"instances; {fp['detections']} detections) at tIoU {alpha}:"]
    for k in CATEGORIES:
        share = _fmt(_pct(fp["fractions"][k]), "5.1f")
        row = f"  {CATEGORY_TITLES[k]:<27} {fp['counts'][k]:>7}  {share}%"
        if k != "true_positive":
            row += f"   mAP@{alpha} +{100 * fp['mAP_gain_if_removed'][k]:.2f} if removed"
        lines.append(row)
    lines.append(f"  (mAP@{alpha} of these detections: {100 * fp['top_k_mAP']:.2f})")

    unit = report["snippet_unit"]
    lines += ["", f"Boundary error of the {be['all']['true_positives']} true positives above (detection - ground "
              "truth; start < 0 or end > 0: too wide on that side); " + (f"1 snippet = {unit}" if unit else
                                                                          "snippet duration unknown")]
    bucket_unit = report["length_buckets"]["unit"]
    cells = f"{'start':>7} {'end':>7} {'|start|':>7} {'|end|':>7}"
    lines.append(f"  {'length (' + bucket_unit + ')':<20} {'n':>5} | {cells} (seconds)"
                 + (f" | {cells} (snippets)" if unit else ""))
    for row in be["by_length"] + [be["all"]]:
        name = row["bucket"] if row["bucket"] == "all" else f"{row['bucket']} {row['range']}"
        text = f"  {name:<20} {row['true_positives']:>5} | " + _error_cells(row["seconds"])
        if row["snippets"] is not None:
            text += " " * 10 + "| " + _error_cells(row["snippets"])
        lines.append(text)

    lines += ["", f"Average mAP (%) at tIoU {tious} by instance length ({bucket_unit}; "
              f"{report['length_buckets']['source']}):"]
    for row in report["map_by_length"]:
        value = "-" if row["average_mAP"] is None else f"{100 * row['average_mAP']:.2f}"
        lines.append(f"  {row['bucket'] + ' ' + row['range']:<20} {row['ground_truth']:>5} instances  {value:>6}")
    return "\n".join(lines)


def _pct(fraction):
    return None if fraction is None else 100 * fraction


# ------------------------------------------------------------------------------------------------ figures

_CATEGORY_COLORS = {
    "true_positive": "#33a02c",
    "double_detection": "#b2df8a",
    "wrong_label": "#1f78b4",
    "localization": "#fb9a99",
    "wrong_label_localization": "#e31a1c",
    "background": "#a6cee3",
}

_SHORT_TITLES = {
    "double_detection": "double\ndetection",
    "wrong_label": "wrong\nlabel",
    "localization": "locali-\nzation",
    "wrong_label_localization": "wrong label\n+ locali-\nzation",
    "background": "back-\nground",
}


def _plot_false_positives(ax_profile, ax_gain, report: Mapping[str, Any]) -> None:
    fp = report["false_positives"]
    groups = [p for p in fp["profile"] if p["detections"]]
    labels = [p["group"] for p in groups] + ["all"]
    fractions = [[p["fractions"][k] for k in CATEGORIES] for p in groups]
    fractions.append([fp["fractions"][k] or 0.0 for k in CATEGORIES])
    values = 100 * np.array(fractions, dtype=np.float64).reshape(-1, len(CATEGORIES))
    x = np.arange(len(labels), dtype=np.float64)
    x[-1] += 0.6  # the pooled bar stands apart
    bottom = np.zeros(len(labels))
    for j, k in enumerate(CATEGORIES):
        ax_profile.bar(x, values[:, j], 0.8, bottom=bottom, color=_CATEGORY_COLORS[k], label=CATEGORY_TITLES[k])
        bottom += values[:, j]
    ax_profile.set_xticks(x, labels)
    ax_profile.set_ylim(0, 100)
    ax_profile.set_ylabel("share of detections (%)")
    ax_profile.set_xlabel(f"rank group (G = ground-truth instances of the class); 'all' = top {fp['top_factor']}G")
    ax_profile.set_title(f"False-positive profile at tIoU {fp['tiou']:g}")
    ax_profile.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    ax_profile.grid(axis="y", linestyle=":", alpha=0.6)

    kinds = list(CATEGORIES[1:])
    gains = [100 * fp["mAP_gain_if_removed"][k] for k in kinds]
    bars = ax_gain.bar(range(len(kinds)), gains, color=[_CATEGORY_COLORS[k] for k in kinds])
    for bar, gain in zip(bars, gains):
        ax_gain.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{gain:.1f}", ha="center", va="bottom",
                     fontsize=8)
    ax_gain.set_xticks(range(len(kinds)), [_SHORT_TITLES[k] for k in kinds], fontsize=7)
    ax_gain.set_ylabel(f"mAP@{fp['tiou']:g} gain (points)")
    ax_gain.set_title("Gain if one error type were removed")
    ax_gain.set_ylim(0, max(gains + [1.0]) * 1.2)
    ax_gain.grid(axis="y", linestyle=":", alpha=0.6)


def _plot_boundary_error(ax, report: Mapping[str, Any]) -> None:
    be = report["boundary_error"]
    rows = be["by_length"]
    use_snippets = be["all"]["snippets"] is not None
    key, unit = ("snippets", "snippets") if use_snippets else ("seconds", "s")
    x = np.arange(len(rows), dtype=np.float64)
    width = 0.2

    def values(stat):
        return np.array([np.nan if r[key] is None or r[key][stat] is None else r[key][stat] for r in rows])

    series = [("start_mae", "#6a3d9a", "|start error| (mean)"),
              ("start_mean", "#cab2d6", "start error (signed mean; < 0: early)"),
              ("end_mae", "#ff7f00", "|end error| (mean)"),
              ("end_mean", "#fdbf6f", "end error (signed mean; > 0: late)")]
    drawn = []
    for j, (stat, color, label) in enumerate(series):
        drawn.append(values(stat))
        ax.bar(x + (j - 1.5) * width, drawn[-1], width, color=color, label=label)
    ax.axhline(0, color="black", lw=0.8)
    finite = np.concatenate(drawn)
    finite = finite[np.isfinite(finite)]
    low, high = (min(0.0, float(finite.min())), max(0.0, float(finite.max()))) if len(finite) else (0.0, 1.0)
    span = max(high - low, 1e-9)
    ax.set_ylim(low - 0.05 * span, high + 0.45 * span)  # headroom for the legend
    ax.set_xticks(x, [f"{r['bucket']}\n{r['range']}\nn={r['true_positives']}" for r in rows], fontsize=7)
    ax.set_xlabel(f"ground-truth length ({report['length_buckets']['unit']})")
    ax.set_ylabel(f"error ({unit})")
    ax.set_title(f"Boundary error of true positives (tIoU ≥ {be['tiou']:g})")
    ax.legend(fontsize=7, loc="upper center", ncol=2)
    ax.grid(axis="y", linestyle=":", alpha=0.6)


def _plot_map_by_length(ax, report: Mapping[str, Any]) -> None:
    rows = report["map_by_length"]
    values = [np.nan if r["average_mAP"] is None else 100 * r["average_mAP"] for r in rows]
    x = np.arange(len(rows))
    bars = ax.bar(x, values, 0.6, color="#386cb0")
    for bar, value in zip(bars, values):
        if np.isfinite(value):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    overall = 100 * report["overall"]["average_mAP"]
    ax.axhline(overall, color="black", linestyle="--", lw=1)
    ax.set_xticks(x, [f"{r['bucket']}\n{r['range']}\nn={r['ground_truth']}" for r in rows], fontsize=7)
    ax.set_ylim(0, 108)
    tious = report["overall"]["tiou_thresholds"]
    ax.set_ylabel(f"average mAP@[{tious[0]:g}:{tious[-1]:g}] (%)" if len(tious) > 1 else f"mAP@{tious[0]:g} (%)")
    ax.set_xlabel(f"ground-truth length ({report['length_buckets']['unit']})")
    ax.set_title(f"Average mAP by instance length (dashed: all, {overall:.1f})")
    ax.grid(axis="y", linestyle=":", alpha=0.6)


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def write_figures(report: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """``analysis.png`` (all plots) and one PNG per plot, each written atomically; needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    fig = plt.figure(figsize=(14, 9.5))
    grid = fig.add_gridspec(2, 5, height_ratios=[1, 1], hspace=0.55, wspace=0.9)
    _plot_false_positives(fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:]), report)
    _plot_boundary_error(fig.add_subplot(grid[1, :3]), report)
    _plot_map_by_length(fig.add_subplot(grid[1, 3:]), report)
    split = report["inputs"]["split"]
    fig.suptitle(f"Detection error analysis: {Path(report['inputs']['results']).name}"
                 f"{f' on {split}' if split else ''}", fontsize=12)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.92, bottom=0.1)
    written.append(_save(fig, out_dir / FIGURE_NAME))
    plt.close(fig)

    fig = plt.figure(figsize=(11, 4.8))
    grid = fig.add_gridspec(1, 5, wspace=0.9)
    _plot_false_positives(fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:]), report)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.28)
    written.append(_save(fig, out_dir / PANEL_NAMES[0]))
    plt.close(fig)
    for name, draw in ((PANEL_NAMES[1], _plot_boundary_error), (PANEL_NAMES[2], _plot_map_by_length)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        draw(ax, report)
        fig.tight_layout()
        written.append(_save(fig, out_dir / name))
        plt.close(fig)
    return written


def require_matplotlib() -> None:
    """Raise a clear error when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("the analysis plots need matplotlib: pip install 'gsmt_fast[plot]' (or skip the PNGs with "
                          "plots=False / --no-plot)") from None


__all__ = [
    "analyze",
    "AnalysisReport",
    "SnippetUnit",
    "LengthBuckets",
    "CATEGORIES",
    "format_summary",
    "write_figures",
    "resolve_snippet_unit",
    "resolve_length_buckets",
    "snippet_unit_from_checkpoint",
    "snippet_unit_from_dataset",
]
