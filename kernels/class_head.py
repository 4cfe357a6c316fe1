"""Class head of GSMT with its softmax, per-snippet foreground score/label and the top-M1 snippet selection.

What it computes (model: ``GSMT.cls_head = Conv1d(C, K+1, kernel_size=1)``, and steps 1–2 of the post-processing;
tie rules of the oracle :mod:`gsmt_fast.postprocess.reference`), for each video ``b`` with ``n = valid_len[b]``:

* ``logits[k, t] = bias[k] + sum_c weight[k, c] * e[b, t, c]``, ``probs[b] = softmax over the K+1 classes``
  (class K is the background), float32, for every snippet t (padded ones too: they are computed, never selected);
* ``fg[b, t] = max_{k<K} probs[b, k, t]`` and ``label[b, t] = argmax_{k<K}``, the LOWEST k on ties;
* ``top[b, :]``: the ``M1 = min(top_snippets, n)`` snippets ``t < n`` with the highest ``fg``, ties to the lower t, in
  the order (fg descending, t ascending), then ``-1`` up to ``top_snippets`` entries; ``top_count[b] = M1``.

Layouts: ``e`` is (B, T, C) channels-last (what :meth:`GSMT.embed` holds before its final transpose; any strides are
accepted); ``weight`` is (K+1, C) or the Conv1d layout (K+1, C, 1); ``bias`` (K+1,). Outputs: ``probs`` (B, K+1, T)
float32 class-major (the layout the post-processing reads: row k of a window is contiguous), ``fg`` (B, T) float32,
``label`` (B, T) int32, ``top`` (B, top_snippets) int32, ``top_count`` (B,) int32.

Precision: the compute dtype is ``e``'s dtype (float32, float16 or bfloat16); ``weight`` and ``bias`` of another float
dtype (e.g. float32 master weights) are cast to it by the wrapper. Products accumulate in float32, the bias is added
in float32 and the softmax runs on the float32 logits (never rounded to the low precision), so the low-precision paths
are at least as accurate as PyTorch's Conv1d-then-softmax. In the float32 path the dot uses ``input_precision="ieee"``
(not TF32) so that it matches PyTorch's float32 to ~1e-6.

Why this design:

* Kernel 1 (``_class_probs_kernel``), one program per (T-block, video): the head is a skinny GEMM (K+1 = 21 or 201
  rows, C = 512) that is bound by reading ``e``; computing the logits transposed, ``W (K+1, C) @ e_blockᵀ (C, T_blk)``,
  puts the whole class axis of a snippet in one program, so softmax, max and argmax are register reductions along
  axis 0 and the class-major ``probs`` rows are stored contiguously along t. Nothing but the outputs touches memory.
* ``fg`` and ``label`` are computed from the very float32 values stored in ``probs`` (max of them; the label is the
  smallest k whose prob equals that max, an explicit lowest-index rule rather than ``tl.argmax``'s), so the
  post-processing oracle run on the returned ``probs`` sees exactly the same scores, labels and ties.
* Kernel 2 (``_top_snippets_kernel``), one program per (T-block, video), needs every ``fg`` of its video, hence a
  second launch. Selection by RANK instead of a sequential sort: ``rank[t] = #{s < n : fg[s] > fg[t] or
  (fg[s] == fg[t] and s < t)}`` is the position of t in the order (fg desc, t asc); that order is strict and total
  (for finite fg), so the ranks of the n valid snippets are a permutation of 0..n-1 and ``top[rank[t]] = t`` for
  ``rank[t] < M1`` is a conflict-free scatter. It is exact (only float32 comparisons, which order like the oracle's
  float64 ones since widening is exact), branch-free, O(n²) compares (65 K for T = 256: nothing on a GPU) and
  parallel over t, instead of M1 dependent rounds of block-wide argmax. The program of T-block 0 also writes the
  ``-1`` padding and ``top_count``. Inputs must be finite: with a NaN fg the ranks are no longer a permutation.
* ``valid_len`` given as a CUDA tensor is not range-checked on the host (that would synchronise, and break CUDA-graph
  capture); the kernels clamp it to [0, T], so a bad value cannot touch memory out of bounds. Host values are checked.
* Block sizes are powers of two >= 16 (``tl.dot`` on a GPU). The class block holds all K+1 classes (at most
  1024); the T-block shrinks as the class block grows to keep the fp32 accumulator at <= 16 K elements per program.
  Under ``TRITON_INTERPRET=1`` (CPU) each program runs serially in Python, so blocks are as large as the problem.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._checks import check_float, check_float_dtype, check_integer_dtype, check_shape, check_tensor, interpreted

_MAX_CLASSES_PLUS_BACKGROUND = 1024  # the whole class axis lives in one register block


class ClassHeadOutput(NamedTuple):
    probs: torch.Tensor  # (B, K+1, T) float32, softmax over classes (background is row K)
    fg: torch.Tensor  # (B, T) float32, max over the K foreground classes
    label: torch.Tensor  # (B, T) int32, argmax over the K foreground classes, lowest k on ties
    top: torch.Tensor | None  # (B, top_snippets) int32, selected snippets by (fg desc, t asc), then -1
    top_count: torch.Tensor | None  # (B,) int32, min(top_snippets, valid_len)


# ------------------------------------------------------------------------------------------------------- kernels
@triton.jit
def _class_probs_kernel(
    e_ptr, w_ptr, bias_ptr, probs_ptr, fg_ptr, label_ptr,
    T, C, NUM_CLASSES,  # NUM_CLASSES = K + 1 (background included)
    stride_eb, stride_et, stride_ec,
    BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)  # batch offsets of probs exceed 2**31 only for huge B; be safe

    rows = tl.arange(0, BLOCK_K)  # class index k
    cols = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)  # snippet index t
    chans = tl.arange(0, BLOCK_C)
    row_ok = rows < NUM_CLASSES
    col_ok = cols < T

    # logits^T (classes x snippets) = W (classes x C) @ e_block^T (C x snippets), accumulated in fp32.
    acc = tl.zeros((BLOCK_K, BLOCK_T), dtype=tl.float32)
    e_base = e_ptr + pid_b * stride_eb
    for c0 in range(0, C, BLOCK_C):
        c = c0 + chans
        c_ok = c < C
        w_tile = tl.load(w_ptr + rows[:, None] * C + c[None, :], mask=row_ok[:, None] & c_ok[None, :], other=0.0)
        e_tile = tl.load(e_base + c[:, None] * stride_ec + cols[None, :] * stride_et,
                         mask=c_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(w_tile, e_tile, acc, input_precision=DOT_PRECISION)

    bias = tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    logits = tl.where(row_ok[:, None], acc + bias[:, None], float("-inf"))

    # Softmax over the class axis (axis 0); padded class rows are -inf, hence exactly 0 after exp.
    row_max = tl.max(logits, axis=0)
    unnormalised = tl.exp(logits - row_max[None, :])
    probs = unnormalised / tl.sum(unnormalised, axis=0)[None, :]

    b_probs = probs_ptr + pid_b * NUM_CLASSES * T
    tl.store(b_probs + rows[:, None] * T + cols[None, :], probs, mask=row_ok[:, None] & col_ok[None, :])

    # Foreground = classes 0..K-1 (the background row K and the padding rows are excluded). The label is the smallest
    # k whose stored prob equals the max: the oracle's np.argmax rule, made explicit.
    is_foreground = rows < NUM_CLASSES - 1
    fg = tl.max(tl.where(is_foreground[:, None], probs, float("-inf")), axis=0)
    is_best = is_foreground[:, None] & (probs == fg[None, :])
    label = tl.min(tl.where(is_best, rows[:, None], BLOCK_K), axis=0)
    tl.store(fg_ptr + pid_b * T + cols, fg, mask=col_ok)
    tl.store(label_ptr + pid_b * T + cols, label.to(tl.int32), mask=col_ok)


@triton.jit
def _top_snippets_kernel(
    fg_ptr, valid_len_ptr, top_ptr, top_count_ptr,
    T, TOP_SNIPPETS,
    BLOCK_Q: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_PAD: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)

    n = tl.load(valid_len_ptr + pid_b).to(tl.int32)
    n = tl.minimum(tl.maximum(n, 0), T)  # a bad device value cannot read or write out of bounds
    num_selected = tl.minimum(n, TOP_SNIPPETS)

    fg_row = fg_ptr + pid_b * T
    query = pid_t * BLOCK_Q + tl.arange(0, BLOCK_Q)
    query_ok = query < n
    fg_query = tl.load(fg_row + query, mask=query_ok, other=0.0)

    # rank[t] = how many valid s come before t in the order (fg desc, t asc).
    rank = tl.zeros((BLOCK_Q,), dtype=tl.int32)
    for s0 in range(0, n, BLOCK_S):
        other = s0 + tl.arange(0, BLOCK_S)
        other_ok = other < n
        fg_other = tl.load(fg_row + other, mask=other_ok, other=0.0)
        higher = fg_other[None, :] > fg_query[:, None]
        tied_before = (fg_other[None, :] == fg_query[:, None]) & (other[None, :] < query[:, None])
        before = other_ok[None, :] & (higher | tied_before)
        rank += tl.sum(before.to(tl.int32), axis=1)

    top_row = top_ptr + pid_b * TOP_SNIPPETS
    tl.store(top_row + rank, query.to(tl.int32), mask=query_ok & (rank < num_selected))

    # Program 0 of each video writes the -1 tail and the count: an empty range elsewhere, not a branch (the
    # interpreter turns `scalar_bool & block_bool` into int32, which a store mask rejects).
    pad_end = tl.where(pid_t == 0, TOP_SNIPPETS, 0)
    for p0 in range(0, pad_end, BLOCK_PAD):
        slot = p0 + tl.arange(0, BLOCK_PAD)
        pad = tl.full((BLOCK_PAD,), -1, dtype=tl.int32)
        tl.store(top_row + slot, pad, mask=(slot >= num_selected) & (slot < pad_end))
    tl.store(top_count_ptr + pid_b, num_selected, mask=pid_t == 0)


# ------------------------------------------------------------------------------------------------------- wrapper
def _check_out(name: str, out, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    check_tensor(name, out, or_none=True)
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    check_shape(name, out, shape)
    if out.device != device:
        raise ValueError(f"{name} must be on {device} (the device of e), got {out.device}")
    if not out.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return out


def _valid_len_tensor(valid_len, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """valid_len as a contiguous int32 (B,) tensor on ``device``; host values are range-checked to [1, T]."""
    if isinstance(valid_len, bool):
        raise TypeError("valid_len must be an int, a sequence of ints or an integer tensor, got a bool")
    if isinstance(valid_len, (int, np.integer)):
        valid_len = torch.full((batch,), int(valid_len), dtype=torch.int32)
    elif not isinstance(valid_len, torch.Tensor):
        array = np.asarray(valid_len)
        if array.dtype.kind not in "iu":
            raise TypeError(f"valid_len must hold integers, got dtype {array.dtype}")
        valid_len = torch.from_numpy(array.astype(np.int64))
    check_integer_dtype("valid_len", valid_len)
    if valid_len.dim() != 1 or valid_len.numel() != batch:
        raise ValueError(f"valid_len must have shape ({batch},) for a batch of {batch}, got {tuple(valid_len.shape)}")
    if valid_len.device.type != "cuda":  # a host check costs nothing here; on the GPU it would synchronise
        if batch and (int(valid_len.min()) < 1 or int(valid_len.max()) > length):
            raise ValueError(f"valid_len values must be in [1, T={length}], got {valid_len.tolist()}")
    return valid_len.to(device=device, dtype=torch.int32).contiguous()


class _LaunchConfig(NamedTuple):
    block_k: int
    block_t: int
    block_c: int
    num_warps: int
    num_stages: int


def _launch_config(num_classes: int, length: int, channels: int, dtype: torch.dtype) -> _LaunchConfig:
    """Block sizes of the probs kernel, the fastest of a sweep (bench/RESULTS.md, "Kernel tuning"); fp32 with many
    classes takes 2 stages because 3 do not fit in shared memory."""
    block_k = max(16, triton.next_power_of_2(num_classes))
    if interpreted():  # serial Python programs: as few and as large as the problem allows
        block_t = max(16, min(256, triton.next_power_of_2(length)))
        block_c = max(16, min(128, triton.next_power_of_2(channels)))
        return _LaunchConfig(block_k, block_t, block_c, 4, 1)
    if block_k <= 64:  # THUMOS-like heads: bound by reading e, wide channel tiles
        if dtype == torch.float32:
            return _LaunchConfig(block_k, 128, 64, 4, 3)
        return _LaunchConfig(block_k, 64, 128, 4, 3)
    # Wide class axis: fp32 accumulator of BLOCK_K x BLOCK_T <= 16 K elements (64 registers/thread at 8 warps), and
    # as many pipeline stages (<= 4) as fit in 160 KB of shared memory.
    block_t = max(16, min(64, 16384 // block_k))
    block_c = 64 if block_k <= 256 else 32
    stage_bytes = (block_k + block_t) * block_c * (4 if dtype == torch.float32 else 2)
    return _LaunchConfig(block_k, block_t, block_c, 8, max(1, min(4, 163840 // stage_bytes)))


def class_head(e, weight, bias, valid_len, top_snippets, *, out_probs=None, out_fg=None, out_label=None,
               out_top=None, out_top_count=None) -> ClassHeadOutput:
    """Class probabilities, foreground score/label and top-M1 snippets of a batch of windows (see module docstring).

    Args:
        e: (B, T, C) snippet embeddings, float32/float16/bfloat16 (the compute dtype), any strides.
        weight: (K+1, C) or (K+1, C, 1) class-head weight; cast to ``e.dtype`` when it is another float dtype.
        bias: (K+1,) class-head bias; cast to ``e.dtype`` likewise.
        valid_len: number of real snippets per window: an int (all windows), a sequence of ints or an integer (B,)
            tensor. Host values must lie in [1, T]; a CUDA tensor is not checked (it is clamped to [0, T] inside).
        top_snippets: M1 (>= 1), the width of ``top``; ``None`` skips the selection (``top``/``top_count`` are then
            None): for callers whose post-processing selects the snippets itself.
        out_probs, out_fg, out_label, out_top, out_top_count: optional preallocated contiguous outputs
            ((B, K+1, T) float32, (B, T) float32, (B, T) int32, (B, top_snippets) int32, (B,) int32) on e's device.

    Returns:
        :class:`ClassHeadOutput` ``(probs, fg, label, top, top_count)``.
    """
    check_tensor("e", e)
    if e.dim() != 3:
        raise ValueError(f"e must have shape (B, T, C), got {tuple(e.shape)}")
    check_float_dtype("e", e.dtype)
    batch, length, channels = e.shape
    if length < 1 or channels < 1:
        raise ValueError(f"e must have T >= 1 and C >= 1, got shape {tuple(e.shape)}")
    device = e.device

    check_float("weight", weight, device, "e")
    check_float("bias", bias, device, "e")
    if weight.dim() == 3 and weight.shape[2] == 1:
        weight = weight[:, :, 0]
    if weight.dim() != 2 or weight.shape[1] != channels:
        raise ValueError(f"weight must have shape (K+1, C={channels}) or (K+1, C, 1), got {tuple(weight.shape)}")
    num_classes = weight.shape[0]  # K + 1
    if num_classes < 2:
        raise ValueError(f"weight must have K+1 >= 2 rows (K >= 1 foreground classes), got {num_classes}")
    if num_classes > _MAX_CLASSES_PLUS_BACKGROUND:
        raise ValueError(f"weight has K+1 = {num_classes} rows; at most {_MAX_CLASSES_PLUS_BACKGROUND} are supported")
    check_shape("bias", bias, (num_classes,))
    weight = weight.to(e.dtype).contiguous()
    bias = bias.to(e.dtype).contiguous()

    select = top_snippets is not None
    if select:
        if isinstance(top_snippets, bool) or not isinstance(top_snippets, (int, np.integer)):
            raise TypeError(f"top_snippets must be an int, got {top_snippets!r}")
        top_snippets = int(top_snippets)
        if top_snippets < 1:
            raise ValueError(f"top_snippets must be >= 1, got {top_snippets}")
    valid_len = _valid_len_tensor(valid_len, batch, length, device)

    probs = _check_out("out_probs", out_probs, (batch, num_classes, length), torch.float32, device)
    fg = _check_out("out_fg", out_fg, (batch, length), torch.float32, device)
    label = _check_out("out_label", out_label, (batch, length), torch.int32, device)
    top = _check_out("out_top", out_top, (batch, top_snippets), torch.int32, device) if select else None
    top_count = _check_out("out_top_count", out_top_count, (batch,), torch.int32, device) if select else None
    result = ClassHeadOutput(probs, fg, label, top, top_count)
    if batch == 0:
        return result

    config = _launch_config(num_classes, length, channels, e.dtype)
    dot_precision = "ieee" if e.dtype == torch.float32 else "tf32"  # "tf32" is only the default name for 16-bit
    _class_probs_kernel[(triton.cdiv(length, config.block_t), batch)](
        e, weight, bias, probs, fg, label,
        length, channels, num_classes,
        e.stride(0), e.stride(1), e.stride(2),
        BLOCK_K=config.block_k, BLOCK_T=config.block_t, BLOCK_C=config.block_c, DOT_PRECISION=dot_precision,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )

    if not select:
        return result
    if interpreted():
        block_q = block_s = max(16, min(256, triton.next_power_of_2(length)))
    else:  # a (32 x 256) comparison tile per step (faster than 64 x 128)
        block_q, block_s = 32, 256
    block_pad = max(16, min(256, triton.next_power_of_2(top_snippets)))
    _top_snippets_kernel[(triton.cdiv(length, block_q), batch)](
        fg, valid_len, top, top_count,
        length, top_snippets,
        BLOCK_Q=block_q, BLOCK_S=block_s, BLOCK_PAD=block_pad,
        num_warps=4,
    )
    return result


# ---------------------------------------------------------------------------------------------------------- naive
def select_top_snippets_naive(probs: np.ndarray, valid_len: int, top_snippets: int):
    """Post-processing steps 1–2 on one window, as the oracle :func:`gsmt_fast.postprocess.reference.window_candidates`
    does them (that function does not expose them): float64 ``probs`` (K+1, T) -> ``(fg (n,), label (n,),
    selected (M1,))`` over the first ``n = valid_len`` snippets."""
    probs = np.asarray(probs, dtype=np.float64)
    num_classes = probs.shape[0] - 1
    class_probs = probs[:num_classes, :valid_len]
    label = np.argmax(class_probs, axis=0)  # first maximum = lowest k on ties
    fg = class_probs[label, np.arange(valid_len)]
    num_selected = min(top_snippets, valid_len)
    selected = np.lexsort((np.arange(valid_len), -fg))[:num_selected]  # fg desc, then t asc
    return fg, label, selected


def class_head_naive(e, weight, bias, valid_len, top_snippets, *, compute_dtype=torch.float32) -> ClassHeadOutput:
    """Plain PyTorch/NumPy class head: the model's Conv1d (k=1) and softmax, then the oracle's steps 1–2.

    The logits are computed in ``compute_dtype`` (float32 by default; a low precision reproduces what eager PyTorch
    does with low-precision weights, for comparisons) and the softmax in float32, as the torch backend does. The
    selection runs in float64 on those float32 probs, like the oracle. Same outputs as :func:`class_head` (fg and
    label past ``valid_len`` too; top padded with -1), on e's device.
    """
    if weight.dim() == 2:
        weight = weight[:, :, None]
    e_ct = e.to(compute_dtype).transpose(1, 2)  # (B, C, T): the layout GSMT.cls_head reads
    # cuDNN convolutions default to TF32 on Ampere+ GPUs (1e-3 relative): a float32 reference must not use it.
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        logits = F.conv1d(e_ct, weight.to(compute_dtype), bias.to(compute_dtype))
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    probs = torch.softmax(logits.float(), dim=1)
    batch, _, length = probs.shape
    if isinstance(valid_len, int):
        valid_len = [valid_len] * batch
    valid_len = [int(v) for v in torch.as_tensor(valid_len).reshape(-1).tolist()]

    probs_host = probs.detach().cpu().double().numpy()
    fg = np.zeros((batch, length), dtype=np.float32)
    label = np.zeros((batch, length), dtype=np.int32)
    top = np.full((batch, top_snippets), -1, dtype=np.int32)
    top_count = np.zeros((batch,), dtype=np.int32)
    for b in range(batch):
        full_fg, full_label, _ = select_top_snippets_naive(probs_host[b], length, 1)
        fg[b], label[b] = full_fg, full_label
        _, _, selected = select_top_snippets_naive(probs_host[b], valid_len[b], top_snippets)
        top[b, : len(selected)] = selected
        top_count[b] = len(selected)
    device = probs.device
    return ClassHeadOutput(probs, torch.from_numpy(fg).to(device), torch.from_numpy(label).to(device),
                           torch.from_numpy(top).to(device), torch.from_numpy(top_count).to(device))


__all__ = ["ClassHeadOutput", "class_head", "class_head_naive", "select_top_snippets_naive"]
