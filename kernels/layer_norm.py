"""Row-wise LayerNorm with optional zeroing of padded rows, in one Triton kernel.

What it computes: for x (M, C) (the channels-last (B*T, C) embeddings),
``out[r] = (x[r] - mean_r) / sqrt(var_r + eps) * weight + bias`` (biased variance, as nn.LayerNorm), and when
``valid_len`` (B,) and ``period`` T are given, rows r with ``r % T >= valid_len[r // T]`` (padded snippets) are
written as exact zeros. That is the model's final norm followed by the padding mask (GSMT.embed in
gsmt_fast/model.py): one pass over the tensor instead of a norm plus a multiply.

Design, and why:

* One program normalises BLOCK_M rows. When a whole row fits one block of columns (C <= 4096: the model's C is 32
  to 512) the row block is loaded once, kept in registers for the statistics and the normalisation, and stored:
  the kernel reads x once and writes out once, which is all a memory-bound op can do. Wider rows are streamed in
  BLOCK_C chunks over three passes (mean, centred variance, normalise), re-reading x from cache.
* Statistics in fp32 with the exact two-pass formula (mean first, then the mean of squared deviations): no
  cancellation, so the fp32 path matches F.layer_norm to ~1e-7 relative. The output is rounded once to out's dtype.
* x may be float32, float16 or bfloat16 (the compute dtype; out has x's dtype); weight and bias may have any of
  those dtypes and are read as fp32, so fp32 LN parameters keep their precision with bf16 activations.
* BLOCK_M is chosen so that a program holds about 4096 elements (enough work per program on the GPU, few programs
  under the interpreter); no tl.dot here, so no minimum block size applies.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._checks import (
    check_device,
    check_eps,
    check_float_dtype,
    check_integer_dtype,
    check_out,
    check_tensor,
    check_vector,
    interpreted,
    overlaps,
)

_MAX_SINGLE_BLOCK_C = 4096


def layer_norm_rows_naive(x, weight, bias, eps=1e-5, *, valid_len=None, period=None, out=None):
    """Plain PyTorch: F.layer_norm in float32, then padded rows zeroed (as GSMT.embed). Returns float32 (or out)."""
    y = F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps)
    if valid_len is not None:
        valid_len = torch.as_tensor(valid_len, device=x.device)
        t = torch.arange(x.shape[0], device=x.device)
        keep = (t % period) < valid_len.reshape(-1)[t // period]
        y = y * keep[:, None].to(y.dtype)
    if out is not None:
        out.copy_(y)
        return out
    return y


@triton.jit
def _layer_norm_rows_kernel(
    x_ptr, w_ptr, b_ptr, valid_len_ptr, out_ptr,
    M, C, period, stride_xm, stride_om, eps,
    HAS_VALID_LEN: tl.constexpr, SINGLE_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    out_rows = out_ptr + rows.to(tl.int64)[:, None] * stride_om
    offs_c = tl.arange(0, BLOCK_C)

    if HAS_VALID_LEN:
        # Padded snippet: position in its window >= the window's valid length.
        valid_len = tl.load(valid_len_ptr + rows // period, mask=row_ok, other=0)
        keep = (rows % period) < valid_len
    else:
        keep = row_ok

    if SINGLE_BLOCK:
        col_ok = offs_c < C
        tile_ok = row_ok[:, None] & col_ok[None, :]
        xt = tl.load(x_rows + offs_c[None, :], mask=tile_ok, other=0.0).to(tl.float32)
        mean = tl.sum(xt, axis=1) / C
        d = tl.where(tile_ok, xt - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / C + eps)
        gamma = tl.load(w_ptr + offs_c, mask=col_ok, other=0.0).to(tl.float32)
        beta = tl.load(b_ptr + offs_c, mask=col_ok, other=0.0).to(tl.float32)
        y = d * rstd[:, None] * gamma[None, :] + beta[None, :]
        y = tl.where(keep[:, None], y, 0.0)
        tl.store(out_rows + offs_c[None, :], y.to(out_ptr.dtype.element_ty), mask=tile_ok)
    else:
        sum_x = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs_c
            tile_ok = row_ok[:, None] & (cols[None, :] < C)
            sum_x += tl.sum(tl.load(x_rows + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32), axis=1)
        mean = sum_x / C
        sum_d2 = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs_c
            tile_ok = row_ok[:, None] & (cols[None, :] < C)
            xt = tl.load(x_rows + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32)
            d = tl.where(tile_ok, xt - mean[:, None], 0.0)
            sum_d2 += tl.sum(d * d, axis=1)
        rstd = 1.0 / tl.sqrt(sum_d2 / C + eps)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + offs_c
            col_ok = cols < C
            tile_ok = row_ok[:, None] & col_ok[None, :]
            xt = tl.load(x_rows + cols[None, :], mask=tile_ok, other=0.0).to(tl.float32)
            gamma = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            beta = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            y = (xt - mean[:, None]) * rstd[:, None] * gamma[None, :] + beta[None, :]
            y = tl.where(keep[:, None], y, 0.0)
            tl.store(out_rows + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=tile_ok)


def layer_norm_rows(x, weight, bias, eps=1e-5, *, valid_len=None, period=None, out=None):
    """LayerNorm of each row of x (M, C) with fp32 statistics; padded rows zeroed when valid_len is given.

    x: (M, C) float32/float16/bfloat16 (out has its dtype). weight, bias: (C,). valid_len: (B,) integer tensor (or
    a sequence of ints) with period T such that M == B * T; row r is zeroed when r % T >= valid_len[r // T].
    out: (M, C) of x's dtype with unit column stride, or None; out may be x itself (each row is read completely
    before it is written, by the same program). Returns out.
    """
    check_tensor("x", x)
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (M, C), got shape {tuple(x.shape)}; reshape (B, T, C) inputs to (B*T, C)")
    check_float_dtype("x", x.dtype)
    M, C = x.shape
    if C == 0:
        raise ValueError("x must have at least one column (C >= 1)")
    device = x.device
    check_vector("weight", weight, C, device)
    check_vector("bias", bias, C, device)
    check_eps("eps", eps)

    if (valid_len is None) != (period is None):
        raise ValueError("valid_len and period must be given together")
    if valid_len is not None:
        if not isinstance(valid_len, torch.Tensor):
            valid_len = torch.as_tensor(valid_len, device=device)
        check_integer_dtype("valid_len", valid_len)
        check_device("valid_len", valid_len, device, "x")
        if isinstance(period, bool) or not isinstance(period, numbers.Integral) or period < 1:
            raise ValueError(f"period must be a positive int, got {period!r}")
        period = int(period)
        if M % period != 0:
            raise ValueError(f"x has {M} rows, not a multiple of period {period}")
        if valid_len.dim() != 1 or valid_len.numel() != M // period:
            raise ValueError(f"valid_len must have shape ({M // period},) (one length per window of {period} rows), "
                             f"got {tuple(valid_len.shape)}")
        valid_len = valid_len.to(torch.int32).contiguous()

    if out is not None:
        check_out(out, (M, C), x, "x")
        if C > 1 and out.stride(1) != 1:
            raise ValueError("out must have unit stride along its columns")
        if overlaps(out, x) and not (out.data_ptr() == x.data_ptr() and out.stride() == x.stride()):
            raise ValueError("out overlaps x without being x itself (in place is allowed, a shifted view is not)")
        for name, t in (("weight", weight), ("bias", bias), ("valid_len", valid_len)):
            if t is not None and overlaps(out, t):
                raise ValueError(f"out overlaps {name}")
    else:
        out = torch.empty((M, C), device=device, dtype=x.dtype)
    if M == 0:
        return out
    if C > 1 and x.stride(1) != 1:
        x = x.contiguous()
    weight = weight.contiguous()
    bias = bias.contiguous()

    single_block = C <= _MAX_SINGLE_BLOCK_C
    BLOCK_C = triton.next_power_of_2(C) if single_block else 1024
    BLOCK_M = max(1, min(triton.next_power_of_2(M), 4096 // BLOCK_C if single_block else 4))
    if interpreted():
        BLOCK_M = max(BLOCK_M, min(triton.next_power_of_2(M), 64))  # fewer, larger programs for the interpreter
    grid = (triton.cdiv(M, BLOCK_M),)
    _layer_norm_rows_kernel[grid](
        x, weight, bias, valid_len if valid_len is not None else x, out,
        M, C, period if period is not None else 1, x.stride(0), out.stride(0), float(eps),
        HAS_VALID_LEN=valid_len is not None, SINGLE_BLOCK=single_block, BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C,
        num_warps=4 if BLOCK_C * BLOCK_M <= 4096 else 8,
    )
    return out
