"""``gsmt_fast.Detector``: checkpoint → detections for one video or many (SPEC §9, §12).

Flow per call: validate features → cut each video into model windows (``resize``: the whole video resampled to T;
``window``: native snippets in windows of T with ``InferenceConfig.window_overlap``, the last one padded) → the
backend's forward pass in batches → per-window candidates (SPEC §5 steps 1–5) → per video, candidates of all its
windows converted to seconds (unclamped) and merged → SoftNMS → clamped to ``[0, duration]`` when the duration is
known. Only the forward pass and the candidate/NMS arithmetic differ between backends.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .checkpoint import CheckpointMeta, read_checkpoint
from .config import GridConfig, InferenceConfig
from .data.windows import Window, cut_windows
from .model import GSMT
from .results import RESULTS_VERSION, arrays_to_records

BACKENDS = ("reference", "torch", "triton", "onnxruntime", "tensorrt")


def default_backend(device=None) -> str:
    """What ``backend="auto"`` picks: on a CUDA device (``device="cuda..."``, or ``None`` with a GPU visible)
    ``triton`` when triton and the CUDA post-processing are there; otherwise ``torch`` (model + C++
    post-processing) when the extension is built, else ``reference``."""
    from .postprocess import native

    wants_cuda = str(device).startswith("cuda") if device is not None else _cuda_visible()
    if wants_cuda and native.cuda_available():
        from .kernels import triton_available

        if triton_available():
            return "triton"
    return "torch" if native.available() else "reference"


def _cuda_visible() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no usable torch CUDA means no GPU default
        return False


@dataclass
class DetectionResult:
    """Detections of one video, sorted as SoftNMS selected them (scores non-increasing per class)."""

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
    if value is None or np.isscalar(value):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} videos")
    return value


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
        self.batch_size = int(batch_size)
        self.backend = self._make_backend(backend, model, device, precision)

    @classmethod
    def from_model(cls, model: GSMT, class_names, grid: GridConfig, input_mode: str,
                   inference: InferenceConfig | None = None, backend: str = "auto", device=None,
                   batch_size: int = 64, precision: str | None = None) -> Detector:
        """A detector over an in-memory model (used by training-time validation)."""
        meta = CheckpointMeta(model.cfg, list(class_names), grid, input_mode, inference or InferenceConfig())
        return cls(backend=backend, device=device, precision=precision, batch_size=batch_size, _model=model,
                   _meta=meta)

    @staticmethod
    def _make_backend(name: str, model: GSMT, device, precision):
        if name == "auto":
            name = default_backend(device)
        if name == "reference":
            from .backends.reference import ReferenceBackend

            return ReferenceBackend(model, device=device, precision=precision)
        if name == "torch":
            from .backends.torch_backend import TorchBackend

            return TorchBackend(model, device=device, precision=precision)
        if name == "triton":
            from .backends.triton_backend import TritonBackend

            return TritonBackend(model, device=device, precision=precision)
        if name in BACKENDS:
            raise NotImplementedError(f"backend {name!r} is not implemented yet; available: 'reference', 'torch', "
                                      "'triton'")
        raise ValueError(f"unknown backend {name!r}; valid backends: {BACKENDS} or 'auto'")

    # ------------------------------------------------------------------ windows
    def _time_params(self, i: int, fps, feat_stride, num_frames, duration) -> tuple[str, dict]:
        """Input mode and grid parameters of video ``i`` (SPEC §12): ``resize`` when the checkpoint is a resize
        model and a duration is given, or when only a duration is given; otherwise ``window`` (needs fps, from the
        call or the checkpoint's ``grid.default_fps``)."""
        fps = fps if fps is not None else (None if duration is not None else self.grid_config.default_fps)
        if duration is not None and (self.input_mode == "resize" or fps is None):
            return "resize", {"duration": float(duration)}
        if fps is None:
            raise ValueError(f"video {i}: pass fps= (window mode; also feat_stride=, num_frames= if they differ "
                             f"from the checkpoint's {self.grid_config.feat_stride}, {self.grid_config.num_frames}) "
                             f"or duration= (resize mode: the whole video resampled to T snippets)")
        grid = self.grid_config
        return "window", {"fps": float(fps), "duration": duration,
                          "feat_stride": float(feat_stride if feat_stride is not None else grid.feat_stride),
                          "num_frames": float(num_frames if num_frames is not None else grid.num_frames)}

    # ------------------------------------------------------------------ detection
    def detect(self, features, fps=None, feat_stride=None, num_frames=None, duration=None, video_id=None,
               progress: bool = False):
        """Detect actions in one video ``(n, d_in)`` or a list of videos; returns a DetectionResult or a list.

        Time metadata may be scalars or per-video lists: ``fps`` (+ ``feat_stride``, ``num_frames``) selects window
        mode (native stride, windows of T; ``duration`` then only clamps), ``duration`` alone selects resize mode
        (the whole video resampled to T). A resize-mode checkpoint uses resize mode whenever a duration is given.
        """
        single = not isinstance(features, (list, tuple))
        videos = [features] if single else list(features)
        n = len(videos)
        fps_l, stride_l, nf_l, dur_l, id_l = (_per_video(v, n, name) for v, name in
                                             ((fps, "fps"), (feat_stride, "feat_stride"),
                                              (num_frames, "num_frames"), (duration, "duration"),
                                              (video_id, "video_id")))
        windows: list[tuple[int, Window]] = []
        for i, x in enumerate(videos):
            a = _as_array(x, f"video {id_l[i] if id_l[i] is not None else i}", self.model_config.input_dim)
            mode, params = self._time_params(i, fps_l[i], stride_l[i], nf_l[i], dur_l[i])
            windows += [(i, w) for w in cut_windows(a, mode, self.model_config.temporal_scale,
                                                     self.inference.window_overlap, **params)]

        cands_per_video: list[list] = [[] for _ in range(n)]
        results: list[DetectionResult | None] = [None] * n
        remaining = [0] * n
        for i, _ in windows:
            remaining[i] += 1
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, desc="detect", unit="video")
        for s in range(0, len(windows), self.batch_size):
            batch = windows[s:s + self.batch_size]
            whole = [remaining[i] == 1 and cands_per_video[i] == [] for i, _ in batch]
            for (i, w), is_whole, out in zip(batch, whole, self._run_batch([w for _, w in batch], whole)):
                remaining[i] -= 1
                if is_whole:  # the video is this one window: the backend's fused candidates + SoftNMS
                    results[i] = self._result(*out, dur_l[i], id_l[i])
                else:
                    cands_per_video[i].append((w.grid, out))
                    if remaining[i] == 0:  # all windows of video i are done: merge, suppress, clamp
                        results[i] = self._finish_video(cands_per_video[i], dur_l[i], id_l[i])
                        cands_per_video[i] = []
                if results[i] is not None and bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return results[0] if single else results

    def _run_batch(self, batch: list[Window], whole: list[bool]) -> list:
        """Forward pass of a batch of windows; per window either its final detections ``(segments, scores,
        labels)`` (``whole``: the window is the entire video) or its :class:`Candidates`."""
        x, valid = self.pack_windows(batch)
        if all(whole):  # every window is a whole video: forward + post-processing in one backend call
            scale = np.array([w.grid.scale for w in batch])
            offset = np.array([w.grid.offset for w in batch])
            return self.backend.detections(x, valid, scale, offset, self.inference)
        probs, masks = self.backend.forward(x, valid)
        return self.post_process_batch(batch, whole, probs, masks, valid)

    def pack_windows(self, batch: list[Window]):
        """``(B, T, d_in)`` zero-padded windows in the backend's input dtype (float32 NumPy unless the backend sets
        ``input_dtype``, e.g. bf16 on the CPU, when the packing copy converts) and their valid lengths."""
        t, d = self.model_config.temporal_scale, self.model_config.input_dim
        valid = np.array([len(w.features) for w in batch], dtype=np.int64)
        input_dtype = self.backend.input_dtype
        if input_dtype is None:
            x = np.zeros((len(batch), t, d), dtype=np.float32)
            for j, w in enumerate(batch):
                x[j, : len(w.features)] = w.features
        else:
            import torch

            x = torch.empty((len(batch), t, d), dtype=input_dtype)
            for j, w in enumerate(batch):
                x[j, : len(w.features)].copy_(torch.from_numpy(np.asarray(w.features)))
                x[j, len(w.features):].zero_()
        return x, valid

    def post_process_batch(self, batch: list[Window], whole: list[bool], probs, masks, valid) -> list:
        """The post-processing half of :meth:`_run_batch` (also timed alone by ``bench/run.py``): whole-video
        windows through the backend's batched candidates + SoftNMS, the others to candidates."""
        out: list = [None] * len(batch)

        def take(rows):  # all rows: the arrays themselves (a gather would copy B*T*T mask values)
            if len(rows) == len(batch):
                return probs, masks, valid
            return probs[rows], masks[rows], valid[rows]

        rows = [j for j, is_whole in enumerate(whole) if is_whole]
        if rows:
            scale = np.array([batch[j].grid.scale for j in rows])
            offset = np.array([batch[j].grid.offset for j in rows])
            for j, det in zip(rows, self.backend.window_detections(*take(rows), scale, offset, self.inference)):
                out[j] = det
        rows = [j for j, is_whole in enumerate(whole) if not is_whole]
        if rows:
            for j, c in zip(rows, self.backend.candidates(*take(rows), self.inference)):
                out[j] = c
        return out

    def _finish_video(self, window_cands, duration, video_id) -> DetectionResult:
        segs = [grid.to_seconds(c.segments_units()) for grid, c in window_cands]
        segments = np.concatenate(segs).reshape(-1, 2) if segs else np.zeros((0, 2))
        scores = np.concatenate([c.scores for _, c in window_cands]) if window_cands else np.zeros(0)
        labels = np.concatenate([c.labels for _, c in window_cands]) if window_cands else np.zeros(0, np.int64)
        segments, scores, labels = self.backend.soft_nms(segments, scores, labels, self.inference)
        return self._result(segments, scores, labels, duration, video_id)

    def _result(self, segments, scores, labels, duration, video_id) -> DetectionResult:
        """Clamp to ``[0, duration]`` (SPEC §5 step 7) and wrap."""
        segments = np.array(segments, dtype=np.float64).reshape(-1, 2)
        segments = np.maximum(segments, 0.0)
        if duration is not None:
            segments = np.minimum(segments, float(duration))
        return DetectionResult(segments, np.asarray(scores, np.float64), np.asarray(labels, np.int64),
                               self.class_names, None if video_id is None else str(video_id))
