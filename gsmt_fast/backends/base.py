"""The interface every inference backend implements (docs/DESIGN.md, "Backends").

A backend computes; it never decides what a detection means. The meaning lives in the reference post-processing
(:mod:`gsmt_fast.postprocess.reference`), in the defaults of this class and in :class:`gsmt_fast.Detector`, which
merges the windows of a video identically for every backend.

One call path, used by ``Detector.detect``, the streaming sessions and ``bench/``::

    run_windows(windows, final, cfg) = post_process(windows, final, *forward(*pack(windows)), cfg)

A model with the boundary head (the boundary-refined variant) has a third output, the boundary distances; they reach
the post-processing as ``boundaries``, where the candidates come from them unless ``cfg.candidates`` is ``"masks"``
(docs/DESIGN.md, "Boundary candidates").

``final[j]`` says that window j is a whole video: its SoftNMS may run right away (in the same batched op as its
candidates); the other windows return their candidates in seconds, and the Detector suppresses them per video once
all its windows are in. A backend may replace any step by a fused one (the ``triton`` backend runs batches of final
windows as one CUDA graph), but not change what it returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import InferenceConfig
from ..data.windows import Window
from ..postprocess.reference import Candidates


@dataclass
class WindowDetections:
    """The output of one window: ``segments (N, 2)`` seconds (not clamped), ``scores (N,)`` float64, ``labels (N,)``
    int64. ``final``: SoftNMS has been applied (the window was a whole video); otherwise these are its candidates."""

    segments: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    final: bool


class Backend(ABC):
    name: str = "?"

    model = None  # the reference nn.Module the backend computes

    @property
    def model_cfg(self):
        """The model's :class:`gsmt_fast.config.GSMTConfig` (window length T, feature dimension)."""
        return self.model.cfg

    def pack(self, windows: Sequence[Window]):
        """``(B, T, d_in)`` zero-padded windows as :meth:`forward` takes them, and their valid lengths ``(B,)``.
        float32 NumPy here; a backend whose forward converts anyway packs straight into its input dtype."""
        t, d = self.model_cfg.temporal_scale, self.model_cfg.input_dim
        valid = np.array([len(w.features) for w in windows], dtype=np.int64)
        x = np.zeros((len(windows), t, d), dtype=np.float32)
        for j, w in enumerate(windows):
            x[j, : len(w.features)] = w.features
        return x, valid

    @abstractmethod
    def forward(self, windows, valid_len):
        """Packed ``windows (B, T, d_in)`` → class probabilities ``(B, K+1, T)`` and masks ``(B, T, T)`` (NumPy or
        torch tensors, as this backend's post-processing takes them), and for a model with the boundary head its
        distances ``(B, 2, T)`` float32 as a third output."""

    @abstractmethod
    def candidates(self, probs, masks, valid_len, cfg: InferenceConfig, boundaries=None) -> list[Candidates]:
        """Per-window candidates (steps 1–5, then the boundary refinement when ``boundaries (B, 2, T)`` is given) for
        a batch of windows, in window-local snippet units."""

    @abstractmethod
    def soft_nms(self, segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, cfg: InferenceConfig):
        """SoftNMS of one video's candidates (seconds) with ``cfg``'s settings; returns (segments, scores, labels)."""

    def window_detections(self, probs, masks, valid_len, scale, offset, cfg: InferenceConfig,
                          boundaries=None) -> list[tuple]:
        """Final detections of windows that are whole videos: candidates → seconds (``offset + u * scale``) →
        SoftNMS, per window. Backends with a fused batched op override this; the meaning is this default."""
        out = []
        for c, sc, off in zip(self.candidates(probs, masks, valid_len, cfg, boundaries), scale, offset):
            out.append(self.soft_nms(off + c.segments_units() * sc, c.scores, c.labels, cfg))
        return out

    def post_process(self, windows: Sequence[Window], final: Sequence[bool], probs, masks, valid_len,
                     cfg: InferenceConfig, boundaries=None) -> list[WindowDetections]:
        """The post-processing half of :meth:`run_windows`: final windows through :meth:`window_detections`, the
        others through :meth:`candidates`, converted to seconds by their window's grid. ``boundaries``: the boundary
        head's distances (B, 2, T) of a model with that head (None otherwise), dropped when ``cfg.candidates`` is
        ``"masks"``."""
        out: list = [None] * len(windows)
        valid_len = np.asarray(valid_len)
        if cfg.candidate_source(boundaries is not None) == "masks":
            boundaries = None

        def rows_of(rows):  # all rows: the arrays themselves (a gather would copy B*T*T mask values)
            if len(rows) == len(windows):
                return probs, masks, valid_len, boundaries
            return probs[rows], masks[rows], valid_len[rows], None if boundaries is None else boundaries[rows]

        rows = [j for j, is_final in enumerate(final) if is_final]
        if rows:
            scale = np.array([windows[j].grid.scale for j in rows])
            offset = np.array([windows[j].grid.offset for j in rows])
            p, m, v, b = rows_of(rows)
            for j, (segments, scores, labels) in zip(rows, self.window_detections(p, m, v, scale, offset, cfg, b)):
                out[j] = WindowDetections(segments, scores, labels, final=True)
        rows = [j for j, is_final in enumerate(final) if not is_final]
        if rows:
            p, m, v, b = rows_of(rows)
            for j, c in zip(rows, self.candidates(p, m, v, cfg, b)):
                out[j] = WindowDetections(windows[j].grid.to_seconds(c.segments_units()).reshape(-1, 2), c.scores,
                                          c.labels, final=False)
        return out

    def run_windows(self, windows: Sequence[Window], final: Sequence[bool],
                    cfg: InferenceConfig) -> list[WindowDetections]:
        """Detections of a batch of windows (see the module docstring)."""
        if len(windows) != len(final):
            raise ValueError(f"{len(windows)} windows but {len(final)} final flags")
        x, valid = self.pack(windows)
        probs, masks, *boundaries = self.forward(x, valid)
        return self.post_process(windows, final, probs, masks, valid, cfg, boundaries[0] if boundaries else None)


class ExtensionPostprocessing:
    """Post-processing by the compiled extension ``gsmt_fast._C`` (C++ threads for host arrays, the CUDA op for
    CUDA tensors): the part of the Backend interface the ``torch`` and ``triton`` backends share."""

    num_threads: int | None = None  # CPU worker threads of the C++ op (None: all)

    def candidates(self, probs, masks, valid_len, cfg: InferenceConfig, boundaries=None):
        from ..postprocess import native

        return native.window_candidates_batch(probs, masks, np.asarray(valid_len), cfg, num_threads=self.num_threads,
                                              boundaries=boundaries).as_candidates()

    def window_detections(self, probs, masks, valid_len, scale, offset, cfg: InferenceConfig, boundaries=None):
        from ..postprocess import native

        return native.window_detections_batch(probs, masks, np.asarray(valid_len), np.asarray(scale),
                                              np.asarray(offset), cfg, num_threads=self.num_threads,
                                              boundaries=boundaries).as_list()

    def soft_nms(self, segments, scores, labels, cfg: InferenceConfig):
        from ..postprocess.soft_nms import soft_nms

        return soft_nms(segments, scores, labels, **cfg.nms_kwargs(), backend="cpp")
