"""fused_linear (kernels/linear.py) against its plain-PyTorch reference.

On CPU the Triton interpreter runs the kernel (tests/conftest.py sets TRITON_INTERPRET=1 when there is no GPU);
bf16 is not tested there because the interpreter's bf16 tl.dot is broken. Tolerances are relative RMS errors:
fp32 <= 1e-5 (the kernel's ieee fp32 dot and fp32 LN statistics land near 1e-7); fp16 <= 3e-3: the reference runs
in fp32 on the same fp16 inputs, so the gap is the kernel's two fp16 roundings (the normalised activations before
the dot, like PyTorch, and the output), each about 2**-11 / sqrt(3) ~ 3e-4 RMS relative, measured ~2.5e-4 in total.
"""

from __future__ import annotations

import itertools

import pytest
import torch

triton = pytest.importorskip("triton")

from gsmt_fast.kernels import linear  # noqa: E402
from gsmt_fast.kernels.linear import fused_linear, fused_linear_naive  # noqa: E402
from kernel_testing import nan_tensor, rel_rms  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def make_inputs(M, K, N, *, ln=False, residual=False, row_add_period=None, bias=True, seed=0, device="cpu",
                x_offset=0.0):
    """fp32 inputs: x with a non-zero mean per row (tests the LN statistics), weights scaled like nn.Linear."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g) * 1.5 + x_offset + torch.randn(M, 1, generator=g)
    kwargs = {}
    weight = torch.randn(N, K, generator=g) / K**0.5
    b = torch.randn(N, generator=g) * 0.5 if bias else None
    if ln:
        kwargs["ln_weight"] = 1.0 + 0.3 * torch.randn(K, generator=g)
        kwargs["ln_bias"] = 0.2 * torch.randn(K, generator=g)
    if residual:
        kwargs["residual"] = torch.randn(M, N, generator=g)
    if row_add_period is not None:
        kwargs["row_add"] = torch.randn(row_add_period, N, generator=g)
        kwargs["row_add_period"] = row_add_period
    moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    return x.to(device), weight.to(device), (b.to(device) if b is not None else None), moved


def cast(t, dtype):
    return t.to(dtype) if isinstance(t, torch.Tensor) else t


def run_and_check(x, weight, bias, kwargs, dtype, activation=None):
    xd, wd, bd = x.to(dtype), weight.to(dtype), cast(bias, dtype)
    kd = {k: cast(v, dtype) for k, v in kwargs.items()}
    out = nan_tensor((x.shape[0], weight.shape[0]), dtype, x.device)
    got = fused_linear(xd, wd, bd, activation=activation, out=out, **kd)
    assert got is out
    assert torch.isfinite(out).all(), "some output elements were not written (NaN poison left) or overflowed"
    want = fused_linear_naive(xd, wd, bd, activation=activation, **kd)  # fp32 on the same rounded inputs
    err = rel_rms(out, want)
    assert err <= TOLERANCE[dtype], f"rel_rms {err:.3e} > {TOLERANCE[dtype]:.0e}"
    return err


# (K, N) pairs: not multiples of the blocks (48 -> 40), a qkv-like 32 -> 96, and 64 -> 96.
SHAPES = [(48, 40), (64, 96), (32, 96)]
# One fused variant per case, cycling, so every variant meets several M and both dtypes.
VARIANTS = [
    dict(ln=True, activation=None, residual=False, row_add=False),    # pre-LN QKV projection
    dict(ln=False, activation=None, residual=False, row_add=True),    # input projection + positional encoding
    dict(ln=True, activation="relu", residual=True, row_add=False),   # pre-LN MLP + residual
    dict(ln=False, activation=None, residual=True, row_add=False),    # attention out-projection + residual
    dict(ln=True, activation="gelu", residual=True, row_add=True),    # everything
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("T", [1, 7, 100, 123, 256])
@pytest.mark.parametrize("K,N", SHAPES)
def test_matches_reference_over_lengths(K, N, T, batch, dtype):
    case = [1, 7, 100, 123, 256].index(T) * 2 + (batch == 3) + SHAPES.index((K, N))
    variant = VARIANTS[case % len(VARIANTS)]
    M = batch * T
    x, w, b, kw = make_inputs(M, K, N, ln=variant["ln"], residual=variant["residual"],
                              row_add_period=T if variant["row_add"] else None, seed=case)
    run_and_check(x, w, b, kw, dtype, activation=variant["activation"])


@pytest.mark.parametrize("ln,activation,residual,row_add",
                         list(itertools.product([False, True], [None, "relu", "gelu"], [False, True], [False, True])))
def test_every_fused_combination_fp32(ln, activation, residual, row_add):
    x, w, b, kw = make_inputs(3 * 7, 48, 40, ln=ln, residual=residual, row_add_period=7 if row_add else None)
    run_and_check(x, w, b, kw, torch.float32, activation=activation)


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_fused_combinations_fp16(activation):
    x, w, b, kw = make_inputs(100, 64, 96, ln=True, residual=True, row_add_period=100)
    run_and_check(x, w, b, kw, torch.float16, activation=activation)


def test_no_bias_and_awkward_sizes():
    # K and N of 1, K not a power of two, one row; M bigger than one interpreter block (128) with a ragged edge.
    for M, K, N in [(1, 1, 1), (5, 3, 17), (130, 33, 129), (1, 200, 2)]:
        x, w, _, kw = make_inputs(M, K, N, ln=True, residual=True, row_add_period=1, bias=False, seed=M + K + N)
        run_and_check(x, w, None, kw, torch.float32, activation="gelu")


def test_layer_norm_statistics_with_large_mean():
    # |mean| = 1000 >> std: plain sum/sum-of-squares statistics would cancel catastrophically in fp32. Here even
    # PyTorch's fp32 F.layer_norm is off by ~2e-5 (fp32 rounding of x - mean), so both are judged against float64:
    # the kernel must be no worse than PyTorch fp32 (measured: kernel 1.2e-5, PyTorch 2.2e-5).
    x, w, b, kw = make_inputs(50, 64, 40, ln=True, x_offset=1000.0)
    got = fused_linear(x, w, b, **kw)
    torch_fp32 = fused_linear_naive(x, w, b, **kw)
    exact = fused_linear_naive(x, w, b, compute_dtype=torch.float64, **kw)
    assert rel_rms(got, exact) <= rel_rms(torch_fp32, exact)


def test_constant_rows_layer_norm():
    # Zero variance: rstd = 1/sqrt(eps), LN output = ln_bias exactly (as F.layer_norm).
    x = torch.full((9, 48), 3.25)
    _, w, b, kw = make_inputs(9, 48, 40, ln=True)
    run_and_check(x, w, b, kw, torch.float32, activation="relu")


def test_strided_inputs():
    # x and weight as transposed views (non-unit column stride) and a non-contiguous residual.
    x, w, b, kw = make_inputs(30, 48, 40, ln=True)
    x_t = x.t().contiguous().t()
    w_t = w.t().contiguous().t()
    residual = torch.randn(40, 30).t()
    out = nan_tensor((30, 40))
    fused_linear(x_t, w_t, b, residual=residual, out=out, **kw)
    want = fused_linear_naive(x, w, b, residual=residual, **kw)
    assert rel_rms(out, want) <= 1e-5


def test_fp32_weights_are_cast_to_fp16_activations():
    x, w, b, kw = make_inputs(20, 48, 40, ln=True, residual=True)
    x16 = x.half()
    got = fused_linear(x16, w, b, **kw)  # fp32 weight, bias, LN params and residual with fp16 x
    assert got.dtype == torch.float16
    want = fused_linear_naive(x16, w.half(), b, **kw)
    assert rel_rms(got, want) <= 3e-3


def test_in_place_residual_update():
    # x = fused_linear(h, W, b, residual=x, out=x): each element read then written by the same program.
    h, w, b, _ = make_inputs(3 * 100, 64, 64)
    x = torch.randn(3 * 100, 64)
    want = fused_linear_naive(h, w, b, residual=x)
    got = fused_linear(h, w, b, residual=x, out=x)
    assert got is x
    assert rel_rms(x, want) <= 1e-5


def test_model_blocks_match_nn_modules():
    # The model's own modules (gsmt_fast/model.py) against the fused calls the engine makes.
    from gsmt_fast.model import sinusoidal_encoding

    torch.manual_seed(0)
    B, T, d_in, C = 2, 7, 48, 32
    feats = torch.randn(B, T, d_in)
    input_proj = torch.nn.Linear(d_in, C)
    pos = sinusoidal_encoding(T, C)
    norm1, qkv = torch.nn.LayerNorm(C), torch.nn.Linear(C, 3 * C)
    norm2, fc = torch.nn.LayerNorm(C), torch.nn.Linear(C, C)
    for p in list(norm1.parameters()) + list(norm2.parameters()):
        torch.nn.init.normal_(p, 1.0, 0.2)
    with torch.no_grad():
        h_ref = input_proj(feats) + pos
        qkv_ref = qkv(norm1(h_ref))
        mlp_ref = h_ref + torch.nn.GELU()(fc(norm2(h_ref)))
        h = fused_linear(feats.reshape(B * T, d_in), input_proj.weight, input_proj.bias, row_add=pos,
                         row_add_period=T)
        qkv_out = fused_linear(h, qkv.weight, qkv.bias, ln_weight=norm1.weight, ln_bias=norm1.bias)
        mlp_out = fused_linear(h, fc.weight, fc.bias, ln_weight=norm2.weight, ln_bias=norm2.bias, activation="gelu",
                               residual=h)
    assert rel_rms(h, h_ref.reshape(B * T, C)) <= 1e-5
    assert rel_rms(qkv_out, qkv_ref.reshape(B * T, 3 * C)) <= 1e-5
    assert rel_rms(mlp_out, mlp_ref.reshape(B * T, C)) <= 1e-5


def test_empty_batch():
    x, w, b, _ = make_inputs(0, 48, 40)
    assert fused_linear(x, w, b).shape == (0, 40)


def test_block_sizes_are_valid_for_the_gpu(monkeypatch):
    # Every tl.dot block dim must be a power of two >= 16 on the GPU, whatever the shape.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for M, K, N in [(1, 1, 1), (7, 48, 40), (65536, 2048, 512), (2048, 512, 1536)]:
            *blocks, num_warps, num_stages = linear._block_sizes(M, N, K, dtype)
            assert all(b >= 16 and b & (b - 1) == 0 for b in blocks), blocks
            assert num_warps in (4, 8) and num_stages >= 1


# ---------------------------------------------------------------------------------------------------- validation
def _args():
    x, w, b, kw = make_inputs(6, 48, 40, ln=True, residual=True, row_add_period=3)
    return x, w, b, kw


@pytest.mark.parametrize("change,error,match", [
    (lambda a: a.update(x=a["x"][None]), ValueError, "x must be 2-D"),
    (lambda a: a.update(x=a["x"].to(torch.int32)), TypeError, "x must be float32"),
    (lambda a: a.update(x=a["x"].double()), TypeError, "x must be float32"),
    (lambda a: a.update(x=a["x"].tolist()), TypeError, "x must be a torch.Tensor"),
    (lambda a: a.update(weight=a["weight"][:, :47]), ValueError, r"weight must have shape \(N, 48\)"),
    (lambda a: a.update(weight=a["weight"].to("meta")), ValueError, "weight is on meta"),
    (lambda a: a.update(bias=a["bias"][:39]), ValueError, r"bias must have shape \(40,\)"),
    (lambda a: a.update(bias=a["bias"].double()), TypeError, "bias must be float32"),
    (lambda a: a.update(ln_bias=None), ValueError, "ln_weight and ln_bias must be given together"),
    (lambda a: a.update(ln_weight=a["ln_weight"][:5]), ValueError, r"ln_weight must have shape \(48,\)"),
    (lambda a: a.update(ln_eps=float("nan")), ValueError, "ln_eps must be a finite number"),
    (lambda a: a.update(activation="tanh"), ValueError, "activation must be None, 'relu' or 'gelu'"),
    (lambda a: a.update(residual=a["residual"][:5]), ValueError, r"residual must have shape \(6, 40\)"),
    (lambda a: a.update(row_add=a["row_add"][:, :7]), ValueError, r"row_add must have shape \(P, 40\)"),
    (lambda a: a.update(row_add_period=4), ValueError, r"row_add_period \(4\) must equal"),
    (lambda a: a.update(row_add=None), ValueError, "row_add_period is given but row_add is None"),
    (lambda a: a.update(out=torch.empty(6, 40, dtype=torch.float16)), TypeError, "out must have x's dtype"),
    (lambda a: a.update(out=torch.empty(6, 41)), ValueError, r"out must have shape \(6, 40\)"),
    (lambda a: a.update(out=torch.empty(40, 6).t()), ValueError, "out must be contiguous"),
    (lambda a: a.update(out=torch.empty(6, 40, device="meta")), ValueError, "out is on meta"),
])
def test_validation_errors(change, error, match):
    x, w, b, kw = _args()
    args = dict(x=x, weight=w, bias=b, **kw)
    change(args)
    with pytest.raises(error, match=match):
        fused_linear(**args)


def test_out_aliasing_is_refused_except_residual_itself():
    x, w, b, _ = make_inputs(40, 40, 40)
    with pytest.raises(ValueError, match="out overlaps x"):
        fused_linear(x, w, b, out=x)
    big = torch.randn(41, 40)
    with pytest.raises(ValueError, match="out overlaps residual"):
        fused_linear(x, w, b, residual=big[:40], out=big[1:])  # shifted by one row: other programs still read it
    with pytest.raises(ValueError, match="out overlaps weight"):
        fused_linear(x, w, b, out=w)


# ---------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("K,N", [(2048, 512), (512, 1536)])
def test_gpu_low_precision_within_twice_torch_error(K, N):
    """Paper dims, batch 8 x T 256, with LN: bf16/fp16 kernel error <= 2x PyTorch's own same-precision error."""
    M = 8 * 256
    x, w, b, kw = make_inputs(M, K, N, ln=True, residual=True, row_add_period=256, device="cuda")
    ref32 = fused_linear_naive(x, w, b, activation="relu", **kw)
    got32 = fused_linear(x, w, b, activation="relu", **kw)
    assert torch.isfinite(got32).all()
    assert rel_rms(got32, ref32) <= 1e-5  # ieee fp32 dots, not tf32
    for dtype in (torch.bfloat16, torch.float16):
        kd = {k: cast(v, dtype) for k, v in kw.items()}
        out = nan_tensor((M, N), dtype, "cuda")
        fused_linear(x.to(dtype), w.to(dtype), b.to(dtype), activation="relu", out=out, **kd)
        torch_lowp = fused_linear_naive(x.to(dtype), w.to(dtype), b.to(dtype), activation="relu",
                                            compute_dtype=dtype, **kd)
        assert torch.isfinite(out).all()
        kernel_err, torch_err = rel_rms(out, ref32), rel_rms(torch_lowp, ref32)
        assert kernel_err <= 2 * torch_err + 1e-6, f"{dtype}: kernel {kernel_err:.3e} vs torch {torch_err:.3e}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_gpu_awkward_shapes(dtype):
    """Ragged edges on the GPU's real block sizes, every fused part on; reference in fp32 on the same rounded inputs
    (bf16: <= 2e-2, two bf16 roundings of ~2**-8 / sqrt(3) each)."""
    for M, K, N in [(1, 1, 1), (7, 48, 40), (3 * 123, 32, 96), (300, 200, 130)]:
        x, w, b, kw = make_inputs(M, K, N, ln=True, residual=True, row_add_period=min(M, 123), device="cuda")
        run_and_check(x, w, b, kw, dtype, activation="gelu")
        x, w, b, kw = make_inputs(M, K, N, device="cuda", seed=1)
        run_and_check(x, w, b, kw, dtype)
