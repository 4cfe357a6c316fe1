"""``triton`` backend: the model as Triton kernels (:mod:`gsmt_fast.kernels.model`) + the CUDA post-processing of
``gsmt_fast._C``, batches of whole-video windows captured in CUDA graphs. The GPU default.

The masks are written in float32 at every precision: float16 masks cost accuracy (values sit next to the mask
thresholds 0.1 … 0.9, where float16's steps flip run boundaries and tie candidate scores; bench/RESULTS.md has the
measurements and ``bench/precision_emulation.py`` the CPU emulation that reproduces them).

Precision: ``fp32`` (every ``tl.dot`` in IEEE fp32, no TF32: the reference's detections up to the GEMMs' summation
order; slow), ``fp16`` (the default on a GPU: the closest to fp32 at the same speed) and ``bf16`` (tensor-core
inputs, fp32 accumulation, LayerNorm/softmax statistics in fp32).

CUDA graphs: one graph per (bucket size, inference settings); a batch of B final windows runs in the smallest
power-of-two bucket ≥ B (at most ``max_batch``; larger batches run in chunks), padded with empty windows whose
results are dropped. Host features go through :class:`_HostStaging` (a pinned buffer, chunk copies on a side stream
overlapping the previous chunk's graph); features already on the GPU are copied device-to-device into the graph's
input. The window values (valid_len, scale, offset) reach the graph in one pinned copy per call, and the detections
come back through pinned buffers with one synchronisation; the window statuses are checked on that host copy.

Under ``TRITON_INTERPRET=1`` (set before triton is imported) the same kernels run on the CPU through Triton's
interpreter — slowly, without graphs, with the C++ CPU post-processing — which is how CI tests this backend.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..config import InferenceConfig
from ..model import GSMT
from ..postprocess import native
from .base import Backend, ExtensionPostprocessing, WindowDetections

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _import_kernel_model():
    try:
        import triton  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"the triton backend needs the triton package ({error}); pip install 'gsmt_fast[triton]' "
                           "or use backend='torch'") from error
    from ..kernels import model as kernel_model

    return kernel_model


# valid_len, scale, offset of a padding window (one snippet, results dropped), the rows of _GraphBucket.window_values.
_PADDING_WINDOW = (1.0, 1.0, 0.0)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class _GraphBucket:
    """A captured forward + post-processing for ``size`` windows: static inputs, the graph, static outputs, and the
    pinned host buffers that carry the per-window values in and the detections out with one copy each way."""

    def __init__(self, backend: TritonBackend, size: int, cfg: InferenceConfig):
        t, d = backend.model_cfg.temporal_scale, backend.model_cfg.input_dim
        dev = backend.device
        self.size = size
        self.x = torch.zeros((size, t, d), dtype=backend.dtype, device=dev)  # the copy into it casts
        # valid_len, scale, offset as rows of one float64 array: one host-to-device copy per call; the graph casts
        # valid_len to int32 (exact: valid_len <= T < 2^20).
        self.window_values_host = torch.empty((3, size), dtype=torch.float64, pin_memory=True)
        self.window_values = torch.tensor(_PADDING_WINDOW, dtype=torch.float64).view(3, 1).repeat(1, size).to(dev)
        self.window_values_copied = None  # CUDA event: window_values_host may be rewritten once it has passed
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm-up: compiles the kernels outside the capture
            for _ in range(2):
                self._run(backend, cfg)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.valid, self.probs, self.masks, self.boundaries, self.result = self._run(backend, cfg)
        # The detections come back through pinned buffers: asynchronous copies of every field, one synchronisation.
        self.result_host = self.result.map(lambda a: torch.empty(a.shape, dtype=a.dtype, pin_memory=True))

    def _run(self, backend: TritonBackend, cfg: InferenceConfig):
        valid = self.window_values[0].to(torch.int32)
        return (valid, *backend._pipeline(self.x, valid, self.window_values[1], self.window_values[2], cfg))

    def set_window_values(self, n: int, valid, scale, offset) -> None:
        """Rows ``[:n]`` from host arrays (one pinned copy); the padding windows get one snippet, scale 1, offset 0."""
        if self.window_values_copied is not None:
            self.window_values_copied.synchronize()  # the previous call's copy may still be reading the buffer
        host = self.window_values_host.numpy()
        host[0, :n], host[1, :n], host[2, :n] = valid, scale, offset
        host[:, n:] = np.array(_PADDING_WINDOW)[:, None]
        self.window_values.copy_(self.window_values_host, non_blocking=True)
        self.window_values_copied = torch.cuda.Event()
        self.window_values_copied.record(torch.cuda.current_stream(self.window_values.device))

    def set_device_window_values(self, n: int, valid, scale, offset) -> None:
        """Rows ``[:n]`` from device tensors (device-to-device copies); the padding windows as above."""
        for row, values in enumerate((valid, scale, offset)):
            self.window_values[row, :n].copy_(values)
        if n < self.size:
            for row, pad in enumerate(_PADDING_WINDOW):
                self.window_values[row, n:].fill_(pad)

    def fetch(self, n: int) -> native.DetectionBatch:
        """The first ``n`` windows' detections as NumPy arrays (copies: the buffers are reused by the next call)."""
        for name in self.result.__dataclass_fields__:
            getattr(self.result_host, name)[:n].copy_(getattr(self.result, name)[:n], non_blocking=True)
        torch.cuda.current_stream(self.x.device).synchronize()
        return self.result_host.map(lambda a: a[:n].numpy().copy())


class _HostStaging:
    """Host windows to the device, chunk by chunk: the windows are copied once into a reused pinned buffer, then each
    chunk goes to one of two device buffers on a side stream, so that the copy of chunk i+1 overlaps the graph of
    chunk i. A device buffer is reused only after the graph input has taken its data (an event per buffer)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.pinned: torch.Tensor | None = None
        self.pinned_in_use = None  # CUDA event of the last asynchronous copy out of `pinned`
        self.buffers: list[torch.Tensor] = []

    def pin(self, windows) -> torch.Tensor:
        """``windows`` (float32) in the pinned buffer (an asynchronous copy needs page-locked memory)."""
        src = torch.as_tensor(windows, dtype=torch.float32)
        if self.pinned_in_use is not None:  # an asynchronous copy from the buffer may still be running
            self.pinned_in_use.synchronize()
            self.pinned_in_use = None
        if self.pinned is None or self.pinned.numel() < src.numel():
            self.pinned = torch.empty(src.numel(), dtype=torch.float32, pin_memory=True)
        staged = self.pinned[: src.numel()].view(src.shape)
        staged.copy_(src)
        return staged

    def to_device(self, windows) -> torch.Tensor:
        """One asynchronous copy of host windows to the device (the next :meth:`pin` waits for it)."""
        x = self.pin(windows).to(self.device, non_blocking=True)
        self.pinned_in_use = torch.cuda.Event()
        self.pinned_in_use.record(torch.cuda.current_stream(self.device))
        return x

    def start(self, windows, chunks: list[tuple[int, int]]) -> None:
        """Begin a call over ``chunks`` (start, stop) of host ``windows``: pins them and issues chunk 0's copy."""
        rows = max(stop - start for start, stop in chunks)
        count = 2 if len(chunks) > 1 else 1
        t, d = windows.shape[1], windows.shape[2]
        if len(self.buffers) < count or self.buffers[0].shape[0] < rows or self.buffers[0].shape[1:] != (t, d):
            self.buffers = [torch.empty((rows, t, d), dtype=torch.float32, device=self.device) for _ in range(count)]
        self.host = self.pin(windows)
        self.chunks = chunks
        self.copied: list = [None] * len(chunks)
        self.released: list = [None] * count
        self._issue(0)

    def _issue(self, i: int) -> None:
        start, stop = self.chunks[i]
        k = i % len(self.released)
        with torch.cuda.stream(self.stream):
            if self.released[k] is not None:
                self.stream.wait_event(self.released[k])
            self.buffers[k][: stop - start].copy_(self.host[start:stop], non_blocking=True)
            self.copied[i] = torch.cuda.Event()
            self.copied[i].record(self.stream)

    def chunk(self, i: int) -> torch.Tensor:
        """Chunk i on the device, once its copy is done (the current stream waits); issues chunk i+1's copy."""
        if i + 1 < len(self.chunks):
            self._issue(i + 1)
        main = torch.cuda.current_stream(self.device)
        main.wait_event(self.copied[i])
        start, stop = self.chunks[i]
        return self.buffers[i % len(self.released)][: stop - start]

    def release(self, i: int) -> None:
        """Chunk i's device buffer may be overwritten once the work queued so far on the current stream is done."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self.released[i % len(self.released)] = event


class TritonBackend(ExtensionPostprocessing, Backend):
    name = "triton"

    def __init__(self, model: GSMT, device=None, precision: str | None = None, use_graphs: bool | None = None,
                 max_batch: int = 1024):
        self.kernels = _import_kernel_model()
        interpret = interpreter_enabled()
        if device is None:
            device = "cpu" if interpret or not torch.cuda.is_available() else "cuda"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type == "cpu" and not interpret:
            raise RuntimeError("the triton backend runs on a CUDA GPU; on the CPU only under Triton's interpreter "
                               "(set TRITON_INTERPRET=1 before anything imports triton). Use backend='torch' here")
        if self.device.type == "cuda" and not native.cuda_available():
            raise RuntimeError("the triton backend needs the CUDA post-processing of gsmt_fast._C: rebuild with "
                               "nvcc on PATH (GSMT_WITH_CUDA=ON)")
        if self.device.type == "cpu" and not native.available():
            raise RuntimeError("the triton backend needs the compiled extension gsmt_fast._C")
        default = "fp16" if self.device.type == "cuda" else "fp32"
        precision = precision or default
        if precision not in PRECISIONS:
            raise ValueError(f"the triton backend supports precision {PRECISIONS}, got {precision!r}")
        if precision == "bf16" and interpret:
            raise ValueError("precision='bf16' does not run under TRITON_INTERPRET=1 (the interpreter's bf16 tl.dot "
                             "is wrong); use fp32 or fp16 on the CPU")
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.mask_dtype = torch.float32  # at every precision: see the module docstring
        self.model = model.eval()
        self.use_graphs = (self.device.type == "cuda") if use_graphs is None else bool(use_graphs)
        if self.use_graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.max_batch = _next_pow2(max_batch)
        self._weights = self.kernels.prepare_weights(model, self.dtype, self.device)
        self._buckets: dict[tuple, _GraphBucket] = {}
        self._staging = _HostStaging(self.device) if self.device.type == "cuda" else None

    # ------------------------------------------------------------------ compute
    def forward_device(self, x: torch.Tensor, valid_len: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x (B, T, d_in)`` on the device (any float dtype), ``valid_len (B,)`` int32 on the device → class
        probabilities ``(B, K+1, T)`` float32 and masks ``(B, T, T)`` float32 (and the boundary distances
        ``(B, 2, T)`` float32 of a model with the boundary head). No host synchronisation."""
        return self.kernels.forward(self._weights, self.model_cfg, x, valid_len, self.dtype, self.mask_dtype)

    def _pipeline(self, x, valid, scale, offset, cfg: InferenceConfig):
        probs, masks, *boundaries = self.forward_device(x, valid)
        boundaries = boundaries[0] if cfg.candidate_source(bool(boundaries)) == "boundaries" else None
        result = native.window_detections_batch(probs, masks, valid, scale, offset, cfg, validate=True, check=False,
                                                boundaries=boundaries)
        return probs, masks, boundaries, result

    # ------------------------------------------------------------------ Backend interface
    @torch.inference_mode()
    def forward(self, windows, valid_len):
        if isinstance(windows, torch.Tensor) and windows.device == self.device:
            x = windows
        elif self.device.type == "cuda":
            x = self._staging.to_device(windows)
        else:
            x = torch.as_tensor(windows, dtype=torch.float32)
        n = torch.as_tensor(np.asarray(valid_len), dtype=torch.int32).to(self.device)
        return self.forward_device(x, n)

    def run_windows(self, windows, final, cfg: InferenceConfig):
        """Batches of whole-video windows run as CUDA graphs (:meth:`detect_windows`); anything else as the base
        class runs it."""
        if not (self.use_graphs and len(windows) and all(final)):
            return super().run_windows(windows, final, cfg)
        x, valid = self.pack(windows)
        scale = np.array([w.grid.scale for w in windows])
        offset = np.array([w.grid.offset for w in windows])
        return [WindowDetections(*d, final=True) for d in self.detect_windows(x, valid, scale, offset, cfg).as_list()]

    @torch.inference_mode()
    def detect_windows(self, windows, valid_len, scale, offset, cfg: InferenceConfig, to_host: bool = True):
        """Final detections of B whole-video windows: ``windows (B, T, d_in)`` (NumPy/host tensor, or a tensor on
        the device), ``valid_len``, ``scale``, ``offset`` ``(B,)``. Returns a :class:`native.DetectionBatch` (on
        the host when ``to_host``, else device tensors valid until the next call). Uses the CUDA graphs."""
        if not self.use_graphs:
            probs, masks, *boundaries = self.forward(windows, valid_len)
            result = native.window_detections_batch(probs, masks, np.asarray(valid_len), np.asarray(scale),
                                                    np.asarray(offset), cfg,
                                                    boundaries=boundaries[0] if cfg.candidate_source(
                                                        bool(boundaries)) == "boundaries" else None)
            return result.to_host() if to_host else result
        b = len(windows)
        # Checked here as the CUDA post-processing op checks them; host values stay on the host (they reach the
        # graph in each bucket's one pinned copy), device tensors stay on the device.
        valid, scale, offset = native.check_window_values(b, self.model_cfg.temporal_scale, self.device, valid_len,
                                                          scale, offset)
        values_on_device = any(isinstance(v, torch.Tensor) for v in (valid, scale, offset))
        if values_on_device:  # a mix of host and device values all go to the device
            valid, scale, offset = (v if isinstance(v, torch.Tensor) else torch.from_numpy(v).to(self.device)
                                    for v in (valid, scale, offset))
        chunks = [(start, min(b, start + self.max_batch)) for start in range(0, b, self.max_batch)]
        on_device = isinstance(windows, torch.Tensor) and windows.is_cuda
        if not on_device:
            self._staging.start(windows, chunks)
        parts = []
        for i, (start, stop) in enumerate(chunks):
            n = stop - start
            bucket = self.graph_bucket(n, cfg)
            if on_device:
                bucket.x[:n].copy_(windows[start:stop])  # casts to the compute dtype on the way
            else:
                bucket.x[:n].copy_(self._staging.chunk(i))
                self._staging.release(i)
            if n < bucket.size:  # padding windows: one zero snippet each, results dropped
                bucket.x[n:].zero_()
            if values_on_device:
                bucket.set_device_window_values(n, valid[start:stop], scale[start:stop], offset[start:stop])
            else:
                bucket.set_window_values(n, valid[start:stop], scale[start:stop], offset[start:stop])
            bucket.graph.replay()
            inputs = (bucket.probs[:n], bucket.masks[:n], bucket.valid[:n], bucket.window_values[1, :n],
                      bucket.window_values[2, :n])
            boundaries = None if bucket.boundaries is None else bucket.boundaries[:n]
            if to_host:
                # All outputs come back with one synchronisation; the status is checked on the host copy.
                parts.append(native.check_detections(bucket.fetch(n), *inputs, cfg, boundaries=boundaries))
            else:
                device_part = bucket.result.map(lambda a, n=n: a[:n])
                native.check_detections(device_part, *inputs, cfg, boundaries=boundaries)
                parts.append(device_part.map(torch.clone))  # the graph reuses its outputs
        return native.DetectionBatch.concat(parts)

    def graph_bucket(self, n: int, cfg: InferenceConfig) -> _GraphBucket:
        """The captured graph that runs n final windows with these settings (built on first use)."""
        size = min(self.max_batch, _next_pow2(n))
        key = (size, tuple(vars(cfg).values()))  # the settings are baked into the graph; cheap to build per call
        if key not in self._buckets:
            self._buckets[key] = _GraphBucket(self, size, cfg)
        return self._buckets[key]
