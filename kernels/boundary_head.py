"""Boundary head of the boundary-refined GSMT variant (``gsmt_fast.model.GSMT.boundary_head``) as one Triton kernel.

What it computes, from the mask branch's hidden features ``h`` (B, T, Cm), channels-last (``h2`` of
:func:`gsmt_fast.kernels.mask_head.mask_head` with ``hidden=True``; row t of video b is ``h[b, t, :]``)::

    boundaries[b, r, t] = softplus(w[r, :] . h[b, t, :] + bias[r])        r = 0 (start), 1 (end); (B, 2, T) float32

exactly ``F.softplus(Conv1d(Cm, 2, k=1)(h.transpose(1, 2)))``: the distances, in snippets, from each snippet's centre
to its instance's start and end.

Design (the WHY):
- Two output channels are far below ``tl.dot``'s 16-wide minimum on a GPU, so each program takes a tile of BLOCK_T
  rows and reduces ``h_tile * w_row`` over the channels with ``tl.sum``, once per output channel, in float32. The work
  is 4 * Cm FLOPs per snippet (about 0.1 % of the mask head's), so the kernel only has to read h once, coalesced.
- float32 output whatever the compute dtype: the distances move candidate boundaries, which the post-processing
  compares in float64 (the same reason the masks are float32).
- Softplus as ``max(x, 0) + log1p(exp(-|x|))``: no overflow for any x, and within a few float32 ulp of PyTorch's
  ``F.softplus`` (which returns x itself above 20, where ``log1p(exp(-x))`` is below float32's resolution of x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._checks import check_float, check_shape, check_tensor, interpreted

__all__ = ["boundary_head", "boundary_head_naive"]


# ---------------------------------------------------------------------------------------------------------- naive
def boundary_head_naive(h, w, b):
    """The model's boundary head in plain PyTorch, float32: ``h`` (B, T, Cm) channels-last, ``w`` (2, Cm, 1) or
    (2, Cm), ``b`` (2,) -> (B, 2, T)."""
    w = w.float().reshape(2, -1, 1)
    return F.softplus(F.conv1d(h.float().transpose(1, 2), w, b.float()))


# --------------------------------------------------------------------------------------------------------- kernel
@triton.jit
def _softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)); log1p(u) as log(w) * u / (w - 1) with w = 1 + u (Goldberg's
    identity: accurate to a few ulp also where 1 + u rounds, and exactly u where w == 1), so tiny results keep their
    relative accuracy."""
    u = tl.exp(-tl.abs(x))
    w = 1.0 + u
    rounds_to_one = w == 1.0
    log1p_u = tl.where(rounds_to_one, u, tl.log(w) * u / tl.where(rounds_to_one, 1.0, w - 1.0))
    return tl.maximum(x, 0.0) + log1p_u


@triton.jit
def _boundary_head_kernel(
    h_ptr, w_ptr, bias_ptr, out_ptr,
    T, C_M,
    stride_hb, stride_ht,
    stride_wr,
    stride_ob, stride_or,
    BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[b, r, t] = softplus(bias[r] + sum_k w[r, k] * h[b, t, k]) for r in {0, 1}. h has a channel stride of 1,
    w is (2, C_M) with a channel stride of 1. Grid: (B * ceil(T / BLOCK_T),)."""
    t_blocks = tl.cdiv(T, BLOCK_T)
    batch = (tl.program_id(0) // t_blocks).to(tl.int64)
    rows = (tl.program_id(0) % t_blocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    row_ok = rows < T
    k_offsets = tl.arange(0, BLOCK_K)
    h_video = h_ptr + batch * stride_hb
    start = tl.zeros((BLOCK_T,), dtype=tl.float32)
    end = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for k_start in range(0, C_M, BLOCK_K):
        channels = k_start + k_offsets
        channel_ok = channels < C_M
        h_tile = tl.load(h_video + rows[:, None] * stride_ht + channels[None, :],
                         mask=row_ok[:, None] & channel_ok[None, :], other=0.0).to(tl.float32)
        w_start = tl.load(w_ptr + channels, mask=channel_ok, other=0.0).to(tl.float32)
        w_end = tl.load(w_ptr + stride_wr + channels, mask=channel_ok, other=0.0).to(tl.float32)
        start += tl.sum(h_tile * w_start[None, :], axis=1)
        end += tl.sum(h_tile * w_end[None, :], axis=1)
    start += tl.load(bias_ptr).to(tl.float32)
    end += tl.load(bias_ptr + 1).to(tl.float32)
    out_video = out_ptr + batch * stride_ob
    tl.store(out_video + rows, _softplus(start), mask=row_ok)
    tl.store(out_video + stride_or + rows, _softplus(end), mask=row_ok)


# -------------------------------------------------------------------------------------------------------- wrapper
def boundary_head(h, w, b, *, out=None):
    """Boundary distances ``softplus(conv1x1(h))`` as a (B, 2, T) float32 tensor.

    Args:
        h: (B, T, Cm) hidden features of the mask branch, channels-last, float32 / float16 / bfloat16 (any strides
            with a channel stride of 1 are copied to contiguous first).
        w: (2, Cm, 1) or (2, Cm) Conv1d weight, any float dtype; used in float32 (h is widened to float32 on load,
            so reduced-precision h is the only rounding, as in ``predict_bf16``'s float32 output layers).
        b: (2,) bias, added in float32.
        out: optional preallocated (B, 2, T) float32 output on h's device.
    """
    check_tensor("h", h)
    check_float("h", h)
    if h.dim() != 3:
        raise ValueError(f"h must be 3-D (B, T, Cm) channels-last, got shape {tuple(h.shape)}")
    batch, length, c_m = h.shape
    device = h.device
    if device.type == "cpu" and not interpreted():
        raise ValueError("h is a CPU tensor: the Triton kernels run on CPU only under the interpreter "
                         "(set TRITON_INTERPRET=1 before triton is imported)")
    check_float("w", w, device, "h")
    check_float("b", b, device, "h")
    if tuple(w.shape) not in ((2, c_m, 1), (2, c_m)):
        raise ValueError(f"w must have shape (2, {c_m}, 1) or (2, {c_m}) (Cm = h.shape[2]), got {tuple(w.shape)}")
    check_shape("b", b, (2,))
    if out is None:
        out = torch.empty((batch, 2, length), dtype=torch.float32, device=device)
    else:
        check_tensor("out", out)
        check_shape("out", out, (batch, 2, length))
        if out.dtype != torch.float32 or out.device != device or out.stride(2) != 1:
            raise ValueError("out must be a float32 tensor on h's device with a contiguous last axis")
    if out.numel() == 0:
        return out
    h = h.contiguous()
    w_rows = w.float().reshape(2, c_m).contiguous()
    b = b.contiguous()
    # Under the interpreter one program per window (its whole T) keeps the serial grid small.
    block_t = triton.next_power_of_2(length) if interpreted() else 64
    block_k = min(triton.next_power_of_2(c_m), 128 if interpreted() else 64)
    grid = (batch * triton.cdiv(length, block_t),)
    _boundary_head_kernel[grid](
        h, w_rows, b, out,
        length, c_m,
        h.stride(0), h.stride(1),
        w_rows.stride(0),
        out.stride(0), out.stride(1),
        BLOCK_T=block_t, BLOCK_K=block_k,
    )
    return out
