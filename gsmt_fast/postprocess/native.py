"""The native post-processing ops of the compiled extension ``gsmt_fast._C``: C++ threads for host arrays, one CUDA
block per window for CUDA tensors, one dispatch table (:data:`_OPS`) choosing by the inputs' device.

Both batched ops reproduce the oracle :mod:`gsmt_fast.postprocess.reference` window by window (docs/DESIGN.md,
"Post-processing" and "SoftNMS"):

* :func:`window_candidates_batch` == ``reference.window_candidates``: same candidates in the same order,
  bit-identical float64 scores.
* :func:`window_detections_batch` == ``reference.soft_nms`` of the window's candidates in seconds
  (``offset + u * scale``, no clamping: the caller clamps): same segments, labels and order; scores bit-identical
  for ``hard``/``linear`` SoftNMS and within a few ulp for ``gaussian`` (the extension uses one deterministic ``exp``
  on CPU and GPU, while NumPy's ``np.exp`` itself differs between CPUs in the last bit for some arguments).

Inputs: ``probs (B, K+1, T)`` and ``masks (B, T, T)``, float16 or float32 (each independently), as NumPy arrays or
torch tensors; for a model with the boundary head also ``boundaries (B, 2, T)`` float32, which switch the candidates
to boundary candidates (``reference`` module docstring) unless ``cfg.candidates`` is ``"masks"``. Host inputs (NumPy,
CPU tensors) run the C++ op and return NumPy arrays; CUDA tensors run the CUDA op on the tensors' device and current
stream and return CUDA tensors. No libtorch is linked: CUDA tensors are passed as
``data_ptr()`` integers. Non-contiguous inputs are copied to contiguous ones (never rejected). Only the first
``valid_len`` snippets of a window are read or checked (the padding may hold NaN).

Errors: wrong dtype -> ``TypeError``; wrong shapes, ``valid_len`` outside ``[1, T]``, NaN/inf or values outside
``[0, 1]`` in the valid part, bad time maps -> ``ValueError`` naming the array and the window. The values are checked
by the ops themselves (a per-window status word), read after the call when ``check=True`` (the default);
``check=False`` leaves the status in the result and never synchronises, e.g. inside a CUDA graph. The CUDA op keeps
at most ``_C.build_info["cuda_candidate_capacity"]`` distinct candidates per window in shared memory (trained models
give a few hundred, noisy masks thousands); a window that overflows is flagged (:data:`STATUS_OVERFLOW`) and, with
``check=True``, recomputed exactly on the CPU.

CPU threads: the op releases the GIL and splits the windows over ``num_threads`` ``std::thread`` workers (default:
all hardware threads); each thread keeps its scratch buffers between calls, so one-window calls allocate nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

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
STATUS_BOUNDARIES = 128


def extension():
    """The compiled module ``gsmt_fast._C`` (a clear error when it is not built)."""
    module = sys.modules.get("gsmt_fast._C")  # once imported: a dict lookup (this runs on every op call)
    if module is not None:
        return module
    try:
        return importlib.import_module("gsmt_fast._C")
    except ImportError as error:
        raise RuntimeError(
            f"the compiled extension gsmt_fast._C could not be imported ({error}); rebuild the package "
            "(pip install --no-build-isolation -e .) or use the reference post-processing"
        ) from error


def available() -> bool:
    """True when the extension imports and has its CPU ops (always built with it)."""
    try:
        return hasattr(extension(), "window_detections_cpu")
    except RuntimeError:
        return False


def cuda_available() -> bool:
    """True when the extension was built with CUDA and a CUDA device is visible."""
    try:
        ext = extension()
    except RuntimeError:
        return False
    return hasattr(ext, "window_detections_cuda") and ext.cuda_device_count() > 0


# ---------------------------------------------------------------------------------------------------------------
# settings: one validated extension object per stage, cached by value


@functools.lru_cache(maxsize=64)
def _candidate_settings(thresholds: tuple, top_snippets: int, long_mode: bool, score_threshold: float,
                        pre_nms_topk: int, validate: bool):
    return extension().CandidateSettings(list(thresholds), top_snippets, long_mode, score_threshold, pre_nms_topk,
                                         validate)


@functools.lru_cache(maxsize=64)
def nms_settings(method: str, sigma: float, iou_threshold: float, min_score: float, max_detections: int,
                 multiclass: bool):
    """``_C.NmsSettings`` for these SoftNMS settings (validated by the extension once, then cached)."""
    return extension().NmsSettings(method, sigma, iou_threshold, min_score, max_detections, multiclass)


def candidate_settings(cfg: InferenceConfig, validate: bool = True):
    """``_C.CandidateSettings`` of an :class:`InferenceConfig`'s candidate stage (cached by value)."""
    return _candidate_settings(tuple(float(t) for t in cfg.mask_thresholds), int(cfg.top_snippets),
                               cfg.mode == "long", float(cfg.score_threshold), int(cfg.pre_nms_topk), bool(validate))


def nms_settings_of(cfg: InferenceConfig):
    """``_C.NmsSettings`` of an :class:`InferenceConfig`'s SoftNMS stage (cached by value)."""
    return nms_settings(cfg.nms_method, float(cfg.nms_sigma), float(cfg.nms_iou_threshold), float(cfg.nms_min_score),
                        int(cfg.max_detections), bool(cfg.multiclass_nms))


# ---------------------------------------------------------------------------------------------------------------
# results


def _is_torch(x) -> bool:
    return not isinstance(x, np.ndarray) and type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def to_numpy(x) -> np.ndarray:
    """A NumPy view or copy of a NumPy array or torch tensor (copied from the device for CUDA tensors)."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class _PaddedBatch:
    """Per-window padded arrays (one dataclass field each), ``count`` and ``status`` last; all NumPy (host op) or all
    torch tensors on one device (CUDA op)."""

    def __len__(self) -> int:
        return int(self.count.shape[0])

    def map(self, fn):
        """The same batch with ``fn`` applied to every array (e.g. slicing, ``.clone()``, a host copy)."""
        return type(self)(*(fn(getattr(self, f.name)) for f in dataclasses.fields(self)))

    def to_host(self):
        """NumPy arrays (copied from the device for CUDA results)."""
        return self.map(to_numpy)

    @classmethod
    def concat(cls, parts):
        """Batches of the same kind (all host or all on one device) joined along the window axis."""
        if len(parts) == 1:
            return parts[0]
        if _is_torch(parts[0].count):
            import torch

            cat = torch.cat
        else:
            cat = np.concatenate
        return cls(*(cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


@dataclass
class CandidateBatch(_PaddedBatch):
    """Padded candidates of B windows: ``start``/``end``/``labels`` ``(B, M2)`` int32, ``scores`` ``(B, M2)``
    float64, ``units`` ``(B, M2, 2)`` float64 (each candidate's segment in snippet units: ``[a, b + 1]`` for a mask
    run; for a boundary candidate ``start`` = ``end`` = its source snippet), ``count`` ``(B,)`` int32 (row b is valid
    up to ``count[b]``; padding is -1 / 0.0), ``status`` ``(B,)`` int32 (0 = ok)."""

    start: Any
    end: Any
    labels: Any
    scores: Any
    units: Any
    count: Any
    status: Any

    # (shape after the window axis, dtype) per field; "W" is M2
    LAYOUT: ClassVar = ((("W",), "int32"), (("W",), "int32"), (("W",), "int32"), (("W",), "float64"),
                        (("W", 2), "float64"), ((), "int32"), ((), "int32"))

    def as_candidates(self) -> list[Candidates]:
        """One reference :class:`Candidates` per window (NumPy, int64 indices, ``units`` set)."""
        start, end, labels, scores, units, count = (to_numpy(a) for a in (self.start, self.end, self.labels,
                                                                         self.scores, self.units, self.count))
        return [Candidates(start=start[b, :n], end=end[b, :n], labels=labels[b, :n], scores=scores[b, :n],
                           units=units[b, :n]) for b, n in enumerate(count.tolist())]


@dataclass
class DetectionBatch(_PaddedBatch):
    """Padded detections of B windows: ``segments`` ``(B, D, 2)`` float64 seconds, ``scores`` ``(B, D)`` float64,
    ``labels`` ``(B, D)`` int32, ``count`` ``(B,)`` int32 (padding: 0.0 / -1), ``status`` ``(B,)`` int32."""

    segments: Any
    scores: Any
    labels: Any
    count: Any
    status: Any

    # (shape after the window axis, dtype) per field; "W" is D
    LAYOUT: ClassVar = ((("W", 2), "float64"), (("W",), "float64"), (("W",), "int32"), ((), "int32"), ((), "int32"))

    def as_list(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per window ``(segments (n, 2) float64, scores (n,) float64, labels (n,) int64)``, like ``soft_nms``."""
        segments, scores, labels, count = (to_numpy(a) for a in (self.segments, self.scores, self.labels,
                                                                 self.count))
        return [(segments[b, :n].copy(), scores[b, :n].copy(), labels[b, :n].astype(np.int64))
                for b, n in enumerate(count.tolist())]


# ---------------------------------------------------------------------------------------------------------------
# inputs: the one validation of the arrays on this side of the binding


@dataclass
class WindowInputs:
    """Validated probs/masks of B windows: contiguous, on one device (``device`` None for host arrays)."""

    probs: Any
    masks: Any
    dtypes: tuple[str, str]
    batch: int
    num_rows: int
    num_snippets: int
    device: Any = None

    @property
    def device_type(self) -> str:
        return "cpu" if self.device is None else "cuda"


_F32, _F16 = np.dtype(np.float32), np.dtype(np.float16)


def _dtype_name(name: str, x) -> str:
    if isinstance(x, np.ndarray) and (x.dtype == _F32 or x.dtype == _F16):  # fast path (dtype.name is slow)
        return "float32" if x.dtype == _F32 else "float16"
    dtype = str(x.dtype).replace("torch.", "")
    if dtype not in ("float16", "float32"):
        raise TypeError(f"{name} must be float16 or float32, got {dtype} (cast it first, e.g. .astype(np.float32))")
    return dtype


def _shape(probs_shape: tuple, masks_shape: tuple) -> tuple[int, int, int]:
    if len(probs_shape) != 3 or probs_shape[1] < 2:
        raise ValueError(f"probs must have shape (B, K+1, T) with K >= 1, got {probs_shape}")
    batch, num_rows, num_snippets = probs_shape
    if masks_shape != (batch, num_snippets, num_snippets):
        raise ValueError(f"masks must have shape (B, T, T) = ({batch}, {num_snippets}, {num_snippets}) to match "
                         f"probs {probs_shape}, got {masks_shape}")
    return batch, num_rows, num_snippets


def window_inputs(probs, masks) -> WindowInputs:
    """Check and place ``probs (B, K+1, T)`` / ``masks (B, T, T)``: dtypes, matching shapes, one device; host inputs
    become contiguous NumPy arrays, CUDA inputs contiguous tensors."""
    if type(probs) is np.ndarray and type(masks) is np.ndarray:  # the common host case, without conversions
        dtypes = (_dtype_name("probs", probs), _dtype_name("masks", masks))
        return WindowInputs(np.ascontiguousarray(probs), np.ascontiguousarray(masks), dtypes,
                            *_shape(probs.shape, masks.shape))
    on_cuda = [_is_torch(a) and a.is_cuda for a in (probs, masks)]
    if on_cuda[0] != on_cuda[1] or (on_cuda[0] and probs.device != masks.device):
        raise ValueError("probs and masks must be on the same device (both host arrays or both on one CUDA device)")
    probs, masks = (a if hasattr(a, "dtype") else np.asarray(a) for a in (probs, masks))
    dtypes = (_dtype_name("probs", probs), _dtype_name("masks", masks))
    shape = _shape(tuple(probs.shape), tuple(masks.shape))
    if on_cuda[0]:
        return WindowInputs(probs.detach().contiguous(), masks.detach().contiguous(), dtypes, *shape, probs.device)
    return WindowInputs(np.ascontiguousarray(to_numpy(probs)), np.ascontiguousarray(to_numpy(masks)), dtypes, *shape)


_VECTOR_DTYPES = {"valid_len": ("int32", np.int32), "scale": ("float64", np.float64), "offset": ("float64", np.float64)}


def window_vector(name: str, value, batch: int, num_snippets: int, device=None):
    """One of the per-window vectors ``valid_len`` (default T), ``scale`` or ``offset``: a scalar (for every window)
    or ``(B,)`` values. Host values are checked here and returned as a contiguous NumPy array; a CUDA tensor stays on
    ``device`` (cast to the op's dtype; its values are checked by the op's status). The result is on the host when
    ``device`` is None and ``value`` is not a CUDA tensor."""
    torch_dtype, numpy_dtype = _VECTOR_DTYPES[name]
    if _is_torch(value) and value.is_cuda:
        import torch

        if device is not None and value.device != device:
            raise ValueError(f"{name} must be on {device}, got {value.device}")
        if tuple(value.shape) != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {tuple(value.shape)}")
        if name == "valid_len" and (value.dtype.is_floating_point or value.dtype == torch.bool):
            raise TypeError(f"valid_len must be an integer tensor, got {value.dtype}")
        return value.to(getattr(torch, torch_dtype)).contiguous()
    if value is None and name == "valid_len":
        value = num_snippets
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name} must be a number or an array of numbers, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):  # one value for every window: checked once
        if name == "valid_len":
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"valid_len must be an integer or an integer array, got {value!r}")
            if not 1 <= value <= num_snippets:
                raise ValueError(f"valid_len must be in [1, T={num_snippets}], got {int(value)}")
        elif not math.isfinite(value):
            raise ValueError(f"{name} must be finite")
        elif name == "scale" and value <= 0:
            raise ValueError(f"scale must be > 0, got {value}")
        values = np.full(batch, value, dtype=numpy_dtype)
        return values if device is None else _to_device(values, device)
    else:
        values = value if type(value) is np.ndarray else to_numpy(value)
        if name == "valid_len" and values.dtype.kind not in "iu":
            raise TypeError(f"valid_len must be an integer array, got dtype {values.dtype}")
        values = np.ascontiguousarray(values, dtype=numpy_dtype)
        if values.ndim == 0:
            values = np.full(batch, values[()], dtype=numpy_dtype)
        if values.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},), got {values.shape}")
    if batch:
        if batch <= 64:  # small batches (one video, a stream): Python on the few values beats NumPy's reductions
            items = values.tolist()
            finite = name == "valid_len" or all(math.isfinite(x) for x in items)
            low, high = (min(items), max(items)) if finite else (math.nan, math.nan)
        else:
            low, high = values.min(), values.max()  # NaN propagates into both
        if name == "valid_len":
            if low < 1 or high > num_snippets:
                b = int(np.flatnonzero((values < 1) | (values > num_snippets))[0])
                where = f" (window {b})" if np.ndim(value) else ""
                raise ValueError(f"valid_len must be in [1, T={num_snippets}], got {int(values[b])}{where}")
        elif not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{name} must be finite")
        elif name == "scale" and low <= 0:
            raise ValueError(f"scale must be > 0, got {low}")
    return values if device is None else _to_device(values, device)


def _to_device(values: np.ndarray, device):
    import torch

    return torch.from_numpy(values).to(device)


def window_boundaries(boundaries, w: WindowInputs, cfg: InferenceConfig):
    """The boundary distances ``(B, 2, T)`` float32 to pass to the op, or None: None when ``boundaries`` is None or
    ``cfg.candidates`` is ``"masks"`` (the candidates then come from the masks); otherwise checked (dtype, shape, the
    inputs' device) and contiguous. Their values (finite, >= 0) are checked by the op's status."""
    if cfg.candidate_source(boundaries is not None) == "masks":
        return None
    on_cuda = _is_torch(boundaries) and boundaries.is_cuda
    if on_cuda != (w.device is not None) or (on_cuda and boundaries.device != w.device):
        raise ValueError("boundaries must be on the same device as probs and masks")
    dtype = str(boundaries.dtype).replace("torch.", "")
    if dtype != "float32":
        raise TypeError(f"boundaries must be float32 (the boundary head's output), got {dtype}")
    if tuple(boundaries.shape) != (w.batch, 2, w.num_snippets):
        raise ValueError(f"boundaries must have shape (B, 2, T) = ({w.batch}, 2, {w.num_snippets}), got "
                         f"{tuple(boundaries.shape)}")
    if on_cuda:
        return boundaries.detach().contiguous()
    return np.ascontiguousarray(to_numpy(boundaries))


def _num_threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    return int(num_threads)


def _config(cfg: InferenceConfig | None) -> InferenceConfig:
    if cfg is None:
        return InferenceConfig()
    if not isinstance(cfg, InferenceConfig):
        raise TypeError(f"cfg must be an InferenceConfig, got {type(cfg).__name__}")
    return cfg


def _raise_for_status(status: np.ndarray, valid_len, num_snippets: int) -> None:
    """A ValueError naming the first window whose status is bad (overflow aside: that is recomputed, not an error)."""
    bad = np.flatnonzero(status & ~STATUS_OVERFLOW)
    if not len(bad):
        return
    b = int(bad[0])
    code = int(status[b])
    v = int(to_numpy(valid_len)[b]) if valid_len is not None else num_snippets
    if code & STATUS_BAD_VALID_LEN:
        raise ValueError(f"valid_len must be in [1, T={num_snippets}], got {v} (window {b})")
    if code & STATUS_BAD_TIME_MAP:
        raise ValueError(f"scale must be finite and > 0, offset finite, and offset + T * scale finite (window {b})")
    for bit, message in (
        (STATUS_PROBS_NONFINITE, "probs contain NaN or inf"),
        (STATUS_PROBS_RANGE, "probs must be probabilities in [0, 1]"),
        (STATUS_MASKS_NONFINITE, "masks contain NaN or inf"),
        (STATUS_MASKS_RANGE, "masks must be probabilities in [0, 1]"),
        (STATUS_BOUNDARIES, "boundaries must be finite distances >= 0"),
    ):
        if code & bit:
            raise ValueError(f"{message} in the first valid_len={v} snippets (window {b})")
    raise ValueError(f"post-processing failed with status {code} (window {b})")


# ---------------------------------------------------------------------------------------------------------------
# the ops, one implementation per device


def _candidates_cpu(w: WindowInputs, valid, boundaries, settings, num_threads: int) -> CandidateBatch:
    return CandidateBatch(*extension().window_candidates_cpu(w.probs, w.masks, valid, settings, num_threads,
                                                             boundaries))


def _detections_cpu(w: WindowInputs, valid, boundaries, scale, offset, candidates, nms,
                    num_threads: int) -> DetectionBatch:
    return DetectionBatch(*extension().window_detections_cpu(w.probs, w.masks, valid, scale, offset, candidates, nms,
                                                             num_threads, boundaries))


def _device_batch(w: WindowInputs, valid, boundaries):
    return extension().DeviceBatch(w.probs.data_ptr(), w.dtypes[0], w.masks.data_ptr(), w.dtypes[1],
                                   valid.data_ptr(), w.batch, w.num_rows, w.num_snippets,
                                   0 if boundaries is None else boundaries.data_ptr())


def _cuda_outputs(cls, w: WindowInputs, width: int):
    """Empty outputs of ``cls`` (:class:`CandidateBatch` or :class:`DetectionBatch`) for ``w``'s windows on its device,
    and the extension's struct of their pointers."""
    import torch

    out = cls(*(torch.empty((w.batch, *(width if d == "W" else d for d in tail)), dtype=getattr(torch, dtype),
                            device=w.device) for tail, dtype in cls.LAYOUT))
    pointers = getattr(extension(), cls.__name__.replace("Batch", "Outputs"))(
        *(getattr(out, f.name).data_ptr() for f in dataclasses.fields(out)))
    return out, pointers


def _launch_cuda(w: WindowInputs, launch) -> None:
    """``launch(extension, stream)`` on the inputs' device and current stream (nothing for an empty batch)."""
    if not w.batch:
        return
    import torch

    with torch.cuda.device(w.device):
        launch(extension(), torch.cuda.current_stream(w.device).cuda_stream)


def _candidates_cuda(w: WindowInputs, valid, boundaries, settings, num_threads: int) -> CandidateBatch:
    out, pointers = _cuda_outputs(CandidateBatch, w, int(settings.pre_nms_topk))
    _launch_cuda(w, lambda ext, stream: ext.window_candidates_cuda(_device_batch(w, valid, boundaries), settings,
                                                                    pointers, stream))
    return out


def _detections_cuda(w: WindowInputs, valid, boundaries, scale, offset, candidates, nms,
                     num_threads: int) -> DetectionBatch:
    out, pointers = _cuda_outputs(DetectionBatch, w, int(nms.max_detections))
    _launch_cuda(w, lambda ext, stream: ext.window_detections_cuda(_device_batch(w, valid, boundaries),
                                                                    scale.data_ptr(), offset.data_ptr(), candidates,
                                                                    nms, pointers, stream))
    return out


def _soft_nms_cpu(segments, scores, labels, nms):
    return extension().soft_nms_cpu(segments, scores, labels, nms)


def _soft_nms_cuda(segments, scores, labels, nms):
    return extension().soft_nms_cuda(segments, scores, labels, nms)


# op name -> device type -> implementation; the one place that chooses by device.
_OPS = {
    "window_candidates": {"cpu": _candidates_cpu, "cuda": _candidates_cuda},
    "window_detections": {"cpu": _detections_cpu, "cuda": _detections_cuda},
    "soft_nms": {"cpu": _soft_nms_cpu, "cuda": _soft_nms_cuda},
}


def _op(name: str, device_type: str):
    """The implementation of op ``name`` for ``device_type`` ("cpu" or "cuda"); a clear error when the extension
    lacks it (each op is the extension function ``<name>_<device_type>``)."""
    if not hasattr(extension(), f"{name}_{device_type}"):
        hint = (" (built without CUDA: no nvcc was found, or GSMT_WITH_CUDA=OFF; rebuild with nvcc on PATH or pass "
                "CPU arrays)") if device_type == "cuda" else " (rebuild the package)"
        raise NotImplementedError(f"the {device_type.upper()} {name} op is not built: gsmt_fast._C has no "
                                  f"{name}_{device_type}(){hint}")
    return _OPS[name][device_type]


# ---------------------------------------------------------------------------------------------------------------
# public API


def window_candidates_batch(probs, masks, valid_len=None, cfg: InferenceConfig | None = None,
                            num_threads: int | None = None, *, validate: bool = True,
                            check: bool = True, boundaries=None) -> CandidateBatch:
    """Candidates (steps 1–5) of B windows at once (see the module docstring).

    Args:
        probs: ``(B, K+1, T)`` class probabilities (row K is background), float16/float32, NumPy or torch.
        masks: ``(B, T, T)`` mask probabilities (column t is the mask of snippet t), float16/float32.
        valid_len: ``(B,)`` integers in ``[1, T]``, one int for all windows, or None (= T).
        cfg: the inference settings (default :class:`InferenceConfig`).
        num_threads: CPU worker threads (default: all hardware threads); ignored for CUDA inputs.
        validate: check that the valid part is finite and in ``[0, 1]`` (as the oracle does).
        check: raise on a bad window status (CUDA: synchronises; overflowed windows are recomputed on the CPU).
        boundaries: ``(B, 2, T)`` float32 distances of a model with the boundary head (same device as probs), or
            None; with them (unless ``cfg.candidates`` is ``"masks"``) the candidates are boundary candidates.

    Returns:
        :class:`CandidateBatch` with ``M2 = cfg.pre_nms_topk`` columns; ``.as_candidates()`` gives the reference
        :class:`Candidates` per window.
    """
    cfg = _config(cfg)
    threads = _num_threads(num_threads)
    w = window_inputs(probs, masks)
    op = _op("window_candidates", w.device_type)
    bounds = window_boundaries(boundaries, w, cfg)
    valid = window_vector("valid_len", valid_len, w.batch, w.num_snippets, w.device)
    result = op(w, valid, bounds, candidate_settings(cfg, validate), threads)
    if check and w.batch:
        _check_result(result, valid, w.num_snippets, lambda index: window_candidates_batch(
            _take(w.probs, index), _take(w.masks, index), _take(valid, index), cfg, validate=validate,
            boundaries=_take(bounds, index)))
    return result


def window_detections_batch(probs, masks, valid_len=None, scale=1.0, offset=0.0, cfg: InferenceConfig | None = None,
                            num_threads: int | None = None, *, validate: bool = True,
                            check: bool = True, boundaries=None) -> DetectionBatch:
    """Candidates, then SoftNMS on their segments in seconds, ``offset + u * scale`` (``[a, b + 1]`` snippet units for
    a mask run), per window (steps 1–6; the defaults scale=1, offset=0 give snippet units, like
    ``reference.window_detections``).

    ``scale``/``offset``: scalars or ``(B,)`` float64 (NumPy or torch). Other arguments as in
    :func:`window_candidates_batch`. Returns a :class:`DetectionBatch` with ``D = cfg.max_detections`` columns.
    """
    cfg = _config(cfg)
    threads = _num_threads(num_threads)
    w = window_inputs(probs, masks)
    op = _op("window_detections", w.device_type)
    bounds = window_boundaries(boundaries, w, cfg)
    valid, scale, offset = (window_vector(name, value, w.batch, w.num_snippets, w.device)
                            for name, value in (("valid_len", valid_len), ("scale", scale), ("offset", offset)))
    result = op(w, valid, bounds, scale, offset, candidate_settings(cfg, validate), nms_settings_of(cfg), threads)
    if check and w.batch:
        check_detections(result, w.probs, w.masks, valid, scale, offset, cfg, validate=validate, boundaries=bounds)
    return result


def check_detections(result: DetectionBatch, probs, masks, valid_len, scale, offset, cfg: InferenceConfig,
                     validate: bool = True, boundaries=None) -> DetectionBatch:
    """The ``check=True`` step of :func:`window_detections_batch`, for callers that ran it with ``check=False``
    (e.g. replaying a CUDA graph): raises on a bad window status, and recomputes windows that overflowed the CUDA
    op's candidate capacity exactly on the CPU (in place). ``probs``/``masks``/``valid_len``/``scale``/``offset``
    are the op's inputs (``boundaries`` too, for boundary candidates); ``result`` is its output, on the device
    (reading the status synchronises) or already copied to the host as NumPy arrays (patched there, no further device
    sync)."""
    return _check_result(result, valid_len, int(masks.shape[-1]), lambda index: window_detections_batch(
        _take(probs, index), _take(masks, index), _take(valid_len, index), _take(scale, index),
        _take(offset, index), cfg, validate=validate, boundaries=_take(boundaries, index)))


def _take(x, index: np.ndarray):
    """Rows ``index`` (NumPy int array) of a device tensor or host array, on the host (None stays None)."""
    if x is None:
        return None
    if _is_torch(x):
        import torch

        return x[torch.from_numpy(index).to(x.device)].cpu()
    return np.asarray(x)[index]


def _check_result(result, valid_len, num_snippets: int, recompute_on_cpu):
    """Raise on a bad window status, and replace the windows that overflowed the CUDA op's candidate capacity by
    ``recompute_on_cpu(index)`` (the same op on the host, exact), in place."""
    status = result.status if type(result.status) is np.ndarray else to_numpy(result.status)
    if not status.any():
        return result
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


def soft_nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, method: str, sigma: float,
             iou_threshold: float, min_score: float, max_seg_num: int, multiclass: bool, device_type: str = "cpu"):
    """SoftNMS of host arrays (validated float64 ``(N, 2)``, float64 ``(N,)``, int64 ``(N,)``) by the extension on
    ``device_type`` (``"cuda"``: copied to the current GPU and back, synchronous). Returns ``(segments, scores,
    labels)`` in selection order."""
    op = _op("soft_nms", device_type)
    return op(segments, scores, labels, nms_settings(method, sigma, iou_threshold, min_score, max_seg_num,
                                                    multiclass))


def check_window_values(batch: int, num_snippets: int, device, valid_len, scale, offset):
    """``valid_len``/``scale``/``offset`` of B windows checked as the detection op checks them; host values stay
    on the host (NumPy), CUDA tensors on ``device``. For callers that stage the values themselves (CUDA graphs)."""
    return tuple(window_vector(name, value, batch, num_snippets, device if _is_torch(value) and value.is_cuda else None)
                 for name, value in (("valid_len", valid_len), ("scale", scale), ("offset", offset)))


__all__ = [
    "CandidateBatch",
    "DetectionBatch",
    "WindowInputs",
    "available",
    "candidate_settings",
    "check_detections",
    "check_window_values",
    "cuda_available",
    "extension",
    "nms_settings",
    "nms_settings_of",
    "soft_nms",
    "to_numpy",
    "window_candidates_batch",
    "window_detections_batch",
    "window_boundaries",
    "window_inputs",
    "window_vector",
]
