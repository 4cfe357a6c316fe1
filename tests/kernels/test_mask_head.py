"""The fused mask head kernels (kernels/mask_head.py) against their PyTorch reference and the model's own head.

Under the Triton interpreter (no GPU: tests/conftest.py sets TRITON_INTERPRET=1) everything runs on CPU tensors; on a
CUDA machine without the interpreter the same tests run on the GPU. Outputs are pre-filled with NaN so that any
element the kernels fail to write is caught.

Tolerances (relative RMS error, ||a - b|| / ||b||):
- float32: 1e-5; the kernels use IEEE fp32 dot products and fp32 accumulation, measured ~1e-7.
- float16: 1.5e-3 against the fp32 reference run on the same fp16-rounded inputs. What remains is rounding inside the
  head: h1 and h2 are stored in fp16 (2^-11 relative each) and the masks are rounded to fp16 (up to 2^-12 absolute for
  values in [0.5, 1]); measured <= 2.7e-4, so the bound leaves a 5x margin while a wrong tap, row or channel gives
  O(1e-1).
"""

import pytest
import torch
from gsmt_fast.kernels.mask_head import mask_head, mask_head_naive
from kernel_testing import interpreted, nan_tensor, rel_rms

# The interpreter runs CPU tensors; without it the kernels need a GPU.
DEVICE = "cpu" if interpreted() else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

FP32_TOL = 1e-5
FP16_TOL = 1.5e-3


@pytest.fixture(autouse=True)
def no_tf32():
    """On a GPU the fp32 reference must be real fp32 (PyTorch's cuDNN convolutions default to TF32)."""
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = allowed


def make_head(batch, length, c_in, c_m, seed=0, device=DEVICE):
    """Embedding (B, T, C) and head weights scaled like a trained head: logits of order 1, sigmoid not saturated."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(batch, length, c_in, generator=g)
    w1 = torch.randn(c_m, c_in, 3, generator=g) / (3 * c_in) ** 0.5
    b1 = torch.randn(c_m, generator=g) * 0.1
    w2 = torch.randn(c_m, c_m, 3, generator=g) / (3 * c_m) ** 0.5
    b2 = torch.randn(c_m, generator=g) * 0.1
    w3 = torch.randn(length, c_m, 1, generator=g) * (2.0 / c_m) ** 0.5
    b3 = torch.randn(length, generator=g) * 0.1
    return [t.to(device) for t in (e, w1, b1, w2, b2, w3, b3)]


def make_columns(batch, length, n_cols, dtype=torch.int64, seed=1, device=DEVICE):
    """Random selected snippets with duplicates and "none" (-1) entries."""
    g = torch.Generator().manual_seed(seed)
    columns = torch.randint(0, length, (batch, n_cols), generator=g)
    if n_cols >= 3:
        columns[:, 1] = columns[:, 0]  # a duplicate in every row
        columns[:, 2] = -1  # "none"
    columns[-1, -1] = -1
    return columns.to(dtype=dtype, device=device)


@pytest.mark.parametrize("use_columns", [False, True], ids=["full", "columns"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("length", [1, 7, 100, 123, 256])
def test_matches_naive(length, batch, dtype, use_columns):
    e, *weights = make_head(batch, length, 32, 32, seed=length + batch)
    e = e.to(dtype)
    weights = [w.to(dtype) for w in weights]
    columns = make_columns(batch, length, 13, seed=length) if use_columns else None
    shape = (batch, length, 13 if use_columns else length)
    out = nan_tensor(shape, dtype, DEVICE)  # the default out_dtype of fp32 / fp16 compute is the compute dtype

    result = mask_head(e, *weights, columns=columns, out=out)
    # The reference computes in fp32 from the same (already rounded) inputs: only the kernels' rounding differs.
    expected = mask_head_naive(e, *weights, columns=columns)

    assert result is out and result.shape == shape and result.dtype == dtype
    assert torch.isfinite(result).all()
    assert rel_rms(result, expected) <= (FP32_TOL if dtype == torch.float32 else FP16_TOL)
    assert ((result >= 0) & (result <= 1)).all()
    if use_columns:
        none = columns < 0
        assert (result.float().transpose(1, 2)[none] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("use_columns", [False, True], ids=["full", "columns"])
def test_channel_counts_not_powers_of_two(dtype, use_columns):
    batch, length = 3, 100
    e, *weights = make_head(batch, length, 48, 40, seed=5)
    e = e.to(dtype)
    columns = make_columns(batch, length, 37, dtype=torch.int32) if use_columns else None
    out = nan_tensor((batch, length, 37 if use_columns else length), dtype, DEVICE)
    # fp32 master weights with fp16 activations: the wrapper casts them to the compute dtype.
    result = mask_head(e, *weights, columns=columns, out=out)
    expected = mask_head_naive(e, *[w.to(dtype) for w in weights], columns=columns)
    assert torch.isfinite(result).all()
    assert rel_rms(result, expected) <= (FP32_TOL if dtype == torch.float32 else FP16_TOL)


@pytest.mark.parametrize("length,valid_len", [(7, [7, 4, 1]), (100, [100, 37, 64])])
def test_matches_the_model(length, valid_len):
    from gsmt_fast.config import GSMTConfig
    from gsmt_fast.model import GSMT

    torch.manual_seed(0)
    model = GSMT(GSMTConfig.preset("tiny", temporal_scale=length, input_dim=16, num_classes=3)).eval().to(DEVICE)
    x = torch.randn(len(valid_len), length, 16, device=DEVICE)
    valid_len = torch.tensor(valid_len, device=DEVICE)
    with torch.no_grad():
        e = model.embed(x, valid_len).transpose(1, 2).contiguous()  # channels-last, padded rows zero
        expected = torch.sigmoid(model.forward_logits(x, valid_len)[1])
        conv1, conv2, conv3 = model.mask_head[0], model.mask_head[2], model.mask_head[4]
        weights = (conv1.weight, conv1.bias, conv2.weight, conv2.bias, conv3.weight, conv3.bias)
        out = nan_tensor(expected.shape, torch.float32, DEVICE)
        result = mask_head(e, *weights, out=out)
        columns = torch.tensor([[0, length - 1, -1], [3, 3, 0], [-1, -1, length // 2]], device=DEVICE)
        selected = mask_head(e, *weights, columns=columns)
    assert torch.isfinite(result).all()
    assert rel_rms(result, expected) <= FP32_TOL
    expected_selected = torch.gather(expected, 2, columns.clamp(min=0)[:, None, :].expand(-1, length, -1))
    expected_selected = expected_selected * (columns >= 0)[:, None, :]
    assert rel_rms(selected, expected_selected) <= FP32_TOL
    assert (selected.transpose(1, 2)[columns < 0] == 0).all()


def test_channels_last_view_and_strided_out():
    """A (B, C, T) tensor's transposed view as e, 2-D w3, and an out that is a strided view of a wider buffer."""
    batch, length = 3, 123
    e, w1, b1, w2, b2, w3, b3 = make_head(batch, length, 32, 32, seed=9)
    e_view = e.transpose(1, 2).contiguous().transpose(1, 2)  # the model's (B, C, T) layout, seen channels-last
    assert not e_view.is_contiguous()
    buffer = nan_tensor((batch, length, length + 5), torch.float32, DEVICE)
    out = buffer[:, :, 2:length + 2]
    result = mask_head(e_view, w1, b1, w2, b2, w3[:, :, 0], b3, out=out)
    assert result.data_ptr() == out.data_ptr()
    assert rel_rms(out, mask_head_naive(e, w1, b1, w2, b2, w3, b3)) <= FP32_TOL
    assert torch.isnan(buffer[:, :, :2]).all() and torch.isnan(buffer[:, :, length + 2:]).all()


def test_out_dtype():
    batch, length = 2, 7
    e, *weights = make_head(batch, length, 32, 32, seed=3)
    assert mask_head(e, *weights).dtype == torch.float32
    assert mask_head(e.half(), *weights).dtype == torch.float16
    # fp32 compute, fp16 masks: only the final rounding differs from the reference.
    out = nan_tensor((batch, length, length), torch.float16, DEVICE)
    result = mask_head(e, *weights, out_dtype=torch.float16, out=out)
    assert rel_rms(result, mask_head_naive(e, *weights)) <= 5e-4
    # out alone sets the dtype
    assert mask_head(e, *weights, out=nan_tensor((batch, length, length), torch.float16, DEVICE)).dtype == torch.float16


def test_columns_cover_every_snippet_and_more():
    """M > T, every snippet at least once: each column equals the full mask's column."""
    batch, length = 2, 7
    e, *weights = make_head(batch, length, 32, 32, seed=4)
    columns = torch.arange(2 * length + 1, device=DEVICE).remainder(length + 1).sub(1).repeat(batch, 1)
    full = mask_head(e, *weights)
    out = nan_tensor((batch, length, 2 * length + 1), torch.float32, DEVICE)
    selected = mask_head(e, *weights, columns=columns, out=out)
    for j, t in enumerate(columns[0].tolist()):
        expected = full[:, :, t] if t >= 0 else torch.zeros_like(full[:, :, 0])
        assert torch.equal(selected[:, :, j], expected)


def test_videos_are_independent():
    """The zero padding of the convolutions stops at each video's edge: a batch equals its videos run alone."""
    batch, length = 3, 100
    e, *weights = make_head(batch, length, 32, 32, seed=6)
    together = mask_head(e, *weights)
    for b in range(batch):
        assert torch.equal(mask_head(e[b:b + 1], *weights)[0], together[b])


def test_empty_outputs():
    e, *weights = make_head(2, 7, 32, 32)
    assert mask_head(e[:0], *weights).shape == (0, 7, 7)
    assert mask_head(e, *weights, columns=torch.zeros((2, 0), dtype=torch.int64, device=DEVICE)).shape == (2, 7, 0)


def _bad_inputs():
    e, w1, b1, w2, b2, w3, b3 = make_head(2, 7, 32, 16)
    ok = dict(e=e, w1=w1, b1=b1, w2=w2, b2=b2, w3=w3, b3=b3)
    cases = [
        (dict(e=e.numpy() if e.device.type == "cpu" else e.tolist()), TypeError, "e must be a torch.Tensor"),
        (dict(e=e[0]), ValueError, "e must be 3-D"),
        (dict(e=e.to(torch.int32)), TypeError, "e must be float32, float16 or bfloat16"),
        (dict(e=e.double()), TypeError, "e must be float32"),
        (dict(e=e[:, :0]), ValueError, "T >= 1"),
        (dict(w1=w1[:, :31]), ValueError, r"w1 must have shape \(Cm, 32, 3\)"),
        (dict(w1=w1[..., :1]), ValueError, "w1 must have shape"),
        (dict(b1=b1[:15]), ValueError, r"b1 must have shape \(16,\)"),
        (dict(w2=w2[:, :, :2]), ValueError, r"w2 must have shape \(16, 16, 3\)"),
        (dict(b2=b2[None]), ValueError, "b2 must have shape"),
        (dict(w3=w3[:6]), ValueError, r"w3 must have shape \(7, 16, 1\) or \(7, 16\)"),
        (dict(b3=b3[:6]), ValueError, r"b3 must have shape \(7,\)"),
        (dict(w2=w2.to(torch.int64)), TypeError, "w2 must be float32"),
        (dict(w3=torch.empty(w3.shape, device="meta")), ValueError, "w3 is on meta"),
        (dict(columns=[[0, 1], [2, 3]]), TypeError, "columns must be a torch.Tensor"),
        (dict(columns=torch.zeros(2, 3, device=DEVICE)), TypeError, "columns must be int32 or int64"),
        (dict(columns=torch.zeros(3, 4, dtype=torch.int64, device=DEVICE)), ValueError,
         r"columns must have shape \(2, M\)"),
        (dict(columns=torch.zeros(2, dtype=torch.int64, device=DEVICE)), ValueError, "columns must have shape"),
        (dict(columns=torch.zeros(2, 3, dtype=torch.int64, device="meta")), ValueError, "columns is on meta"),
        (dict(out_dtype=torch.int32), TypeError, "out_dtype must be float32, float16 or bfloat16"),
        (dict(out=nan_tensor((2, 7, 6), torch.float32, DEVICE)), ValueError, r"out must have shape \(2, 7, 7\)"),
        (dict(out=nan_tensor((2, 7, 7), torch.float16, DEVICE), out_dtype=torch.float32), TypeError, "out has dtype"),
        (dict(out=torch.empty((2, 7, 7), device="meta")), ValueError, "out is on meta"),
        (dict(out="buffer", out_dtype=torch.float32), TypeError, "out must be a torch.Tensor"),
    ]
    return ok, cases


@pytest.mark.parametrize("case", range(len(_bad_inputs()[1])))
def test_validation_errors(case):
    ok, cases = _bad_inputs()
    changes, error, message = cases[case]
    args = {**ok, **changes}
    keywords = {k: args.pop(k) for k in ("columns", "out_dtype", "out") if k in args}
    with pytest.raises(error, match=message):
        mask_head(**args, **keywords)


@pytest.mark.skipif(DEVICE != "cpu", reason="index checks and the interpreter requirement concern CPU tensors")
def test_cpu_only_checks(monkeypatch):
    e, *weights = make_head(2, 7, 32, 16)
    with pytest.raises(ValueError, match="index 7 >= T = 7"):
        mask_head(e, *weights, columns=torch.tensor([[0, 7], [1, 2]]))
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # what a CPU tensor meets without the interpreter
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        mask_head(e, *weights)


def test_reference_is_the_models_head():
    """The reference itself: the same nn.Conv1d stack as GSMT.mask_head, on the (B, C, T) layout."""
    batch, length, c_in, c_m = 2, 9, 8, 6
    head = torch.nn.Sequential(
        torch.nn.Conv1d(c_in, c_m, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv1d(c_m, c_m, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv1d(c_m, length, 1),
    )
    x = torch.randn(batch, c_in, length)
    weights = [p.detach() for p in head.parameters()]
    expected = torch.sigmoid(head(x)).detach()
    assert torch.allclose(mask_head_naive(x.transpose(1, 2), *weights), expected, atol=1e-6)
    columns = torch.tensor([[2, -1, 2], [0, 8, -1]])
    gathered = mask_head_naive(x.transpose(1, 2), *weights, columns=columns)
    assert torch.equal(gathered[0, :, 0], expected[0, :, 2]) and torch.equal(gathered[1, :, 1], expected[1, :, 8])
    assert (gathered[0, :, 1] == 0).all() and (gathered[1, :, 2] == 0).all()


# ------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gpu_paper_dims_low_precision(dtype):
    """Paper dims (C=512, Cm=256, T=256, batch 8): the kernel's low-precision error against the fp32 reference is at
    most twice PyTorch's own error at the same precision (its convolutions under autocast)."""
    e, *weights = make_head(8, 256, 512, 256, seed=11, device="cuda")
    reference = mask_head_naive(e, *weights)  # fp32 (TF32 is off: see the no_tf32 fixture)
    with torch.autocast("cuda", dtype=dtype):
        torch_lowp = mask_head_naive(e, *weights)
    kernel_lowp = mask_head(e.to(dtype), *[w.to(dtype) for w in weights],
                            out=nan_tensor((8, 256, 256), torch.float16, "cuda"))
    assert torch.isfinite(kernel_lowp).all()
    assert rel_rms(kernel_lowp, reference) <= 2 * rel_rms(torch_lowp, reference) + 1e-6

    columns = make_columns(8, 256, 50, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        torch_selected = mask_head_naive(e, *weights, columns=columns)
    selected = mask_head(e.to(dtype), *weights, columns=columns,
                         out=nan_tensor((8, 256, 50), torch.float16, "cuda"))
    reference_selected = mask_head_naive(e, *weights, columns=columns)
    assert torch.isfinite(selected).all()
    assert rel_rms(selected, reference_selected) <= 2 * rel_rms(torch_selected, reference_selected) + 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("length", [100, 256])
def test_gpu_paper_dims_fp32(length):
    """The fp32 path on the GPU is IEEE fp32 (no TF32): within 1e-5 of the fp32 reference."""
    e, *weights = make_head(8, length, 512, 256, seed=12, device="cuda")
    out = nan_tensor((8, length, length), device="cuda")
    result = mask_head(e, *weights, out=out)
    assert torch.isfinite(result).all()
    assert rel_rms(result, mask_head_naive(e, *weights)) <= FP32_TOL
    columns = make_columns(8, length, 50, device="cuda")
    selected = mask_head(e, *weights, columns=columns, out=nan_tensor((8, length, 50), device="cuda"))
    assert rel_rms(selected, mask_head_naive(e, *weights, columns=columns)) <= FP32_TOL

