"""``reference`` backend: the eager PyTorch model and the NumPy post-processing — the correctness oracle."""

from __future__ import annotations

import torch

from ..config import InferenceConfig
from ..model import GSMT
from ..postprocess.reference import soft_nms, window_candidates
from ..postprocess.soft_nms import check_inputs
from .base import Backend


class ReferenceBackend(Backend):
    name = "reference"

    def __init__(self, model: GSMT, device: str | torch.device | None = None, precision: str | None = None):
        if precision not in (None, "fp32"):
            raise ValueError(f"the reference backend computes in fp32 only, got precision={precision!r}")
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def forward(self, windows, valid_len):
        x = torch.as_tensor(windows, dtype=torch.float32, device=self.device)
        n = torch.as_tensor(valid_len, dtype=torch.int64, device=self.device)
        return tuple(output.cpu().numpy() for output in self.model.predict(x, n))

    def candidates(self, probs, masks, valid_len, cfg: InferenceConfig, boundaries=None):
        return [window_candidates(probs[i], masks[i], int(valid_len[i]), cfg,
                                  None if boundaries is None else boundaries[i]) for i in range(len(valid_len))]

    def soft_nms(self, segments, scores, labels, cfg: InferenceConfig):
        return soft_nms(*check_inputs(segments, scores, labels), **cfg.nms_kwargs())
