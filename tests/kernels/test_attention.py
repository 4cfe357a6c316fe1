"""Tests of the flash attention kernel (kernels/attention.py) against its PyTorch reference.

On the CPU the kernel runs under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1 when there is no
GPU), in fp32 and fp16 only (bf16 tl.dot is broken in the interpreter). Shapes are small so the file runs in well
under a minute on two cores. The GPU-marked test runs the paper's dims on CUDA tensors.

Tolerances (relative RMS error against the fp32 reference computed from the same input values):
- fp32: 1e-5. The kernel uses IEEE fp32 dots with fp32 accumulation; measured ~1e-7 to 4e-7.
- fp16: 2e-3. The output is rounded to fp16 (unit roundoff 2**-11 ~ 4.9e-4, i.e. ~2.8e-4 RMS relative) and so are
  the probabilities before the P @ V dot (another error of the same size); measured 1e-4 to 3e-4.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from gsmt_fast.kernels import attention  # noqa: E402
from kernel_testing import nan_tensor, rel_rms  # noqa: E402

FP32_TOL = 1e-5
FP16_TOL = 2e-3
TOLERANCE = {torch.float32: FP32_TOL, torch.float16: FP16_TOL}


def make_qkv(batch: int, seq_len: int, hidden_dim: int, dtype=torch.float32, seed: int = 0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq_len, 3 * hidden_dim, generator=generator).to(device=device, dtype=dtype)


def mixed_valid_len(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """Valid lengths that include the extremes 1 and T (when the batch has room) and random ones in between."""
    generator = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    if batch >= 3:
        lengths[0], lengths[1] = 1, seq_len
    return lengths


def poison_padded_keys(qkv: torch.Tensor, valid_len: torch.Tensor, value: float) -> torch.Tensor:
    """A copy of qkv with the key and value columns of every padded position (>= valid_len) set to ``value``."""
    poisoned = qkv.clone()
    hidden_dim = qkv.shape[2] // 3
    for b, length in enumerate(valid_len.tolist()):
        poisoned[b, length:, hidden_dim:] = value
    return poisoned


# ---------------------------------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("seq_len", [1, 7, 100, 123, 256])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("hidden_dim,num_heads", [(32, 2), (32, 4)], ids=["D16", "D8"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "valid_len"])
def test_matches_naive(dtype, seq_len, batch, hidden_dim, num_heads, masked):
    qkv = make_qkv(batch, seq_len, hidden_dim, dtype, seed=seq_len * 10 + batch)
    valid_len = mixed_valid_len(batch, seq_len, seed=seq_len) if masked else None
    out = nan_tensor((batch, seq_len, hidden_dim), dtype)
    result = attention.flash_attention(qkv, num_heads, valid_len, out=out)
    assert result is out
    assert result.shape == (batch, seq_len, hidden_dim) and result.dtype == dtype
    assert torch.isfinite(result).all()
    expected = attention.flash_attention_naive(qkv, num_heads, valid_len)
    assert rel_rms(result, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("block_m,block_n", [(16, 16), (32, 16), (16, 64)])
def test_small_blocks_exercise_the_online_softmax(dtype, block_m, block_n):
    """Many query blocks and many key blocks per program, T not a multiple of either: the running max/sum rescaling
    across key blocks and the masked tails are all on the path."""
    batch, seq_len, hidden_dim, num_heads = 3, 123, 32, 2
    qkv = make_qkv(batch, seq_len, hidden_dim, dtype, seed=5)
    # Spread the score magnitudes so that the row max really moves from block to block.
    qkv[..., :hidden_dim] *= 3.0
    for valid_len in (None, torch.tensor([1, 123, 50])):
        out = nan_tensor((batch, seq_len, hidden_dim), dtype)
        attention.flash_attention(qkv, num_heads, valid_len, out=out, block_m=block_m, block_n=block_n)
        assert torch.isfinite(out).all()
        expected = attention.flash_attention_naive(qkv, num_heads, valid_len)
        assert rel_rms(out, expected) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("block_n", [None, 16])
def test_padded_keys_do_not_change_the_output(dtype, block_n):
    """Whatever sits in the k and v rows of padded positions (huge values, inf, NaN), the output is bit-identical:
    those rows are neither weighted nor even loaded."""
    batch, seq_len, hidden_dim, num_heads = 3, 100, 32, 2
    qkv = make_qkv(batch, seq_len, hidden_dim, dtype, seed=11)
    valid_len = torch.tensor([1, 37, 100])
    clean = attention.flash_attention(qkv, num_heads, valid_len, block_n=block_n)
    for value in (1e4, float("inf"), float("nan")):
        poisoned = poison_padded_keys(qkv, valid_len, value)
        out = nan_tensor((batch, seq_len, hidden_dim), dtype)
        result = attention.flash_attention(poisoned, num_heads, valid_len, out=out, block_n=block_n)
        assert torch.equal(result, clean), f"padded keys set to {value} changed the output"


def test_padded_query_rows_attend_to_valid_keys():
    """Rows at padded positions are computed like any other query (the model does the same); they are not zeroed."""
    qkv = make_qkv(1, 20, 32, seed=2)
    valid_len = torch.tensor([5])
    result = attention.flash_attention(qkv, 2, valid_len, out=nan_tensor((1, 20, 32), torch.float32))
    expected = attention.flash_attention_naive(qkv, 2, valid_len)
    assert result[0, 5:].abs().sum() > 0
    assert rel_rms(result[0, 5:], expected[0, 5:]) <= FP32_TOL


def test_matches_the_model_attention_layer():
    """The kernel fed with the model's own fused projection reproduces SelfAttention before its output projection."""
    from gsmt_fast.model import SelfAttention

    torch.manual_seed(0)
    layer = SelfAttention(32, 4, dropout=0.0).eval()
    x = torch.randn(3, 50, 32)
    valid_len = torch.tensor([50, 1, 17])
    valid = torch.arange(50)[None, :] < valid_len[:, None]
    with torch.no_grad():
        expected = layer(x, valid)
        attended = attention.flash_attention(layer.qkv(x), 4, valid_len)
        result = layer.proj(attended)
    assert rel_rms(result, expected) <= FP32_TOL


@pytest.mark.parametrize("hidden_dim,num_heads", [(64, 2), (128, 4), (128, 1), (36, 3)],
                         ids=["D32", "D32x4", "D128", "D12"])
def test_head_dims(hidden_dim, num_heads):
    batch, seq_len = 2, 40
    qkv = make_qkv(batch, seq_len, hidden_dim, seed=hidden_dim + num_heads)
    valid_len = torch.tensor([40, 13])
    out = nan_tensor((batch, seq_len, hidden_dim), torch.float32)
    attention.flash_attention(qkv, num_heads, valid_len, out=out)
    assert torch.isfinite(out).all()
    assert rel_rms(out, attention.flash_attention_naive(qkv, num_heads, valid_len)) <= FP32_TOL


def test_sm_scale_and_large_scores():
    """A custom scale, and scores in the hundreds: the max-subtracted exponentials must not overflow."""
    qkv = make_qkv(2, 70, 32, seed=4) * 8.0
    valid_len = torch.tensor([70, 9])
    for sm_scale in (0.05, 1.0, 2.0):
        out = nan_tensor((2, 70, 32), torch.float32)
        attention.flash_attention(qkv, 2, valid_len, sm_scale=sm_scale, out=out, block_n=16)
        assert torch.isfinite(out).all()
        expected = attention.flash_attention_naive(qkv, 2, valid_len, sm_scale=sm_scale)
        assert rel_rms(out, expected) <= FP32_TOL


def test_valid_len_at_or_above_seq_len_means_all_valid():
    qkv = make_qkv(3, 30, 32, seed=6)
    unmasked = attention.flash_attention(qkv, 2)
    for lengths in ([30, 30, 30], [31, 1000, 30]):
        masked = attention.flash_attention(qkv, 2, torch.tensor(lengths, dtype=torch.int32))
        assert torch.equal(masked, unmasked)


def test_strided_inputs_and_outputs():
    """qkv as a slice of a wider tensor (row stride != 3C), a non-unit last stride, and an out view with strides."""
    batch, seq_len, hidden_dim, num_heads = 2, 33, 32, 2
    wide = make_qkv(batch, seq_len, 2 * hidden_dim, seed=8)  # (B, T, 6C)
    qkv_slice = wide[:, :, 5:5 + 3 * hidden_dim]
    valid_len = torch.tensor([33, 20])
    expected = attention.flash_attention_naive(qkv_slice, num_heads, valid_len)
    assert rel_rms(attention.flash_attention(qkv_slice, num_heads, valid_len), expected) <= FP32_TOL

    qkv_strided_last = wide[:, :, ::2]  # last-dim stride 2: copied to contiguous by the wrapper
    expected = attention.flash_attention_naive(qkv_strided_last, num_heads, valid_len)
    assert rel_rms(attention.flash_attention(qkv_strided_last, num_heads, valid_len), expected) <= FP32_TOL

    qkv = qkv_slice.contiguous()
    out_storage = nan_tensor((seq_len, batch, hidden_dim))
    out = out_storage.transpose(0, 1)  # (B, T, C) view with batch stride C and time stride B*C
    result = attention.flash_attention(qkv, num_heads, valid_len, out=out)
    assert result is out and torch.isfinite(out_storage).all()
    assert rel_rms(out, attention.flash_attention_naive(qkv, num_heads, valid_len)) <= FP32_TOL


def test_int64_and_int32_valid_len_agree():
    qkv = make_qkv(3, 25, 32, seed=9)
    lengths = [3, 25, 12]
    a = attention.flash_attention(qkv, 4, torch.tensor(lengths, dtype=torch.int64))
    b = attention.flash_attention(qkv, 4, torch.tensor(lengths, dtype=torch.int32))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------------- validation
def test_rejects_bad_inputs():
    qkv = make_qkv(2, 10, 32)
    with pytest.raises(TypeError, match="qkv must be a torch.Tensor"):
        attention.flash_attention(qkv.numpy(), 2)
    with pytest.raises(TypeError, match="qkv must be float32, float16 or bfloat16"):
        attention.flash_attention(qkv.double(), 2)
    with pytest.raises(TypeError, match="qkv must be float32, float16 or bfloat16"):
        attention.flash_attention(qkv.to(torch.int32), 2)
    with pytest.raises(ValueError, match="qkv must be 3-D"):
        attention.flash_attention(qkv[0], 2)
    with pytest.raises(ValueError, match="last dim must be 3\\*C"):
        attention.flash_attention(qkv[..., :95], 2)
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        attention.flash_attention(qkv, 3)
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        attention.flash_attention(qkv, 0)
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        attention.flash_attention(qkv, 2.0)
    with pytest.raises(ValueError, match="B >= 1 and T >= 1"):
        attention.flash_attention(qkv[:, :0], 2)
    with pytest.raises(ValueError, match="sm_scale must be a finite number"):
        attention.flash_attention(qkv, 2, sm_scale=float("nan"))
    with pytest.raises(ValueError, match="block_m must be a power of two >= 16"):
        attention.flash_attention(qkv, 2, block_m=24)
    with pytest.raises(ValueError, match="block_n must be a power of two >= 16"):
        attention.flash_attention(qkv, 2, block_n=8)


def test_rejects_bad_valid_len():
    qkv = make_qkv(2, 10, 32)
    with pytest.raises(TypeError, match="valid_len must be a torch.Tensor"):
        attention.flash_attention(qkv, 2, [10, 10])
    with pytest.raises(TypeError, match="valid_len must be an integer tensor"):
        attention.flash_attention(qkv, 2, torch.tensor([10.0, 10.0]))
    with pytest.raises(TypeError, match="valid_len must be an integer tensor"):
        attention.flash_attention(qkv, 2, torch.tensor([True, True]))
    with pytest.raises(ValueError, match=r"valid_len must have shape \(2,\)"):
        attention.flash_attention(qkv, 2, torch.tensor([10, 10, 10]))
    with pytest.raises(ValueError, match=r"valid_len must have shape \(2,\)"):
        attention.flash_attention(qkv, 2, torch.tensor([[10, 10]]))
    with pytest.raises(ValueError, match="valid_len entries must be >= 1"):
        attention.flash_attention(qkv, 2, torch.tensor([10, 0]))
    with pytest.raises(ValueError, match="valid_len is on meta"):
        attention.flash_attention(qkv, 2, torch.empty(2, dtype=torch.int64, device="meta"))


def test_rejects_bad_out():
    qkv = make_qkv(2, 10, 32)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 10, 32\)"):
        attention.flash_attention(qkv, 2, out=torch.empty(2, 10, 96))
    with pytest.raises(TypeError, match="out must have qkv's dtype"):
        attention.flash_attention(qkv, 2, out=torch.empty(2, 10, 32, dtype=torch.float16))
    with pytest.raises(TypeError, match="out must be a torch.Tensor"):
        attention.flash_attention(qkv, 2, out=object())
    with pytest.raises(ValueError, match="out is on meta"):
        attention.flash_attention(qkv, 2, out=torch.empty(2, 10, 32, device="meta"))


# ---------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("seq_len", [256, 1024])
def test_gpu_paper_dims_low_precision_within_twice_torch_error(seq_len):
    """Paper dims on CUDA: fp32 kernel within 1e-5 of the fp32 reference; bf16 and fp16 kernels within 2x PyTorch's
    own same-precision attention error; padded keys are inert."""
    batch, hidden_dim, num_heads = 8, 512, 4
    device = "cuda"
    qkv32 = make_qkv(batch, seq_len, hidden_dim, torch.float32, seed=seq_len, device=device)
    valid_len = torch.tensor([seq_len, 1, seq_len // 2, 7, seq_len - 3, seq_len, 100, seq_len // 3],
                             device=device)
    for lengths in (None, valid_len):
        reference = attention.flash_attention_naive(qkv32, num_heads, lengths)
        out32 = nan_tensor((batch, seq_len, hidden_dim), torch.float32, device)
        attention.flash_attention(qkv32, num_heads, lengths, out=out32)
        assert torch.isfinite(out32).all()
        assert rel_rms(out32, reference) <= FP32_TOL
        for dtype in (torch.bfloat16, torch.float16):
            qkv_lowp = qkv32.to(dtype)
            out = nan_tensor((batch, seq_len, hidden_dim), dtype, device)
            attention.flash_attention(qkv_lowp, num_heads, lengths, out=out)
            torch_lowp = attention.flash_attention_naive(qkv_lowp, num_heads, lengths, compute_dtype=dtype)
            assert torch.isfinite(out).all()
            kernel_error, torch_error = rel_rms(out, reference), rel_rms(torch_lowp, reference)
            assert kernel_error <= 2 * torch_error + 1e-6, (dtype, lengths is not None, kernel_error, torch_error)

    poisoned = poison_padded_keys(qkv32.to(torch.bfloat16), valid_len.cpu(), float("nan"))
    clean = attention.flash_attention(qkv32.to(torch.bfloat16), num_heads, valid_len)
    assert torch.equal(attention.flash_attention(poisoned, num_heads, valid_len), clean)
