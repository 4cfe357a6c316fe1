"""Training targets of GSMT (paper §3.3): per-snippet classes and the T×T global segmentation mask of a window.

``assign_targets`` turns the instances of one window (in snippet units) into per-snippet classes, the mask target and
the boundary-distance target of the boundary-refined variant (NumPy, used by the dataset); ``batch_targets`` stacks
several windows into the torch tensors the losses take (:mod:`gsmt_fast.losses`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Targets:
    """Training targets of one window of ``T`` snippets.

    cls: (T,) int64, class of each snippet; K (background) on background and padded snippets.
    mask: (T, T) float32, column t is the mask target g_t of snippet t (all zeros for background snippets).
    instance: (T,) int64, index (into the input instances) of the instance owning snippet t; -1 for background.
    valid_len: number of valid (non-padded) snippets.
    boundary: (T, 2) float32, for an action snippet t the distances from its centre t + 0.5 to the start and to the
        end of its instance, the instance clipped to the valid window ``[0, valid_len]`` first (what the window can
        see); each distance is at least 0 (a sub-snippet instance's one snippet may have its centre outside it).
        Zeros on background and padded snippets. The target of the boundary head (``GSMTConfig.boundary_head``).
    """

    cls: np.ndarray
    mask: np.ndarray
    instance: np.ndarray
    valid_len: int
    boundary: np.ndarray


def assign_targets(
    segments_units: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    temporal_scale: int,
    valid_len: int | None = None,
) -> Targets:
    """Assign classes and global segmentation mask targets to the snippets of one window.

    ``segments_units`` (N, 2) are instance ``[start, end]`` in snippet units of the window: snippet i covers [i, i+1)
    and its centre is i + 0.5. Rules:

    - snippet t < valid_len is a snippet of instance j when its centre lies in the closed interval [s_j, e_j];
    - an instance that covers no snippet centre but overlaps the valid window [0, valid_len) with positive length
      (or is a zero-length instance inside it) has one snippet: the one whose centre is nearest to the midpoint of
      the instance clipped into the window (ties: the lower index);
    - instances that do not overlap the valid window are ignored;
    - a snippet claimed by several instances belongs to the shortest one (by full, unclipped length; ties: the lower
      instance index) and gets its class;
    - the mask column g_t of an action snippet t is 1 on all snippets of t's instance, whether or not that instance
      won them, and 0 elsewhere (padded rows included). An instance whose snippets were all won by shorter instances
      contributes no column;
    - the boundary target of an action snippet t is ``(t + 0.5 - s, e - t - 0.5)`` with ``[s, e]`` its instance
      clipped to ``[0, valid_len]``, each clamped at 0.
    """
    if not isinstance(temporal_scale, (int, np.integer)) or temporal_scale < 1:
        raise ValueError(f"temporal_scale must be a positive integer, got {temporal_scale!r}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if valid_len is None:
        valid_len = temporal_scale
    if not 0 <= valid_len <= temporal_scale:
        raise ValueError(f"valid_len must lie in [0, temporal_scale={temporal_scale}], got {valid_len}")
    valid_len = int(valid_len)

    segments = np.asarray(segments_units, dtype=np.float64)
    if segments.size == 0:
        segments = segments.reshape(0, 2)
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"segments_units must have shape (N, 2), got {segments.shape}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(segments):
        raise ValueError(f"got {len(segments)} segments but {len(labels)} labels")
    if not np.all(np.isfinite(segments)):
        raise ValueError("segments_units contains non-finite values")
    if np.any(segments[:, 1] < segments[:, 0]):
        bad = int(np.flatnonzero(segments[:, 1] < segments[:, 0])[0])
        raise ValueError(f"segment {bad} ends before it starts: {segments[bad].tolist()}")
    if np.any((labels < 0) | (labels >= num_classes)):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got {labels.tolist()}")

    centres = np.arange(valid_len) + 0.5
    # The snippets of each kept instance (an index array into the valid window).
    members: dict[int, np.ndarray] = {}
    for j, (start, end) in enumerate(segments):
        clipped_start, clipped_end = max(start, 0.0), min(end, float(valid_len))
        overlaps = clipped_end > clipped_start or (start == end and 0.0 <= start < valid_len)
        if not overlaps:
            continue
        covered = np.flatnonzero((centres >= start) & (centres <= end))
        if covered.size == 0:
            # Sub-snippet instance (or a sliver at the window edge): its nearest snippet centre to the clipped
            # midpoint. The centre t + 0.5 nearest to x is t = round(x - 0.5); ceil(x - 1) is the same with ties
            # going to the lower index.
            midpoint = 0.5 * (clipped_start + clipped_end)
            nearest = min(max(math.ceil(midpoint - 1.0), 0), valid_len - 1)
            covered = np.array([nearest])
        members[j] = covered

    cls = np.full(temporal_scale, num_classes, dtype=np.int64)
    instance = np.full(temporal_scale, -1, dtype=np.int64)
    # Shortest instance first (ties: lower index); a snippet already taken keeps its owner.
    lengths = segments[:, 1] - segments[:, 0]
    for j in sorted(members, key=lambda j: (lengths[j], j)):
        free = members[j][instance[members[j]] < 0]
        instance[free] = j
        cls[free] = labels[j]

    mask = np.zeros((temporal_scale, temporal_scale), dtype=np.float32)
    boundary = np.zeros((temporal_scale, 2), dtype=np.float32)
    action = np.flatnonzero(instance >= 0)
    for t in action:
        mask[members[int(instance[t])], t] = 1.0
    if action.size:
        owners = segments[instance[action]]
        centres = action + 0.5
        boundary[action, 0] = np.maximum(centres - np.maximum(owners[:, 0], 0.0), 0.0)
        boundary[action, 1] = np.maximum(np.minimum(owners[:, 1], float(valid_len)) - centres, 0.0)
    return Targets(cls=cls, mask=mask, instance=instance, valid_len=valid_len, boundary=boundary)


def batch_targets(targets: list[Targets], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Stack the targets of several windows: cls (B, T) int64, mask (B, T, T) float32, action (B, T) bool,
    instance (B, T) int64, valid (B, T) bool and, when every window has one, boundary (B, T, 2) float32."""
    if len(targets) == 0:
        raise ValueError("batch_targets needs at least one Targets")
    scales = {len(t.cls) for t in targets}
    if len(scales) != 1:
        raise ValueError(f"all targets must have the same temporal scale, got {sorted(scales)}")
    temporal_scale = scales.pop()
    instance = torch.as_tensor(np.stack([t.instance for t in targets]), device=device)
    valid_len = torch.as_tensor([t.valid_len for t in targets], device=device)
    out = {
        "cls": torch.as_tensor(np.stack([t.cls for t in targets]), device=device),
        "mask": torch.as_tensor(np.stack([t.mask for t in targets]), device=device),
        "action": instance >= 0,
        "instance": instance,
        "valid": torch.arange(temporal_scale, device=device)[None, :] < valid_len[:, None],
        "boundary": torch.as_tensor(np.stack([t.boundary for t in targets]), device=device),
    }
    return out
