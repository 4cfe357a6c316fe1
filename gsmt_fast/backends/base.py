"""The interface every inference backend implements.

A backend computes; it never decides what a detection means. The meaning lives in the reference post-processing
(:mod:`gsmt_fast.postprocess.reference`) and in :class:`gsmt_fast.Detector`, which turns per-window candidates into
per-video detections identically for every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..config import InferenceConfig
from ..postprocess.reference import Candidates


class Backend(ABC):
    name: str = "?"

    @abstractmethod
    def forward(self, windows: np.ndarray, valid_len: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``windows (B, T, d_in)`` float32 → class probabilities ``(B, K+1, T)`` and masks ``(B, T, T)``."""

    @abstractmethod
    def candidates(self, probs: np.ndarray, masks: np.ndarray, valid_len: np.ndarray,
                   cfg: InferenceConfig) -> list[Candidates]:
        """Per-window candidates (SPEC §5 steps 1–5) for a batch of windows."""

    @abstractmethod
    def soft_nms(self, segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, cfg: InferenceConfig):
        """SoftNMS of one video's candidates (seconds) with ``cfg``'s settings; returns (segments, scores, labels)."""

    def window_detections(self, probs, masks, valid_len, scale, offset, cfg: InferenceConfig) -> list[tuple]:
        """Final detections of windows that are whole videos: candidates → seconds (``offset + u * scale``) →
        SoftNMS, per window. Backends with a fused batched op override this; the meaning is this default."""
        out = []
        for c, sc, off in zip(self.candidates(probs, masks, valid_len, cfg), scale, offset):
            out.append(self.soft_nms(off + c.segments_units() * sc, c.scores, c.labels, cfg))
        return out
