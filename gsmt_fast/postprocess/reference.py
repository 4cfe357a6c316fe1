"""The reference (NumPy) post-processing: class probabilities + masks -> candidates -> SoftNMS -> detections.

This is the oracle of the post-processing stage (docs/DESIGN.md, "Post-processing" and "SoftNMS"): the C++/CUDA ops
(:mod:`gsmt_fast.postprocess.native`) are tested against it, so every tie and comparison is spelled out here.

Candidates of one window:

* Inputs are converted to float64 first (exact for float16/float32 inputs); every comparison and product below is
  done in float64. In particular a mask value ``m`` is active at threshold ``θ`` when ``float64(m) > θ`` with ``θ``
  the Python float of the config (a float32 backend must widen ``m``, not narrow ``θ``).
* Only the first ``valid_len`` snippets count: padded snippets are never selected, padded mask rows are never
  read, and padded values are not even checked (they may hold NaN).
* Step 1: foreground score ``fg[t] = max_{k<K} P[k, t]``; label ``argmax_{k<K} P[k, t]``, the lowest k on ties.
* Step 2: the ``M1 = min(top_snippets, valid_len)`` snippets with the highest ``fg``; ties go to the lower t.
* Step 3: for each selected t and each θ in ``mask_thresholds`` (in config order), ``active = M[:valid_len, t] > θ``
  (strict). ``long``: one candidate from the first to the last active snippet; ``short``: one candidate per
  maximal run of active snippets; no active snippet: no candidate.
* Step 4: score ``P[label_t, t] * max(M[a..b, t])`` (a..b inclusive); identical (start, end, label) merged,
  keeping the highest score.
* Step 5: drop ``score <= score_threshold``; keep the top ``pre_nms_topk`` in the order
  (score descending, smaller start, smaller end, smaller label) — the output order of :class:`Candidates`.
* Step 6: SoftNMS (:func:`soft_nms` below) on ``[a, b + 1]`` in snippet units.

Boundary candidates (``cfg.candidate_source(...) == "boundaries"``: a model with the boundary head, the
boundary-refined variant; docs/DESIGN.md, "Boundary candidates") replace steps 3–5; steps 1, 2 and 6 are as above.
``boundaries (2, T)`` holds each snippet's distances to its instance's start (row 0) and end (row 1), in snippets:

* Inputs widened to float64 like the others; the first ``valid_len`` distances must be finite and ``>= 0``.
* Step 3': each selected snippet t gives one candidate: ``[max(0, (t + 0.5) - d_s[t]), min(V, (t + 0.5) + d_e[t])]``
  in snippet units (V = ``valid_len``; one float64 subtraction or addition each, then the clamp), label ``label_t``.
* Step 4': its score is ``P[label_t, t]`` (the foreground score of t). Candidates are not merged (two snippets never
  give the same candidate unless their segments, labels and scores all coincide, and SoftNMS then decays the second
  like any duplicate).
* Step 5': drop ``score <= score_threshold``; keep the top ``pre_nms_topk`` in the order (score descending, smaller
  source snippet t). ``Candidates.start`` and ``.end`` both hold t; ``Candidates.units`` the segments.

SoftNMS (:func:`soft_nms`, on validated arrays; the public front end with its checks and compiled backends is
:func:`gsmt_fast.soft_nms`), the 1-D op of ActionFormer written down precisely:
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

from dataclasses import dataclass

import numpy as np

from gsmt_fast.config import InferenceConfig


@dataclass
class Candidates:
    """Candidate segments of one window in snippet indices.

    ``start`` is the first snippet a of the run, ``end`` the last snippet b (inclusive), so a candidate covers the
    snippet-unit interval ``[a, b + 1]``.
    """

    start: np.ndarray  # (N,) int64
    end: np.ndarray  # (N,) int64, inclusive
    labels: np.ndarray  # (N,) int64
    scores: np.ndarray  # (N,) float64
    # (N, 2) float64 segments in snippet units when they are not the runs [a, b + 1]: boundary candidates, whose
    # start and end fields hold their source snippet.
    units: np.ndarray | None = None

    def __post_init__(self):
        self.start = np.asarray(self.start, dtype=np.int64).reshape(-1)
        self.end = np.asarray(self.end, dtype=np.int64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.start)
        if not (len(self.end) == len(self.labels) == len(self.scores) == n):
            raise ValueError(
                f"Candidates fields must have equal lengths, got start {n}, end {len(self.end)}, "
                f"labels {len(self.labels)}, scores {len(self.scores)}"
            )
        if self.units is not None:
            self.units = np.asarray(self.units, dtype=np.float64).reshape(-1, 2)
            if len(self.units) != n:
                raise ValueError(f"Candidates.units must have shape ({n}, 2), got {self.units.shape}")

    def __len__(self) -> int:
        return len(self.start)

    def segments_units(self) -> np.ndarray:
        """``(N, 2)`` float64: the candidates as intervals in snippet units (``[a, b + 1]`` for mask runs)."""
        if self.units is not None:
            return self.units
        return np.stack([self.start, self.end + 1], axis=1).astype(np.float64).reshape(-1, 2)


def _as_float64(name: str, array) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor (any device, any float dtype incl. bfloat16)
        array = array.detach().cpu().double().numpy()
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return array.astype(np.float64)


def _validate_window(probs, masks, valid_len) -> tuple[np.ndarray, np.ndarray, int]:
    probs = _as_float64("probs", probs)
    masks = _as_float64("masks", masks)
    if probs.ndim != 2 or probs.shape[0] < 2:
        raise ValueError(f"probs must have shape (K+1, T) with K >= 1, got {probs.shape}")
    num_snippets = probs.shape[1]
    if masks.shape != (num_snippets, num_snippets):
        raise ValueError(
            f"masks must have shape (T, T) = ({num_snippets}, {num_snippets}) to match probs {probs.shape}, "
            f"got {masks.shape}"
        )
    if isinstance(valid_len, bool) or not isinstance(valid_len, (int, np.integer)):
        raise TypeError(f"valid_len must be an integer, got {valid_len!r}")
    valid_len = int(valid_len)
    if not 1 <= valid_len <= num_snippets:
        raise ValueError(f"valid_len must be in [1, T={num_snippets}], got {valid_len}")
    # Only the valid part is checked: padding is never read, so it may hold anything.
    used_probs = probs[:, :valid_len]
    used_masks = masks[:valid_len, :valid_len]
    for name, used in (("probs", used_probs), ("masks", used_masks)):
        if not np.isfinite(used).all():
            raise ValueError(f"{name} contain NaN or inf in the first valid_len={valid_len} snippets")
        if used.min() < 0.0 or used.max() > 1.0:
            raise ValueError(f"{name} must be probabilities in [0, 1], got values in [{used.min()}, {used.max()}]")
    return probs, masks, valid_len


def _active_runs(active: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool array as inclusive (first, last) index pairs, left to right."""
    padded = np.concatenate([[False], active, [False]]).astype(np.int8)
    changes = np.diff(padded)
    run_starts = np.flatnonzero(changes == 1)
    run_ends = np.flatnonzero(changes == -1) - 1
    return [(int(a), int(b)) for a, b in zip(run_starts, run_ends)]


def _validate_boundaries(boundaries, num_snippets: int, valid_len: int) -> np.ndarray:
    boundaries = _as_float64("boundaries", boundaries)
    if boundaries.shape != (2, num_snippets):
        raise ValueError(f"boundaries must have shape (2, T) = (2, {num_snippets}), got {boundaries.shape}")
    used = boundaries[:, :valid_len]
    if not np.isfinite(used).all():
        raise ValueError(f"boundaries contain NaN or inf in the first valid_len={valid_len} snippets")
    if used.min() < 0.0:
        raise ValueError(f"boundaries must be distances >= 0, got a minimum of {used.min()}")
    return boundaries


def window_candidates(probs, masks, valid_len: int, cfg: InferenceConfig, boundaries=None) -> Candidates:
    """Steps 1–5 on one window (see the module docstring for every tie rule).

    Args:
        probs: ``(K+1, T)`` class probabilities (background is row K).
        masks: ``(T, T)`` mask probabilities; column t (``masks[:, t]``) is the mask of snippet t.
        valid_len: number of real (unpadded) snippets, ``1 <= valid_len <= T``.
        cfg: the inference settings (``top_snippets``, ``mask_thresholds``, ``mode``, ``score_threshold``,
            ``pre_nms_topk``, ``candidates``).
        boundaries: ``(2, T)`` distances of the boundary head (a model with that head), or None. With
            ``cfg.candidate_source`` giving ``"boundaries"`` the candidates come from them (steps 3'–5').

    Returns:
        :class:`Candidates` sorted by (score descending, start, end, label) — boundary candidates by (score
        descending, source snippet) — at most ``pre_nms_topk`` of them.
    """
    source = cfg.candidate_source(boundaries is not None)
    probs, masks, valid_len = _validate_window(probs, masks, valid_len)
    if source == "boundaries":
        boundaries = _validate_boundaries(boundaries, probs.shape[1], valid_len)
    num_classes = probs.shape[0] - 1
    class_probs = probs[:num_classes, :valid_len]

    # Step 1: np.argmax returns the first maximum, i.e. the lowest class index on ties.
    snippet_labels = np.argmax(class_probs, axis=0)
    foreground = class_probs[snippet_labels, np.arange(valid_len)]

    # Step 2: highest foreground first, ties to the lower snippet index (lexsort: last key is the primary one).
    num_selected = min(cfg.top_snippets, valid_len)
    selected = np.lexsort((np.arange(valid_len), -foreground))[:num_selected]
    if source == "boundaries":
        return _boundary_candidates(selected, snippet_labels, foreground, boundaries, valid_len, cfg)

    # Steps 3-4: (start, end, label) -> best score; duplicates (other thresholds, other snippets) merged.
    best_scores: dict[tuple[int, int, int], float] = {}
    for t in selected:
        t = int(t)
        label = int(snippet_labels[t])
        column = masks[:valid_len, t]
        for threshold in cfg.mask_thresholds:
            active = column > threshold
            if not active.any():
                continue
            if cfg.mode == "long":
                active_indices = np.flatnonzero(active)
                runs = [(int(active_indices[0]), int(active_indices[-1]))]
            else:
                runs = _active_runs(active)
            for a, b in runs:
                score = float(probs[label, t] * column[a : b + 1].max())
                key = (a, b, label)
                if key not in best_scores or score > best_scores[key]:
                    best_scores[key] = score

    # Step 5: drop score <= θ_c, then sort and keep the top M2.
    kept = [(key, score) for key, score in best_scores.items() if score > cfg.score_threshold]
    kept.sort(key=lambda item: (-item[1], item[0][0], item[0][1], item[0][2]))
    kept = kept[: cfg.pre_nms_topk]
    return Candidates(
        start=[key[0] for key, _ in kept],
        end=[key[1] for key, _ in kept],
        labels=[key[2] for key, _ in kept],
        scores=[score for _, score in kept],
    )


def _boundary_candidates(selected, snippet_labels, foreground, boundaries, valid_len: int,
                         cfg: InferenceConfig) -> Candidates:
    """Steps 3'–5' (module docstring): one candidate per selected snippet from its boundary distances."""
    # Step 5' order (score descending, then the lower source snippet) is step 2's selection order already.
    kept = selected[foreground[selected] > cfg.score_threshold][: cfg.pre_nms_topk]
    centres = kept + 0.5
    starts = np.maximum(centres - boundaries[0, kept], 0.0)
    ends = np.minimum(centres + boundaries[1, kept], float(valid_len))
    return Candidates(start=kept, end=kept, labels=snippet_labels[kept], scores=foreground[kept],
                      units=np.stack([starts, ends], axis=1))


def window_detections(probs, masks, valid_len: int, cfg: InferenceConfig,
                      boundaries=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1–6 on one window: candidates, then SoftNMS with the config's settings.

    Returns:
        ``(segments (N, 2) float64 in snippet units, scores (N,) float64, labels (N,) int64)``, in SoftNMS output
        order, ``N <= cfg.max_detections``.
    """
    candidates = window_candidates(probs, masks, valid_len, cfg, boundaries)
    return soft_nms(candidates.segments_units(), candidates.scores, candidates.labels, **cfg.nms_kwargs())


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


def decay_weights(iou: np.ndarray, method: str, sigma: float, iou_threshold: float) -> np.ndarray:
    """The SoftNMS weight ``w(iou)`` of each IoU (the rules in the module docstring)."""
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
        current_scores[others] = current_scores[others] * decay_weights(iou, method, sigma, iou_threshold)
        remaining[others] = current_scores[others] >= min_score
    return np.asarray(picked_indices, dtype=np.int64), np.asarray(picked_scores, dtype=np.float64)


def soft_nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, method: str = "gaussian",
             sigma: float = 0.5, iou_threshold: float = 0.0, min_score: float = 0.001, max_seg_num: int = 200,
             multiclass: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SoftNMS of validated float64 ``(N, 2)`` segments, float64 ``(N,)`` scores and int64 ``(N,)`` labels (see the
    module docstring); returns ``(segments, scores, labels)`` in selection order."""
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


__all__ = ["Candidates", "decay_weights", "segment_iou", "soft_nms", "window_candidates", "window_detections"]
