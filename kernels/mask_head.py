"""Fused mask head of GSMT (``gsmt_fast.model.GSMT.mask_head``) as three Triton kernels.

What it computes, for an embedding ``e`` of shape (B, T, C), channels-last (row t of video b is ``e[b, t, :]``; padded
snippets' rows are already zero, as the transformer kernels leave them):

    h1[b, t, :] = relu(sum_{j in -1,0,1} e[b, t+j, :] @ w1[:, :, j+1].T + b1)          (B, T, Cm)
    h2[b, t, :] = relu(sum_{j in -1,0,1} h1[b, t+j, :] @ w2[:, :, j+1].T + b2)         (B, T, Cm)
    masks[b, i, t] = sigmoid(w3[i, :] . h2[b, t, :] + b3[i])                            (B, T, T)

with rows t+j outside [0, T) read as zero: exactly ``Conv1d(k=3, padding=1) + ReLU`` twice, then ``Conv1d(k=1)`` and a
sigmoid, on ``e.transpose(1, 2)``. Column t of ``masks`` (``masks[b, :, t]``) is the mask of the whole window that
snippet t predicts. With ``columns`` (B, M) only the selected columns are produced: ``out[b, :, j] =
masks[b, :, columns[b, j]]``, and 0 where ``columns[b, j] < 0``.

Layouts: ``e`` (B, T, C) and the intermediates ``h1``/``h2`` (B, T, Cm) are row-major channels-last; the Conv1d weights
come in PyTorch layout (w1 (Cm, C, 3), w2 (Cm, Cm, 3), w3 (T, Cm, 1) or (T, Cm)); the output is (B, T, T) (or
(B, T, M)) row-major, i.e. already the model's ``masks[b, i, t]`` layout.

Design (the WHY):
- A k=3 convolution over channels-last rows is an implicit GEMM: output tile (BLOCK_T rows t) x (BLOCK_N channels)
  accumulates, for each tap j and each BLOCK_K slice of input channels, the input rows shifted by j-1 times the tap's
  (Cin, Cout) weight slice. Loading the shifted rows with a [0, T) mask IS the zero padding, and since every program
  works inside one video (its batch index comes from its program id), a tile never reads the neighbouring video's
  rows. The taps and the channel slices run as ONE flat loop of 3 * ceil(Cin / BLOCK_K) steps, so Triton pipelines
  the loads of the whole reduction (it only pipelines innermost loops).
- The weights are repacked once per call to tap-major (3, Cout, Cin), channel-contiguous: PyTorch's (Cout, Cin, 3)
  has a stride of 3 along the reduction, which would turn every weight load into a strided gather. The copy is tiny
  (Cm * (C + Cm) * 3 elements) next to the activations.
- Bias + ReLU are fused into the conv epilogue; h1 and h2 are written in the compute dtype (as PyTorch's own
  reduced-precision convolutions round their outputs).
- The final 1x1 conv is a GEMM whose output tile is (BLOCK_I output channels i) x (BLOCK_J snippets t):
  ``w3[i-block] @ h2[b, t-block].T``, fused with bias + sigmoid, stored once, directly at ``masks[b, i, t]`` (t is the
  contiguous axis of the store, so stores are coalesced). With ``columns`` the same kernel gathers the selected rows
  of h2 as the tile's B operand (each one contiguous), so only M of the T columns are computed and written.
- conv2 is NOT fused with the final projection: one h2 tile (BLOCK_T, Cm) feeds T / BLOCK_I output tiles, so a fused
  kernel must either keep a (BLOCK_T x Cm) fp32 accumulator (128 x 256 at paper dims) live while it loops over all
  T output channels, or recompute conv2 per output tile (3 * Cm / BLOCK_I times the projection's FLOPs). What fusion
  would save is the write + read of h2, 2 * B * T * Cm elements: at paper dims (C=512, Cm=256, T=256, bf16) 67 MB of
  the head's ~235 MB of DRAM traffic for B=256, i.e. at most ~22 us at 3 TB/s of a 0.22 ms head whose 86 GFLOP
  (0.11 ms at tensor-core peak) dominate. Three plain kernels keep every tile shape tensor-core friendly and the
  column-gather variant trivial.
- Precision: the compute dtype is ``e.dtype`` (float32, float16 or bfloat16); the wrapper casts the weights to it
  (fp32 master weights are accepted and cast; biases are read in their own dtype and added in float32, which saves
  three cast kernels per call); every ``tl.dot`` accumulates in float32, and in the float32 path uses
  ``input_precision="ieee"`` (no TF32), so that it matches PyTorch's fp32 convolutions to ~1e-6 relative. The
  sigmoid is evaluated in float32 and rounded once to ``out_dtype`` (float32 for fp32 compute, float16 otherwise:
  mask values lie in [0, 1], where float16 has 3 more mantissa bits than bfloat16).
- Block sizes are powers of two >= 16 (``tl.dot`` on a GPU needs that; smaller real dims are masked). Under the Triton
  interpreter (CPU, ``TRITON_INTERPRET=1``) every program runs serially in Python, so there the blocks are as large as
  the problem (up to 128) to keep the grid small.

The wrapper's host work (checks, weight repacking, three launches) is as long as the GPU work of a large
batch: callers that run small batches capture it in a CUDA graph (it captures cleanly). Timings: bench/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._checks import check_device, check_float, check_float_dtype, check_shape, check_tensor, interpreted

__all__ = ["mask_head", "mask_head_naive"]

_COLUMN_DTYPES = (torch.int32, torch.int64)


# ---------------------------------------------------------------------------------------------------------- naive
def mask_head_naive(e, w1, b1, w2, b2, w3, b3, columns=None):
    """The model's mask head in plain PyTorch, float32: masks (B, T, T), or (B, T, M) gathered at ``columns``.

    ``e`` is channels-last (B, T, C); it is transposed to (B, C, T) and run through the same ``F.conv1d`` calls as
    ``GSMT.mask_head`` (under ``torch.autocast`` the convolutions run in the autocast dtype instead).
    """
    x = e.float().transpose(1, 2)
    h = F.relu(F.conv1d(x, w1.float(), b1.float(), padding=1))
    h = F.relu(F.conv1d(h, w2.float(), b2.float(), padding=1))
    w3 = w3.float().reshape(w3.shape[0], -1, 1)
    masks = torch.sigmoid(F.conv1d(h, w3, b3.float()))
    if columns is None:
        return masks
    selected = columns.long().to(masks.device)
    gathered = torch.gather(masks, 2, selected.clamp(min=0)[:, None, :].expand(-1, masks.shape[1], -1))
    return torch.where(selected[:, None, :] >= 0, gathered, torch.zeros((), dtype=masks.dtype, device=masks.device))


# --------------------------------------------------------------------------------------------------------- kernels
@triton.jit
def _video_tile(num_rows, num_cols, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """(video as int64, first row, first column) of this program's output tile.

    One flat grid axis (2^31 programs; a batch axis of its own would cap B at 65535 on CUDA), video-major; within a
    video, neighbouring programs take the same rows and different column blocks, so the rows stay hot in L2.
    """
    col_blocks = tl.cdiv(num_cols, BLOCK_COLS)
    tiles_per_video = tl.cdiv(num_rows, BLOCK_ROWS) * col_blocks
    batch = (tl.program_id(0) // tiles_per_video).to(tl.int64)
    tile = tl.program_id(0) % tiles_per_video
    return batch, (tile // col_blocks) * BLOCK_ROWS, (tile % col_blocks) * BLOCK_COLS


@triton.jit
def _conv3_bias_relu_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    T, C_IN, C_OUT,
    stride_xb, stride_xt,
    stride_wtap, stride_wo,
    stride_yb, stride_yt,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """y[b, t, n] = relu(bias[n] + sum_tap sum_k x[b, t + tap - 1, k] * w[tap, n, k]), rows outside [0, T) = 0.

    x (B, T, C_IN) and y (B, T, C_OUT) have a channel stride of 1; w is tap-major (3, C_OUT, C_IN), channel stride 1.
    Grid: (B * ceil(T / BLOCK_T) * ceil(C_OUT / BLOCK_N),).
    """
    batch, t_start, n_start = _video_tile(T, C_OUT, BLOCK_T, BLOCK_N)
    rows = t_start + tl.arange(0, BLOCK_T)
    out_channels = n_start + tl.arange(0, BLOCK_N)
    out_channel_ok = out_channels < C_OUT
    k_offsets = tl.arange(0, BLOCK_K)
    x_video = x_ptr + batch * stride_xb

    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    k_blocks = tl.cdiv(C_IN, BLOCK_K)
    # One flat loop over (tap, channel slice): a single innermost loop is what Triton software-pipelines.
    for step in range(0, 3 * k_blocks):
        tap = step // k_blocks
        in_channels = (step % k_blocks) * BLOCK_K + k_offsets
        in_channel_ok = in_channels < C_IN
        source_rows = rows + (tap - 1)
        # The [0, T) mask is the convolution's zero padding and keeps the tile inside its own video.
        row_ok = (source_rows >= 0) & (source_rows < T)
        x_tile = tl.load(x_video + source_rows[:, None] * stride_xt + in_channels[None, :],
                         mask=row_ok[:, None] & in_channel_ok[None, :], other=0.0)
        w_tile = tl.load(w_ptr + tap * stride_wtap + out_channels[None, :] * stride_wo + in_channels[:, None],
                         mask=in_channel_ok[:, None] & out_channel_ok[None, :], other=0.0)
        acc = tl.dot(x_tile, w_tile, acc, input_precision=DOT_PRECISION)

    bias = tl.load(bias_ptr + out_channels, mask=out_channel_ok, other=0.0).to(tl.float32)
    y = tl.maximum(acc + bias[None, :], 0.0)
    y_ptrs = y_ptr + batch * stride_yb + rows[:, None] * stride_yt + out_channels[None, :]
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=(rows < T)[:, None] & out_channel_ok[None, :])


@triton.jit
def _mask_projection_kernel(
    h_ptr, w_ptr, bias_ptr, columns_ptr, out_ptr,
    T, C_M, N_COLS,
    stride_hb, stride_ht,
    stride_wi,
    stride_cb,
    stride_ob, stride_oi, stride_oj,
    GATHER: tl.constexpr,
    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """out[b, i, j] = sigmoid(bias[i] + sum_k w[i, k] * h[b, s_j, k]) with s_j = j, or s_j = columns[b, j] (GATHER).

    h (B, T, C_M) and w (T, C_M) have a channel stride of 1. Gathered columns with s_j outside [0, T) are written as 0
    (and never read). Grid: (B * ceil(T / BLOCK_I) * ceil(N_COLS / BLOCK_J),).
    """
    batch, i_start, j_start = _video_tile(T, N_COLS, BLOCK_I, BLOCK_J)
    out_channels = i_start + tl.arange(0, BLOCK_I)
    out_channel_ok = out_channels < T
    cols = j_start + tl.arange(0, BLOCK_J)
    col_ok = cols < N_COLS
    if GATHER:
        snippets = tl.load(columns_ptr + batch * stride_cb + cols, mask=col_ok, other=-1)
        col_ok = col_ok & (snippets >= 0) & (snippets < T)
        snippets = tl.where(col_ok, snippets, 0)
    else:
        snippets = cols
    k_offsets = tl.arange(0, BLOCK_K)
    h_video = h_ptr + batch * stride_hb

    acc = tl.zeros((BLOCK_I, BLOCK_J), dtype=tl.float32)
    for k_start in range(0, C_M, BLOCK_K):
        channels = k_start + k_offsets
        channel_ok = channels < C_M
        w_tile = tl.load(w_ptr + out_channels[:, None] * stride_wi + channels[None, :],
                         mask=out_channel_ok[:, None] & channel_ok[None, :], other=0.0)
        # B operand = h[b, snippets, channels].T: each snippet's row is contiguous along the reduction.
        h_tile = tl.load(h_video + snippets[None, :] * stride_ht + channels[:, None],
                         mask=channel_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(w_tile, h_tile, acc, input_precision=DOT_PRECISION)

    bias = tl.load(bias_ptr + out_channels, mask=out_channel_ok, other=0.0).to(tl.float32)
    masks = tl.sigmoid(acc + bias[:, None])
    if GATHER:
        masks = tl.where(col_ok[None, :], masks, 0.0)  # "no snippet selected" columns are written as 0
    out_ptrs = out_ptr + batch * stride_ob + out_channels[:, None] * stride_oi + cols[None, :] * stride_oj
    tl.store(out_ptrs, masks.to(out_ptr.dtype.element_ty), mask=out_channel_ok[:, None] & (cols < N_COLS)[None, :])


# ------------------------------------------------------------------------------------------------- block choices
def _pow2_block(size: int, cap: int) -> int:
    """Smallest power of two >= size, clamped to [16, cap] (tl.dot needs every block dim >= 16 on a GPU)."""
    return max(16, min(cap, triton.next_power_of_2(max(1, size))))


def _tile_config(rows: int, cols: int, reduction: int, dtype: torch.dtype, names: tuple[str, str, str],
                 few_cols: bool = False, *, batch: int) -> dict:
    """Launch config of a GEMM-like kernel: its three block sizes (output rows, output columns, reduction) under
    ``names``, plus num_warps/num_stages on the GPU. ``few_cols``: a narrow 16-bit output (<= 64 columns) takes
    64-row tiles, i.e. more programs.

    Chosen by measurement (bench/RESULTS.md, "Kernel tuning"): 16-bit 128x128x64 tiles with 8 warps (a few
    gathered columns: 64x64); fp32 (IEEE, no tensor cores) 128x64x32 tiles with 4 warps; a few windows
    (``batch * rows <= 1024``, batch-1 latency) 64x64 tiles for 4x more programs.
    """
    if interpreted():
        caps, launch = (128, 128, 128), {}
    elif dtype == torch.float32:
        caps, launch = (128, 64, 32), dict(num_warps=4, num_stages=3)
    elif batch * rows <= 1024:
        caps, launch = (64, 64, 64), dict(num_warps=4, num_stages=3)
    elif few_cols:
        caps, launch = (64, 128, 64), dict(num_warps=4, num_stages=3)
    else:
        caps, launch = (128, 128, 64), dict(num_warps=8, num_stages=3)
    blocks = {name: _pow2_block(size, cap) for name, size, cap in zip(names, (rows, cols, reduction), caps)}
    return {**blocks, **launch}


# -------------------------------------------------------------------------------------------------------- wrapper
def _conv3_bias_relu(x: torch.Tensor, w_taps: torch.Tensor, bias: torch.Tensor, precision: str) -> torch.Tensor:
    batch, length, c_in = x.shape
    c_out = w_taps.shape[1]
    y = torch.empty((batch, length, c_out), dtype=x.dtype, device=x.device)
    config = _tile_config(length, c_out, c_in, x.dtype, ("BLOCK_T", "BLOCK_N", "BLOCK_K"), batch=batch)
    grid = (batch * triton.cdiv(length, config["BLOCK_T"]) * triton.cdiv(c_out, config["BLOCK_N"]),)
    _conv3_bias_relu_kernel[grid](
        x, w_taps, bias, y,
        length, c_in, c_out,
        x.stride(0), x.stride(1),
        w_taps.stride(0), w_taps.stride(1),
        y.stride(0), y.stride(1),
        DOT_PRECISION=precision, **config,
    )
    return y


def mask_head(e, w1, b1, w2, b2, w3, b3, *, columns=None, out_dtype=None, out=None, hidden=False):
    """Mask head on channels-last embeddings: sigmoid(conv1x1(relu(conv3(relu(conv3(e)))))) as (B, T, T) masks.

    Args:
        e: (B, T, C) embedding, channels-last, float32 / float16 / bfloat16; its dtype is the compute dtype.
        w1, b1: first Conv1d, (Cm, C, 3) and (Cm,).
        w2, b2: second Conv1d, (Cm, Cm, 3) and (Cm,).
        w3, b3: final 1x1 Conv1d with T output channels, (T, Cm, 1) or (T, Cm), and (T,).
            Weights may be any of the three float dtypes: they are cast to the compute dtype; biases are read as
            they are and added in float32.
        columns: optional (B, M) int32/int64 snippet indices on e's device; then the output is (B, T, M) with
            ``out[b, :, j] = masks[b, :, columns[b, j]]`` and 0 where ``columns[b, j] < 0``. Indices must be < T
            (checked on CPU tensors; on a GPU, where checking would synchronise, such columns are written as 0).
        out_dtype: float32, float16 or bfloat16; default float32 for float32 compute, float16 otherwise (or
            ``out.dtype`` when ``out`` is given).
        out: optional preallocated output of the result's shape and dtype, on e's device (any strides).
        hidden: also return h2 (B, T, Cm) in the compute dtype, the features the masks are read from (the boundary
            head of the boundary-refined variant reads them too: :mod:`gsmt_fast.kernels.boundary_head`).

    Returns:
        masks (B, T, T) with ``masks[b, i, t]`` = channel i of the mask predicted from snippet t, or (B, T, M);
        ``(masks, h2)`` with ``hidden=True``.
    """
    check_tensor("e", e)
    if e.dim() != 3:
        raise ValueError(f"e must be 3-D (B, T, C) channels-last, got shape {tuple(e.shape)}")
    device = e.device
    check_float("e", e)
    batch, length, c_in = e.shape
    if length < 1 or c_in < 1:
        raise ValueError(f"e must have T >= 1 and C >= 1, got shape {tuple(e.shape)}")
    if device.type == "cpu" and not interpreted():
        raise ValueError("e is a CPU tensor: the Triton kernels run on CPU only under the interpreter "
                         "(set TRITON_INTERPRET=1 before triton is imported)")
    for name, tensor in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3), ("b3", b3)):
        check_float(name, tensor, device, "e")
    if w1.dim() != 3 or w1.shape[1:] != (c_in, 3):
        raise ValueError(f"w1 must have shape (Cm, {c_in}, 3) (Conv1d weight, C = e.shape[2]), got {tuple(w1.shape)}")
    c_m = w1.shape[0]
    check_shape("b1", b1, (c_m,))
    check_shape("w2", w2, (c_m, c_m, 3))
    check_shape("b2", b2, (c_m,))
    if tuple(w3.shape) not in ((length, c_m, 1), (length, c_m)):
        raise ValueError(f"w3 must have shape ({length}, {c_m}, 1) or ({length}, {c_m}) (T = e.shape[1] output "
                         f"channels), got {tuple(w3.shape)}")
    check_shape("b3", b3, (length,))

    n_cols = length
    if columns is not None:
        check_tensor("columns", columns)
        if columns.dtype not in _COLUMN_DTYPES:
            raise TypeError(f"columns must be int32 or int64, got {columns.dtype}")
        if columns.dim() != 2 or columns.shape[0] != batch:
            raise ValueError(f"columns must have shape ({batch}, M), got {tuple(columns.shape)}")
        check_device("columns", columns, device, "e")
        if device.type == "cpu" and columns.numel() and int(columns.max()) >= length:
            raise ValueError(f"columns has an index {int(columns.max())} >= T = {length}")
        columns = columns.contiguous()
        n_cols = columns.shape[1]

    if out is not None and out_dtype is None:
        out_dtype = out.dtype if isinstance(out, torch.Tensor) else None
    if out_dtype is None:
        out_dtype = torch.float32 if e.dtype == torch.float32 else torch.float16
    check_float_dtype("out_dtype", out_dtype)
    out_shape = (batch, length, n_cols)
    if out is None:
        out = torch.empty(out_shape, dtype=out_dtype, device=device)
    else:
        check_tensor("out", out)
        check_shape("out", out, out_shape)
        if out.dtype != out_dtype:
            raise TypeError(f"out has dtype {out.dtype} but out_dtype is {out_dtype}")
        check_device("out", out, device, "e")
    if out.numel() == 0:
        return (out, torch.empty((batch, length, c_m), dtype=e.dtype, device=device)) if hidden else out

    compute_dtype = e.dtype
    # fp32 must not silently become TF32: the fp32 path is the exactness reference of the engine.
    precision = "ieee"
    e = e.contiguous()
    # Tap-major (3, Cout, Cin) weights: the reduction axis becomes contiguous (see the module docstring).
    w1_taps = w1.to(compute_dtype).permute(2, 0, 1).contiguous()
    w2_taps = w2.to(compute_dtype).permute(2, 0, 1).contiguous()
    w3_rows = w3.to(compute_dtype).reshape(length, c_m).contiguous()
    b1, b2, b3 = (b.contiguous() for b in (b1, b2, b3))

    h1 = _conv3_bias_relu(e, w1_taps, b1, precision)
    h2 = _conv3_bias_relu(h1, w2_taps, b2, precision)

    config = _tile_config(length, n_cols, c_m, h2.dtype, ("BLOCK_I", "BLOCK_J", "BLOCK_K"), few_cols=n_cols <= 64,
                          batch=batch)
    grid = (batch * triton.cdiv(length, config["BLOCK_I"]) * triton.cdiv(n_cols, config["BLOCK_J"]),)
    gather = columns is not None
    _mask_projection_kernel[grid](
        h2, w3_rows, b3, columns if gather else h2, out,
        length, c_m, n_cols,
        h2.stride(0), h2.stride(1),
        w3_rows.stride(0),
        columns.stride(0) if gather else 0,
        out.stride(0), out.stride(1), out.stride(2),
        GATHER=gather, DOT_PRECISION=precision, **config,
    )
    return (out, h2) if hidden else out
