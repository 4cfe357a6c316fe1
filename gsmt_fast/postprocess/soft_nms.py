"""``gsmt_fast.soft_nms``: SoftNMS of 1-D segments, checked once here, computed by the NumPy oracle
(:func:`gsmt_fast.postprocess.reference.soft_nms`) or by the compiled extension on the CPU or a GPU
(:func:`gsmt_fast.postprocess.native.soft_nms`). Every backend gives the oracle's result (docs/DESIGN.md, "SoftNMS").
"""

from __future__ import annotations

import math

import numpy as np

from ..config import MAX_DETECTIONS
from . import reference

NMS_METHODS = ("gaussian", "linear", "hard")
NMS_BACKENDS = ("reference", "cpp", "cuda")


def check_inputs(segments, scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    segments = np.asarray(segments)
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if segments.size == 0 and scores.size == 0 and labels.size == 0:
        return np.zeros((0, 2), np.float64), np.zeros(0, np.float64), np.zeros(0, np.int64)
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"segments must have shape (N, 2), got {segments.shape}")
    n = segments.shape[0]
    if scores.shape != (n,):
        raise ValueError(f"scores must have shape ({n},) to match segments {segments.shape}, got {scores.shape}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match segments {segments.shape}, got {labels.shape}")
    for name, array in (("segments", segments), ("scores", scores)):
        if array.dtype.kind not in "fiu" or array.dtype == np.bool_:
            raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    segments = segments.astype(np.float64)
    scores = scores.astype(np.float64)
    labels = labels.astype(np.int64)
    if not np.isfinite(segments).all():
        raise ValueError("segments contain NaN or inf")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    inverted = np.flatnonzero(segments[:, 0] > segments[:, 1])
    if len(inverted):
        i = int(inverted[0])
        raise ValueError(
            f"segments must satisfy start <= end; {len(inverted)} do not, e.g. index {i}: {segments[i].tolist()}"
        )
    return np.ascontiguousarray(segments), np.ascontiguousarray(scores), np.ascontiguousarray(labels)


def check_settings(method, sigma, iou_threshold, min_score, max_seg_num, multiclass) -> None:
    if method not in NMS_METHODS:
        raise ValueError(f"unknown SoftNMS method {method!r}; valid methods: {NMS_METHODS}")
    for name, value in (("sigma", sigma), ("iou_threshold", iou_threshold), ("min_score", min_score)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
    if float(sigma) <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if isinstance(max_seg_num, bool) or not isinstance(max_seg_num, (int, np.integer)) or \
            not 1 <= max_seg_num <= MAX_DETECTIONS:
        raise ValueError(f"max_seg_num must be an integer in [1, {MAX_DETECTIONS}], got {max_seg_num!r}")
    if not isinstance(multiclass, (bool, np.bool_)):
        raise TypeError(f"multiclass must be a bool, got {multiclass!r}")


def soft_nms(
    segments,
    scores,
    labels,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.0,
    min_score: float = 0.001,
    max_seg_num: int = 200,
    multiclass: bool = True,
    backend: str = "reference",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SoftNMS of 1-D segments (the semantics and tie order: :mod:`gsmt_fast.postprocess.reference`).

    Args:
        segments: ``(N, 2)`` ``[start, end]`` with ``start <= end``, any unit.
        scores: ``(N,)`` finite scores.
        labels: ``(N,)`` integer class ids.
        method: ``"gaussian"``, ``"linear"`` or ``"hard"``.
        sigma: gaussian width (``w = exp(-iou**2 / sigma)``), > 0.
        iou_threshold: IoU from which linear/hard decay applies (``iou >= iou_threshold``); unused by gaussian.
        min_score: candidates whose (decayed) score is ``< min_score`` are dropped.
        max_seg_num: maximum number of detections returned (and per class in per-class mode).
        multiclass: run per class (True) or once over all classes (False).
        backend: ``"reference"`` (the NumPy oracle, :func:`gsmt_fast.postprocess.reference.soft_nms`), ``"cpp"``
            or ``"cuda"`` (the extension's op on the CPU, or on the current GPU with a copy in and out).

    Returns:
        ``(segments (M, 2) float64, scores (M,) float64, labels (M,) int64)`` in selection order, ``M <= max_seg_num``.
    """
    if backend not in NMS_BACKENDS:
        raise ValueError(f"unknown SoftNMS backend {backend!r}; valid backends: {NMS_BACKENDS}")
    check_settings(method, sigma, iou_threshold, min_score, max_seg_num, multiclass)
    segments, scores, labels = check_inputs(segments, scores, labels)
    settings = (method, float(sigma), float(iou_threshold), float(min_score), int(max_seg_num), bool(multiclass))
    if backend == "reference":
        return reference.soft_nms(segments, scores, labels, *settings)
    from . import native

    out_segments, out_scores, out_labels = native.soft_nms(segments, scores, labels, *settings,
                                                           device_type="cpu" if backend == "cpp" else "cuda")
    return (np.asarray(out_segments, dtype=np.float64).reshape(-1, 2),
            np.asarray(out_scores, dtype=np.float64).reshape(-1),
            np.asarray(out_labels, dtype=np.int64).reshape(-1))


__all__ = ["NMS_BACKENDS", "NMS_METHODS", "check_inputs", "check_settings", "soft_nms"]
