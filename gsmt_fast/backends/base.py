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
    # What Detector packs windows into: None = float32 NumPy; a torch dtype when the forward would convert anyway.
    input_dtype = None

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

    def detections(self, windows, valid_len, scale, offset, cfg: InferenceConfig) -> list[tuple]:
        """Forward + :meth:`window_detections` for windows that are whole videos (what ``Detector`` calls for such
        a batch); backends that fuse both (CUDA graphs) override it."""
        probs, masks = self.forward(windows, valid_len)
        return self.window_detections(probs, masks, valid_len, scale, offset, cfg)


class ExtensionPostprocessing:
    """Post-processing by the compiled extension ``gsmt_fast._C`` (C++ threads for host arrays, the CUDA op for
    CUDA tensors): the part of the Backend interface the ``torch`` and ``triton`` backends share."""

    num_threads: int | None = None  # CPU worker threads of the C++ op (None: all)

    def candidates(self, probs, masks, valid_len, cfg: InferenceConfig):
        from ..postprocess import native

        return native.window_candidates_batch(probs, masks, np.asarray(valid_len), cfg,
                                              num_threads=self.num_threads).as_candidates()

    def window_detections(self, probs, masks, valid_len, scale, offset, cfg: InferenceConfig):
        from ..postprocess import native

        return native.window_detections_batch(probs, masks, np.asarray(valid_len), np.asarray(scale),
                                              np.asarray(offset), cfg, num_threads=self.num_threads).as_list()

    def soft_nms(self, segments, scores, labels, cfg: InferenceConfig):
        from ..postprocess.nms import soft_nms

        return soft_nms(segments, scores, labels, **cfg.nms_kwargs(), backend="cpp")
