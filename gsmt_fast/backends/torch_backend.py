"""``torch`` backend: the PyTorch model (eager, optionally ``torch.compile``d) and the C++ post-processing of
``gsmt_fast._C`` (threads over windows, GIL released). The CPU default.

Precision: ``fp32`` runs :meth:`gsmt_fast.GSMT.predict`; ``bf16`` runs :func:`gsmt_fast.model.predict_bf16` (the
transformer and the k=3 mask convolutions in bf16, the two output layers in float32). bf16 is the default on CPUs
with native bf16 matrix instructions (:func:`cpu_supports_bf16`), where it is several times faster and stays within
±0.005 average mAP of fp32 on the synthetic validation splits (bench/RESULTS.md); ``fp32`` elsewhere.

Probabilities and masks stay torch tensors between the forward pass and the extension (no NumPy round trip); the
extension computes exactly what :mod:`gsmt_fast.postprocess.reference` defines.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model import GSMT, predict_bf16
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
        self.num_threads = num_threads
        self.model = model.to(self.device).eval()
        predict = self.model.predict if precision == "fp32" else (lambda x, n: predict_bf16(self.model, x, n))
        self._predict = torch.compile(predict) if compile else predict

    def pack(self, windows):
        """bf16 on the CPU: the windows go straight into the dtype the forward casts them to (one copy)."""
        if not (self.precision == "bf16" and self.device.type == "cpu"):
            return super().pack(windows)
        t, d = self.model_cfg.temporal_scale, self.model_cfg.input_dim
        valid = np.array([len(w.features) for w in windows], dtype=np.int64)
        x = torch.empty((len(windows), t, d), dtype=torch.bfloat16)
        for j, w in enumerate(windows):
            x[j, : len(w.features)].copy_(torch.from_numpy(np.asarray(w.features)))
            x[j, len(w.features):].zero_()
        return x, valid

    @torch.inference_mode()
    def forward(self, windows, valid_len):
        # bf16 windows (from pack) are taken as they are; anything else as float32.
        x = windows if isinstance(windows, torch.Tensor) and windows.dtype == torch.bfloat16 else \
            torch.as_tensor(windows, dtype=torch.float32)
        x = x.to(self.device, non_blocking=True)
        n = torch.as_tensor(valid_len, dtype=torch.int64).to(self.device, non_blocking=True)
        return self._predict(x, n)
