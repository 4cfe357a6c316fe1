"""Triton class head (kernels/class_head.py) against its plain reference and the post-processing oracle's rules.

On the CPU the kernels run under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1): float32 and
float16 only (bfloat16 ``tl.dot`` is broken there). Every output is pre-filled with NaN (or an impossible integer) so
that an element the kernels forget to write fails. The GPU-marked test runs the paper's dims on an H100.

Exactness contract tested here: fg, label and the top-M1 selection must be EXACTLY what the oracle's rules
(gsmt_fast/postprocess/reference.py steps 1–2) give when run on the kernel's own returned probs, widened to float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")

from gsmt_fast.kernels import class_head as ch  # noqa: E402
from kernel_testing import nan_tensor, rel_rms  # noqa: E402

C_SMALL = 32
SENTINEL = -7  # written into integer outputs beforehand: no kernel ever produces it


def prefilled_outputs(batch: int, num_classes: int, length: int, top_snippets: int, device="cpu") -> dict:
    return {
        "out_probs": nan_tensor((batch, num_classes, length), device=device),
        "out_fg": nan_tensor((batch, length), device=device),
        "out_label": torch.full((batch, length), SENTINEL, dtype=torch.int32, device=device),
        "out_top": torch.full((batch, top_snippets), SENTINEL, dtype=torch.int32, device=device),
        "out_top_count": torch.full((batch,), SENTINEL, dtype=torch.int32, device=device),
    }


def random_valid_len(generator: torch.Generator, batch: int, length: int) -> torch.Tensor:
    """Random lengths in [1, T] that include 1 and T whenever the batch has room for them."""
    valid_len = torch.randint(1, length + 1, (batch,), generator=generator)
    valid_len[0] = length
    if batch > 1:
        valid_len[1] = 1
    return valid_len


def make_head(generator: torch.Generator, num_classes: int, channels: int = C_SMALL):
    weight = torch.randn(num_classes, channels, generator=generator) / channels**0.5 * 2.0
    bias = torch.randn(num_classes, generator=generator) * 0.5
    return weight, bias


def assert_oracle_rules_on_own_probs(result: ch.ClassHeadOutput, valid_len, top_snippets: int) -> None:
    """fg/label/top/top_count equal the oracle's steps 1–2 run on the kernel's own probs (float64), bit for bit."""
    probs = result.probs.detach().cpu().double().numpy()
    batch, _, length = probs.shape
    for b in range(batch):
        n = int(valid_len[b])
        fg_all, label_all, _ = ch.select_top_snippets_naive(probs[b], length, 1)
        np.testing.assert_array_equal(result.fg[b].cpu().double().numpy(), fg_all)
        np.testing.assert_array_equal(result.label[b].cpu().numpy(), label_all)
        _, _, selected = ch.select_top_snippets_naive(probs[b], n, top_snippets)
        expected_top = np.full(top_snippets, -1, dtype=np.int64)
        expected_top[: len(selected)] = selected
        np.testing.assert_array_equal(result.top[b].cpu().numpy(), expected_top)
        assert int(result.top_count[b]) == min(top_snippets, n)


def assert_all_written(result: ch.ClassHeadOutput) -> None:
    assert torch.isfinite(result.probs).all()
    assert torch.isfinite(result.fg).all()
    assert (result.label != SENTINEL).all() and (result.top != SENTINEL).all()
    assert (result.top_count != SENTINEL).all()


# ------------------------------------------------------------------------------------------ against the reference
@pytest.mark.parametrize("length", [1, 7, 100, 123, 256])
@pytest.mark.parametrize("num_foreground", [1, 3, 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_matches_naive(dtype, num_foreground, length):
    generator = torch.Generator().manual_seed(1000 * num_foreground + length + (dtype == torch.float16))
    num_classes = num_foreground + 1
    weight, bias = make_head(generator, num_classes)
    for batch in (1, 3):
        e = torch.randn(batch, length, C_SMALL, generator=generator)
        valid_len = random_valid_len(generator, batch, length)
        e_low, weight_low, bias_low = e.to(dtype), weight.to(dtype), bias.to(dtype)
        # Reference on the same rounded inputs (isolates the kernel's arithmetic) and on the float32 originals.
        same_inputs = ch.class_head_naive(e_low, weight_low, bias_low, valid_len, 1)
        originals = ch.class_head_naive(e, weight, bias, valid_len, 1)
        for top_snippets in (1, 5, 50, 300):
            outputs = prefilled_outputs(batch, num_classes, length, top_snippets)
            result = ch.class_head(e_low, weight_low, bias_low, valid_len, top_snippets, **outputs)
            assert result.probs is outputs["out_probs"] and result.top is outputs["out_top"]
            assert_all_written(result)
            # fp32 products of fp16 inputs are exact: only the summation order differs from PyTorch's.
            assert rel_rms(result.probs, same_inputs.probs) <= 1e-5
            if dtype == torch.float16:
                # fp16 rounding of e and W (unit roundoff 2**-11 = 4.9e-4 each) moves a logit by ~1e-3 absolute
                # here (|logit| ~ 2), i.e. each prob by ~1e-3 relative; measured 1e-4 to 6e-4.
                assert rel_rms(result.probs, originals.probs) <= 3e-3
            assert_oracle_rules_on_own_probs(result, valid_len, top_snippets)
            assert torch.allclose(result.probs.sum(dim=1), torch.ones(batch, length), atol=1e-5)
            if dtype == torch.float32:
                # Against the reference's own probs the labels agree wherever the top-2 margin beats the rounding.
                fg_probs = same_inputs.probs[:, :num_foreground]
                top2 = fg_probs.topk(min(2, num_foreground), dim=1).values
                clear = (top2[:, 0] - top2[:, -1] > 1e-5) | (num_foreground == 1)
                assert torch.equal(result.label[clear], same_inputs.label[clear])


def test_selection_with_exact_ties():
    """Identical embedding columns give exactly equal fg: the selection must break the ties by the lower t."""
    generator = torch.Generator().manual_seed(7)
    batch, length, num_foreground = 3, 123, 20
    # Small-integer inputs and dyadic weights: every logit is exact, so equal columns are bit-identical everywhere.
    base = torch.randint(-2, 3, (batch, 9, C_SMALL), generator=generator).float()
    pick = torch.randint(0, 9, (length,), generator=generator)
    e = base[:, pick, :]
    weight = torch.randint(-4, 5, (num_foreground + 1, C_SMALL), generator=generator).float() / 8
    bias = torch.randint(-4, 5, (num_foreground + 1,), generator=generator).float() / 8
    valid_len = torch.tensor([length, 1, 77])
    for dtype in (torch.float32, torch.float16):
        for top_snippets in (1, 5, 50, 300):
            outputs = prefilled_outputs(batch, num_foreground + 1, length, top_snippets)
            result = ch.class_head(e.to(dtype), weight.to(dtype), bias.to(dtype), valid_len, top_snippets, **outputs)
            assert_all_written(result)
            assert_oracle_rules_on_own_probs(result, valid_len, top_snippets)
            # The ties are real: far fewer distinct fg values than snippets.
            assert len(torch.unique(result.fg[0])) <= 9
            reference = ch.class_head_naive(e, weight, bias, valid_len, top_snippets)
            assert torch.equal(result.top, reference.top)
            assert torch.equal(result.label, reference.label)


def test_label_ties_take_the_lowest_class_and_skip_background():
    generator = torch.Generator().manual_seed(11)
    batch, length, num_foreground = 3, 100, 20
    e = torch.randint(-2, 3, (batch, length, C_SMALL), generator=generator).float()
    weight = torch.randint(-2, 3, (num_foreground + 1, C_SMALL), generator=generator).float() / 64
    bias = torch.zeros(num_foreground + 1)
    # Classes 5, 9 and 13 share weights and a dominant bias: every snippet is an exact three-way tie, won by 5.
    weight[9] = weight[13] = weight[5]
    bias[[5, 9, 13]] = 8.0
    bias[num_foreground] = 20.0  # the background wins the softmax but is never a label
    valid_len = [length, 3, 50]  # a plain list is accepted too
    for dtype in (torch.float32, torch.float16):
        result = ch.class_head(e.to(dtype), weight.to(dtype), bias.to(dtype), valid_len, 50,
                               **prefilled_outputs(batch, num_foreground + 1, length, 50))
        assert_all_written(result)
        assert (result.label == 5).all()
        assert torch.equal(result.probs[:, 5], result.probs[:, 9]) and torch.equal(result.probs[:, 5], result.fg)
        assert (result.probs[:, num_foreground] > result.fg).all()
        assert_oracle_rules_on_own_probs(result, valid_len, 50)

    # All-equal logits (zero embedding): every class ties, label 0, all fg equal, top = 0, 1, 2, ...
    zeros = torch.zeros(batch, length, C_SMALL)
    result = ch.class_head(zeros, weight, torch.zeros(num_foreground + 1), valid_len, 5,
                           **prefilled_outputs(batch, num_foreground + 1, length, 5))
    assert (result.label == 0).all()
    assert torch.allclose(result.probs, torch.full_like(result.probs, 1 / (num_foreground + 1)))
    assert result.top.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, -1, -1], [0, 1, 2, 3, 4]]
    assert result.top_count.tolist() == [5, 3, 5]


def test_reference_selection_matches_oracle_window_candidates():
    """The reimplemented steps 1–2 equal what gsmt_fast.postprocess.reference.window_candidates selects: with an
    identity mask, each selected snippet t yields exactly one candidate (t, t, label_t)."""
    from gsmt_fast.config import InferenceConfig
    from gsmt_fast.postprocess.reference import window_candidates

    generator = torch.Generator().manual_seed(5)
    length, num_foreground = 100, 3
    base = torch.randint(-2, 3, (1, 6, C_SMALL), generator=generator).float()
    e = torch.cat([base[:, torch.randint(0, 6, (50,), generator=generator)],
                   torch.randn(1, length - 50, C_SMALL, generator=generator)], dim=1)  # ties and no ties
    weight, bias = make_head(generator, num_foreground + 1)
    masks = np.eye(length)
    for valid_len in (1, 37, length):
        for top_snippets in (1, 5, 50, 300):
            result = ch.class_head(e, weight, bias, [valid_len], top_snippets)
            cfg = InferenceConfig(top_snippets=top_snippets, mask_thresholds=(0.5,), mode="short",
                                  score_threshold=0.0, pre_nms_topk=10_000)
            candidates = window_candidates(result.probs[0], masks, valid_len, cfg)
            count = int(result.top_count[0])
            selected = result.top[0, :count].numpy()
            assert count == len(candidates) and (result.top[0, count:] == -1).all()
            assert sorted(candidates.start.tolist()) == sorted(selected.tolist())
            assert np.array_equal(candidates.end, candidates.start)
            labels = result.label[0].numpy()
            assert np.array_equal(candidates.labels, labels[candidates.start])


# -------------------------------------------------------------------------------------------------- awkward inputs
def test_conv1d_weight_layout_strided_embedding_and_model_head():
    """A (K+1, C, 1) Conv1d weight and a non-contiguous e (the (B, C, T) buffer seen as (B, T, C)) are read in
    place and match the model's own Conv1d + softmax."""
    torch.manual_seed(3)
    batch, length, num_foreground = 3, 123, 3
    head = torch.nn.Conv1d(C_SMALL, num_foreground + 1, kernel_size=1)
    e_ct = torch.randn(batch, C_SMALL, length)
    e = e_ct.transpose(1, 2)  # strides (C*T, 1, T)
    assert not e.is_contiguous()
    with torch.no_grad():
        expected = torch.softmax(head(e_ct), dim=1)
        result = ch.class_head(e, head.weight, head.bias, torch.tensor([length, 1, 60]), 50,
                               **prefilled_outputs(batch, num_foreground + 1, length, 50))
    assert_all_written(result)
    assert rel_rms(result.probs, expected) <= 1e-5
    assert_oracle_rules_on_own_probs(result, [length, 1, 60], 50)


def test_float32_weights_are_cast_to_the_compute_dtype():
    generator = torch.Generator().manual_seed(9)
    e = torch.randn(2, 64, C_SMALL, generator=generator).half()
    weight, bias = make_head(generator, 21)
    result = ch.class_head(e, weight, bias, 64, 5)  # fp32 weights, fp16 activations; an int valid_len
    expected = ch.class_head_naive(e, weight.half(), bias.half(), 64, 5)
    assert rel_rms(result.probs, expected.probs) <= 1e-5
    assert result.top_count.tolist() == [5, 5]


def test_wide_class_axis_and_many_channels():
    """K+1 = 201 classes (the ActivityNet head) and C = 80 (several channel blocks with a ragged tail)."""
    generator = torch.Generator().manual_seed(13)
    batch, length, channels, num_foreground = 2, 100, 80, 200
    e = torch.randn(batch, length, channels, generator=generator)
    weight, bias = make_head(generator, num_foreground + 1, channels)
    result = ch.class_head(e, weight, bias, [100, 40], 50, **prefilled_outputs(batch, num_foreground + 1, length, 50))
    assert_all_written(result)
    assert rel_rms(result.probs, ch.class_head_naive(e, weight, bias, [100, 40], 50).probs) <= 1e-5
    assert_oracle_rules_on_own_probs(result, [100, 40], 50)


def test_no_selection_gives_the_same_probabilities():
    """top_snippets=None (the triton backend: its post-processing selects) skips the selection kernel only."""
    generator = torch.Generator().manual_seed(17)
    e = torch.randn(2, 50, C_SMALL, generator=generator)
    weight, bias = make_head(generator, 4)
    with_top = ch.class_head(e, weight, bias, [50, 20], 5)
    without = ch.class_head(e, weight, bias, [50, 20], None)
    assert without.top is None and without.top_count is None
    for name in ("probs", "fg", "label"):
        assert torch.equal(getattr(without, name), getattr(with_top, name))


def test_empty_batch():
    result = ch.class_head(torch.zeros(0, 7, C_SMALL), torch.zeros(4, C_SMALL), torch.zeros(4),
                           torch.zeros(0, dtype=torch.int64), 5)
    assert result.probs.shape == (0, 4, 7) and result.top.shape == (0, 5) and result.top_count.shape == (0,)


# ------------------------------------------------------------------------------------------------------ validation
def _valid_args():
    return torch.zeros(2, 7, C_SMALL), torch.zeros(4, C_SMALL), torch.zeros(4), torch.tensor([7, 3]), 5


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda a: {"e": a["e"][0]}, ValueError, r"e must have shape \(B, T, C\)"),
        (lambda a: {"e": a["e"].double()}, TypeError, "e must be float32, float16 or bfloat16"),
        (lambda a: {"e": a["e"].numpy()}, TypeError, "e must be a torch.Tensor"),
        (lambda a: {"e": torch.zeros(2, 0, C_SMALL)}, ValueError, "T >= 1 and C >= 1"),
        (lambda a: {"weight": torch.zeros(4, C_SMALL + 1)}, ValueError, r"weight must have shape \(K\+1, C=32\)"),
        (lambda a: {"weight": torch.zeros(4, C_SMALL, 3)}, ValueError, "weight must have shape"),
        (lambda a: {"weight": torch.zeros(1, C_SMALL), "bias": torch.zeros(1)}, ValueError, "K >= 1"),
        (lambda a: {"weight": torch.zeros(1025, C_SMALL), "bias": torch.zeros(1025)}, ValueError, "at most 1024"),
        (lambda a: {"weight": a["weight"].int()}, TypeError, "weight must be float32"),
        (lambda a: {"bias": torch.zeros(5)}, ValueError, r"bias must have shape \(4,\)"),
        (lambda a: {"bias": [0.0] * 4}, TypeError, "bias must be a torch.Tensor"),
        (lambda a: {"valid_len": torch.tensor([7])}, ValueError, r"valid_len must have shape \(2,\)"),
        (lambda a: {"valid_len": torch.tensor([7, 0])}, ValueError, r"valid_len values must be in \[1, T=7\]"),
        (lambda a: {"valid_len": [8, 1]}, ValueError, r"valid_len values must be in \[1, T=7\]"),
        (lambda a: {"valid_len": torch.tensor([7.0, 3.0])}, TypeError, "valid_len must be an integer tensor"),
        (lambda a: {"valid_len": [7.0, 3.0]}, TypeError, "valid_len must hold integers"),
        (lambda a: {"valid_len": True}, TypeError, "valid_len must be an int"),
        (lambda a: {"top_snippets": 0}, ValueError, "top_snippets must be >= 1"),
        (lambda a: {"top_snippets": 5.0}, TypeError, "top_snippets must be an int"),
        (lambda a: {"out_probs": torch.zeros(2, 4, 8)}, ValueError, r"out_probs must have shape \(2, 4, 7\)"),
        (lambda a: {"out_fg": torch.zeros(2, 7, dtype=torch.float16)}, TypeError, "out_fg must have dtype"),
        (lambda a: {"out_label": torch.zeros(2, 7)}, TypeError, "out_label must have dtype torch.int32"),
        (lambda a: {"out_top": torch.zeros(2, 4, dtype=torch.int32)}, ValueError, r"out_top must have shape \(2, 5\)"),
        (lambda a: {"out_top": torch.zeros(5, 2, dtype=torch.int32).t()}, ValueError, "out_top must be contiguous"),
        (lambda a: {"out_top_count": torch.zeros(2)}, TypeError, "out_top_count must have dtype"),
    ],
)
def test_validation_errors(change, error, match):
    e, weight, bias, valid_len, top_snippets = _valid_args()
    args = {"e": e, "weight": weight, "bias": bias, "valid_len": valid_len, "top_snippets": top_snippets}
    args.update(change(args))
    with pytest.raises(error, match=match):
        ch.class_head(**args)


# ------------------------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("num_foreground", [20, 200])
def test_gpu_paper_dims_low_precision(num_foreground):
    """C=512, T=256, batch 8 on CUDA (K=20 THUMOS, K=200 ActivityNet: different tiles): fp32 to 1e-5, bf16/fp16 probs
    within 2x of eager PyTorch's own same-precision error (logits in that precision, softmax in fp32, as the torch
    backend does) against fp32, and the selection exact on the kernel's own probs."""
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(num_foreground)
    batch, length, channels, top_snippets = 8, 256, 512, 50
    e = torch.randn(batch, length, channels, device=device, generator=generator)
    weight = torch.randn(num_foreground + 1, channels, device=device, generator=generator) / channels**0.5 * 2.0
    bias = torch.randn(num_foreground + 1, device=device, generator=generator) * 0.5
    valid_len = torch.randint(1, length + 1, (batch,), device=device, generator=generator)
    valid_len[0], valid_len[1] = length, 1
    reference = ch.class_head_naive(e, weight, bias, valid_len, top_snippets)

    result = ch.class_head(e, weight, bias, valid_len, top_snippets,
                           **prefilled_outputs(batch, num_foreground + 1, length, top_snippets, device))
    assert_all_written(result)
    assert rel_rms(result.probs, reference.probs) <= 1e-5
    assert_oracle_rules_on_own_probs(result, valid_len.tolist(), top_snippets)

    for dtype in (torch.bfloat16, torch.float16):
        e_low, weight_low, bias_low = e.to(dtype), weight.to(dtype), bias.to(dtype)
        result = ch.class_head(e_low, weight_low, bias_low, valid_len, top_snippets,
                               **prefilled_outputs(batch, num_foreground + 1, length, top_snippets, device))
        assert_all_written(result)
        torch_low = ch.class_head_naive(e_low, weight_low, bias_low, valid_len, top_snippets, compute_dtype=dtype)
        kernel_error = rel_rms(result.probs, reference.probs)
        torch_error = rel_rms(torch_low.probs, reference.probs)
        assert kernel_error <= 2 * torch_error + 1e-6, (dtype, kernel_error, torch_error)
        assert_oracle_rules_on_own_probs(result, valid_len.tolist(), top_snippets)


@pytest.mark.gpu
def test_gpu_awkward_shapes_ties_and_unchecked_lengths():
    device = torch.device("cuda")
    generator = torch.Generator().manual_seed(21)
    # Ragged T and C, exact ties (repeated integer columns, dyadic weights), several T-blocks of both kernels.
    batch, length, channels, num_foreground = 3, 123, 80, 3
    base = torch.randint(-2, 3, (batch, 9, channels), generator=generator).float()
    e = base[:, torch.randint(0, 9, (length,), generator=generator), :].to(device)
    weight = (torch.randint(-4, 5, (num_foreground + 1, channels), generator=generator).float() / 8).to(device)
    bias = torch.zeros(num_foreground + 1, device=device)
    valid_len = torch.tensor([length, 1, 77], device=device)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for top_snippets in (1, 50, 300):
            result = ch.class_head(e.to(dtype), weight.to(dtype), bias.to(dtype), valid_len, top_snippets,
                                   **prefilled_outputs(batch, num_foreground + 1, length, top_snippets, device))
            assert_all_written(result)
            assert_oracle_rules_on_own_probs(result, valid_len.tolist(), top_snippets)
            assert len(torch.unique(result.fg[0])) <= 9  # the ties are real

    # Out-of-range device lengths are not checked on the host (no sync) but clamped in the kernel: no stray writes.
    wild = torch.tensor([0, length + 5, 3], device=device, dtype=torch.int32)
    result = ch.class_head(e, weight, bias, wild, 50, **prefilled_outputs(batch, num_foreground + 1, length, 50,
                                                                           device))
    assert result.top_count.tolist() == [0, 50, 3]
    assert (result.top[0] == -1).all() and (result.top[1] >= 0).all() and (result.top[2, 3:] == -1).all()
