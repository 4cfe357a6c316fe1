"""Fused linear layer: ``y = act(LN(x) @ weight.T + bias) + residual + row_add[row % period]`` in one Triton kernel.

What it computes (every part but the matrix product optional)::

    h   = LayerNorm(x) over the K features of each row (biased variance, eps; only when ``ln_weight`` is given)
    y   = h @ weight.T + bias                       # x (M, K) row-major, weight (N, K): nn.Linear's layout
    y   = act(y)                                    # None, "relu" or "gelu" (exact erf GELU, as nn.GELU())
    y   = y + residual                              # (M, N)
    y   = y + row_add[r % row_add_period]           # (P, N), P = row_add_period, e.g. the positional encoding

These are the model's linear layers in channels-last form (x = the (B*T, C) matrix of snippet embeddings):
input projection + positional encoding (``row_add``), the pre-LN QKV projection (``ln_weight``), the attention
out-projection + residual, and the pre-LN MLP layer + activation + residual (gsmt_fast/model.py).

Design, and why:

* One program computes a (BLOCK_M, BLOCK_N) output tile; its K loop streams (BLOCK_M, BLOCK_K) tiles of x and
  (BLOCK_K, BLOCK_N) tiles of weight.T (read straight from the (N, K) weight by strides: no transposed copy) into an
  fp32 accumulator with ``tl.dot``.
* The LayerNorm is a PROLOGUE: a first loop over the row block's K columns accumulates the row statistics in fp32,
  then the main loop normalises each x tile in registers before the dot. The normalised activations are never
  written to memory (an unfused LN would write and re-read an (M, K) tensor); the price is one extra read of the
  row block per program, which comes mostly from L2 since the programs of one row block run close together.
  The statistics are sums of ``x - shift`` and ``(x - shift)**2`` with shift = the row's first element: one pass,
  and no catastrophic cancellation when |mean| >> std (the shift is a sample of the row, so |mean - shift| is of
  the order of std).
* The normalised tile is rounded to the compute dtype before the dot, exactly where PyTorch rounds LN's output,
  so a bf16/fp16 run has PyTorch's own error profile; everything else (bias, activation, residual, row_add) is
  applied in fp32 to the accumulator and rounded once at the store.
* Compute dtype = x's dtype (fp32, fp16 or bf16). ``tl.dot`` on fp32 uses ``input_precision="ieee"`` (not tf32), so
  the fp32 path matches PyTorch fp32 to ~1e-6 relative; fp16/bf16 go to the tensor cores with fp32 accumulation.
  ``weight`` is cast to x's dtype by the wrapper if it differs (a copy: cast once, outside a hot loop). Bias, the LN
  parameters, residual and row_add may have any float dtype: the kernel reads them as fp32.
* Programs are ordered in groups of GROUP_M row blocks (``pid`` -> (pid_m, pid_n) "super-grouping") so that
  programs running at the same time share x row blocks and weight column blocks in L2.
* Block sizes (chosen by measurement, bench/RESULTS.md "Kernel tuning"): 128x256x64 with 8 warps and 3 stages for
  fp16/bf16 when N > 128 (the wider tile amortises the LayerNorm prologue's per-element work over twice the
  columns), 128x128 when 64 < N <= 128, 128x64 with 4 warps when N <= 64; fp32 128x128x32, 8 warps, 2 stages (IEEE
  fp32 dots run on the FMA units). Every block dim is >= 16 as the GPU's ``tl.dot`` requires, the edges masked.
  Under the Triton interpreter (CPU) the blocks are as large as the problem allows (up to 128) since the interpreter
  runs programs one after another in Python. No autotuning: the shapes the model uses are few and large.
* The LN prologue costs about 2x the plain GEMM (the stats pass re-reads x; normalising each x tile is ALU work in
  the main loop). Folding gamma into the weight and applying mean/rstd in the epilogue is faster for QKV only, and
  less accurate in fp32 when |mean| >> std (x @ w.T - mean * colsum(w) cancels), so the prologue stays.
* ``out`` may be ``residual`` itself (in-place residual update ``x = fused_linear(..., residual=x, out=x)``): each
  output element is read (as residual) and then written by the same program and no other, so that is safe. Any
  other overlap of ``out`` with an input (x, weight, row_add, ...; or a partial overlap with residual) is refused:
  other programs still read x and weight after a program has stored its tile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._checks import check_eps, check_float, check_out, check_shape, check_tensor, check_vector, interpreted, overlaps

_ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2}


# ---------------------------------------------------------------------------------------------------------- naive
def fused_linear_naive(x, weight, bias=None, *, ln_weight=None, ln_bias=None, ln_eps=1e-5, activation=None,
                           residual=None, row_add=None, row_add_period=None, out=None,
                           compute_dtype=torch.float32):
    """Plain-PyTorch ``fused_linear``: the model's own ops one after the other.

    Computes in ``compute_dtype`` (float32 by default: every input is upcast, the oracle). With
    ``compute_dtype=torch.bfloat16`` (or float16) it runs PyTorch's own low-precision path, each op rounding to that
    dtype like the eager model in that dtype (LN and matmul in bf16, additions in bf16). Returns a tensor of
    ``compute_dtype`` (copied into ``out`` when given, in out's dtype).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'relu' or 'gelu', got {activation!r}")
    def cast(t):
        return None if t is None else t.to(compute_dtype)

    h = cast(x)
    if ln_weight is not None:
        h = F.layer_norm(h, (h.shape[-1],), cast(ln_weight), cast(ln_bias), ln_eps)
    y = F.linear(h, cast(weight), cast(bias))
    if activation == "relu":
        y = F.relu(y)
    elif activation == "gelu":
        y = F.gelu(y)
    if residual is not None:
        y = y + cast(residual)
    if row_add is not None:
        period = row_add.shape[0] if row_add_period is None else row_add_period
        if y.shape[0] % period == 0:  # (B*T, N) viewed as (B, T, N): the model's broadcast h + pos_embed
            y = (y.view(-1, period, y.shape[1]) + cast(row_add)).view(y.shape)
        else:
            y = y + cast(row_add)[torch.arange(y.shape[0], device=y.device) % period]
    if out is not None:
        out.copy_(y)
        return out
    return y


# --------------------------------------------------------------------------------------------------------- kernel
@triton.jit
def _fused_linear_kernel(
    x_ptr, w_ptr, bias_ptr, ln_w_ptr, ln_b_ptr, res_ptr, row_add_ptr, out_ptr,
    M, N, K, row_add_period,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_rm, stride_rn, stride_pm, stride_pn, stride_om, stride_on,
    ln_eps,
    HAS_BIAS: tl.constexpr, HAS_LN: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    HAS_ROW_ADD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STATS_BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped program order: GROUP_M consecutive row blocks sweep the column blocks together (L2 reuse).
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    programs_per_group = GROUP_M * num_pid_n
    group_id = pid // programs_per_group
    first_pid_m = group_id * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % programs_per_group) % group_rows
    pid_n = (pid % programs_per_group) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < M
    col_ok = cols < N
    # 64-bit row offsets: M * K exceeds 2**31 elements at the largest batches.
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    offs_k = tl.arange(0, BLOCK_K)

    if HAS_LN:
        # Prologue: fp32 row statistics over all K, shifted by the row's first element (see module docstring).
        shift = tl.load(x_ptr + rows.to(tl.int64) * stride_xm, mask=row_ok, other=0.0).to(tl.float32)
        sum_d = tl.zeros((BLOCK_M,), dtype=tl.float32)
        sum_d2 = tl.zeros((BLOCK_M,), dtype=tl.float32)
        offs_sk = tl.arange(0, STATS_BLOCK_K)
        for k0 in range(0, K, STATS_BLOCK_K):
            k_idx = k0 + offs_sk
            tile_ok = row_ok[:, None] & (k_idx[None, :] < K)
            xt = tl.load(x_rows + k_idx[None, :] * stride_xk, mask=tile_ok, other=0.0).to(tl.float32)
            d = tl.where(tile_ok, xt - shift[:, None], 0.0)
            sum_d += tl.sum(d, axis=1)
            sum_d2 += tl.sum(d * d, axis=1)
        mean_d = sum_d / K
        var = tl.maximum(sum_d2 / K - mean_d * mean_d, 0.0)
        rstd = 1.0 / tl.sqrt(var + ln_eps)
        mean = shift + mean_d

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_idx = k0 + offs_k
        k_ok = k_idx < K
        a = tl.load(x_rows + k_idx[None, :] * stride_xk, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if HAS_LN:
            gamma = tl.load(ln_w_ptr + k_idx, mask=k_ok, other=0.0).to(tl.float32)
            beta = tl.load(ln_b_ptr + k_idx, mask=k_ok, other=0.0).to(tl.float32)
            # x - mean first: exact when |mean| >> std, unlike the one-FMA x * rstd - mean * rstd (2x the error).
            a_norm = (a.to(tl.float32) - mean[:, None]) * rstd[:, None] * gamma[None, :] + beta[None, :]
            # Rounded to the compute dtype where PyTorch rounds LN's output; padded columns stay exact zeros.
            a = tl.where(k_ok[None, :], a_norm, 0.0).to(x_ptr.dtype.element_ty)
        # weight.T tile (BLOCK_K, BLOCK_N) read by strides from the (N, K) weight.
        wt = tl.load(w_ptr + cols[None, :] * stride_wn + k_idx[:, None] * stride_wk,
                     mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(a, wt, input_precision=DOT_PRECISION)

    # Epilogue in fp32: bias, activation, residual, periodic row add; one rounding at the store.
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if ACTIVATION == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACTIVATION == 2:
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    tile_ok = row_ok[:, None] & col_ok[None, :]
    if HAS_RESIDUAL:
        res = tl.load(res_ptr + rows.to(tl.int64)[:, None] * stride_rm + cols[None, :] * stride_rn, mask=tile_ok,
                      other=0.0)
        acc += res.to(tl.float32)
    if HAS_ROW_ADD:
        period_rows = rows % row_add_period
        add = tl.load(row_add_ptr + period_rows[:, None] * stride_pm + cols[None, :] * stride_pn, mask=tile_ok,
                      other=0.0)
        acc += add.to(tl.float32)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_om + cols[None, :] * stride_on,
             acc.to(out_ptr.dtype.element_ty), mask=tile_ok)


# -------------------------------------------------------------------------------------------------------- wrapper
def _block_sizes(M: int, N: int, K: int, dtype: torch.dtype) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); powers of two >= 16 (tl.dot's minimum on the GPU).

    On the GPU the blocks depend on the shape only through N <= 64 (a narrow output such as N=40 would waste most
    of a 128-wide tile) and M <= 1024 (a few windows: batch-1 latency), so that few kernel variants get compiled.
    At M = 256 (one window of 256 snippets) 128x256 tiles give 4 programs for N = 512 on 132 SMs; 64x64 tiles give
    32. Not yet timed on a GPU (bench/bench_triton.py's batch-1 breakdown, ``forward_eager``, measures it).
    """
    if interpreted():
        def fit(n: int, cap: int) -> int:
            return max(16, min(cap, triton.next_power_of_2(n)))

        return fit(M, 128), fit(N, 128), fit(K, 128), 4, 1
    if dtype == torch.float32:
        return 128, 128, 32, 8, 2
    if M <= 1024:
        return 64, 64, 64, 4, 3
    if N <= 64:
        return 128, 64, 64, 4, 3
    return 128, (256 if N > 128 else 128), 64, 8, 3


def _stats_block_k(block_k: int, dtype: torch.dtype) -> int:
    """Columns per step of the LN statistics pass: 128 for fp16/bf16 on the GPU (2% faster than 64), else BLOCK_K."""
    return block_k if interpreted() or dtype == torch.float32 else max(block_k, 128)


def fused_linear(x, weight, bias=None, *, ln_weight=None, ln_bias=None, ln_eps=1e-5, activation=None, residual=None,
                 row_add=None, row_add_period=None, out=None):
    """``act(LN(x) @ weight.T + bias) + residual + row_add[row % row_add_period]`` in one kernel (module docstring).

    x: (M, K) float32/float16/bfloat16, the compute dtype. weight: (N, K), cast to x's dtype when it differs (a
    copy). bias: (N,) or None. ln_weight/ln_bias: (K,) each, or both None (no LayerNorm); ln_eps: LN's eps.
    activation: None, "relu" or "gelu". residual: (M, N) or None. row_add: (P, N) or None, added to row r as
    row_add[r % P]; row_add_period, if given, must equal P. out: (M, N) of x's dtype, contiguous, or None; it may be
    ``residual`` itself but must not overlap any other input. Returns out (a new tensor when out is None).
    """
    check_tensor("x", x)
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (M, K), got shape {tuple(x.shape)}; reshape (B, T, C) inputs to (B*T, C)")
    device = x.device
    check_float("x", x)
    M, K = x.shape
    check_float("weight", weight, device)
    if weight.dim() != 2 or weight.shape[1] != K:
        raise ValueError(f"weight must have shape (N, {K}) (nn.Linear layout), got {tuple(weight.shape)}")
    N = weight.shape[0]
    if K == 0 or N == 0:
        raise ValueError(f"weight must have N >= 1 and K >= 1, got shape {tuple(weight.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'relu' or 'gelu', got {activation!r}")
    if bias is not None:
        check_vector("bias", bias, N, device)
    if (ln_weight is None) != (ln_bias is None):
        raise ValueError("ln_weight and ln_bias must be given together (LayerNorm's affine parameters) or not at all")
    if ln_weight is not None:
        check_vector("ln_weight", ln_weight, K, device)
        check_vector("ln_bias", ln_bias, K, device)
        check_eps("ln_eps", ln_eps)
    if residual is not None:
        check_float("residual", residual, device)
        check_shape("residual", residual, (M, N))
    if row_add is not None:
        check_float("row_add", row_add, device)
        if row_add.dim() != 2 or row_add.shape[1] != N or row_add.shape[0] < 1:
            raise ValueError(f"row_add must have shape (P, {N}) with P >= 1, got {tuple(row_add.shape)}")
        if row_add_period is not None and row_add_period != row_add.shape[0]:
            raise ValueError(f"row_add_period ({row_add_period}) must equal row_add.shape[0] ({row_add.shape[0]})")
    elif row_add_period is not None:
        raise ValueError("row_add_period is given but row_add is None")

    if out is not None:
        check_out(out, (M, N), x, "x")
        if not out.is_contiguous():
            raise ValueError("out must be contiguous")
        same_as_residual = (residual is not None and out.data_ptr() == residual.data_ptr()
                            and out.stride() == residual.stride() and out.dtype == residual.dtype)
        for name, t in (("x", x), ("weight", weight), ("bias", bias), ("ln_weight", ln_weight),
                        ("ln_bias", ln_bias), ("residual", residual), ("row_add", row_add)):
            if t is None or (name == "residual" and same_as_residual):
                continue
            if overlaps(out, t):
                raise ValueError(f"out overlaps {name}; only out=residual (the very same tensor) may alias")
    else:
        out = torch.empty((M, N), device=device, dtype=x.dtype)
    if M == 0:
        return out

    if weight.dtype != x.dtype:
        weight = weight.to(x.dtype)
    x = x if x.stride(1) == 1 else x.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    ln_weight = ln_weight.contiguous() if ln_weight is not None else None
    ln_bias = ln_bias.contiguous() if ln_bias is not None else None

    BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages = _block_sizes(M, N, K, x.dtype)
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
    res_strides = residual.stride() if residual is not None else (0, 0)
    add_strides = row_add.stride() if row_add is not None else (0, 0)
    # Unused pointer arguments get x: never read, since their HAS_* flag compiles the load away.
    _fused_linear_kernel[grid](
        x, weight,
        bias if bias is not None else x,
        ln_weight if ln_weight is not None else x,
        ln_bias if ln_bias is not None else x,
        residual if residual is not None else x,
        row_add if row_add is not None else x,
        out,
        M, N, K, row_add.shape[0] if row_add is not None else 1,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), res_strides[0], res_strides[1],
        add_strides[0], add_strides[1], out.stride(0), out.stride(1),
        float(ln_eps),
        HAS_BIAS=bias is not None, HAS_LN=ln_weight is not None, ACTIVATION=_ACTIVATIONS[activation],
        HAS_RESIDUAL=residual is not None, HAS_ROW_ADD=row_add is not None,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, STATS_BLOCK_K=_stats_block_k(BLOCK_K, x.dtype), GROUP_M=8,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
