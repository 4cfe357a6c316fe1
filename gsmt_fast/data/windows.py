"""Cutting a video into model windows — one function shared by training and every inference backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import SnippetGrid, resize_features, window_starts


@dataclass
class Window:
    first: int  # first native snippet of the window (0 in resize mode)
    features: np.ndarray  # (valid_len, d); in resize mode (T, d)
    grid: SnippetGrid  # window-local snippet units ↔ video seconds


def cut_windows(features: np.ndarray, input_mode: str, temporal_scale: int, overlap: float, *,
                duration: float | None = None, fps: float | None = None, feat_stride: float = 4,
                num_frames: float = 16) -> list[Window]:
    """``resize``: the whole video resampled to T snippets (needs ``duration``). ``window``: native snippets in
    windows of T overlapping by ``overlap`` (a fraction of T; needs ``fps``); the last window may be shorter
    (the caller pads it and passes its valid length)."""
    t = temporal_scale
    if input_mode == "resize":
        if duration is None:
            raise ValueError("resize mode needs the video duration (seconds)")
        return [Window(0, resize_features(features, t), SnippetGrid.resize(float(duration), t))]
    if input_mode != "window":
        raise ValueError(f"input mode must be 'window' or 'resize', got {input_mode!r}")
    if fps is None:
        raise ValueError("window mode needs fps (and feat_stride, num_frames)")
    return [Window(w, features[w:w + t], SnippetGrid.stride(float(fps), feat_stride, num_frames, first_snippet=w))
            for w in window_starts(len(features), t, overlap)]
