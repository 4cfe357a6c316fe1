"""``triton`` backend: the model as Triton kernels (``gsmt_fast.kernels``) + the CUDA post-processing of
``gsmt_fast._C``, captured in CUDA graphs per batch bucket. The GPU default.

Forward pass of a batch of B windows, activations channels-last ``(B*T, C)`` in the compute dtype:

1. ``fused_linear``: input projection + positional encoding (``row_add``);
2. per transformer block: ``fused_linear`` (LayerNorm 1 as GEMM prologue → QKV), ``flash_attention`` (online
   softmax, padded keys masked, no T×T scores in memory), ``fused_linear`` (output projection + residual),
   ``fused_linear`` (LayerNorm 2 prologue → FC → activation + residual);
3. ``layer_norm_rows``: the final LayerNorm, padded snippets written as zeros (as ``GSMT.embed``);
4. ``class_head``: class logits → softmax (float32 ``(B, K+1, T)``);
5. ``mask_head``: conv k=3 + ReLU, conv k=3 + ReLU, conv k=1 → T + sigmoid, the T×T masks written once, in float32
   at every precision. Rounding the masks to float16 is what cost accuracy: on the H100 (2026-11-26) fp16 masks
   moved the thumos-like validation mAP by −0.0058 (bf16 −0.0055), and a PyTorch emulation of these kernels'
   roundings reproduced that (−0.0053) and showed −0.025 on anet-like, while the same emulation with float32 masks
   moved it by +0.0000 / −0.0000 (fp16) and +0.0032 / +0.0008 (bf16). Mask values sit next to the thresholds
   0.1 … 0.9, where float16's 2^-11 steps flip run boundaries and tie candidate scores.

Then ``native.window_detections_batch`` on the GPU (one block per window), with ``check=False`` inside the graph and
the status checked after the replay (:func:`gsmt_fast.postprocess.native.check_detections`).

Precision: ``fp32`` (every ``tl.dot`` in IEEE fp32, no TF32: the reference's detections up to the GEMMs' summation
order; slow, ~12–20 TFLOP/s on an H100), ``fp16`` (the default on a GPU) and ``bf16`` (tensor-core inputs, fp32
accumulation, LayerNorm/softmax statistics in fp32, float32 masks). fp16 is the default because it is the closest to
fp32 at the same speed (emulated above: ±0.0000 on both synthetic splits); ``bench/gpu_check.sh`` measures both on the
GPU. ``bench/precision_emulation.py`` is the emulation.

CUDA graphs: one graph per (bucket size, inference settings); a batch of B windows runs in the smallest
power-of-two bucket ≥ B (at most ``max_batch``; larger batches run in chunks), padded with empty windows whose
results are dropped. Host features are staged through a pinned buffer and copied asynchronously on a side stream,
so the copy of chunk i+1 overlaps the graph of chunk i. Features already on the GPU are copied device-to-device into
the graph's input. Host valid_len/scale/offset reach the graph in one pinned copy per call, and the detections come
back through pinned buffers with one synchronisation; the window statuses are checked on that host copy.

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
from .base import Backend, ExtensionPostprocessing

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _import_kernels():
    try:
        import triton  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"the triton backend needs the triton package ({error}); pip install 'gsmt_fast[triton]' "
                           "or use backend='torch'") from error
    from ..kernels import attention, class_head, layer_norm, linear, mask_head

    return linear, attention, layer_norm, class_head, mask_head


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
            self.valid, self.probs, self.masks, self.result = self._run(backend, cfg)
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

    def fetch(self, n: int) -> native.DetectionBatch:
        """The first ``n`` windows' detections as NumPy arrays (copies: the buffers are reused by the next call)."""
        for name in self.result.__dataclass_fields__:
            getattr(self.result_host, name)[:n].copy_(getattr(self.result, name)[:n], non_blocking=True)
        torch.cuda.current_stream(self.x.device).synchronize()
        return self.result_host.map(lambda a: a[:n].numpy().copy())


class TritonBackend(ExtensionPostprocessing, Backend):
    name = "triton"

    def __init__(self, model: GSMT, device=None, precision: str | None = None, use_graphs: bool | None = None,
                 max_batch: int = 1024):
        self.kernels = _import_kernels()
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
        self.model_cfg = model.cfg
        self.use_graphs = (self.device.type == "cuda") if use_graphs is None else bool(use_graphs)
        if self.use_graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.max_batch = _next_pow2(max_batch)
        self._weights = self._prepare_weights(model)
        self._buckets: dict[tuple, _GraphBucket] = {}
        self._pinned: torch.Tensor | None = None
        self._pinned_in_use = None  # CUDA event of the last asynchronous copy out of _pinned (forward())
        self._stages: list[torch.Tensor] = []  # device staging buffers of detect_windows' host path
        self._copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    # ------------------------------------------------------------------ weights
    def _prepare_weights(self, model: GSMT) -> dict:
        """The model's parameters on the device, matrices in the compute dtype (cast once), LayerNorm and bias
        vectors in float32 for the fp32 statistics; all contiguous."""
        def mat(t):
            return t.detach().to(self.device, self.dtype).contiguous()

        def vec(t):
            return None if t is None else t.detach().to(self.device, torch.float32).contiguous()

        w = {"in_w": mat(model.input_proj.weight), "in_b": vec(model.input_proj.bias),
             "pos": None if model.pos_embed is None else mat(model.pos_embed), "blocks": []}
        for block in model.blocks:
            w["blocks"].append({
                "ln1": (vec(block.norm1.weight), vec(block.norm1.bias), block.norm1.eps),
                "qkv_w": mat(block.attn.qkv.weight), "qkv_b": vec(block.attn.qkv.bias),
                "proj_w": mat(block.attn.proj.weight), "proj_b": vec(block.attn.proj.bias),
                "ln2": (vec(block.norm2.weight), vec(block.norm2.bias), block.norm2.eps),
                "fc_w": mat(block.fc.weight), "fc_b": vec(block.fc.bias),
            })
        w["ln"] = (vec(model.norm.weight), vec(model.norm.bias), model.norm.eps)
        w["cls_w"], w["cls_b"] = mat(model.cls_head.weight.squeeze(-1)), vec(model.cls_head.bias)
        conv1, conv2, conv3 = model.mask_head[0], model.mask_head[2], model.mask_head[4]
        w["mask"] = (mat(conv1.weight), vec(conv1.bias), mat(conv2.weight), vec(conv2.bias),
                     mat(conv3.weight.squeeze(-1)), vec(conv3.bias))
        return w

    # ------------------------------------------------------------------ compute
    def forward_device(self, x: torch.Tensor, valid_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, T, d_in)`` on the device (any float dtype), ``valid_len (B,)`` int32 on the device → class
        probabilities ``(B, K+1, T)`` float32 and masks ``(B, T, T)`` (float32 or float16). No host synchronisation."""
        linear, attention, layer_norm, class_head, mask_head = self.kernels
        cfg, w = self.model_cfg, self._weights
        b, t, d = x.shape
        c = cfg.hidden_dim
        act = "relu" if cfg.activation == "relu" else "gelu"
        rows = x.reshape(b * t, d).to(self.dtype)
        h = linear.fused_linear(rows, w["in_w"], w["in_b"], row_add=w["pos"], row_add_period=t)
        for blk in w["blocks"]:
            ln_w, ln_b, eps = blk["ln1"]
            qkv = linear.fused_linear(h, blk["qkv_w"], blk["qkv_b"], ln_weight=ln_w, ln_bias=ln_b, ln_eps=eps)
            y = attention.flash_attention(qkv.view(b, t, 3 * c), cfg.num_heads, valid_len)
            h = linear.fused_linear(y.view(b * t, c), blk["proj_w"], blk["proj_b"], residual=h)
            ln_w, ln_b, eps = blk["ln2"]
            h = linear.fused_linear(h, blk["fc_w"], blk["fc_b"], ln_weight=ln_w, ln_bias=ln_b, ln_eps=eps,
                                    activation=act, residual=h)
        ln_w, ln_b, eps = w["ln"]
        e = layer_norm.layer_norm_rows(h, ln_w, ln_b, eps, valid_len=valid_len, period=t).view(b, t, c)
        # No top-M1 selection here: the post-processing op selects the snippets itself.
        probs = class_head.class_head(e, w["cls_w"], w["cls_b"], valid_len, None).probs
        masks = mask_head.mask_head(e, *w["mask"], out_dtype=self.mask_dtype)
        return probs, masks

    def _pipeline(self, x, valid, scale, offset, cfg: InferenceConfig):
        probs, masks = self.forward_device(x, valid)
        result = native.window_detections_batch(probs, masks, valid, scale, offset, cfg, validate=True, check=False)
        return probs, masks, result

    # ------------------------------------------------------------------ Backend interface
    @torch.inference_mode()
    def forward(self, windows, valid_len):
        x = self._to_device(windows)
        n = torch.as_tensor(np.asarray(valid_len), dtype=torch.int32).to(self.device)
        return self.forward_device(x, n)

    def detections(self, windows, valid_len, scale, offset, cfg: InferenceConfig) -> list[tuple]:
        return self.detect_windows(windows, valid_len, scale, offset, cfg).as_list()

    @torch.inference_mode()
    def detect_windows(self, windows, valid_len, scale, offset, cfg: InferenceConfig, to_host: bool = True):
        """Final detections of B whole-video windows: ``windows (B, T, d_in)`` (NumPy/host tensor, or a tensor on
        the device), ``valid_len``, ``scale``, ``offset`` ``(B,)``. Returns a :class:`native.DetectionBatch` (on
        the host when ``to_host``, else device tensors valid until the next call). Uses the CUDA graphs."""
        if not self.use_graphs:
            probs, masks = self.forward(windows, valid_len)
            result = native.window_detections_batch(probs, masks, np.asarray(valid_len), np.asarray(scale),
                                                    np.asarray(offset), cfg)
            return result.to_host() if to_host else result
        b = len(windows)
        t = self.model_cfg.temporal_scale
        # Checked here as the CUDA post-processing op checks them; host values stay on the host (they reach the
        # graph in each bucket's one pinned copy), device tensors stay on the device.
        valid = native._window_vector(valid_len, b, torch.int32, self.device, "valid_len", t)
        scale = native._window_vector(scale, b, torch.float64, self.device, "scale", t)
        offset = native._window_vector(offset, b, torch.float64, self.device, "offset", t)
        values_on_device = any(isinstance(v, torch.Tensor) for v in (valid, scale, offset))
        if values_on_device:  # a mix of host and device values all go to the device
            valid, scale, offset = (v if isinstance(v, torch.Tensor) else torch.from_numpy(v).to(self.device)
                                    for v in (valid, scale, offset))
        chunks = [(start, min(b, start + self.max_batch)) for start in range(0, b, self.max_batch)]
        main = torch.cuda.current_stream(self.device)
        on_device = isinstance(windows, torch.Tensor) and windows.is_cuda
        if not on_device:
            # Host features: pinned staging, then chunk i+1 is copied to the device on a side stream while the
            # graph of chunk i runs (two device staging buffers, each released once its data is in the graph).
            host = self._stage_host(windows)
            stages = self._device_stages(min(b, self.max_batch), 2 if len(chunks) > 1 else 1)
            copied, released = [None] * len(chunks), [None] * len(stages)

            def issue_copy(i):
                start, stop = chunks[i]
                k = i % len(stages)
                with torch.cuda.stream(self._copy_stream):
                    if released[k] is not None:
                        self._copy_stream.wait_event(released[k])
                    stages[k][: stop - start].copy_(host[start:stop], non_blocking=True)
                    copied[i] = torch.cuda.Event()
                    copied[i].record(self._copy_stream)

            issue_copy(0)
        parts = []
        for i, (start, stop) in enumerate(chunks):
            n = stop - start
            bucket = self._bucket(n, cfg)
            if on_device:
                bucket.x[:n].copy_(windows[start:stop])  # casts to the compute dtype on the way
            else:
                if i + 1 < len(chunks):
                    issue_copy(i + 1)
                main.wait_event(copied[i])
                bucket.x[:n].copy_(stages[i % len(stages)][:n])
                released[i % len(stages)] = torch.cuda.Event()
                released[i % len(stages)].record(main)
            if n < bucket.size:  # padding windows: one zero snippet each, results dropped
                bucket.x[n:].zero_()
            if values_on_device:
                for row, values in enumerate((valid, scale, offset)):
                    bucket.window_values[row, :n].copy_(values[start:stop])
                if n < bucket.size:
                    for row, pad in enumerate(_PADDING_WINDOW):
                        bucket.window_values[row, n:].fill_(pad)
            else:
                bucket.set_window_values(n, valid[start:stop], scale[start:stop], offset[start:stop])
            bucket.graph.replay()
            inputs = (bucket.probs[:n], bucket.masks[:n], bucket.valid[:n], bucket.window_values[1, :n],
                      bucket.window_values[2, :n])
            if to_host:
                # All outputs come back with one synchronisation; the status is checked on the host copy.
                parts.append(native.check_detections(bucket.fetch(n), *inputs, cfg))
            else:
                device_part = bucket.result.map(lambda a, n=n: a[:n])
                native.check_detections(device_part, *inputs, cfg)
                parts.append(device_part.map(torch.clone))  # the graph reuses its outputs
        return native.DetectionBatch.concat(parts)

    def _device_stages(self, rows: int, count: int) -> list[torch.Tensor]:
        t, d = self.model_cfg.temporal_scale, self.model_cfg.input_dim
        if len(self._stages) < count or self._stages[0].shape[0] < rows:
            self._stages = [torch.empty((rows, t, d), dtype=torch.float32, device=self.device) for _ in range(count)]
        return self._stages[:count]

    def _bucket(self, n: int, cfg: InferenceConfig) -> _GraphBucket:
        size = min(self.max_batch, _next_pow2(n))
        key = (size, tuple(vars(cfg).values()))  # the settings are baked into the graph; cheap to build per call
        if key not in self._buckets:
            self._buckets[key] = _GraphBucket(self, size, cfg)
        return self._buckets[key]

    def _stage_host(self, windows) -> torch.Tensor:
        """Host features in a reused pinned buffer (an asynchronous copy needs page-locked memory)."""
        src = torch.as_tensor(windows, dtype=torch.float32)
        if self._pinned_in_use is not None:  # an asynchronous copy from the buffer may still be running
            self._pinned_in_use.synchronize()
            self._pinned_in_use = None
        if self._pinned is None or self._pinned.numel() < src.numel():
            self._pinned = torch.empty(src.numel(), dtype=torch.float32, pin_memory=True)
        staged = self._pinned[: src.numel()].view(src.shape)
        staged.copy_(src)
        return staged

    def _to_device(self, windows) -> torch.Tensor:
        if isinstance(windows, torch.Tensor) and windows.device == self.device:
            return windows
        if self.device.type == "cuda":
            x = self._stage_host(windows).to(self.device, non_blocking=True)
            self._pinned_in_use = torch.cuda.Event()  # the next staging waits for this copy to finish
            self._pinned_in_use.record(torch.cuda.current_stream(self.device))
            return x
        return torch.as_tensor(windows, dtype=torch.float32)
