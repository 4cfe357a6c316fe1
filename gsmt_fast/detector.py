"""``gsmt_fast.Detector``: checkpoint → detections for one video or many (docs/DESIGN.md, "Detector").

Flow per call: validate features → cut each video into model windows (:meth:`Detector.plan`; ``resize``: the whole
video resampled to T; ``window``: native snippets in windows of T with ``InferenceConfig.window_overlap``, the last
one padded) → the backend in batches of windows (:meth:`Backend.run_windows`: forward, then candidates, or final
detections for a window that is a whole video) → per video, the candidates of all its windows in seconds (unclamped)
merged → SoftNMS → clamped to ``[0, duration]`` when the duration is known (:meth:`Detector.video_result`). Only the
forward pass and the candidate/NMS arithmetic differ between backends.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .backends.base import WindowDetections
from .checkpoint import CheckpointMeta, read_checkpoint
from .config import GridConfig, InferenceConfig
from .data.windows import Window, cut_windows
from .model import GSMT
from .results import RESULTS_VERSION, arrays_to_records

BACKENDS = ("reference", "torch", "triton", "onnxruntime", "tensorrt")
# The CPU backend of backend="auto" on CPUs without native bf16 units (AVX2). onnxruntime fp32 ran faster than
# torch fp32 on a loaded AVX2 machine, but its graph moved the anet-like validation mAP by -0.011 (scores saturated
# near 1 reorder in SoftNMS on their last bits), outside the +-0.005 a default may move; torch fp32 gives the
# reference's detections exactly (bench/RESULTS.md, "Compiled deployment").
AVX2_CPU_BACKEND = "torch"
AUTO_FALLBACK = {"tensorrt": "triton", "onnxruntime": "torch"}  # what auto takes when the compiled one fails to build


def default_backend(device=None, precision: str | None = None) -> str:
    """What ``backend="auto"`` picks (docs/DEPLOYING.md, "What auto picks").

    On a CUDA device (``device="cuda..."``, or ``None`` with a GPU visible) with the CUDA post-processing built:
    ``tensorrt`` when the tensorrt package is installed (the Detector falls back to ``triton`` when its engine does
    not build), else ``triton`` when triton is there. On a CPU: ``torch`` on CPUs with native bf16 units (its bf16
    path); elsewhere :data:`AVX2_CPU_BACKEND` (``torch`` fp32: the reference's detections exactly; see the
    constant for why not ``onnxruntime``) — and ``torch`` whenever a precision is asked for: ``fp32`` then means the
    reference model's arithmetic bit for bit (training-time validation and ``gsmt-fast detect --precision fp32``
    agree exactly). ``reference`` without the extension."""
    from .postprocess import native

    wants_cuda = str(device).startswith("cuda") if device is not None else _cuda_visible()
    if wants_cuda and native.cuda_available():
        from .backends.tensorrt_backend import tensorrt_available
        from .kernels import triton_available

        if tensorrt_available():
            return "tensorrt"
        if triton_available():
            return "triton"
    if not native.available():
        return "reference"
    from .backends.torch_backend import cpu_supports_bf16

    if cpu_supports_bf16() or AVX2_CPU_BACKEND == "torch" or precision is not None:
        return "torch"
    from .backends.onnxruntime_backend import onnxruntime_available

    return AVX2_CPU_BACKEND if onnxruntime_available() else "torch"


def _cuda_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no usable torch CUDA means no GPU default
        return False


@dataclass
class VideoPlan:
    """One video as :meth:`Detector.detect` processes it: its model windows, the duration that clamps its
    detections (None: no upper clamp) and its id."""

    windows: list[Window]
    duration: float | None = None
    video_id: str | None = None


class Detection(NamedTuple):
    """One detection, as iterating a :class:`DetectionResult` gives it: seconds, class name, score."""

    start: float
    end: float
    label: str
    score: float


@dataclass
class DetectionResult:
    """Detections of one video, sorted as SoftNMS selected them (scores non-increasing per class).

    The arrays are the primary form; iterating gives one :class:`Detection` per row, in the same order
    (``for start, end, label, score in result``)."""

    segments: np.ndarray  # (N, 2) seconds
    scores: np.ndarray  # (N,)
    labels: np.ndarray  # (N,) int class ids
    class_names: list[str] = field(repr=False, default_factory=list)
    video_id: str | None = None

    @property
    def label_names(self) -> list[str]:
        return [self.class_names[int(k)] for k in self.labels]

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self):
        names = self.label_names
        for i in range(len(self)):
            yield Detection(float(self.segments[i, 0]), float(self.segments[i, 1]), names[i], float(self.scores[i]))

    def to_records(self) -> list[dict]:
        """Official results-JSON records ``{"label", "score", "segment"}`` in selection order."""
        return arrays_to_records(self.segments, self.scores, self.labels, self.class_names)


def results_to_json(results: Sequence[DetectionResult]) -> dict:
    """Official ActivityNet results dict for a list of per-video results (each needs a ``video_id``);
    :func:`gsmt_fast.results.write_results` writes it (``payload["results"]``) to disk."""
    out = {}
    for r in results:
        if r.video_id is None:
            raise ValueError("every DetectionResult needs a video_id to be written as results JSON")
        if r.video_id in out:
            raise ValueError(f"two results have video_id {r.video_id!r}: the results JSON keeps one list per video")
        out[r.video_id] = r.to_records()
    return {"version": RESULTS_VERSION, "results": out, "external_data": {"used": False, "details": ""}}


def _as_array(x, what: str, input_dim: int) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", copy=False).float().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what}: features must be a numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{what}: features must have shape (num_snippets, {input_dim}), got {a.shape}")
    if a.shape[1] != input_dim:
        raise ValueError(f"{what}: wrong feature dimension {a.shape[1]}; this model expects {input_dim}")
    if a.shape[0] < 1:
        raise ValueError(f"{what}: empty feature sequence")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: features contain NaN or inf")
    return a


def _per_video(value, n: int, name: str):
    """One value per video from a scalar (also a 0-d array) or a sequence of n values."""
    if value is None or isinstance(value, str) or np.ndim(value) == 0:
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} videos")
    return value


def _positive_time(name: str, value, where: str) -> float | None:
    """A time parameter (fps, feat_stride, num_frames, duration) as a finite float > 0, or None."""
    if value is None:
        return None
    if isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.integer, np.floating, np.ndarray)):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{where}: {name} must be a finite number > 0, got {value!r}")
    return number


class Detector:
    """Temporal action detector over a GSMT checkpoint.

    ``Detector(ckpt, backend="auto", device=None, precision=None, inference=None)``; ``inference`` is a dict of
    :class:`InferenceConfig` fields overriding the checkpoint's defaults.
    """

    def __init__(self, ckpt: str | os.PathLike | None = None, backend: str = "auto", device=None,
                 precision: str | None = None, inference: dict | InferenceConfig | None = None,
                 batch_size: int = 64, *, _model: GSMT | None = None, _meta: CheckpointMeta | None = None):
        if _model is None:
            tensors, meta = read_checkpoint(ckpt)
            model = GSMT(meta.model)
            model.load_state_dict(tensors, strict=True)
        else:
            model, meta = _model, _meta
        self.meta = meta
        self.model_config = meta.model
        self.class_names = list(meta.class_names)
        self.grid_config: GridConfig = meta.grid
        self.input_mode = meta.input_mode
        if isinstance(inference, InferenceConfig):
            self.inference = inference
        else:
            self.inference = meta.inference.replace(**(inference or {}))
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (windows per forward pass), got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.backend = self._make_backend(backend, model, device, precision, meta)

    @classmethod
    def from_model(cls, model: GSMT, class_names, grid: GridConfig, input_mode: str,
                   inference: InferenceConfig | None = None, backend: str = "auto", device=None,
                   batch_size: int = 64, precision: str | None = None) -> Detector:
        """A detector over an in-memory model (used by training-time validation)."""
        meta = CheckpointMeta(model.cfg, list(class_names), grid, input_mode, inference or InferenceConfig())
        return cls(backend=backend, device=device, precision=precision, batch_size=batch_size, _model=model,
                   _meta=meta)

    @staticmethod
    def _make_backend(name: str, model: GSMT, device, precision, meta: CheckpointMeta | None = None):
        if device is not None:
            import torch

            kind = torch.device(device).type  # a malformed device string raises torch's RuntimeError here
            if kind == "cuda" and not torch.cuda.is_available():
                raise RuntimeError(f"device {str(device)!r} was asked for, but this PyTorch sees no CUDA device "
                                   "(torch.cuda.is_available() is False); use device='cpu'")
        if name == "auto":
            name = default_backend(device, precision)
            if name in AUTO_FALLBACK:  # a compiled backend that must export/build first: if that fails, the next
                try:
                    return Detector._make_backend(name, model, device, precision, meta)
                except Exception as e:  # noqa: BLE001 - any failure to export or build means "use the next one"
                    import warnings

                    warnings.warn(f"backend='auto': the {name} engine is not usable ({e}); using "
                                  f"{AUTO_FALLBACK[name]}", stacklevel=3)
                    name = AUTO_FALLBACK[name]
        if name == "reference":
            from .backends.reference import ReferenceBackend

            return ReferenceBackend(model, device=device, precision=precision)
        if name == "torch":
            from .backends.torch_backend import TorchBackend

            return TorchBackend(model, device=device, precision=precision)
        if name == "triton":
            from .backends.triton_backend import TritonBackend

            return TritonBackend(model, device=device, precision=precision)
        if name == "onnxruntime":
            from .backends.onnxruntime_backend import OnnxRuntimeBackend

            return OnnxRuntimeBackend(model, device=device, precision=precision, meta=meta)
        if name == "tensorrt":
            from .backends.tensorrt_backend import TensorRTBackend

            return TensorRTBackend(model, device=device, precision=precision, meta=meta)
        raise ValueError(f"unknown backend {name!r}; valid backends: {BACKENDS} or 'auto'")

    # ------------------------------------------------------------------ planning
    def _time_params(self, where: str, num_snippets: int, fps, feat_stride, num_frames,
                     duration) -> tuple[str, dict]:
        """Input mode and grid parameters of one video: ``resize`` when the checkpoint is a resize model and a
        duration is given, or when only a duration is given; otherwise ``window`` (needs fps, from the call or the
        checkpoint's ``grid.default_fps``). Every value must be a finite number > 0. In window mode ``duration``
        only clamps the detections, so it must reach the first frame of the last snippet (a feature extractor may
        pad the last clip past the end of the video, never start one after it): a shorter one means that the time
        metadata and the features disagree, and clamping would collapse the late detections."""
        fps, feat_stride, num_frames, duration = (_positive_time(name, value, where) for name, value in
                                                  (("fps", fps), ("feat_stride", feat_stride),
                                                   ("num_frames", num_frames), ("duration", duration)))
        fps = fps if fps is not None else (None if duration is not None else self.grid_config.default_fps)
        if duration is not None and (self.input_mode == "resize" or fps is None):
            return "resize", {"duration": duration}
        if fps is None:
            raise ValueError(f"{where}: pass fps= (window mode; also feat_stride=, num_frames= if they differ "
                             f"from the checkpoint's {self.grid_config.feat_stride}, {self.grid_config.num_frames}) "
                             f"or duration= (resize mode: the whole video resampled to T snippets)")
        grid = self.grid_config
        feat_stride = feat_stride if feat_stride is not None else float(grid.feat_stride)
        num_frames = num_frames if num_frames is not None else float(grid.num_frames)
        last_start = (num_snippets - 1) * feat_stride / fps
        if duration is not None and duration < last_start:
            raise ValueError(f"{where}: duration {duration:g} s is shorter than its features: the last of "
                             f"{num_snippets} snippets at fps {fps:g}, feat_stride {feat_stride:g} starts at "
                             f"{last_start:g} s (check fps/feat_stride or the duration)")
        return "window", {"fps": fps, "duration": duration, "feat_stride": feat_stride, "num_frames": num_frames}

    def plan(self, features, fps=None, feat_stride=None, num_frames=None, duration=None,
             video_id=None) -> list[VideoPlan]:
        """The model windows of one video or a list of videos (arguments as :meth:`detect`), checked: one
        :class:`VideoPlan` per video, in order."""
        videos = [features] if not isinstance(features, (list, tuple)) else list(features)
        n = len(videos)
        fps_l, stride_l, nf_l, dur_l, id_l = (_per_video(v, n, name) for v, name in
                                             ((fps, "fps"), (feat_stride, "feat_stride"),
                                              (num_frames, "num_frames"), (duration, "duration"),
                                              (video_id, "video_id")))
        ids = [str(v) for v in id_l if v is not None]
        if len(set(ids)) != len(ids):
            repeated = sorted({v for v in ids if ids.count(v) > 1})
            raise ValueError(f"video_id must be unique per call; repeated: {repeated[:10]}")
        plans = []
        for i, x in enumerate(videos):
            where = f"video {id_l[i]}" if id_l[i] is not None else f"video {i}"
            a = _as_array(x, where, self.model_config.input_dim)
            mode, params = self._time_params(where, len(a), fps_l[i], stride_l[i], nf_l[i], dur_l[i])
            windows = cut_windows(a, mode, self.model_config.temporal_scale, self.inference.window_overlap, **params)
            last = windows[-1].grid.to_seconds(self.model_config.temporal_scale)
            if not math.isfinite(float(last)):
                raise ValueError(f"{where}: the time metadata {params} puts the window's seconds out of the float "
                                 "range")
            plans.append(VideoPlan(windows, dur_l[i], None if id_l[i] is None else str(id_l[i])))
        return plans

    # ------------------------------------------------------------------ detection
    def detect(self, features, fps=None, feat_stride=None, num_frames=None, duration=None, video_id=None,
               progress: bool = False):
        """Detect actions in one video ``(n, d_in)`` or a list of videos; returns a DetectionResult or a list.

        Time metadata may be scalars or per-video lists: ``fps`` (+ ``feat_stride``, ``num_frames``) selects window
        mode (native stride, windows of T; ``duration`` then only clamps), ``duration`` alone selects resize mode
        (the whole video resampled to T). A resize-mode checkpoint uses resize mode whenever a duration is given.

        Every video's windows go through the backend in batches of ``batch_size`` (:meth:`run_windows`); once all
        windows of a video are in, :meth:`video_result` merges them.
        """
        results = self.detect_plans(self.plan(features, fps, feat_stride, num_frames, duration, video_id), progress)
        return results if isinstance(features, (list, tuple)) else results[0]

    def detect_plans(self, plans: list[VideoPlan], progress: bool = False) -> list[DetectionResult]:
        """The detection half of :meth:`detect`, on videos already checked and cut by :meth:`plan` (a caller that
        validates everything before starting, like ``gsmt-fast detect``, plans once)."""
        windows = [(i, w) for i, p in enumerate(plans) for w in p.windows]
        parts: list[list[WindowDetections]] = [[] for _ in plans]
        results: list[DetectionResult | None] = [None] * len(plans)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(plans), desc="detect", unit="video")
        for s in range(0, len(windows), self.batch_size):
            batch = windows[s:s + self.batch_size]
            final = [len(plans[i].windows) == 1 for i, _ in batch]
            for (i, _), out in zip(batch, self.run_windows([w for _, w in batch], final)):
                parts[i].append(out)
                if len(parts[i]) == len(plans[i].windows):
                    results[i] = self.video_result(parts[i], plans[i].duration, plans[i].video_id)
                    parts[i] = []
                    if bar is not None:
                        bar.update(1)
        if bar is not None:
            bar.close()
        return results

    def run_windows(self, windows: list[Window], final: list[bool]) -> list[WindowDetections]:
        """:meth:`Backend.run_windows` with this detector's settings; a batch that runs out of device memory is split
        in halves and retried (windows are independent: only the GEMMs' summation order changes with the batch),
        down to a single window, which is then reported as too large."""
        import torch

        try:
            return self.backend.run_windows(windows, final, self.inference)
        except torch.OutOfMemoryError as error:
            if len(windows) == 1:
                raise RuntimeError(f"one window of T={self.model_config.temporal_scale} snippets does not fit in the "
                                   f"device's memory ({error}); use a smaller model or another device") from error
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(windows) // 2
            return self.run_windows(windows[:half], final[:half]) + self.run_windows(windows[half:], final[half:])

    # ------------------------------------------------------------------ streaming (gsmt_fast/streaming.py)
    def stream(self, fps=None, feat_stride=None, num_frames=None, hop=None, margin=None, policy=None,
               stream_id=None):
        """A live stream: ``session.push(chunk)`` → the detections that became final (with ``gentime``),
        ``session.close()`` → the rest. See :class:`gsmt_fast.streaming.StreamSession` and docs/STREAMING.md."""
        from .streaming import StreamSession

        return StreamSession(self, fps, feat_stride, num_frames, hop, margin, policy, stream_id)

    def stream_pool(self, fps=None, feat_stride=None, num_frames=None, hop=None, margin=None, policy=None):
        """Many streams batched into one model call per ``tick()``: :class:`gsmt_fast.streaming.StreamPool`."""
        from .streaming import StreamPool

        return StreamPool(self, fps, feat_stride, num_frames, hop, margin, policy)

    def video_result(self, parts: list[WindowDetections], duration=None, video_id=None) -> DetectionResult:
        """One video's detections from the outputs of all its windows: a single final window is the result as it
        is; otherwise the windows' candidates (seconds, unclamped) are merged and suppressed by one SoftNMS. Then
        the segments are clamped to ``[0, duration]`` (``[0, inf)`` without a duration)."""
        if len(parts) == 1 and parts[0].final:
            segments, scores, labels = parts[0].segments, parts[0].scores, parts[0].labels
        else:
            segments = np.concatenate([p.segments for p in parts]).reshape(-1, 2) if parts else np.zeros((0, 2))
            scores = np.concatenate([p.scores for p in parts]) if parts else np.zeros(0)
            labels = np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64)
            segments, scores, labels = self.backend.soft_nms(segments, scores, labels, self.inference)
        segments = np.maximum(np.array(segments, dtype=np.float64).reshape(-1, 2), 0.0)
        if duration is not None:
            segments = np.minimum(segments, float(duration))
        return DetectionResult(segments, np.asarray(scores, np.float64), np.asarray(labels, np.int64),
                               self.class_names, None if video_id is None else str(video_id))
