"""Fused multi-head self-attention (flash attention with an online softmax) for the GSMT encoder.

What it computes: for every video b, head h and query snippet i,

    out[b, i, h*D:(h+1)*D] = sum_j softmax_j(sm_scale * q_i . k_j  over keys j < valid_len[b]) * v_j

exactly what ``SelfAttention.forward`` in gsmt_fast/model.py computes with ``F.scaled_dot_product_attention`` and the
boolean key mask ``valid[:, None, None, :]`` (no dropout: inference only).

Layouts:
- input ``qkv (B, T, 3*C)``: the fused QKV projection's output as the model writes it before its
  ``view(b, t, 3, heads, D)``: columns ``[0, C)`` are the query heads, ``[C, 2C)`` the keys, ``[2C, 3C)`` the values,
  head h of each at ``h*D + [0, D)``, with ``D = C / num_heads``.
- output ``(B, T, C)``: head h in columns ``[h*D, (h+1)*D)``, i.e. ``y.transpose(1, 2).reshape(b, t, c)`` of the
  model, which the output projection reads directly.
- ``valid_len (B,)`` integer: keys at positions ``>= valid_len[b]`` are masked out. Query rows at padded positions
  are still computed (they attend to the valid keys), as the model does. ``valid_len[b] >= 1``; a value above T means
  "all valid" (the model's ``arange(T) < valid_len`` mask says the same).

Why this design:
- The kernel reads q, k and v straight out of the fused projection through strides and writes the heads interleaved
  in the layout the output projection wants: no permute/contiguous copies of the (B, T, 3C) tensor, and the T x T
  score matrix is never materialised (the online softmax keeps a running row max ``m`` and row sum ``l`` in fp32
  and rescales the fp32 output accumulator whenever the max grows).
- Grid ``(cdiv(T, BLOCK_M), B * num_heads)``: one program owns BLOCK_M query rows of one head of one video and
  streams over key blocks. The key loop stops at ``valid_len[b]``, so key blocks that are entirely padding are never
  loaded (a speed-up for the last, padded window of a video); inside the last block, keys past ``valid_len`` get a
  score of -inf and their k/v rows are not even loaded (masked loads give 0), so whatever sits in padded rows, NaN
  included, cannot reach the output.
- Exponentials use ``exp2`` with the scale folded into ``sm_scale * log2(e)`` (one multiply per score, applied to
  the fp32 scores so that q is not rounded again in fp16/bf16).
- Precision: the dots take the input dtype (fp32, fp16 or bf16) and accumulate in fp32. In the fp32 path every dot
  uses ``input_precision="ieee"`` (no TF32) so the result matches PyTorch's fp32 attention to ~1e-6 relative and
  detections stay identical. In the 16-bit paths the probabilities P are cast to the input dtype before the P @ V
  dot, as FlashAttention does; the max, the sums and the accumulator stay fp32.
- ``tl.dot`` on a GPU needs every block dimension >= 16, so the head-dim block is ``max(16, next_pow2(D))``, padded
  with masked (zero) loads: the tiny preset's D = 8 works; padded columns are never stored.
- Under the interpreter (``TRITON_INTERPRET=1``, CPU tensors) every program runs serially in Python, so the blocks
  are as large as T allows (fewer, bigger programs); on a GPU: 64 x 64, 4 warps, 3 stages for 16-bit; 32 x 32 for
  fp32, whose IEEE dots run on the FMA units and need more registers (bench/RESULTS.md, "Kernel tuning").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._checks import FLOAT_DTYPES, check_device, check_float, check_integer_dtype, check_out, check_tensor, interpreted

SUPPORTED_DTYPES = FLOAT_DTYPES
_LOG2_E = 1.4426950408889634


def flash_attention_naive(qkv: torch.Tensor, num_heads: int, valid_len: torch.Tensor | None = None,
                              sm_scale: float | None = None, *,
                              compute_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The model's attention written plainly: reshape the fused QKV output, ``F.scaled_dot_product_attention`` with
    the boolean key mask, heads back side by side. Computes in ``compute_dtype`` (float32 by default: the
    reference; the benchmarks and the GPU tests pass bf16/fp16 to get PyTorch's own low-precision attention) and
    returns (B, T, C) in that dtype."""
    b, t, c3 = qkv.shape
    c = c3 // 3
    q, k, v = qkv.to(compute_dtype).view(b, t, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    attn_mask = None
    if valid_len is not None:
        valid = torch.arange(t, device=qkv.device)[None, :] < valid_len.to(qkv.device).reshape(-1)[:, None]
        attn_mask = valid[:, None, None, :]
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=sm_scale)
    return y.transpose(1, 2).reshape(b, t, c)


@triton.jit
def _flash_attention_kernel(
    qkv_ptr, out_ptr, valid_len_ptr,
    seq_len, head_dim, num_heads, hidden_dim, qk_scale_log2,
    stride_qkv_b, stride_qkv_t, stride_out_b, stride_out_t, stride_out_c,
    HAS_VALID_LEN: tl.constexpr, IS_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    block_m_index = tl.program_id(0)
    batch_head = tl.program_id(1)
    batch = batch_head // num_heads
    head = batch_head % num_heads

    offs_m = block_m_index * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_in_range = offs_m < seq_len
    col_in_head = offs_d < head_dim

    # Offsets in int64: B * T * 3C can pass 2**31 elements for long batches.
    video_base = qkv_ptr + batch.to(tl.int64) * stride_qkv_b
    q_col = head * head_dim
    k_col = hidden_dim + head * head_dim
    v_col = 2 * hidden_dim + head * head_dim

    q = tl.load(video_base + offs_m[:, None].to(tl.int64) * stride_qkv_t + q_col + offs_d[None, :],
                mask=row_in_range[:, None] & col_in_head[None, :], other=0.0)

    # Keys at positions >= key_end are padding (or past T): never loaded, never weighted.
    key_end = seq_len
    if HAS_VALID_LEN:
        key_end = tl.minimum(tl.load(valid_len_ptr + batch).to(tl.int32), seq_len)

    running_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    running_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    for key_start in range(0, key_end, BLOCK_N):
        key_pos = key_start + offs_n
        key_valid = key_pos < key_end
        key_rows = key_pos.to(tl.int64) * stride_qkv_t
        # K loaded transposed (BLOCK_D, BLOCK_N) so the score dot needs no in-register transpose.
        k_t = tl.load(video_base + key_rows[None, :] + k_col + offs_d[:, None],
                      mask=col_in_head[:, None] & key_valid[None, :], other=0.0)
        if IS_FP32:
            scores = tl.dot(q, k_t, input_precision="ieee")
        else:
            scores = tl.dot(q, k_t)
        scores = tl.where(key_valid[None, :], scores * qk_scale_log2, float("-inf"))

        # Online softmax: the first block always holds key 0 (valid_len >= 1), so block_max is finite from then on
        # and the rescale factor exp2(-inf - finite) = 0 on the first iteration is harmless.
        block_max = tl.maximum(running_max, tl.max(scores, axis=1))
        probs = tl.exp2(scores - block_max[:, None])
        rescale = tl.exp2(running_max - block_max)
        running_sum = running_sum * rescale + tl.sum(probs, axis=1)
        acc = acc * rescale[:, None]

        v = tl.load(video_base + key_rows[:, None] + v_col + offs_d[None, :],
                    mask=key_valid[:, None] & col_in_head[None, :], other=0.0)
        if IS_FP32:
            acc = tl.dot(probs, v, acc, input_precision="ieee")
        else:
            acc = tl.dot(probs.to(v.dtype), v, acc)
        running_max = block_max

    result = acc / running_sum[:, None]
    out_ptrs = (out_ptr + batch.to(tl.int64) * stride_out_b + offs_m[:, None].to(tl.int64) * stride_out_t
                + (head * head_dim + offs_d[None, :]) * stride_out_c)
    tl.store(out_ptrs, result.to(out_ptr.dtype.element_ty), mask=row_in_range[:, None] & col_in_head[None, :])


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _clamp_block(size: int, low: int, high: int) -> int:
    return max(low, min(high, _next_power_of_2(size)))


def _check_block(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 16 or value & (value - 1)):
        raise ValueError(f"{name} must be a power of two >= 16, got {value!r}")


def flash_attention(qkv: torch.Tensor, num_heads: int, valid_len: torch.Tensor | None = None, *,
                    sm_scale: float | None = None, out: torch.Tensor | None = None,
                    block_m: int | None = None, block_n: int | None = None) -> torch.Tensor:
    """Multi-head self-attention over the fused QKV projection output.

    qkv: (B, T, 3*C) float32/float16/bfloat16, layout of the model's ``qkv`` Linear (see the module docstring).
    num_heads: number of heads; C must be divisible by it.
    valid_len: optional (B,) integer tensor on qkv's device; keys at positions >= valid_len[b] are masked out.
        Every entry must be >= 1 (checked for CPU tensors; on a GPU it is not checked, to avoid a synchronisation,
        and a row with no valid key comes out as NaN).
    sm_scale: softmax scale, default 1/sqrt(C / num_heads).
    out: optional (B, T, C) tensor of qkv's dtype and device (any strides) to write into.
    block_m, block_n: optional tile sizes (powers of two >= 16) overriding the defaults; for tests and tuning.
    Returns the (B, T, C) output (``out`` when given), in qkv's dtype.
    """
    check_float("qkv", qkv)
    if qkv.dim() != 3:
        raise ValueError(f"qkv must be 3-D (B, T, 3*C), got shape {tuple(qkv.shape)}")
    batch, seq_len, three_c = qkv.shape
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if three_c % 3 != 0 or three_c == 0:
        raise ValueError(f"qkv's last dim must be 3*C with C >= 1, got {three_c}")
    hidden_dim = three_c // 3
    if hidden_dim % num_heads != 0:
        raise ValueError(f"qkv's hidden dim C={hidden_dim} is not divisible by num_heads={num_heads}")
    head_dim = hidden_dim // num_heads
    if head_dim > 256:
        raise ValueError(f"head dim C/num_heads={head_dim} is above the supported 256")
    if batch == 0 or seq_len == 0:
        raise ValueError(f"qkv must have B >= 1 and T >= 1, got shape {tuple(qkv.shape)}")
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(head_dim)
    elif isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)) or not math.isfinite(sm_scale):
        raise ValueError(f"sm_scale must be a finite number, got {sm_scale!r}")
    _check_block("block_m", block_m)
    _check_block("block_n", block_n)

    if valid_len is not None:
        check_tensor("valid_len", valid_len, or_none=True)
        check_integer_dtype("valid_len", valid_len)
        check_device("valid_len", valid_len, qkv.device, "qkv")
        if valid_len.shape != (batch,):
            raise ValueError(f"valid_len must have shape ({batch},), got {tuple(valid_len.shape)}")
        if valid_len.device.type == "cpu" and bool((valid_len < 1).any()):
            raise ValueError(f"valid_len entries must be >= 1, got min {int(valid_len.min())}")
        # int32 in the kernel; values above T mean "all valid", so clamping first keeps them in range.
        valid_len = valid_len.clamp(max=seq_len).to(torch.int32).contiguous()

    if out is None:
        out = torch.empty((batch, seq_len, hidden_dim), dtype=qkv.dtype, device=qkv.device)
    else:
        check_out(out, (batch, seq_len, hidden_dim), qkv, "qkv", or_none=True)

    if qkv.stride(-1) != 1:  # the head columns are read as contiguous runs
        qkv = qkv.contiguous()

    is_fp32 = qkv.dtype == torch.float32
    if interpreted():
        # Serial Python programs: few, big blocks.
        default_m, default_n = _clamp_block(seq_len, 16, 128), _clamp_block(seq_len, 16, 128)
        num_warps, num_stages = 4, 1
    elif is_fp32:
        # IEEE fp32 dots run on the FMA units: small tiles keep the register footprint sane (64x64 spills).
        default_m, default_n = _clamp_block(seq_len, 16, 32), _clamp_block(seq_len, 16, 32)
        num_warps, num_stages = 4, 2
    else:
        # 64x64 tiles, 4 warps, 3 stages: more programs in flight for short windows than 128x64 / 8 warps.
        default_m, default_n = _clamp_block(seq_len, 16, 64), _clamp_block(seq_len, 16, 64)
        num_warps, num_stages = 4, 3
    block_m = block_m or default_m
    block_n = block_n or default_n
    block_d = max(16, _next_power_of_2(head_dim))

    grid = (triton.cdiv(seq_len, block_m), batch * num_heads)
    _flash_attention_kernel[grid](
        qkv, out, valid_len if valid_len is not None else qkv,
        seq_len, head_dim, num_heads, hidden_dim, float(sm_scale) * _LOG2_E,
        qkv.stride(0), qkv.stride(1), out.stride(0), out.stride(1), out.stride(2),
        HAS_VALID_LEN=valid_len is not None, IS_FP32=is_fp32,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
