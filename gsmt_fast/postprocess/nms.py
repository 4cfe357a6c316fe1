"""SoftNMS on 1-D segments: the reference (NumPy) implementation and the dispatch to the compiled backends.

Semantics (SPEC §6, the 1-D op of ActionFormer), written down precisely because the C++ and CUDA backends are
tested against this code:

* **IoU** of ``[s1, e1]`` and ``[s2, e2]``: ``inter = max(0, min(e1, e2) - max(s1, s2))``,
  ``union = (e1 - s1) + (e2 - s2) - inter``, ``iou = inter / union`` in float64, in exactly this order of
  operations. ``union`` is 0 only when both segments have zero length; we define that 0/0 as IoU 1 when the two
  points are identical (``s1 == s2``) and 0 otherwise, so that duplicated points suppress each other like
  duplicated segments do and distinct points do not interact.
* **Greedy loop**: among the remaining candidates pick the one with the highest *current* score; ties (common,
  because several mask thresholds share one mask peak) go to the smaller start, then the smaller end, then the
  smaller label, then the smaller input index (a total order any backend can reproduce). Emit it with its current,
  already decayed score. Multiply the score of every other remaining candidate by ``w(iou)``:

  - ``hard``:     ``0``                     if ``iou >= iou_threshold`` else ``1``
  - ``linear``:   ``1 - iou``               if ``iou >= iou_threshold`` else ``1``
  - ``gaussian``: ``exp(-(iou * iou) / sigma)`` for every candidate (``iou_threshold`` is ignored)

  then drop the remaining candidates whose score is now ``< min_score``. Stop after ``max_seg_num`` picks or
  when nothing remains. Candidates whose *input* score is already ``< min_score`` are never emitted (they are
  "remaining candidates below min_score" before the first pick).
* Because every weight lies in [0, 1], the emitted scores of one greedy run are non-increasing.
* **Per-class mode** (``multiclass=True``): the greedy loop runs independently for each label (labels in
  ascending order), each run capped at ``max_seg_num``; the results are merged, sorted by
  (score descending, start, end, label, position in the per-class output) and capped at ``max_seg_num`` again.
  **Class-agnostic mode** runs the loop once over all candidates; the output is in selection order.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

NMS_METHODS = ("gaussian", "linear", "hard")
NMS_BACKENDS = ("reference", "cpp", "cuda")

# backend name -> name of the function in the compiled extension gsmt_fast._C
_EXTENSION_FUNCTIONS = {"cpp": "soft_nms_cpu", "cuda": "soft_nms_cuda"}


def segment_iou(segment: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one segment ``(2,)`` with each row of ``others`` ``(N, 2)``, float64, with the 0/0 rule above."""
    start, end = float(segment[0]), float(segment[1])
    other_starts = others[:, 0]
    other_ends = others[:, 1]
    inter = np.maximum(0.0, np.minimum(end, other_ends) - np.maximum(start, other_starts))
    union = (end - start) + (other_ends - other_starts) - inter
    iou = np.zeros(len(others), dtype=np.float64)
    positive = union > 0
    iou[positive] = inter[positive] / union[positive]
    # Both lengths are zero exactly where union == 0 (inter <= min(len1, len2)): identical points overlap fully.
    both_points = ~positive
    iou[both_points] = np.where(other_starts[both_points] == start, 1.0, 0.0)
    return iou


def _decay_weights(iou: np.ndarray, method: str, sigma: float, iou_threshold: float) -> np.ndarray:
    if method == "hard":
        return np.where(iou >= iou_threshold, 0.0, 1.0)
    if method == "linear":
        return np.where(iou >= iou_threshold, 1.0 - iou, 1.0)
    return np.exp(-(iou * iou) / sigma)


def _greedy_soft_nms(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    method: str,
    sigma: float,
    iou_threshold: float,
    min_score: float,
    max_seg_num: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One greedy run over all given candidates; returns (picked input indices, their emitted scores)."""
    current_scores = scores.copy()
    remaining = current_scores >= min_score
    input_index = np.arange(len(scores))
    picked_indices: list[int] = []
    picked_scores: list[float] = []
    while len(picked_indices) < max_seg_num and remaining.any():
        candidates = np.flatnonzero(remaining)
        # The highest current score; among exact ties, the smallest (start, end, label, input index).
        top_score = current_scores[candidates].max()
        tied = candidates[current_scores[candidates] == top_score]
        # np.lexsort sorts by the LAST key first.
        order = np.lexsort((input_index[tied], labels[tied], segments[tied, 1], segments[tied, 0]))
        best = int(tied[order[0]])
        picked_indices.append(best)
        picked_scores.append(float(current_scores[best]))
        remaining[best] = False
        others = np.flatnonzero(remaining)
        if len(others) == 0:
            break
        iou = segment_iou(segments[best], segments[others])
        current_scores[others] = current_scores[others] * _decay_weights(iou, method, sigma, iou_threshold)
        remaining[others] = current_scores[others] >= min_score
    return np.asarray(picked_indices, dtype=np.int64), np.asarray(picked_scores, dtype=np.float64)


def _validate_inputs(segments, scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _validate_settings(method, sigma, iou_threshold, min_score, max_seg_num, multiclass) -> None:
    if method not in NMS_METHODS:
        raise ValueError(f"unknown SoftNMS method {method!r}; valid methods: {NMS_METHODS}")
    for name, value in (("sigma", sigma), ("iou_threshold", iou_threshold), ("min_score", min_score)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
    if float(sigma) <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if isinstance(max_seg_num, bool) or not isinstance(max_seg_num, (int, np.integer)) or max_seg_num < 1:
        raise ValueError(f"max_seg_num must be an integer >= 1, got {max_seg_num!r}")
    if not isinstance(multiclass, (bool, np.bool_)):
        raise TypeError(f"multiclass must be a bool, got {multiclass!r}")


def _extension_function(backend: str):
    function_name = _EXTENSION_FUNCTIONS[backend]
    try:
        extension = importlib.import_module("gsmt_fast._C")
    except ImportError as error:
        raise RuntimeError(
            f"SoftNMS backend {backend!r} is not available: the compiled extension gsmt_fast._C could not be "
            f"imported ({error}); rebuild the package (pip install -e .) or use backend='reference'"
        ) from error
    function = getattr(extension, function_name, None)
    if function is None:
        hint = " (the extension was built without CUDA, or no CUDA compiler was found)" if backend == "cuda" else ""
        # NotImplementedError is a RuntimeError: callers catching RuntimeError keep working.
        raise NotImplementedError(
            f"SoftNMS backend {backend!r} is not built: gsmt_fast._C has no {function_name}(){hint}; "
            "use backend='reference' or rebuild the extension"
        )
    return function


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
    """SoftNMS of 1-D segments (see the module docstring for the exact semantics and tie order).

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
        backend: ``"reference"`` (this NumPy code), ``"cpp"`` or ``"cuda"`` (``gsmt_fast._C.soft_nms_cpu`` /
            ``soft_nms_cuda``, called with the validated C-contiguous float64/float64/int64 arrays followed by
            ``method, sigma, iou_threshold, min_score, max_seg_num, multiclass``).

    Returns:
        ``(segments (M, 2) float64, scores (M,) float64, labels (M,) int64)`` in selection order, ``M <= max_seg_num``.
    """
    if backend not in NMS_BACKENDS:
        raise ValueError(f"unknown SoftNMS backend {backend!r}; valid backends: {NMS_BACKENDS}")
    _validate_settings(method, sigma, iou_threshold, min_score, max_seg_num, multiclass)
    segments, scores, labels = _validate_inputs(segments, scores, labels)
    sigma, iou_threshold, min_score = float(sigma), float(iou_threshold), float(min_score)
    max_seg_num, multiclass = int(max_seg_num), bool(multiclass)

    if backend != "reference":
        function = _extension_function(backend)
        out_segments, out_scores, out_labels = function(
            segments, scores, labels, method, sigma, iou_threshold, min_score, max_seg_num, multiclass
        )
        return (
            np.asarray(out_segments, dtype=np.float64).reshape(-1, 2),
            np.asarray(out_scores, dtype=np.float64).reshape(-1),
            np.asarray(out_labels, dtype=np.int64).reshape(-1),
        )

    if len(scores) == 0:
        return segments, scores, labels

    settings = (method, sigma, iou_threshold, min_score, max_seg_num)
    if not multiclass:
        picked, picked_scores = _greedy_soft_nms(segments, scores, labels, *settings)
        return segments[picked], picked_scores, labels[picked]

    all_picked: list[np.ndarray] = []
    all_scores: list[np.ndarray] = []
    for label in np.unique(labels):  # ascending label order
        members = np.flatnonzero(labels == label)
        picked, picked_scores = _greedy_soft_nms(segments[members], scores[members], labels[members], *settings)
        all_picked.append(members[picked])
        all_scores.append(picked_scores)
    picked = np.concatenate(all_picked)
    picked_scores = np.concatenate(all_scores)
    merged_position = np.arange(len(picked))
    order = np.lexsort((merged_position, labels[picked], segments[picked, 1], segments[picked, 0], -picked_scores))
    order = order[:max_seg_num]
    picked = picked[order]
    return segments[picked], picked_scores[order], labels[picked]


__all__ = ["soft_nms", "segment_iou", "NMS_METHODS", "NMS_BACKENDS"]
