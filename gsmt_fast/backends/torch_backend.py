"""``torch`` backend: the PyTorch model (eager, optionally ``torch.compile``d, fp32 or bf16 autocast) and the C++
post-processing of ``gsmt_fast._C`` (threads over windows, GIL released). The CPU default.

Precision: ``precision="bf16"`` runs the transformer and the two k=3 convolutions of the mask head under bf16
autocast (~4x faster GEMMs on CPUs with AVX512-BF16/AMX) and the two output layers — the class head and the mask
head's final k=1 convolution, i.e. every logit the post-processing thresholds — in float32. It is the default on CPUs
with native bf16 (:func:`cpu_supports_bf16`), ``fp32`` elsewhere. Measured on the synthetic validation splits
(2026-11-26, the checkpoints of the README's runs): thumos-like average mAP 0.6607 vs 0.6581 in fp32, anet-like
0.3774 vs 0.3790 — within the ±0.005 the project allows a default to move. Full bf16 autocast (output layers
included) lost 0.034 on anet-like: rounding the mask logits to 8 bits moves values across the mask thresholds.

Probabilities and masks stay torch tensors between the forward pass and the extension (no NumPy round trip); the
extension computes exactly what :mod:`gsmt_fast.postprocess.reference` defines.
"""

from __future__ import annotations

import torch

from ..model import GSMT
from ..postprocess import native
from .base import Backend, ExtensionPostprocessing

PRECISIONS = ("fp32", "bf16")


def cpu_supports_bf16() -> bool:
    """True where this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), i.e. bf16 is actually fast."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TorchBackend(ExtensionPostprocessing, Backend):
    name = "torch"

    def __init__(self, model: GSMT, device=None, precision: str | None = None, compile: bool = False,
                 num_threads: int | None = None):
        if not native.available():
            raise RuntimeError("the torch backend needs the compiled extension gsmt_fast._C (reinstall gsmt_fast "
                               "with a C++ compiler), or use backend='reference'")
        self.device = torch.device(device or "cpu")
        precision = precision or ("bf16" if self.device.type == "cpu" and cpu_supports_bf16() else "fp32")
        if precision not in PRECISIONS:
            raise ValueError(f"the torch backend supports precision {PRECISIONS}, got {precision!r}")
        self.precision = precision
        # What the Detector packs windows into: bf16 directly when the forward would cast them to bf16 anyway.
        self.input_dtype = torch.bfloat16 if precision == "bf16" and self.device.type == "cpu" else None
        self.num_threads = num_threads
        self.model = model.to(self.device).eval()
        self._forward = torch.compile(self.model) if compile else self.model

    @torch.inference_mode()
    def forward(self, windows, valid_len):
        # bf16 windows (packed as input_dtype by the Detector) are taken as they are; anything else as float32.
        x = windows if isinstance(windows, torch.Tensor) and windows.dtype == torch.bfloat16 else \
            torch.as_tensor(windows, dtype=torch.float32)
        x = x.to(self.device, non_blocking=True)
        n = torch.as_tensor(valid_len, dtype=torch.int64).to(self.device, non_blocking=True)
        if self.precision == "fp32":
            logits, masks = self._forward(x, n)
            return torch.softmax(logits, dim=1), masks
        model = self.model
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            e = model.embed(x, n)
            h = model.mask_head[:-1](e)
        # The output layers in float32 (see the module docstring): their logits are what gets thresholded. Both are
        # k=1 convolutions, computed here as the equivalent GEMMs (oneDNN's fp32 conv1d with 21 output channels ran
        # at ~25 GFLOP/s): class logits from the channels-last embedding, masks as W3 @ h2 per window.
        cls, last = model.cls_head, model.mask_head[-1]
        logits = torch.nn.functional.linear(e.transpose(1, 2).float(), cls.weight[:, :, 0], cls.bias)
        mask_logits = torch.baddbmm(last.bias[None, :, None], last.weight[:, :, 0].expand(len(h), -1, -1), h.float())
        return torch.softmax(logits.transpose(1, 2), dim=1), torch.sigmoid(mask_logits)

