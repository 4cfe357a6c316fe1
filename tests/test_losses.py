"""Losses of GSMT (paper §3.3), checked against values computed by hand in the tests."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gsmt_fast.data.targets import assign_targets, batch_targets
from gsmt_fast.losses import (
    GSMTLoss,
    biou_loss,
    boundary_band,
    class_balanced_lr_loss,
    classification_loss,
    dice_loss,
    focal_loss,
    mask_bce_loss,
    mask_loss,
    num_hard_negatives,
)

needs_kornia = pytest.mark.skipif(importlib.util.find_spec("kornia") is None,
                                  reason="kornia (training extra) not installed")


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def log_sigmoid(x: float) -> float:
    return -softplus(-x)


def class_logits(*snippets: list[float]) -> torch.Tensor:
    """(1, K+1, T) logits from one list of K+1 logits per snippet."""
    return torch.tensor(snippets, dtype=torch.float64).T[None]


def ones_at(length: int, positions, value: float = 1.0) -> torch.Tensor:
    row = torch.zeros(length, dtype=torch.float64)
    row[list(positions)] = value
    return row


# ---------------------------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------------------------

FOCAL_SNIPPETS = ([2.0, 0.5, -1.0], [0.0, 1.0, 3.0])
FOCAL_TARGET = torch.tensor([[0, 1]])


def softmax_probability(logits: list[float], label: int) -> float:
    return math.exp(logits[label]) / sum(math.exp(z) for z in logits)


def test_focal_loss_hand_value():
    p0 = softmax_probability(FOCAL_SNIPPETS[0], 0)
    p1 = softmax_probability(FOCAL_SNIPPETS[1], 1)
    expected = 0.5 * (-(1 - p0) ** 2 * math.log(p0) - (1 - p1) ** 2 * math.log(p1))
    value = focal_loss(class_logits(*FOCAL_SNIPPETS), FOCAL_TARGET, valid=None, gamma=2.0)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_focal_loss_is_per_snippet_not_on_the_mean_cross_entropy():
    # one easy and one hard snippet: the focal factor of the mean CE is not the mean of the per-snippet factors
    p0 = softmax_probability(FOCAL_SNIPPETS[0], 0)
    p1 = softmax_probability(FOCAL_SNIPPETS[1], 1)
    mean_ce = 0.5 * (-math.log(p0) - math.log(p1))
    focal_of_mean_ce = (1 - math.exp(-mean_ce)) ** 2 * mean_ce  # the released code's formula
    value = focal_loss(class_logits(*FOCAL_SNIPPETS), FOCAL_TARGET).item()
    assert abs(value - focal_of_mean_ce) > 0.05
    # gamma = 0 is plain cross-entropy
    assert focal_loss(class_logits(*FOCAL_SNIPPETS), FOCAL_TARGET, gamma=0.0).item() == pytest.approx(mean_ce)


@pytest.mark.parametrize(("num_classes", "expected"), [(1, 1), (10, 1), (11, 2), (200, 20)])
def test_number_of_hard_negatives(num_classes, expected):
    assert num_hard_negatives(num_classes) == expected


def test_class_balanced_lr_hand_value():
    # K = 3 action classes + background: one hard negative per snippet
    snippet0 = [1.0, -0.5, 2.0, 0.3]  # target 0: negatives 1, 2, 3 -> hardest is class 2 (logit 2.0)
    snippet1 = [0.2, 0.9, -1.0, -2.0]  # target 3 (background): negatives 0, 1, 2 -> hardest is class 1 (0.9)
    alpha = 10.0
    expected0 = -log_sigmoid(1.0) - alpha * log_sigmoid(-2.0)
    expected1 = -log_sigmoid(-2.0) - alpha * log_sigmoid(-0.9)
    logits = class_logits(snippet0, snippet1)
    value = class_balanced_lr_loss(logits, torch.tensor([[0, 3]]), alpha=alpha)
    assert value.item() == pytest.approx(0.5 * (expected0 + expected1), rel=1e-12)

    # two hard negatives: their mean log(1 - r)
    expected0 = -log_sigmoid(1.0) - alpha / 2 * (log_sigmoid(-2.0) + log_sigmoid(-0.3))
    expected1 = -log_sigmoid(-2.0) - alpha / 2 * (log_sigmoid(-0.9) + log_sigmoid(-0.2))
    value = class_balanced_lr_loss(logits, torch.tensor([[0, 3]]), alpha=alpha, num_hard=2)
    assert value.item() == pytest.approx(0.5 * (expected0 + expected1), rel=1e-12)


def test_class_balanced_lr_uses_ceil_k_over_10_negatives():
    # K = 11 -> 2 hard negatives; the true class (logit 5) is the largest and must not count as a negative
    logits = [5.0, 0.0, 4.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    expected = -log_sigmoid(5.0) - 10.0 / 2 * (log_sigmoid(-4.0) + log_sigmoid(-3.0))
    value = class_balanced_lr_loss(class_logits(logits), torch.tensor([[0]]))
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_class_balanced_lr_is_stable_for_extreme_logits():
    logits = class_logits([100.0, -100.0, 100.0], [-100.0, 100.0, 0.0]).float().requires_grad_()
    value = class_balanced_lr_loss(logits, torch.tensor([[0, 0]]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert value.item() == pytest.approx(0.5 * (10 * 100 + 100 + 10 * 100), rel=1e-4)


def test_classification_loss_combines_focal_and_lr():
    logits = class_logits(*FOCAL_SNIPPETS)
    expected = 0.4 * focal_loss(logits, FOCAL_TARGET) + 0.6 * class_balanced_lr_loss(logits, FOCAL_TARGET)
    assert classification_loss(logits, FOCAL_TARGET).item() == pytest.approx(expected.item(), rel=1e-12)


def test_ce_kind_equals_cross_entropy_over_valid_snippets():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, generator=generator)
    target = torch.randint(0, 4, (2, 6), generator=generator)
    valid = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    expected = F.cross_entropy(logits.transpose(1, 2)[valid], target[valid])
    assert classification_loss(logits, target, valid, kind="ce").item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown cls_loss"):
        classification_loss(logits, target, valid, kind="focal")


def test_classification_ignores_padded_snippets_and_their_targets():
    logits = class_logits(*FOCAL_SNIPPETS, [float("nan")] * 3).float().requires_grad_()
    target = torch.tensor([[0, 1, 99]])  # nonsense on the padded snippet
    valid = torch.tensor([[True, True, False]])
    value = classification_loss(logits, target, valid)
    value.backward()
    expected = classification_loss(class_logits(*FOCAL_SNIPPETS).float(), FOCAL_TARGET)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert (logits.grad[..., 2] == 0).all()
    with pytest.raises(ValueError, match="class targets"):
        classification_loss(logits, target, valid=None)


# ---------------------------------------------------------------------------------------------------------------------
# mask terms
# ---------------------------------------------------------------------------------------------------------------------


@needs_kornia
def test_boundary_band_of_a_run_inside_the_window():
    band = boundary_band(ones_at(20, range(5, 15))[None], kernel_size=7)[0]
    assert band.tolist() == ones_at(20, [5, 6, 7, 12, 13, 14]).tolist()


@needs_kornia
def test_boundary_band_window_ends_count_as_boundaries():
    # runs touching the array ends are eroded there too (outside the window counts as 0)
    band = boundary_band(ones_at(20, range(0, 10))[None], kernel_size=7)[0]
    assert band.tolist() == ones_at(20, [0, 1, 2, 7, 8, 9]).tolist()
    band = boundary_band(torch.ones(1, 20, dtype=torch.float64), kernel_size=7)[0]
    assert band.tolist() == ones_at(20, [0, 1, 2, 17, 18, 19]).tolist()
    # a run shorter than the kernel is all band; a constant soft row keeps its value on the band
    assert boundary_band(ones_at(20, [9, 10, 11])[None])[0].tolist() == ones_at(20, [9, 10, 11]).tolist()
    soft = boundary_band(torch.full((1, 10), 0.5, dtype=torch.float64), kernel_size=3)[0]
    assert soft.tolist() == ones_at(10, [0, 9], 0.5).tolist()


@needs_kornia
def test_kornia_default_border_is_geodesic():
    # The finding behind boundary_band's border choice: kornia's default ignores the outside of the array, so a run
    # touching an end is not eroded there and a full-window mask has an empty band.
    from kornia.morphology import erosion

    x = ones_at(20, range(0, 10)).float()[None, None, None]
    eroded = erosion(x, torch.ones(1, 7))[0, 0, 0]
    assert (x[0, 0, 0] - eroded).tolist() == ones_at(20, [7, 8, 9]).tolist()
    assert (erosion(torch.ones(1, 1, 1, 20), torch.ones(1, 7)) == 1).all()


@needs_kornia
def test_boundary_band_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        boundary_band(torch.zeros(1, 10), kernel_size=4)


@needs_kornia
def test_biou_overlapping_boundaries():
    # k = 7: B(g) = {5,6,7,12,13,14}, B(m) = {6,7,8,13,14,15}; I = 4, U = 8; ||m-g|| = sqrt(2) (at 5 and 15); c = 10
    g = ones_at(20, range(5, 15))[None]
    m = ones_at(20, range(6, 16))[None]
    expected = 1 - 4 / 8 + math.sqrt(2) / (10 * 4)
    assert biou_loss(m, g).item() == pytest.approx(expected, rel=1e-7)

    # k = 3 with a soft prediction: m = 0.5 on g's run 5..12 -> B(m) = 0.5 at 5 and 12, B(g) = 1 at 5 and 12;
    # I = 1, U = 2; ||m-g|| = sqrt(8 * 0.25); c = 8, max(I, 1) = 1
    g = ones_at(20, range(5, 13))[None]
    m = ones_at(20, range(5, 13), 0.5)[None]
    expected = 1 - 1 / 2 + math.sqrt(2) / 8
    assert biou_loss(m, g, kernel_size=3).item() == pytest.approx(expected, rel=1e-7)


@needs_kornia
def test_biou_non_overlapping_boundaries():
    # k = 3: B(g) = {2, 5}, B(m) = {12, 15}; I = 0, U = 4; ||m-g|| = sqrt(8); c = 4
    g = ones_at(20, range(2, 6))[None]
    m = ones_at(20, range(12, 16))[None]
    expected = 1 - 0 + math.sqrt(8) / 4
    assert biou_loss(m, g, kernel_size=3).item() == pytest.approx(expected, rel=1e-7)
    # the L2 term carries a gradient when the bands do not overlap
    soft = (0.9 * m + 0.05).requires_grad_()
    biou_loss(soft, g, kernel_size=3).backward()
    assert torch.isfinite(soft.grad).all() and soft.grad.abs().sum() > 0


@needs_kornia
def test_biou_is_a_mean_over_rows():
    g = torch.stack([ones_at(20, range(5, 15)), ones_at(20, range(2, 6))])
    m = torch.stack([ones_at(20, range(6, 16)), ones_at(20, range(12, 16))])
    # row 0 as in test_biou_overlapping_boundaries; row 1 with k = 7: both runs (4 long) are all band, I = 0, U = 8,
    # ||m-g|| = sqrt(8), c = 4
    expected = 0.5 * ((1 - 4 / 8 + math.sqrt(2) / 40) + (1 + math.sqrt(8) / 4))
    assert biou_loss(m, g, kernel_size=7).item() == pytest.approx(expected, rel=1e-7)


def test_dice_hand_value():
    m = torch.tensor([[0.5, 1.0, 0.0, 0.25]], dtype=torch.float64)
    g = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    # sum m*g = 1.5; sum m^2 = 1.3125; sum g^2 = 2
    assert dice_loss(m, g).item() == pytest.approx(1 - 3 / 3.3125, rel=1e-7)
    # the padded last entry is left out of both sums
    row_valid = torch.tensor([[True, True, True, False]])
    assert dice_loss(m, g, row_valid=row_valid).item() == pytest.approx(1 - 3 / 3.25, rel=1e-7)


def test_mask_bce_hand_values():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # positive: softplus(-z); negative: softplus(z)
    positive = softplus(-2.0)
    negatives = [softplus(-1.0), softplus(0.5), softplus(0.0)]
    balanced = 0.5 * positive + 0.5 * sum(negatives) / 3
    plain = (positive + sum(negatives)) / 4
    assert mask_bce_loss(logits, g, balanced=True).item() == pytest.approx(balanced, rel=1e-12)
    assert mask_bce_loss(logits, g, balanced=False).item() == pytest.approx(plain, rel=1e-12)
    row_valid = torch.tensor([[True, True, True, False]])
    expected = 0.5 * positive + 0.5 * (negatives[0] + negatives[1]) / 2
    assert mask_bce_loss(logits, g, row_valid=row_valid).item() == pytest.approx(expected, rel=1e-12)
    # a row with no negatives: the positives carry all the weight
    all_positive = torch.ones_like(g)
    expected = (softplus(-2.0) + softplus(1.0) + softplus(-0.5) + softplus(0.0)) / 4
    assert mask_bce_loss(logits, all_positive).item() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# mask_loss and GSMTLoss on targets from assign_targets
# ---------------------------------------------------------------------------------------------------------------------

NUM_CLASSES = 3


def example_targets(length: int = 16):
    """Two windows: instances inside, overlapping, touching the end; the second covers its whole valid part."""
    first = assign_targets(np.array([[2.0, 7.0], [5.2, 6.8], [12.3, 20.0]]), np.array([0, 1, 2]), NUM_CLASSES, length)
    second = assign_targets(np.array([[-1.0, 13.0]]), np.array([1]), NUM_CLASSES, length, valid_len=12)
    return batch_targets([first, second])


@needs_kornia
@pytest.mark.parametrize("kind", ["default", "paper", "bce_dice"])
def test_mask_loss_gradients_are_finite_and_non_zero(kind):
    targets = example_targets()
    generator = torch.Generator().manual_seed(1)
    mask_logits = torch.randn(2, 16, 16, generator=generator, requires_grad=True)
    terms = mask_loss(mask_logits, targets["mask"], targets["action"], targets["valid"], kind=kind)
    expected_keys = {"default": {"mask_bce", "mask_dice", "mask_biou", "mask"},
                     "paper": {"mask_dice", "mask_biou", "mask"},
                     "bce_dice": {"mask_bce", "mask_dice", "mask"}}[kind]
    assert set(terms) == expected_keys
    terms["mask"].backward()
    grad = mask_logits.grad
    assert torch.isfinite(grad).all()
    action_columns = grad.transpose(1, 2)[targets["action"]]
    assert (action_columns.abs().sum(dim=1) > 0).all()
    # background columns and padded rows get no gradient
    assert (grad.transpose(1, 2)[~targets["action"]] == 0).all()
    assert (grad[1, 12:, :] == 0).all()


@needs_kornia
def test_mask_loss_totals_follow_the_kind():
    targets = example_targets()
    mask_logits = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(2))
    args = (mask_logits, targets["mask"], targets["action"], targets["valid"])
    default = mask_loss(*args, kind="default", lambda_b=0.1)
    paper = mask_loss(*args, kind="paper", lambda2=0.4)
    bce_dice = mask_loss(*args, kind="bce_dice")
    expected = default["mask_bce"] + default["mask_dice"] + 0.1 * default["mask_biou"]
    assert default["mask"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert paper["mask"].item() == pytest.approx((paper["mask_biou"] + 0.4 * paper["mask_dice"]).item(), rel=1e-6)
    assert bce_dice["mask"].item() == pytest.approx((bce_dice["mask_bce"] + bce_dice["mask_dice"]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown mask_loss"):
        mask_loss(*args, kind="biou")


def perfect_mask_logits(targets) -> torch.Tensor:
    return torch.where(targets["mask"] > 0.5, 30.0, -30.0)


@needs_kornia
def test_perfect_prediction_gives_zero_loss():
    targets = example_targets()
    mask_logits = perfect_mask_logits(targets)
    args = (mask_logits, targets["mask"], targets["action"], targets["valid"])
    paper = mask_loss(*args, kind="paper")
    assert paper["mask_biou"].item() <= 1e-6
    assert paper["mask_dice"].item() <= 1e-6
    assert paper["mask"].item() <= 1e-6
    default = mask_loss(*args, kind="default")
    assert default["mask_bce"].item() <= 1e-6
    assert default["mask"].item() <= 1e-6


def test_mask_loss_without_action_snippets_is_zero_with_grad():
    mask_logits = torch.randn(1, 6, 6, requires_grad=True)
    empty = batch_targets([assign_targets(np.zeros((0, 2)), np.zeros(0), NUM_CLASSES, 6)])
    terms = mask_loss(mask_logits, empty["mask"], empty["action"], empty["valid"], kind="default")
    assert terms["mask"].item() == 0.0
    terms["mask"].backward()
    assert (mask_logits.grad == 0).all()


@needs_kornia
@pytest.mark.parametrize(("cls_kind", "mask_kind"), [("focal_lr", "default"), ("focal_lr", "paper"),
                                                       ("ce", "bce_dice")])
def test_padded_window_gives_the_loss_of_its_crop(cls_kind, mask_kind):
    length, valid_len = 16, 11
    segments, labels = np.array([[1.0, 4.0], [6.2, 12.0]]), np.array([0, 2])
    padded_targets = batch_targets([assign_targets(segments, labels, NUM_CLASSES, length, valid_len=valid_len)])
    crop_targets = batch_targets([assign_targets(segments, labels, NUM_CLASSES, valid_len)])

    generator = torch.Generator().manual_seed(3)
    crop_cls = torch.randn(1, NUM_CLASSES + 1, valid_len, generator=generator)
    crop_mask = torch.randn(1, valid_len, valid_len, generator=generator)
    # padded positions hold large garbage that must not matter
    padded_cls = 50 * torch.randn(1, NUM_CLASSES + 1, length, generator=generator)
    padded_cls[..., :valid_len] = crop_cls
    padded_mask = 50 * torch.randn(1, length, length, generator=generator)
    padded_mask[:, :valid_len, :valid_len] = crop_mask
    padded_mask.requires_grad_()

    criterion = GSMTLoss(cls_loss=cls_kind, mask_loss=mask_kind)
    padded = criterion(padded_cls, padded_mask, padded_targets, padded_targets["valid"])
    crop = criterion(crop_cls, crop_mask, crop_targets, crop_targets["valid"])
    assert padded.keys() == crop.keys()
    for key in crop:
        assert padded[key].item() == pytest.approx(crop[key].item(), rel=1e-5, abs=1e-6), key
    padded["total"].backward()
    assert (padded_mask.grad[:, valid_len:, :] == 0).all() and (padded_mask.grad[:, :, valid_len:] == 0).all()


@needs_kornia
def test_gsmt_loss_total_and_validation():
    targets = example_targets()
    generator = torch.Generator().manual_seed(4)
    cls_logits = torch.randn(2, NUM_CLASSES + 1, 16, generator=generator, requires_grad=True)
    mask_logits = torch.randn(2, 16, 16, generator=generator, requires_grad=True)
    losses = GSMTLoss()(cls_logits, mask_logits, targets)  # valid taken from the targets
    assert {"cls", "mask_bce", "mask_dice", "mask_biou", "mask", "total"} == set(losses)
    assert losses["total"].item() == pytest.approx((losses["cls"] + losses["mask"]).item(), rel=1e-6)
    expected_cls = classification_loss(cls_logits, targets["cls"], targets["valid"])
    assert losses["cls"].item() == pytest.approx(expected_cls.item(), rel=1e-6)
    losses["total"].backward()
    assert torch.isfinite(cls_logits.grad).all() and torch.isfinite(mask_logits.grad).all()

    with pytest.raises(ValueError, match="unknown cls_loss"):
        GSMTLoss(cls_loss="softmax")
    with pytest.raises(ValueError, match="unknown mask_loss"):
        GSMTLoss(mask_loss="dice")
    with pytest.raises(ValueError, match="kernel_size"):
        GSMTLoss(kernel_size=6)
    with pytest.raises(ValueError, match="targets lack"):
        GSMTLoss()(cls_logits, mask_logits, {"cls": targets["cls"]})


def test_importing_losses_does_not_import_kornia():
    import subprocess
    import sys

    code = "import sys, gsmt_fast.losses; assert 'kornia' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------------
# boundary distances (the boundary-refined variant)
# ---------------------------------------------------------------------------------------------------------------------


def test_boundary_distance_loss_hand_values():
    from gsmt_fast.losses import boundary_distance_loss

    # snippet 0: predicted (2, 1), target (1, 3): inter 1 + 1 = 2, union 2 + 3 = 5, centres (1 - 2)/2 and (3 - 1)/2
    # differ by 1.5 -> 1 - 2/5 + (1.5/5)^2 = 0.69. Snippet 1: exact -> 0. Snippet 2: background, left out.
    distances = torch.tensor([[[2.0, 4.0, 9.0], [1.0, 0.5, 9.0]]], dtype=torch.float64)
    target = torch.tensor([[[1.0, 3.0], [4.0, 0.5], [0.0, 0.0]]], dtype=torch.float64)
    action = torch.tensor([[True, True, False]])
    loss = boundary_distance_loss(distances, target, action)
    assert loss.item() == pytest.approx((0.69 + 0.0) / 2, abs=1e-12)
    # padded snippets are left out even when marked as action
    valid = torch.tensor([[True, False, True]])
    assert boundary_distance_loss(distances, target, action, valid).item() == pytest.approx(0.69, abs=1e-12)
    # nothing to average: a zero that keeps the graph
    d = distances.clone().requires_grad_(True)
    zero = boundary_distance_loss(d, target, torch.zeros(1, 3, dtype=torch.bool))
    zero.backward()
    assert zero.item() == 0.0 and d.grad is not None
    with pytest.raises(ValueError, match=r"\(B, 2, T\)"):
        boundary_distance_loss(distances[:, :1], target, action)
    with pytest.raises(ValueError, match="boundary target"):
        boundary_distance_loss(distances, target[:, :2], action)


def test_boundary_distance_loss_gradient_moves_towards_the_target():
    from gsmt_fast.losses import boundary_distance_loss

    # too short on both sides: the gradient must grow both distances
    d = torch.tensor([[[1.0], [1.0]]], dtype=torch.float64, requires_grad=True)
    boundary_distance_loss(d, torch.tensor([[[3.0, 2.0]]], dtype=torch.float64), torch.tensor([[True]])).backward()
    assert (d.grad < 0).all()


def test_gsmt_loss_adds_the_weighted_boundary_term():
    targets = example_targets()
    generator = torch.Generator().manual_seed(5)
    cls_logits = torch.randn(2, NUM_CLASSES + 1, 16, generator=generator)
    mask_logits = torch.randn(2, 16, 16, generator=generator)
    distances = torch.rand(2, 2, 16, generator=generator, requires_grad=True)
    targets["boundary"] = torch.rand(2, 16, 2, generator=generator)
    plain = GSMTLoss()(cls_logits, mask_logits, targets)
    losses = GSMTLoss(lambda_boundary=0.5)(cls_logits, mask_logits, targets, None, distances)
    assert "boundary" not in plain and losses["boundary"].item() > 0
    assert losses["total"].item() == pytest.approx(plain["total"].item() + 0.5 * losses["boundary"].item(), rel=1e-6)
    losses["total"].backward()
    assert torch.isfinite(distances.grad).all() and distances.grad.abs().sum() > 0
    del targets["boundary"]
    with pytest.raises(ValueError, match="targets lack.*boundary"):
        GSMTLoss()(cls_logits, mask_logits, targets, None, distances)
    with pytest.raises(ValueError, match="lambda_boundary"):
        GSMTLoss(lambda_boundary=-1.0)
