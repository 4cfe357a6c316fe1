import math

import pytest
import torch

import gsmt_fast
from gsmt_fast.model import GSMT, count_parameters, sinusoidal_encoding


def test_paper_preset_parameter_count_matches_table3():
    cfg = gsmt_fast.GSMTConfig.preset("paper", num_classes=200, temporal_scale=100, input_dim=2048)
    n = count_parameters(GSMT(cfg))
    assert abs(n - 2.9e6) <= 0.1 * 2.9e6, n


def test_paper_preset_parameter_count_by_hand():
    # input proj, qkv, out proj, MLP fc, 3 LayerNorms, class head, mask head (k=3, k=3, k=1 to T)
    d, c, cm, k, t = 2048, 512, 256, 200, 100
    expected = (d * c + c) + (c * 3 * c + 3 * c) + (c * c + c) + (c * c + c) + 3 * 2 * c \
        + (c * (k + 1) + k + 1) + (c * cm * 3 + cm) + (cm * cm * 3 + cm) + (cm * t + t)
    cfg = gsmt_fast.GSMTConfig.preset("paper", num_classes=k, temporal_scale=t, input_dim=d)
    assert count_parameters(GSMT(cfg)) == expected


@pytest.mark.parametrize("pe", ["fixed", "learned", "none"])
def test_shapes_and_ranges(pe):
    cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=5, temporal_scale=24, input_dim=12, positional_encoding=pe)
    model = GSMT(cfg).eval()
    logits, masks = model(torch.randn(3, 24, 12))
    assert logits.shape == (3, 6, 24) and masks.shape == (3, 24, 24)
    assert (masks >= 0).all() and (masks <= 1).all()
    has_param = any(n == "pos_embed" for n, _ in model.named_parameters())
    assert has_param == (pe == "learned")


def test_mask_column_is_predicted_from_its_snippet():
    """Column t of the mask depends on snippet t's embedding only through the local conv receptive field; with
    attention disabled (no blocks) changing a far snippet leaves column t unchanged except through attention."""
    cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=2, temporal_scale=16, input_dim=4, num_layers=0,
                                      positional_encoding="none")
    model = GSMT(cfg).eval()
    x = torch.randn(1, 16, 4)
    _, m1 = model(x)
    y = x.clone()
    y[0, 10] += 5.0  # snippet 10 changes: only columns 8..12 (two k=3 convs) may change
    _, m2 = model(y)
    changed = (m1 - m2).abs().amax(dim=1)[0] > 1e-7  # per column t
    assert changed[8:13].any()
    assert not changed[:8].any() and not changed[13:].any()


def test_fixed_positional_encoding_values():
    pe = sinusoidal_encoding(10, 8)
    assert pe[0, 0] == 0 and pe[0, 1] == 1
    assert math.isclose(pe[3, 2].item(), math.sin(3 / 10000 ** (2 / 8)), rel_tol=1e-6)
    assert math.isclose(pe[3, 3].item(), math.cos(3 / 10000 ** (2 / 8)), rel_tol=1e-6)


def test_padding_makes_window_independent_of_padded_content():
    cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=3, temporal_scale=20, input_dim=6)
    model = GSMT(cfg).eval()
    x = torch.randn(1, 20, 6)
    y = x.clone()
    y[0, 13:] = torch.randn(7, 6) * 10
    n = torch.tensor([13])
    l1, m1 = model(x, n)
    l2, m2 = model(y, n)
    torch.testing.assert_close(l1[..., :13], l2[..., :13])
    torch.testing.assert_close(m1[:, :13, :13], m2[:, :13, :13])


def test_bad_input_shape_names_the_problem():
    cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=3, temporal_scale=20, input_dim=6)
    with pytest.raises(ValueError, match=r"\(B, 20, 6\)"):
        GSMT(cfg)(torch.randn(1, 20, 7))


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="positional_encoding"):
        gsmt_fast.GSMTConfig(positional_encoding="rope")
    with pytest.raises(ValueError, match="unknown preset"):
        gsmt_fast.GSMTConfig.preset("huge")
    cfg = gsmt_fast.GSMTConfig.preset("small", num_classes=7)
    assert gsmt_fast.GSMTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GSMTConfig field"):
        gsmt_fast.GSMTConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    inf = gsmt_fast.InferenceConfig(mode="long")
    assert gsmt_fast.InferenceConfig.from_dict(inf.to_dict()) == inf
    with pytest.raises(ValueError, match="nms_method"):
        gsmt_fast.InferenceConfig(nms_method="soft")
