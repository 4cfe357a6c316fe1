"""The boundary head kernel (kernels/boundary_head.py) against its PyTorch reference and the model's own head, and
``mask_head(..., hidden=True)``'s h2 against the model's mask-branch features.

Under the Triton interpreter (no GPU: tests/conftest.py sets TRITON_INTERPRET=1) everything runs on CPU tensors; on a
CUDA machine without the interpreter the same tests run on the GPU. Outputs are pre-filled with NaN so that an
element the kernel fails to write is caught.

Tolerances (relative RMS error): float32 1e-6 (a float32 dot product of Cm terms in another order, then softplus;
measured ~1e-7); float16 h: the same bound against the reference run on the same fp16 values, since the kernel widens
h to float32 on load and keeps the weights in float32.
"""

import pytest
import torch
from gsmt_fast.kernels.boundary_head import boundary_head, boundary_head_naive
from gsmt_fast.kernels.mask_head import mask_head
from kernel_testing import interpreted, nan_tensor, rel_rms

DEVICE = "cpu" if interpreted() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

TOL = 1e-6


def make_inputs(batch, length, c_m, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.relu(torch.randn(batch, length, c_m, generator=g))
    w = torch.randn(2, c_m, 1, generator=g) * scale / c_m ** 0.5
    b = torch.tensor([1.0, -0.5])
    return h.to(DEVICE), w.to(DEVICE), b.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("length,c_m", [(1, 8), (7, 40), (100, 32), (256, 130)])
def test_matches_naive(length, c_m, dtype):
    h, w, b = make_inputs(2, length, c_m, seed=length)
    h = h.to(dtype)
    out = nan_tensor((2, 2, length), torch.float32, DEVICE)
    result = boundary_head(h, w, b, out=out)
    expected = boundary_head_naive(h, w, b)
    assert result is out and result.dtype == torch.float32
    assert torch.isfinite(result).all() and (result > 0).all()
    assert rel_rms(result, expected) <= TOL


def test_softplus_accuracy_over_the_whole_range():
    """One channel, so each logit is h * w + b rounded once, as in the reference: the outputs differ only by the
    softplus itself, from exp's underflow (x < -104: 0) through tiny results (relative accuracy kept) to x itself."""
    logits = torch.tensor([-150.0, -90.0, -30.0, -17.0, -5.0, -0.3, 0.0, 0.4, 3.0, 19.0, 21.0, 80.0, 1e30])
    h = logits.reshape(1, -1, 1).to(DEVICE)
    w = torch.ones(2, 1, device=DEVICE)
    b = torch.zeros(2, device=DEVICE)
    result = boundary_head(h, w, b)
    expected = boundary_head_naive(h, w, b)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, expected, rtol=4e-7, atol=0)


def test_matches_the_model_and_hidden_is_h2():
    from gsmt_fast.config import GSMTConfig
    from gsmt_fast.model import GSMT

    torch.manual_seed(0)
    length, valid_len = 20, [20, 9]
    cfg = GSMTConfig.preset("tiny", temporal_scale=length, input_dim=16, num_classes=3, boundary_head=True)
    model = GSMT(cfg).eval().to(DEVICE)
    x = torch.randn(2, length, 16, device=DEVICE)
    n = torch.tensor(valid_len, device=DEVICE)
    with torch.no_grad():
        _, masks_expected, boundaries_expected = model(x, n)
        e = model.embed(x, n).transpose(1, 2).contiguous()
        h2_expected = model.mask_head[:-1](e.transpose(1, 2)).transpose(1, 2)
        conv1, conv2, conv3 = model.mask_head[0], model.mask_head[2], model.mask_head[4]
        masks, h2 = mask_head(e, conv1.weight, conv1.bias, conv2.weight, conv2.bias, conv3.weight, conv3.bias,
                              hidden=True)
        boundaries = boundary_head(h2, model.boundary_head.weight, model.boundary_head.bias)
    assert rel_rms(h2, h2_expected) <= 1e-5
    assert rel_rms(masks, masks_expected) <= 1e-5
    assert rel_rms(boundaries, boundaries_expected) <= 1e-5


def test_hidden_of_an_empty_batch():
    h, w, b = make_inputs(1, 7, 8)
    e = torch.randn(0, 7, 16, device=DEVICE)
    w1, w2 = torch.randn(8, 16, 3, device=DEVICE), torch.randn(8, 8, 3, device=DEVICE)
    masks, h2 = mask_head(e, w1, torch.zeros(8, device=DEVICE), w2, torch.zeros(8, device=DEVICE),
                          torch.randn(7, 8, device=DEVICE), torch.zeros(7, device=DEVICE), hidden=True)
    assert masks.shape == (0, 7, 7) and h2.shape == (0, 7, 8)
    assert boundary_head(h[:0], w, b).shape == (0, 2, 7)


@pytest.mark.parametrize("change,error,match", [
    (dict(h="list"), TypeError, "h must be a torch.Tensor"),
    (dict(h=lambda h: h[0]), ValueError, "h must be 3-D"),
    (dict(h=lambda h: h.double()), TypeError, "h must be float32"),
    (dict(w=lambda w: w[:1]), ValueError, r"w must have shape \(2, 8, 1\) or \(2, 8\)"),
    (dict(b=lambda b: b[:1]), ValueError, r"b must have shape \(2,\)"),
    (dict(out=lambda h: torch.empty(1, 2, 7, dtype=torch.float16, device=DEVICE)), ValueError, "float32"),
])
def test_bad_inputs_are_named(change, error, match):
    h, w, b = make_inputs(1, 7, 8)
    args = {"h": h, "w": w, "b": b, "out": None}
    for name, fn in change.items():
        args[name] = [1.0] if fn == "list" else fn(h if name == "out" else args[name])
    with pytest.raises(error, match=match):
        boundary_head(args["h"], args["w"], args["b"], out=args["out"])
