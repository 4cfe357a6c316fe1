"""Detection mAP exactly as the official ActivityNet ``compute_average_precision_detection`` (docs/DESIGN.md,
"Evaluation").

Algorithm, per class c of the ground truth (GT) and per tIoU threshold:

1. The predictions of class c are sorted by score, descending, with a **stable** sort: equal scores keep the
   input order (videos in the order of the results dict, then the order of each video's list).
2. For each prediction in that order, the GT of class c in the same video are sorted by IoU descending (stable:
   equal IoUs keep the annotation order) and walked: IoU ``< threshold`` -> false positive, stop; GT already
   matched at this threshold -> try the next GT; otherwise true positive, the GT is locked. If the walk ends
   without a match (no GT of c in that video, or all locked) the prediction is a false positive.
3. ``recall = cumTP / (number of GT of c)``, ``precision = cumTP / (cumTP + cumFP)``; AP is the all-point
   interpolated area: the precision envelope (running max from the right, with precision 0 appended at recall 1)
   summed over the steps where the recall changes.

mAP at a threshold is the mean AP over the classes present in the GT (of the chosen subset), classes without
predictions contributing 0; ``average_mAP`` is the mean over thresholds.

Edge decisions (where implementations differ):

* Video ids are compared without the ``v_`` prefix on both sides.
* Predictions on videos that are not in the evaluated GT (another subset, or absent) are **ignored**; predictions
  on a video of the subset that has no GT of their class are false positives.
* Predictions whose label is not a class of the evaluated GT are ignored, with one ``warnings.warn`` naming them.
* GT instances are not de-duplicated (each counts in the recall denominator, as in the official code).
* IoU: ``inter = max(0, min(e1, e2) - max(s1, s2))``, ``union = (e1 - s1) + (e2 - s2) - inter``,
  ``inter / union`` in float64 (the official formula); two identical zero-length segments have IoU 1, two
  different ones 0 (the official code would produce NaN).
* Thresholds are exact decimals: each is normalised with ``round(t, 10)``, so ``np.linspace(0.3, 0.7, 5)[1]``
  (0.39999999999999997) becomes the double nearest to 0.4, and a quotient that rounds to exactly 0.4 (e.g.
  2 / 5) counts as IoU >= 0.4. A match needs ``iou >= threshold``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from gsmt_fast.postprocess.reference import segment_iou
from gsmt_fast.results import canonical_video_id, read_results

THUMOS_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
ANET_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


MAX_THRESHOLDS = 1000  # tIoU thresholds per evaluation: far above any benchmark's, bounds the work of a typo


def normalize_thresholds(thresholds) -> tuple[float, ...]:
    """Thresholds as the doubles nearest to their decimal values (``round(t, 10)``), validated to lie in (0, 1]."""
    if isinstance(thresholds, str):
        return parse_thresholds(thresholds)
    values = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"tiou_thresholds must be a non-empty 1-D sequence, got {thresholds!r}")
    if len(values) > MAX_THRESHOLDS:
        raise ValueError(f"{len(values)} tIoU thresholds given; at most {MAX_THRESHOLDS} are supported")
    normalized = tuple(round(float(t), 10) for t in values)
    bad = [t for t in normalized if not 0.0 < t <= 1.0]
    if bad:
        raise ValueError(f"tIoU thresholds must lie in (0, 1], got {bad}")
    return normalized


def parse_thresholds(text: str) -> tuple[float, ...]:
    """Parse ``"start:step:stop"`` (stop included), ``"a,b,c"`` or ``"a"`` with exact decimal arithmetic.

    ``parse_thresholds("0.3:0.1:0.7") == (0.3, 0.4, 0.5, 0.6, 0.7)`` and
    ``parse_thresholds("0.5:0.05:0.95") == ANET_THRESHOLDS`` (each value is the double nearest to the decimal).
    """
    text = text.strip()
    try:
        if ":" in text:
            parts = [Decimal(part.strip()) for part in text.split(":")]
            if len(parts) != 3:
                raise ValueError(f"threshold range must be 'start:step:stop', got {text!r}")
            start, step, stop = parts
            if step <= 0 or stop < start:
                raise ValueError(f"threshold range {text!r} needs step > 0 and stop >= start")
            if (stop - start) / step >= MAX_THRESHOLDS:
                raise ValueError(f"threshold range {text!r} has more than {MAX_THRESHOLDS} values")
            values = []
            value = start
            while value <= stop:
                values.append(value)
                value += step
        else:
            values = [Decimal(part.strip()) for part in text.split(",") if part.strip()]
    except InvalidOperation as error:
        raise ValueError(f"cannot parse tIoU thresholds {text!r}: expected numbers like '0.3:0.1:0.7'") from error
    if not values:
        raise ValueError(f"no tIoU thresholds in {text!r}")
    return normalize_thresholds([float(value) for value in values])


@dataclass
class EvaluationResult:
    """mAP per threshold, its mean, and AP per class (arrays aligned with ``tiou_thresholds``)."""

    tiou_thresholds: np.ndarray
    mAP: np.ndarray
    average_mAP: float
    per_class_ap: dict[str, np.ndarray] = field(default_factory=dict)
    num_ground_truth: int = 0
    num_predictions: int = 0

    def format_table(self, per_class: bool = False) -> str:
        """A plain text table of mAP (%) per threshold and the average; optionally AP (%) per class."""
        lines = [f"{'tIoU':>8} | {'mAP (%)':>8}", f"{'-' * 8}-+-{'-' * 8}"]
        for threshold, value in zip(self.tiou_thresholds, self.mAP):
            lines.append(f"{threshold:>8g} | {100 * value:>8.2f}")
        lines.append(f"{'average':>8} | {100 * self.average_mAP:>8.2f}")
        lines.append(f"({self.num_ground_truth} ground-truth instances, {self.num_predictions} predictions evaluated)")
        if per_class:
            width = max([len("class")] + [len(name) for name in self.per_class_ap])
            header = " | ".join(f"{t:>6g}" for t in self.tiou_thresholds)
            lines += ["", f"{'class':<{width}} | {header} | {'avg':>6}"]
            lines.append("-" * len(lines[-1]))
            for name, ap in self.per_class_ap.items():
                row = " | ".join(f"{100 * v:>6.2f}" for v in ap)
                lines.append(f"{name:<{width}} | {row} | {100 * float(np.mean(ap)):>6.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tiou_thresholds": [float(t) for t in self.tiou_thresholds],
            "mAP": [float(v) for v in self.mAP],
            "average_mAP": float(self.average_mAP),
            "per_class_ap": {name: [float(v) for v in ap] for name, ap in self.per_class_ap.items()},
            "num_ground_truth": int(self.num_ground_truth),
            "num_predictions": int(self.num_predictions),
        }


def _load_json(path_or_dict, what: str) -> Mapping[str, Any]:
    if isinstance(path_or_dict, Mapping):
        return path_or_dict
    if isinstance(path_or_dict, (str, os.PathLike)):
        with open(Path(path_or_dict), encoding="utf-8") as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{what} {str(path_or_dict)!r} is not valid JSON ({error})") from error
    raise TypeError(f"{what} must be a path or a dict, got {type(path_or_dict).__name__}")


def load_ground_truth(ground_truth, subset: str | None = None) -> dict[str, list[tuple[float, float, str]]]:
    """``{video_id (no v_): [(start, end, label), ...]}`` for the videos of ``subset`` (all when None), in file order.

    Accepts the ActivityNet/OpenTAD layout (``{"database": {vid: {"subset", "annotations"}}}``) and the BSN layout
    (the video dict at the top level). Videos of the subset without annotations are kept (with an empty list).
    """
    data = _load_json(ground_truth, "ground truth")
    database = data.get("database", data)
    if not isinstance(database, Mapping) or not all(
        isinstance(video, Mapping) and "annotations" in video for video in database.values()
    ):
        raise ValueError(
            "ground truth must be ActivityNet-style JSON: {'database': {video_id: {'subset', 'annotations': "
            "[{'segment': [start, end], 'label': name}]}}}"
        )
    videos: dict[str, list[tuple[float, float, str]]] = {}
    found_subsets: set[str] = set()
    for video_id, video in database.items():
        found_subsets.add(str(video.get("subset")))
        if subset is not None and video.get("subset") != subset:
            continue
        canonical = canonical_video_id(video_id)
        if canonical in videos:
            raise ValueError(f"ground truth lists video {canonical!r} twice (with and without the 'v_' prefix)")
        video_annotations = []
        for i, annotation in enumerate(video["annotations"]):
            try:
                start, end = (float(x) for x in annotation["segment"])
                label = annotation["label"]
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"ground truth video {video_id!r} annotation {i} needs 'segment': [start, end] and 'label': "
                    f"{annotation!r}"
                ) from error
            if not (np.isfinite(start) and np.isfinite(end)) or start > end:
                raise ValueError(f"ground truth video {video_id!r} annotation {i} has a bad segment {[start, end]}")
            video_annotations.append((start, end, str(label)))
        videos[canonical] = video_annotations
    if subset is not None and not videos:
        raise ValueError(f"no ground-truth video has subset {subset!r}; subsets present: {sorted(found_subsets)}")
    return videos


def ground_truth_by_class(
    gt_videos: Mapping[str, Sequence[tuple[float, float, str]]],
) -> dict[str, dict[str, np.ndarray]]:
    """``{class (sorted by name): {video_id: (G, 2) segments in annotation order}}`` from :func:`load_ground_truth`'s
    ``{video_id: [(start, end, label)]}``; a video appears under a class only when it has GT of that class."""
    class_names = sorted({label for video_gt in gt_videos.values() for _, _, label in video_gt})
    gt_by_class: dict[str, dict[str, np.ndarray]] = {name: {} for name in class_names}
    for video_id, video_gt in gt_videos.items():
        per_class: dict[str, list[tuple[float, float]]] = {}
        for start, end, label in video_gt:
            per_class.setdefault(label, []).append((start, end))
        for label, segments in per_class.items():
            gt_by_class[label][video_id] = np.array(segments, dtype=np.float64).reshape(-1, 2)
    return gt_by_class


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (the official ``interpolated_prec_rec``)."""
    envelope = np.concatenate([[0.0], precision, [0.0]])
    recall_points = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(envelope) - 2, -1, -1):
        envelope[i] = max(envelope[i], envelope[i + 1])
    steps = np.flatnonzero(recall_points[1:] != recall_points[:-1]) + 1
    return float(np.sum((recall_points[steps] - recall_points[steps - 1]) * envelope[steps]))


def match_class_predictions(
    gt_by_video: Mapping[str, np.ndarray],
    predictions: Sequence[tuple],
    thresholds: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """The official greedy matching of one class's predictions to its GT, at each threshold (module docstring).

    Args:
        gt_by_video: ``{video_id: (G, 2) segments}`` of this class (videos without GT of the class may be absent).
        predictions: ``(video_id, start, end, score, ...)`` in input order (the sort below is stable; extra fields
            are carried along and ignored).
        thresholds: normalised tIoU thresholds.

    Returns:
        ``order``: prediction indices in processing order (score descending, ties in input order);
        ``matched``: ``(len(thresholds), len(predictions))`` int64, for prediction ``i`` at threshold ``k`` the
        index (into ``gt_by_video[video]``) of the GT it matched, or -1 for a false positive.
    """
    matched = np.full((len(thresholds), len(predictions)), -1, dtype=np.int64)
    if not predictions:
        return np.zeros(0, dtype=np.int64), matched
    scores = np.array([p[3] for p in predictions], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")  # negation is exact, so ties keep the input order
    # locked[video][k, g]: GT g of that video is already matched at threshold k
    locked = {video: np.zeros((len(thresholds), len(segments)), dtype=bool) for video, segments in gt_by_video.items()}
    for index in order:
        video_id, start, end = predictions[index][:3]
        segments = gt_by_video.get(video_id)
        if segments is None or len(segments) == 0:
            continue
        iou = segment_iou(np.array([start, end]), segments)
        by_iou = np.argsort(-iou, kind="stable")
        for k, threshold in enumerate(thresholds):
            for gt_index in by_iou:
                if iou[gt_index] < threshold:
                    break
                if locked[video_id][k, gt_index]:
                    continue
                locked[video_id][k, gt_index] = True
                matched[k, index] = gt_index
                break
    return order, matched


def average_precision_for_class(
    gt_by_video: Mapping[str, np.ndarray],
    predictions: Sequence[tuple[str, float, float, float]],
    thresholds: Sequence[float],
) -> np.ndarray:
    """AP of one class at each threshold (arguments as :func:`match_class_predictions`)."""
    num_gt = sum(len(segments) for segments in gt_by_video.values())
    ap = np.zeros(len(thresholds), dtype=np.float64)
    if not predictions or num_gt == 0:
        return ap
    order, matched = match_class_predictions(gt_by_video, predictions, thresholds)
    true_positive = (matched[:, order] >= 0).astype(np.float64)
    false_positive = 1.0 - true_positive
    tp_cumulative = np.cumsum(true_positive, axis=1)
    fp_cumulative = np.cumsum(false_positive, axis=1)
    recall = tp_cumulative / num_gt
    precision = tp_cumulative / (tp_cumulative + fp_cumulative)
    for k in range(len(thresholds)):
        ap[k] = interpolated_average_precision(precision[k], recall[k])
    return ap


def _predictions_by_class(results: Mapping[str, list], gt_videos: Mapping, class_names: Sequence[str],
                          warn: bool) -> dict[str, list[tuple[str, float, float, float, int]]]:
    """``{class: [(video_id, start, end, score, position of the record in its video's list)]}`` of the predictions on
    videos of the ground truth; predictions of classes absent from it are ignored (with a warning when ``warn``)."""
    predictions_by_class: dict[str, list[tuple[str, float, float, float, int]]] = {name: [] for name in class_names}
    unknown_labels: Counter[str] = Counter()
    for video_id, records in results.items():
        if video_id not in gt_videos:
            continue  # not a video of the evaluated ground truth: ignored
        for position, record in enumerate(records):
            label = record["label"]
            if label not in predictions_by_class:
                unknown_labels[label] += 1
                continue
            start, end = record["segment"]
            predictions_by_class[label].append((video_id, start, end, record["score"], position))
    if unknown_labels and warn:
        listed = ", ".join(f"{name!r} ({count})" for name, count in sorted(unknown_labels.items())[:20])
        more = "" if len(unknown_labels) <= 20 else f", ... ({len(unknown_labels) - 20} more classes)"
        warnings.warn(
            f"ignored {sum(unknown_labels.values())} prediction(s) of {len(unknown_labels)} class(es) absent from the "
            f"ground truth: {listed}{more}",
            stacklevel=3,
        )
    return predictions_by_class


def true_positives(ground_truth, predictions, tiou_thresholds=THUMOS_THRESHOLDS,
                   subset: str | None = None) -> list[list[tuple[str, int, int]]]:
    """The true positives of :func:`evaluate`'s matching, per threshold: ``(video_id, r, g)`` says that the record
    ``r`` of the video's predictions list matched its ground-truth instance ``g`` (file order of the video's
    annotations). Used for the end delay of streamed detections."""
    thresholds = normalize_thresholds(tiou_thresholds)
    gt_videos = load_ground_truth(ground_truth, subset)
    gt_by_class = ground_truth_by_class(gt_videos)
    gt_rows: dict[str, dict[str, list[int]]] = {name: {} for name in gt_by_class}  # row of each GT in its video
    for video_id, video_gt in gt_videos.items():
        for row, (_, _, label) in enumerate(video_gt):
            gt_rows[label].setdefault(video_id, []).append(row)
    by_class = _predictions_by_class(read_results(predictions), gt_videos, list(gt_by_class), warn=False)
    found: list[list[tuple[str, int, int]]] = [[] for _ in thresholds]
    for name, class_predictions in by_class.items():
        if not class_predictions:
            continue
        _, matched = match_class_predictions(gt_by_class[name], class_predictions, thresholds)
        for k in range(len(thresholds)):
            for i in np.flatnonzero(matched[k] >= 0):
                video_id, _, _, _, position = class_predictions[i]
                found[k].append((video_id, position, gt_rows[name][video_id][matched[k, i]]))
    return found


def evaluate(
    ground_truth,
    predictions,
    tiou_thresholds=THUMOS_THRESHOLDS,
    subset: str | None = None,
    warn: bool = True,
) -> EvaluationResult:
    """Detection mAP of ``predictions`` against ``ground_truth`` (module docstring: algorithm and edge rules).

    Args:
        ground_truth: ActivityNet-style annotation JSON, path or dict.
        predictions: results JSON (official / OpenTAD / ActionFormer columns), path or dict; see
            :func:`gsmt_fast.results.read_results`.
        tiou_thresholds: thresholds (floats, normalised to exact decimals) or a string for :func:`parse_thresholds`.
        subset: evaluate only the GT videos whose ``subset`` equals this (e.g. ``"validation"``); None: all.
        warn: warn about ignored predictions of classes absent from the ground truth.
    """
    thresholds = normalize_thresholds(tiou_thresholds)
    gt_videos = load_ground_truth(ground_truth, subset)
    results = read_results(predictions)

    gt_by_class = ground_truth_by_class(gt_videos)
    class_names = list(gt_by_class)

    predictions_by_class = _predictions_by_class(results, gt_videos, class_names, warn)
    per_class_ap = {
        name: average_precision_for_class(gt_by_class[name], predictions_by_class[name], thresholds)
        for name in class_names
    }
    if class_names:
        mean_ap = np.mean(np.stack([per_class_ap[name] for name in class_names]), axis=0)
    else:
        mean_ap = np.zeros(len(thresholds), dtype=np.float64)
    return EvaluationResult(
        tiou_thresholds=np.array(thresholds, dtype=np.float64),
        mAP=mean_ap,
        average_mAP=float(np.mean(mean_ap)),
        per_class_ap=per_class_ap,
        num_ground_truth=sum(len(video_gt) for video_gt in gt_videos.values()),
        num_predictions=sum(len(p) for p in predictions_by_class.values()),
    )


__all__ = [
    "evaluate",
    "EvaluationResult",
    "parse_thresholds",
    "normalize_thresholds",
    "load_ground_truth",
    "ground_truth_by_class",
    "interpolated_average_precision",
    "average_precision_for_class",
    "match_class_predictions",
    "true_positives",
    "THUMOS_THRESHOLDS",
    "ANET_THRESHOLDS",
]
