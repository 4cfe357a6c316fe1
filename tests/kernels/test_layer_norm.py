"""layer_norm_rows (kernels/layer_norm.py) against its plain-PyTorch reference.

On CPU the Triton interpreter runs the kernel (tests/conftest.py sets TRITON_INTERPRET=1 when there is no GPU).
Tolerances (relative RMS): fp32 <= 1e-5 (fp32 two-pass statistics: measured ~1e-7); fp16 <= 2e-3: the reference
runs in fp32 on the same fp16 input, so the gap is the one fp16 rounding of the output, 2**-11 / sqrt(3) ~ 2.8e-4
RMS relative. Padded rows must be exact zeros.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from gsmt_fast.kernels.layer_norm import layer_norm_rows, layer_norm_rows_naive  # noqa: E402
from kernel_testing import nan_tensor, rel_rms  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def make_inputs(M, C, seed=0, device="cpu", offset=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, C, generator=g) * 2.0 + offset + torch.randn(M, 1, generator=g)
    weight = 1.0 + 0.3 * torch.randn(C, generator=g)
    bias = 0.2 * torch.randn(C, generator=g)
    return x.to(device), weight.to(device), bias.to(device)


def check(x, weight, bias, dtype, valid_len=None, period=None, eps=1e-5):
    xd = x.to(dtype)
    out = nan_tensor(x.shape, dtype, x.device)
    got = layer_norm_rows(xd, weight.to(dtype), bias.to(dtype), eps, valid_len=valid_len, period=period, out=out)
    assert got is out
    assert torch.isfinite(out).all(), "some output elements were not written (NaN poison left)"
    want = layer_norm_rows_naive(xd, weight.to(dtype), bias.to(dtype), eps, valid_len=valid_len, period=period)
    err = rel_rms(out, want)
    assert err <= TOLERANCE[dtype], f"rel_rms {err:.3e} > {TOLERANCE[dtype]:.0e}"
    if valid_len is not None:
        rows = torch.arange(x.shape[0], device=x.device)
        padded = (rows % period) >= torch.as_tensor(valid_len, device=x.device)[rows // period]
        assert (out[padded] == 0).all(), "padded rows must be exact zeros"
        assert (want[~padded] != 0).any(dim=1).all()
    return err


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("T", [1, 7, 100, 123, 256])
@pytest.mark.parametrize("C", [32, 48, 64])
def test_matches_naive(C, T, batch, dtype):
    x, w, b = make_inputs(batch * T, C, seed=T * batch + C)
    check(x, w, b, dtype)
    # The same with padding: lengths from empty (0) to full (T), one window longer than T (clamped by the test).
    g = torch.Generator().manual_seed(T + batch)
    valid_len = torch.randint(0, T + 2, (batch,), generator=g)
    valid_len[0] = max(1, T // 2)
    check(x, w, b, dtype, valid_len=valid_len, period=T)


def test_wide_rows_use_the_chunked_path():
    # C > 4096 streams the row in 1024-column chunks (three passes), with padding.
    x, w, b = make_inputs(2 * 3, 4099, offset=50.0)
    check(x, w, b, torch.float32, valid_len=torch.tensor([2, 0]), period=3)
    check(x, w, b, torch.float16)


def test_large_mean_and_constant_rows():
    # |mean| = 1000 >> std: PyTorch's fp32 F.layer_norm itself is off by ~2e-5 here (fp32 rounding), so both are
    # judged against float64 and the kernel must be no worse than PyTorch fp32.
    x, w, b = make_inputs(20, 64, offset=1000.0)
    exact = torch.nn.functional.layer_norm(x.double(), (64,), w.double(), b.double(), 1e-5)
    torch_err = rel_rms(torch.nn.functional.layer_norm(x, (64,), w, b, 1e-5), exact)
    assert rel_rms(layer_norm_rows(x, w, b), exact) <= torch_err
    const = torch.full((4, 64), -7.5)  # zero variance: output = bias exactly
    out = layer_norm_rows(const, w, b)
    assert torch.equal(out, b.expand(4, 64))


def test_matches_model_final_norm_and_padding():
    # GSMT.embed: h = norm(h); h = h * valid[:, :, None] (gsmt_fast/model.py), in channels-last rows.
    from gsmt_fast.model import padding_mask

    B, T, C = 3, 7, 32
    torch.manual_seed(1)
    norm = torch.nn.LayerNorm(C)
    torch.nn.init.normal_(norm.weight, 1.0, 0.2)
    torch.nn.init.normal_(norm.bias, 0.0, 0.2)
    h = torch.randn(B, T, C)
    valid_len = torch.tensor([7, 3, 1])
    with torch.no_grad():
        want = norm(h) * padding_mask(valid_len, B, T, "cpu")[:, :, None].float()
        got = layer_norm_rows(h.reshape(B * T, C), norm.weight, norm.bias, norm.eps, valid_len=valid_len, period=T)
    assert rel_rms(got, want.reshape(B * T, C)) <= 1e-5
    assert torch.equal(got == 0, want.reshape(B * T, C) == 0)


def test_in_place_strided_and_list_lengths():
    x, w, b = make_inputs(3 * 5, 40)
    want = layer_norm_rows_naive(x, w, b, valid_len=torch.tensor([5, 2, 0]), period=5)
    y = x.clone()
    got = layer_norm_rows(y, w, b, valid_len=[5, 2, 0], period=5, out=y)  # in place; lengths as a list
    assert got is y and rel_rms(y, want) <= 1e-5
    wide = torch.randn(15, 80)
    view = wide[:, ::2]  # non-unit column stride: copied to contiguous first
    assert rel_rms(layer_norm_rows(view, w, b), layer_norm_rows_naive(view, w, b)) <= 1e-5
    rows_view = torch.randn(15, 50)[:, :40]  # row stride 50, unit column stride: read in place
    assert rel_rms(layer_norm_rows(rows_view, w, b), layer_norm_rows_naive(rows_view, w, b)) <= 1e-5


def test_fp32_parameters_with_fp16_activations_and_empty():
    x, w, b = make_inputs(10, 64)
    got = layer_norm_rows(x.half(), w, b)
    assert got.dtype == torch.float16
    assert rel_rms(got, layer_norm_rows_naive(x.half(), w, b)) <= 2e-3
    assert layer_norm_rows(torch.empty(0, 64), w, b).shape == (0, 64)


@pytest.mark.parametrize("change,error,match", [
    (lambda a: a.update(x=a["x"][None]), ValueError, "x must be 2-D"),
    (lambda a: a.update(x=a["x"].double()), TypeError, "x must be float32"),
    (lambda a: a.update(x="x"), TypeError, "x must be a torch.Tensor"),
    (lambda a: a.update(weight=a["weight"][:10]), ValueError, r"weight must have shape \(12,\)"),
    (lambda a: a.update(bias=a["bias"].to(torch.int64)), TypeError, "bias must be float32"),
    (lambda a: a.update(bias=a["bias"].to("meta")), ValueError, "bias is on meta"),
    (lambda a: a.update(eps=-1.0), ValueError, "eps must be a finite number >= 0"),
    (lambda a: a.update(period=None), ValueError, "valid_len and period must be given together"),
    (lambda a: a.update(period=4), ValueError, "not a multiple of period 4"),
    (lambda a: a.update(period=0), ValueError, "period must be a positive int"),
    (lambda a: a.update(valid_len=torch.tensor([1.0, 2.0])), TypeError, "valid_len must be an integer tensor"),
    (lambda a: a.update(valid_len=torch.tensor([1, 2, 3])), ValueError, r"valid_len must have shape \(2,\)"),
    (lambda a: a.update(out=torch.empty(6, 12, dtype=torch.float16)), TypeError, "out must have x's dtype"),
    (lambda a: a.update(out=torch.empty(6, 13)), ValueError, r"out must have shape \(6, 12\)"),
    (lambda a: a.update(out=torch.empty(12, 6).t()), ValueError, "out must have unit stride"),
])
def test_validation_errors(change, error, match):
    x, w, b = make_inputs(6, 12)
    args = dict(x=x, weight=w, bias=b, eps=1e-5, valid_len=torch.tensor([3, 1]), period=3)
    change(args)
    with pytest.raises(error, match=match):
        layer_norm_rows(**args)


def test_out_overlapping_x_is_refused_unless_in_place():
    big = torch.randn(7, 12)
    w, b = torch.ones(12), torch.zeros(12)
    with pytest.raises(ValueError, match="out overlaps x"):
        layer_norm_rows(big[:6], w, b, out=big[1:])


@pytest.mark.gpu
def test_gpu_low_precision_within_twice_torch_error():
    """Paper dims (batch 8 x T 256, C 512) with padding: bf16/fp16 error <= 2x PyTorch's own, fp32 ~ exact."""
    B, T, C = 8, 256, 512
    x, w, b = make_inputs(B * T, C, device="cuda")
    valid_len = torch.tensor([256, 255, 100, 1, 0, 256, 17, 200], device="cuda")
    ref32 = layer_norm_rows_naive(x, w, b, valid_len=valid_len, period=T)
    got32 = layer_norm_rows(x, w, b, valid_len=valid_len, period=T)
    assert rel_rms(got32, ref32) <= 1e-5
    for dtype in (torch.bfloat16, torch.float16):
        out = nan_tensor((B * T, C), dtype, "cuda")
        layer_norm_rows(x.to(dtype), w.to(dtype), b.to(dtype), valid_len=valid_len, period=T, out=out)
        assert torch.isfinite(out).all()
        # PyTorch's own low-precision path: F.layer_norm in that dtype, then the mask (as the model in bf16).
        keep = (torch.arange(B * T, device="cuda") % T) < valid_len[torch.arange(B * T, device="cuda") // T]
        torch_lowp = torch.nn.functional.layer_norm(x.to(dtype), (C,), w.to(dtype), b.to(dtype), 1e-5)
        torch_lowp = torch_lowp * keep[:, None].to(dtype)
        kernel_err, torch_err = rel_rms(out, ref32), rel_rms(torch_lowp, ref32)
        assert kernel_err <= 2 * torch_err + 1e-6, f"{dtype}: kernel {kernel_err:.3e} vs torch {torch_err:.3e}"
        assert (out[~keep] == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_gpu_awkward_shapes(dtype):
    """Odd widths, one row, the chunked path (C > 4096) and padding on the GPU."""
    for M, C, period in [(1, 1, 1), (7 * 3, 48, 7), (123, 512, 123), (4, 5000, 2)]:
        x, w, b = make_inputs(M, C, device="cuda", seed=C)
        valid_len = torch.arange(M // period, device="cuda") % (period + 1)
        valid_len[0] = period  # at least one full window, so that the reference is not all zeros
        check(x, w, b, dtype, valid_len=valid_len, period=period)
