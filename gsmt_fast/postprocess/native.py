"""Batched post-processing in the compiled extension ``gsmt_fast._C`` (C++ threads on the CPU, one CUDA block per
window on the GPU).

Both entry points reproduce the NumPy oracle (:mod:`gsmt_fast.postprocess.reference`) window by window:

* :func:`window_candidates_batch` == ``reference.window_candidates`` (SPEC §5 steps 1–5): same candidates in the
  same order, bit-identical float64 scores.
* :func:`window_detections_batch` == ``nms.soft_nms(grid.to_seconds(cands.segments_units()), cands.scores,
  cands.labels, ...)`` with ``seconds = offset + u * scale`` per window (SPEC §5 steps 1–6; no clamping, the
  caller clamps): same segments, labels and order; scores bit-identical for ``hard``/``linear`` SoftNMS and within
  a few ulp for ``gaussian`` (the extension uses one deterministic ``exp`` on CPU and GPU, while NumPy's ``np.exp``
  itself differs between CPUs: its AVX-512 version and glibc disagree in the last bit for ~5 % of arguments).

Inputs: ``probs (B, K+1, T)`` and ``masks (B, T, T)``, float16 or float32 (each independently), as NumPy arrays or
torch tensors. Host inputs (NumPy, CPU tensors) run the C++ CPU op and return NumPy arrays; CUDA tensors run the
CUDA op on the tensors' device and current stream and return CUDA tensors. No libtorch is linked: CUDA tensors are
passed as ``data_ptr()`` integers. Non-contiguous inputs are copied to contiguous ones (never rejected).
Only the first ``valid_len`` snippets of a window are read or checked (the padding may hold NaN).

Errors: wrong dtype -> ``TypeError``; wrong shapes, ``valid_len`` outside ``[1, T]``, NaN/inf or values outside
``[0, 1]`` in the valid part, bad time maps -> ``ValueError`` naming the array and the window (on CUDA the kernel
writes a per-window status word that is checked after the call when ``check=True``, the default; ``check=False``
leaves the status in the result and never synchronises, e.g. inside a CUDA graph). The CUDA op keeps at most 4096
distinct candidates per window in shared memory (``_C.build_info["cuda_candidate_capacity"]``; trained models give a
few hundred, noisy masks thousands); a window that overflows is flagged (status bit 32) and, with ``check=True``,
recomputed exactly on the CPU.

CPU threads: the op releases the GIL and splits the windows over ``num_threads`` ``std::thread`` workers (default:
all hardware threads); each thread keeps its scratch buffers between calls, so one-window calls allocate nothing.

SoftNMS alone: ``nms.soft_nms(..., backend="cpp")`` calls ``_C.soft_nms_cpu``; ``backend="cuda"`` calls
``_C.soft_nms_cuda``, which takes the same host arrays, copies them to the current GPU, runs one block and copies the
result back (synchronous: for tests and one-off use; the batched op above is the fast GPU path).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gsmt_fast.config import InferenceConfig
from gsmt_fast.postprocess.reference import Candidates

# Per-window status bits written by the extension (csrc/gsmt_core.h, StatusBits).
STATUS_PROBS_NONFINITE = 1
STATUS_MASKS_NONFINITE = 2
STATUS_PROBS_RANGE = 4
STATUS_MASKS_RANGE = 8
STATUS_BAD_VALID_LEN = 16
STATUS_OVERFLOW = 32
STATUS_BAD_TIME_MAP = 64


def _extension():
    try:
        return importlib.import_module("gsmt_fast._C")
    except ImportError as error:
        raise RuntimeError(
            f"the compiled extension gsmt_fast._C could not be imported ({error}); rebuild the package "
            "(pip install --no-build-isolation -e .) or use the reference post-processing"
        ) from error


def available() -> bool:
    """True when the extension imports and has the batched CPU ops."""
    try:
        return hasattr(_extension(), "window_detections_batch_cpu")
    except RuntimeError:
        return False


def cuda_available() -> bool:
    """True when the extension was built with CUDA and a CUDA device is visible."""
    try:
        extension = _extension()
    except RuntimeError:
        return False
    if not hasattr(extension, "window_detections_batch_cuda"):
        return False
    return extension.cuda_device_count() > 0


def _cuda_function(name: str):
    extension = _extension()
    function = getattr(extension, name, None)
    if function is None:
        raise NotImplementedError(
            f"CUDA tensors given, but gsmt_fast._C has no {name}(): the extension was built without CUDA "
            "(no nvcc found, or GSMT_WITH_CUDA=OFF); rebuild with nvcc on PATH or pass CPU arrays"
        )
    return function


# ---------------------------------------------------------------------------------------------------------------
# results


class _PaddedBatch:
    """Per-window padded arrays (one dataclass field each), ``count`` and ``status`` last; NumPy or torch."""

    def __len__(self) -> int:
        return int(self.count.shape[0])

    def map(self, fn):
        """The same batch with ``fn`` applied to every array (e.g. slicing, ``.clone()``, a host copy)."""
        return type(self)(*(fn(getattr(self, f.name)) for f in dataclasses.fields(self)))

    def to_host(self):
        """NumPy arrays (copied from the device for CUDA results)."""
        return self.map(_to_numpy)

    @classmethod
    def concat(cls, parts):
        """Batches of the same kind (all NumPy or all torch) joined along the window axis."""
        if len(parts) == 1:
            return parts[0]
        first = getattr(parts[0], dataclasses.fields(cls)[0].name)
        if _is_torch(first):
            import torch

            cat = torch.cat
        else:
            cat = np.concatenate
        return cls(*(cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


@dataclass
class CandidateBatch(_PaddedBatch):
    """Padded candidates of B windows: ``start``/``end``/``labels`` ``(B, M2)`` int32, ``scores`` ``(B, M2)``
    float64, ``count`` ``(B,)`` int32 (row b is valid up to ``count[b]``; padding is -1 / 0.0), ``status`` ``(B,)``
    int32 (0 = ok). NumPy arrays for host inputs, torch tensors on the input's device for CUDA inputs."""

    start: Any
    end: Any
    labels: Any
    scores: Any
    count: Any
    status: Any

    def as_candidates(self) -> list[Candidates]:
        """One reference :class:`Candidates` per window (NumPy, int64 indices)."""
        start, end, labels, scores, count = (
            _to_numpy(a) for a in (self.start, self.end, self.labels, self.scores, self.count)
        )
        return [
            Candidates(start=start[b, :n], end=end[b, :n], labels=labels[b, :n], scores=scores[b, :n])
            for b, n in enumerate(count.tolist())
        ]


@dataclass
class DetectionBatch(_PaddedBatch):
    """Padded detections of B windows: ``segments`` ``(B, D, 2)`` float64 seconds, ``scores`` ``(B, D)`` float64,
    ``labels`` ``(B, D)`` int32, ``count`` ``(B,)`` int32 (padding: 0.0 / -1), ``status`` ``(B,)`` int32."""

    segments: Any
    scores: Any
    labels: Any
    count: Any
    status: Any

    def as_list(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per window ``(segments (n, 2) float64, scores (n,) float64, labels (n,) int64)``, like ``soft_nms``."""
        segments, scores, labels, count = (_to_numpy(a) for a in (self.segments, self.scores, self.labels, self.count))
        return [
            (segments[b, :n].copy(), scores[b, :n].copy(), labels[b, :n].astype(np.int64))
            for b, n in enumerate(count.tolist())
        ]


# ---------------------------------------------------------------------------------------------------------------
# input handling


def _is_torch(x) -> bool:
    return not isinstance(x, np.ndarray) and type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


_F32, _F16 = np.dtype(np.float32), np.dtype(np.float16)


def _dtype_name(name: str, x) -> str:
    if isinstance(x, np.ndarray) and (x.dtype == _F32 or x.dtype == _F16):  # fast path (dtype.name is slow)
        return "float32" if x.dtype == _F32 else "float16"
    dtype = str(x.dtype).replace("torch.", "")
    if dtype not in ("float16", "float32"):
        raise TypeError(f"{name} must be float16 or float32, got {dtype} (cast it first, e.g. .astype(np.float32))")
    return dtype


def _check_shapes(probs_shape, masks_shape) -> tuple[int, int, int]:
    probs_shape, masks_shape = tuple(probs_shape), tuple(masks_shape)
    if len(probs_shape) != 3 or probs_shape[1] < 2:
        raise ValueError(f"probs must have shape (B, K+1, T) with K >= 1, got {probs_shape}")
    batch, num_rows, num_snippets = probs_shape
    if masks_shape != (batch, num_snippets, num_snippets):
        raise ValueError(
            f"masks must have shape (B, T, T) = ({batch}, {num_snippets}, {num_snippets}) to match probs "
            f"{probs_shape}, got {masks_shape}"
        )
    return batch, num_rows, num_snippets


def _host_valid_len(valid_len, batch: int, num_snippets: int) -> np.ndarray:
    if valid_len is None:
        return np.full(batch, num_snippets, dtype=np.int32)
    if isinstance(valid_len, bool):
        raise TypeError(f"valid_len must be an integer or an integer array, got {valid_len!r}")
    if isinstance(valid_len, (int, np.integer)):
        if not 1 <= int(valid_len) <= num_snippets:
            raise ValueError(f"valid_len must be in [1, T={num_snippets}], got {int(valid_len)}")
        return np.full(batch, int(valid_len), dtype=np.int32)
    else:
        values = _to_numpy(valid_len)
        if values.dtype.kind not in "iu":
            raise TypeError(f"valid_len must be an integer array, got dtype {values.dtype}")
        if values.shape != (batch,):
            raise ValueError(f"valid_len must have shape ({batch},), got {values.shape}")
    if len(values) and (values.min() < 1 or values.max() > num_snippets):
        b = int(np.flatnonzero((values < 1) | (values > num_snippets))[0])
        raise ValueError(f"valid_len must be in [1, T={num_snippets}], got {int(values[b])} (window {b})")
    return np.ascontiguousarray(values, dtype=np.int32)


def _host_time_map(name: str, value, batch: int) -> np.ndarray:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if name != "scale" or value > 0:  # the common scalar case, without NumPy reductions
            return np.full(batch, float(value), dtype=np.float64)
    array = np.asarray(_to_numpy(value), dtype=np.float64)
    if array.ndim == 0:
        array = np.full(batch, float(array), dtype=np.float64)
    if array.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    if name == "scale" and (array <= 0).any():
        raise ValueError(f"scale must be > 0, got {array[array <= 0][0]}")
    return np.ascontiguousarray(array)


def _config(cfg: InferenceConfig | None) -> InferenceConfig:
    if cfg is None:
        return InferenceConfig()
    if not isinstance(cfg, InferenceConfig):
        raise TypeError(f"cfg must be an InferenceConfig, got {type(cfg).__name__}")
    return cfg


def _candidate_kwargs(cfg: InferenceConfig) -> dict:
    return dict(
        thresholds=[float(t) for t in cfg.mask_thresholds],
        top_snippets=int(cfg.top_snippets),
        long_mode=cfg.mode == "long",
        score_threshold=float(cfg.score_threshold),
        pre_nms_topk=int(cfg.pre_nms_topk),
    )


def _nms_kwargs(cfg: InferenceConfig) -> dict:
    return dict(
        nms_method=cfg.nms_method,
        sigma=float(cfg.nms_sigma),
        iou_threshold=float(cfg.nms_iou_threshold),
        min_score=float(cfg.nms_min_score),
        max_detections=int(cfg.max_detections),
        multiclass=bool(cfg.multiclass_nms),
    )


def _raise_for_status(status: np.ndarray, valid_len, num_snippets: int) -> None:
    if not status.any():
        return
    bad = np.flatnonzero(status & ~STATUS_OVERFLOW)
    if not len(bad):
        return
    b = int(bad[0])
    code = int(status[b])
    v = int(_to_numpy(valid_len)[b]) if valid_len is not None else num_snippets
    if code & STATUS_BAD_VALID_LEN:
        raise ValueError(f"valid_len must be in [1, T={num_snippets}], got {v} (window {b})")
    if code & STATUS_BAD_TIME_MAP:
        raise ValueError(f"scale must be finite and > 0 and offset finite (window {b})")
    for bit, message in (
        (STATUS_PROBS_NONFINITE, "probs contain NaN or inf"),
        (STATUS_PROBS_RANGE, "probs must be probabilities in [0, 1]"),
        (STATUS_MASKS_NONFINITE, "masks contain NaN or inf"),
        (STATUS_MASKS_RANGE, "masks must be probabilities in [0, 1]"),
    ):
        if code & bit:
            raise ValueError(f"{message} in the first valid_len={v} snippets (window {b})")
    raise ValueError(f"post-processing failed with status {code} (window {b})")


def _num_threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    return int(num_threads)


def _prepare(probs, masks):
    """-> (on_cuda, probs, masks, dtypes, (B, K+1, T)); host inputs become contiguous NumPy arrays."""
    if isinstance(probs, np.ndarray) and isinstance(masks, np.ndarray):  # the common host case, fast
        probs_dtype, masks_dtype = _dtype_name("probs", probs), _dtype_name("masks", masks)
        shape = _check_shapes(probs.shape, masks.shape)
        return False, np.ascontiguousarray(probs), np.ascontiguousarray(masks), (probs_dtype, masks_dtype), shape
    probs_cuda = _is_torch(probs) and probs.is_cuda
    masks_cuda = _is_torch(masks) and masks.is_cuda
    if probs_cuda != masks_cuda or (probs_cuda and probs.device != masks.device):
        raise ValueError("probs and masks must be on the same device (both host arrays or both on one CUDA device)")
    probs_dtype = _dtype_name("probs", probs if hasattr(probs, "dtype") else np.asarray(probs))
    masks_dtype = _dtype_name("masks", masks if hasattr(masks, "dtype") else np.asarray(masks))
    shape = _check_shapes(
        probs.shape if hasattr(probs, "shape") else np.shape(probs),
        masks.shape if hasattr(masks, "shape") else np.shape(masks),
    )
    if probs_cuda:
        return True, probs.detach().contiguous(), masks.detach().contiguous(), (probs_dtype, masks_dtype), shape
    probs = np.ascontiguousarray(_to_numpy(probs))
    masks = np.ascontiguousarray(_to_numpy(masks))
    return False, probs, masks, (probs_dtype, masks_dtype), shape


def _launch_cuda(function, probs, masks, dtypes, valid, num_rows: int, validate: bool, cfg, **arguments) -> None:
    """One CUDA op call on the inputs' device and current stream: the arguments both ops share, plus ``arguments``
    (tensors are passed as their data pointers, anything else as it is). Nothing to launch for an empty batch."""
    import torch

    batch = int(valid.shape[0])
    if not batch:
        return
    device = probs.device
    pointers = {k: (v.data_ptr() if isinstance(v, torch.Tensor) else v) for k, v in arguments.items()}
    with torch.cuda.device(device):
        function(probs=probs.data_ptr(), probs_dtype=dtypes[0], masks=masks.data_ptr(), masks_dtype=dtypes[1],
                 valid_len=valid.data_ptr(), batch=batch, num_rows=num_rows, T=int(masks.shape[-1]),
                 validate=validate, stream=torch.cuda.current_stream(device).cuda_stream, **_candidate_kwargs(cfg),
                 **pointers)


def _window_vector(value, batch: int, dtype, device, name: str, num_snippets: int):
    """valid_len / scale / offset, checked: a device tensor stays on the device (as ``dtype``; its values are checked
    by the kernel), host values are checked here and stay on the host (NumPy)."""
    import torch

    if _is_torch(value) and value.is_cuda:
        if value.device != device:
            raise ValueError(f"{name} must be on {device}, got {value.device}")
        if tuple(value.shape) != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(value.shape)}")
        if name == "valid_len" and (value.dtype.is_floating_point or value.dtype == torch.bool):
            raise TypeError(f"valid_len must be an integer tensor, got {value.dtype}")
        return value.to(dtype).contiguous()
    if name == "valid_len":
        return _host_valid_len(value, batch, num_snippets)
    return _host_time_map(name, value, batch)


def _cuda_vector(value, batch: int, dtype, device, name: str, num_snippets: int):
    """valid_len / scale / offset for the CUDA op: :func:`_window_vector`, on the device."""
    import torch

    checked = _window_vector(value, batch, dtype, device, name, num_snippets)
    return checked if _is_torch(checked) else torch.from_numpy(checked).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# public API


def window_candidates_batch(
    probs,
    masks,
    valid_len=None,
    cfg: InferenceConfig | None = None,
    num_threads: int | None = None,
    *,
    validate: bool = True,
    check: bool = True,
) -> CandidateBatch:
    """SPEC §5 steps 1–5 on B windows at once (see the module docstring).

    Args:
        probs: ``(B, K+1, T)`` class probabilities (row K is background), float16/float32, NumPy or torch.
        masks: ``(B, T, T)`` mask probabilities (column t is the mask of snippet t), float16/float32.
        valid_len: ``(B,)`` integers in ``[1, T]``, one int for all windows, or None (= T).
        cfg: the inference settings (default :class:`InferenceConfig`).
        num_threads: CPU worker threads (default: all hardware threads); ignored for CUDA inputs.
        validate: check that the valid part is finite and in ``[0, 1]`` (as the oracle does).
        check: raise on a bad window status (CUDA: synchronises; overflowed windows are recomputed on the CPU).

    Returns:
        :class:`CandidateBatch` with ``M2 = cfg.pre_nms_topk`` columns; ``.as_candidates()`` gives the reference
        :class:`Candidates` per window.
    """
    cfg = _config(cfg)
    on_cuda, probs, masks, dtypes, (batch, num_rows, num_snippets) = _prepare(probs, masks)
    threads = _num_threads(num_threads)
    if not on_cuda:
        valid = _host_valid_len(valid_len, batch, num_snippets)
        start, end, labels, scores, count, status = _extension().window_candidates_batch_cpu(
            probs, masks, valid, num_threads=threads, validate=validate, **_candidate_kwargs(cfg)
        )
        if check:
            _raise_for_status(status, valid, num_snippets)
        return CandidateBatch(start, end, labels, scores, count, status)

    import torch

    function = _cuda_function("window_candidates_batch_cuda")
    device = probs.device
    valid = _cuda_vector(valid_len, batch, torch.int32, device, "valid_len", num_snippets)
    m2 = int(cfg.pre_nms_topk)
    start = torch.empty((batch, m2), dtype=torch.int32, device=device)
    end, labels = torch.empty_like(start), torch.empty_like(start)
    scores = torch.empty((batch, m2), dtype=torch.float64, device=device)
    count = torch.empty(batch, dtype=torch.int32, device=device)
    status = torch.empty_like(count)
    _launch_cuda(function, probs, masks, dtypes, valid, num_rows, validate, cfg,
                 out_start=start, out_end=end, out_label=labels, out_score=scores, out_count=count, out_status=status)
    result = CandidateBatch(start, end, labels, scores, count, status)
    if check and batch:
        _check_cuda_result(result, valid, num_snippets, lambda index: window_candidates_batch(
            _take(probs, index), _take(masks, index), _take(valid, index), cfg, validate=validate))
    return result


def window_detections_batch(
    probs,
    masks,
    valid_len=None,
    scale=1.0,
    offset=0.0,
    cfg: InferenceConfig | None = None,
    num_threads: int | None = None,
    *,
    validate: bool = True,
    check: bool = True,
) -> DetectionBatch:
    """SPEC §5 steps 1–6 on B windows: candidates, then SoftNMS on ``[offset + a*scale, offset + (b+1)*scale]``
    seconds per window (the defaults scale=1, offset=0 give snippet units, like ``reference.window_detections``).

    ``scale``/``offset``: scalars or ``(B,)`` float64 (NumPy or torch). Other arguments as in
    :func:`window_candidates_batch`. Returns a :class:`DetectionBatch` with ``D = cfg.max_detections`` columns.
    """
    cfg = _config(cfg)
    on_cuda, probs, masks, dtypes, (batch, num_rows, num_snippets) = _prepare(probs, masks)
    threads = _num_threads(num_threads)
    if not on_cuda:
        valid = _host_valid_len(valid_len, batch, num_snippets)
        scale_host = _host_time_map("scale", scale, batch)
        offset_host = _host_time_map("offset", offset, batch)
        segments, scores, labels, count, status = _extension().window_detections_batch_cpu(
            probs, masks, valid, scale_host, offset_host, num_threads=threads, validate=validate,
            **_candidate_kwargs(cfg), **_nms_kwargs(cfg),
        )  # fmt: skip
        if check:
            _raise_for_status(status, valid, num_snippets)
        return DetectionBatch(segments, scores, labels, count, status)

    import torch

    function = _cuda_function("window_detections_batch_cuda")
    device = probs.device
    valid = _cuda_vector(valid_len, batch, torch.int32, device, "valid_len", num_snippets)
    scale_dev = _cuda_vector(scale, batch, torch.float64, device, "scale", num_snippets)
    offset_dev = _cuda_vector(offset, batch, torch.float64, device, "offset", num_snippets)
    d = int(cfg.max_detections)
    segments = torch.empty((batch, d, 2), dtype=torch.float64, device=device)
    scores = torch.empty((batch, d), dtype=torch.float64, device=device)
    labels = torch.empty((batch, d), dtype=torch.int32, device=device)
    count = torch.empty(batch, dtype=torch.int32, device=device)
    status = torch.empty_like(count)
    _launch_cuda(function, probs, masks, dtypes, valid, num_rows, validate, cfg, **_nms_kwargs(cfg),
                 scale=scale_dev, offset=offset_dev, out_segments=segments, out_score=scores, out_label=labels,
                 out_count=count, out_status=status)
    result = DetectionBatch(segments, scores, labels, count, status)
    if check and batch:
        check_detections(result, probs, masks, valid, scale_dev, offset_dev, cfg, validate=validate)
    return result


def check_detections(result: DetectionBatch, probs, masks, valid_len, scale, offset, cfg: InferenceConfig,
                     validate: bool = True) -> DetectionBatch:
    """The ``check=True`` step of the CUDA :func:`window_detections_batch`, for callers that ran it with
    ``check=False`` (e.g. replaying a CUDA graph): raises on a bad window status, and recomputes windows that
    overflowed the CUDA op's candidate capacity exactly on the CPU (in place). ``probs``/``masks``/``valid_len``/
    ``scale``/``offset`` are the op's CUDA inputs; ``result`` is its output, on the device (reading the status
    synchronises) or already copied to the host as NumPy arrays (patched there, no further device sync)."""
    return _check_cuda_result(result, valid_len, int(masks.shape[-1]), lambda index: window_detections_batch(
        _take(probs, index), _take(masks, index), _take(valid_len, index), _take(scale, index),
        _take(offset, index), cfg, validate=validate))


def _take(x, index: np.ndarray):
    """Rows ``index`` (NumPy int array) of a device tensor or host array, on the host."""
    if _is_torch(x):
        import torch

        return x[torch.from_numpy(index).to(x.device)].cpu()
    return np.asarray(x)[index]


def _check_cuda_result(result, valid_len, num_snippets: int, recompute_on_cpu):
    """Raise on a bad window status of a CUDA op, and replace the windows that overflowed its candidate capacity by
    ``recompute_on_cpu(index)`` (the same op on the host, exact; ``index`` a NumPy array), in place. ``result``'s
    arrays are device tensors (reading the status synchronises) or host NumPy arrays."""
    status = _to_numpy(result.status)
    _raise_for_status(status, valid_len, num_snippets)
    overflow = np.flatnonzero(status & STATUS_OVERFLOW)
    if len(overflow):
        cpu = recompute_on_cpu(overflow)
        for field in dataclasses.fields(result):
            target, value = getattr(result, field.name), getattr(cpu, field.name)
            if _is_torch(target):
                import torch

                target[torch.from_numpy(overflow).to(target.device)] = torch.from_numpy(value).to(target.device)
            else:
                target[overflow] = value
    return result


__all__ = [
    "CandidateBatch",
    "DetectionBatch",
    "available",
    "check_detections",
    "cuda_available",
    "window_candidates_batch",
    "window_detections_batch",
]
