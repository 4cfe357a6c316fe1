"""Time ↔ snippet grid (docs/DESIGN.md, "Time grid"): one affine map per video (or window), used everywhere.

Snippet ``i`` covers the *unit interval* ``[i, i+1)`` of a continuous coordinate ``u`` and its centre is at
``u = i + 1/2``. Seconds are an affine function of ``u``:

- ``stride`` (native features): ``seconds = ((u - 1/2) * feat_stride + num_frames / 2) / fps``, so the centre of
  snippet i is at ``(i * feat_stride + num_frames / 2) / fps`` and a run ``a..b`` (inclusive) spans
  ``[(a - 1/2) * feat_stride + num_frames / 2, (b + 1/2) * feat_stride + num_frames / 2] / fps``.
- ``resize`` (whole video resampled to T snippets, ``align_corners=False``): ``seconds = u * duration / T``; snippet
  i covers ``[i, i+1) * duration / T``.

A window that starts at native snippet ``w`` uses ``SnippetGrid.stride(..., first_snippet=w)``: its local
index ``i`` is native index ``w + i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SnippetGrid:
    scale: float  # seconds per snippet unit
    offset: float  # seconds at u = 0

    @classmethod
    def stride(cls, fps: float, feat_stride: float, num_frames: float, first_snippet: int = 0) -> SnippetGrid:
        if not fps or fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if feat_stride <= 0:
            raise ValueError(f"feat_stride must be > 0, got {feat_stride}")
        scale = feat_stride / fps
        offset = ((first_snippet - 0.5) * feat_stride + num_frames / 2.0) / fps
        return cls(scale, offset)

    @classmethod
    def resize(cls, duration: float, temporal_scale: int) -> SnippetGrid:
        if not duration or duration <= 0:
            raise ValueError(f"duration must be > 0, got {duration}")
        if temporal_scale < 1:
            raise ValueError(f"temporal_scale must be >= 1, got {temporal_scale}")
        return cls(duration / temporal_scale, 0.0)

    def to_seconds(self, u):
        """Snippet units → seconds."""
        return self.offset + np.asarray(u, dtype=np.float64) * self.scale

    def to_units(self, seconds):
        """Seconds → snippet units (inverse of :meth:`to_seconds`)."""
        return (np.asarray(seconds, dtype=np.float64) - self.offset) / self.scale

    def centers(self, n: int) -> np.ndarray:
        """Centre of each of the first ``n`` snippets, in seconds."""
        return self.to_seconds(np.arange(n) + 0.5)

    def runs_to_seconds(self, start_idx, end_idx) -> np.ndarray:
        """Runs of snippets ``a..b`` (inclusive indices) → ``(N, 2)`` segments ``[start_s, end_s]``."""
        a = np.asarray(start_idx, dtype=np.float64)
        b = np.asarray(end_idx, dtype=np.float64)
        return np.stack([self.to_seconds(a), self.to_seconds(b + 1.0)], axis=-1).reshape(-1, 2)


def resize_features(features: np.ndarray, temporal_scale: int) -> np.ndarray:
    """Linear interpolation of ``(n, d)`` features to ``(T, d)`` with ``align_corners=False`` semantics."""
    feats = np.asarray(features, dtype=np.float32)
    n = feats.shape[0]
    if n == temporal_scale:
        return feats.copy()
    # Output snippet j's centre sits at input coordinate (j + 0.5) * n / T - 0.5 (clamped to the valid range).
    pos = np.clip((np.arange(temporal_scale) + 0.5) * n / temporal_scale - 0.5, 0.0, n - 1.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)[:, None]
    return feats[lo] * (1.0 - w) + feats[hi] * w


def window_starts(num_snippets: int, temporal_scale: int, overlap: float) -> list[int]:
    """First native snippet of each window of T snippets covering ``num_snippets`` with the given overlap fraction.

    Windows start at multiples of ``step = max(1, round(T * (1 - overlap)))`` until one reaches the end of the
    video; that last window may be shorter than T and is padded by the caller. A video no longer than T
    has the single window 0.
    """
    step = max(1, int(round(temporal_scale * (1.0 - overlap))))
    starts = [0]
    while starts[-1] + temporal_scale < num_snippets:
        starts.append(starts[-1] + step)
    return starts
