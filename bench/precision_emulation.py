"""What the ``triton`` backend's fp16/bf16 roundings do to validation mAP, emulated on the CPU.

    python bench/precision_emulation.py --data DIR --ckpt best.safetensors --tious thumos

The Triton kernels compute with fp16/bf16 inputs and fp32 accumulation and round each kernel's output to the compute
dtype. This script replays the model in float32 PyTorch, rounding exactly there (features, every GEMM's input
operands and outputs, the attention probabilities before P@V, the embeddings, the mask head's intermediates), and
runs the reference post-processing + evaluation on it. Variants of where the output layers round:

* ``masks16``: the T×T masks stored in the compute dtype's neighbour float16 (what the backend did first);
* ``masks32``: the masks kept in float32 (what the backend does now);
* ``heads32``: also the class head and final mask projection with float32 weights.

On the H100 the backend with float16 masks measured −0.0058 (fp16) on the thumos-like split; this emulation gives
−0.0053, so it tracks the kernels closely. Result table in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from backend_accuracy import TIOUS, load_validation

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _layer_norm(z, norm):
    return F.layer_norm(z, z.shape[-1:], norm.weight, norm.bias, norm.eps)


@torch.no_grad()
def emulated_forward(model, x: torch.Tensor, valid_len, dtype, variant: str):
    """Class probabilities and masks of ``model`` with the Triton kernels' rounding points (see the docstring)."""
    def r(t):  # round to the compute dtype, keep computing in float32
        return t.to(dtype).float()

    cfg = model.cfg
    b, t, _ = x.shape
    c, heads = cfg.hidden_dim, cfg.num_heads
    valid = torch.arange(t)[None] < torch.as_tensor(valid_len)[:, None]
    pos = r(model.pos_embed) if model.pos_embed is not None else 0.0
    h = r(F.linear(r(x), r(model.input_proj.weight), model.input_proj.bias) + pos)
    for blk in model.blocks:
        qkv = r(F.linear(r(_layer_norm(h, blk.norm1)), r(blk.attn.qkv.weight), blk.attn.qkv.bias))
        q, k, v = qkv.view(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(c // heads)
        p = torch.softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), dim=-1)
        y = r((r(p) @ v).transpose(1, 2).reshape(b, t, c))
        h = r(F.linear(y, r(blk.attn.proj.weight), blk.attn.proj.bias) + h)
        act = F.relu if cfg.activation == "relu" else F.gelu
        h = r(act(F.linear(r(_layer_norm(h, blk.norm2)), r(blk.fc.weight), blk.fc.bias)) + h)
    e = (r(_layer_norm(h, model.norm)) * valid[:, :, None]).transpose(1, 2)
    head32 = variant == "heads32"
    logits = F.conv1d(e, model.cls_head.weight if head32 else r(model.cls_head.weight), model.cls_head.bias)
    m = model.mask_head
    h1 = r(F.relu(F.conv1d(e, r(m[0].weight), m[0].bias, padding=1)))
    h2 = r(F.relu(F.conv1d(h1, r(m[2].weight), m[2].bias, padding=1)))
    masks = torch.sigmoid(F.conv1d(h2, m[4].weight if head32 else r(m[4].weight), m[4].bias))
    if variant == "masks16":
        masks = masks.half().float()
    return torch.softmax(logits, dim=1).numpy(), masks.numpy()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--tious", choices=sorted(TIOUS), required=True)
    p.add_argument("--runs", default="fp16:masks16,fp16:masks32,bf16:masks16,bf16:masks32",
                   help="comma list of DTYPE:VARIANT (fp16|bf16 : masks16|masks32|heads32); fp32 always runs first")
    args = p.parse_args(argv)

    import gsmt_fast
    from gsmt_fast.data.annotations import detect_kwargs
    from gsmt_fast.detector import results_to_json

    videos, feats, gt = load_validation(args.data)
    base = None
    for spec in ["fp32"] + [s for s in args.runs.split(",") if s]:
        det = gsmt_fast.Detector(args.ckpt, backend="reference")
        if spec != "fp32":
            name, _, variant = spec.partition(":")
            if name not in DTYPES or variant not in ("masks16", "masks32", "heads32"):
                p.error(f"bad run {spec!r}")
            model = det.backend.model

            def forward(x, n, dtype=DTYPES[name], variant=variant, model=model):
                return emulated_forward(model, torch.as_tensor(np.asarray(x, dtype=np.float32)), n, dtype, variant)

            det.backend.forward = forward
        res = det.detect(feats, **detect_kwargs(videos))
        ev = gsmt_fast.evaluate(gt, results_to_json(res), subset="validation", tiou_thresholds=TIOUS[args.tious])
        base = ev.average_mAP if base is None else base
        print(f"{args.tious} {spec}: average mAP {ev.average_mAP:.4f} ({ev.average_mAP - base:+.4f} vs fp32)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
