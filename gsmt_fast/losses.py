"""Training losses of GSMT (paper §3.3). The targets they take come from :mod:`gsmt_fast.data.targets`
(``batch_targets``).

Losses (all take logits, never probabilities, so that the log terms use stable log-sigmoid / log-softmax forms):

- classification: focal + class-balanced logistic regression (``classification_loss``), or plain cross-entropy;
- mask: class-balanced BCE, dice and boundary-IoU (bIoU) on the mask columns of the action snippets (``mask_loss``);
- boundary distances (the boundary-refined variant only, ``GSMTConfig.boundary_head``): a 1-D distance-IoU loss on
  the action snippets (``boundary_distance_loss``);
- ``GSMTLoss`` combines them as ``L = L_c + L_m`` (``+ lambda_boundary * L_d`` when the model has the head).

Padding: windows shorter than T carry a ``valid (B, T)`` mask. Padded snippets are left out of the classification
average, are never action snippets, and their rows of every mask column count as 0 in both prediction and target
(and are left out of the BCE), so a padded window gives exactly the loss of its unpadded crop.

kornia (for the differentiable erosion of the bIoU band) is imported inside ``boundary_band`` only, so that
inference never needs it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import LOSS_KINDS, LossConfig, check_loss_kind

CLASSIFICATION_LOSS_KINDS = LOSS_KINDS["cls_loss"]
MASK_LOSS_KINDS = LOSS_KINDS["mask_loss"]


# ---------------------------------------------------------------------------------------------------------------------
# Classification loss
# ---------------------------------------------------------------------------------------------------------------------


def _valid_mask(valid: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """The (B, T) bool mask of valid snippets (all valid when None), shape-checked."""
    if valid is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if tuple(valid.shape) != (batch, length):
        raise ValueError(f"valid must have shape (B, T) = {(batch, length)}, got {tuple(valid.shape)}")
    return valid.bool()


def _valid_snippets(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None):
    """Logits (N, K+1) and targets (N,) of the valid snippets only.

    Selecting first (rather than masking per-snippet losses afterwards) keeps whatever the padded logits hold out of
    both the forward and the backward pass."""
    if logits.dim() != 3:
        raise ValueError(f"class logits must have shape (B, K+1, T), got {tuple(logits.shape)}")
    batch, num_outputs, length = logits.shape
    if tuple(target.shape) != (batch, length):
        raise ValueError(f"target must have shape (B, T) = {(batch, length)}, got {tuple(target.shape)}")
    valid = _valid_mask(valid, batch, length, logits.device)
    rows = logits.transpose(1, 2)[valid]
    labels = target[valid].long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_outputs):
        raise ValueError(f"class targets must lie in [0, K] = [0, {num_outputs - 1}] on valid snippets")
    return rows, labels


def _mean_or_zero(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean of ``values``; a zero that still carries a graph (to ``like``) when there is nothing to average."""
    if values.numel() == 0:
        return like.sum() * 0.0
    return values.mean()


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, gamma: float = 2.0
) -> torch.Tensor:
    """Softmax focal loss ``-(1 - p_y)^gamma log p_y`` per snippet, averaged over valid snippets.

    logits (B, K+1, T), target (B, T) in [0, K], valid (B, T) bool (None: all valid). The focal factor is applied to
    each snippet's own probability (the released TAGS code applied it to the batch-mean cross-entropy)."""
    rows, labels = _valid_snippets(logits, target, valid)
    log_p_true = torch.log_softmax(rows, dim=1).gather(1, labels[:, None]).squeeze(1)
    p_true = log_p_true.exp()
    per_snippet = -((1.0 - p_true) ** gamma) * log_p_true
    return _mean_or_zero(per_snippet, logits)


def num_hard_negatives(num_classes: int) -> int:
    """Size of the hard-negative set of the class-balanced LR loss: max(1, ceil(K / 10))."""
    return max(1, math.ceil(num_classes / 10))


def class_balanced_lr_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    alpha: float = 10.0,
    num_hard: int | None = None,
) -> torch.Tensor:
    """Class-balanced logistic regression loss (Dong et al. 2019), averaged over valid snippets.

    With r = sigmoid(logits), per snippet: ``-log r_y - (alpha / |N|) sum_{k in N} log(1 - r_k)`` where N are the
    ``num_hard`` hardest negatives (largest r_k over the K+1 outputs other than y; default max(1, ceil(K/10))).
    logits (B, K+1, T) with K = number of action classes (the background output K is a possible negative)."""
    rows, labels = _valid_snippets(logits, target, valid)
    num_outputs = logits.shape[1]
    num_classes = num_outputs - 1
    if num_classes < 1:
        raise ValueError("class_balanced_lr_loss needs at least one action class besides background")
    if num_hard is None:
        num_hard = num_hard_negatives(num_classes)
    if not 1 <= num_hard <= num_classes:
        raise ValueError(f"num_hard must lie in [1, K={num_classes}] (each snippet has K negatives), got {num_hard}")
    # -log r = -logsigmoid(z) and -log(1 - r) = -logsigmoid(-z) = softplus(z): stable for any logit.
    positive_term = -F.logsigmoid(rows.gather(1, labels[:, None]).squeeze(1))
    # r is monotone in the logit, so the hardest negatives are the largest logits once y is excluded.
    negatives = rows.scatter(1, labels[:, None], float("-inf"))
    hardest = negatives.topk(num_hard, dim=1).values
    negative_term = (alpha / num_hard) * F.softplus(hardest).sum(dim=1)
    return _mean_or_zero(positive_term + negative_term, logits)


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Plain softmax cross-entropy averaged over valid snippets (the ablation baseline)."""
    rows, labels = _valid_snippets(logits, target, valid)
    if rows.shape[0] == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(rows, labels)


def classification_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor | None = None,
    kind: str = "focal_lr",
    lambda1: float = 0.4,
    gamma: float = 2.0,
    alpha: float = 10.0,
) -> torch.Tensor:
    """``kind="focal_lr"``: lambda1 * focal + (1 - lambda1) * class-balanced LR (paper Eq. 5);
    ``kind="ce"``: plain cross-entropy. Both averaged over valid snippets."""
    if check_loss_kind("cls_loss", kind) == "ce":
        return cross_entropy_loss(logits, target, valid)
    return lambda1 * focal_loss(logits, target, valid, gamma=gamma) + (1.0 - lambda1) * class_balanced_lr_loss(
        logits, target, valid, alpha=alpha)


# ---------------------------------------------------------------------------------------------------------------------
# Mask loss terms on (N, T) rows: one row per action snippet column
# ---------------------------------------------------------------------------------------------------------------------


def _check_rows(name: str, x: torch.Tensor, like: torch.Tensor | None = None) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, T), got {tuple(x.shape)}")
    if like is not None and x.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but the prediction has shape {tuple(like.shape)}")


def _apply_row_valid(x: torch.Tensor, row_valid: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded entries (where, not multiply, so that nothing from them reaches the gradient)."""
    if row_valid is None:
        return x
    _check_rows("row_valid", row_valid, x)
    return torch.where(row_valid.bool(), x, torch.zeros_like(x))


def boundary_band(x: torch.Tensor, kernel_size: int = 7) -> torch.Tensor:
    """Boundary band ``B(x) = x - erode_k(x)`` of each row of x (N, T), differentiable.

    The erosion is a running minimum over a flat 1-D structuring element of ``kernel_size`` (odd) snippets, computed
    with ``kornia.morphology.erosion`` on x viewed as (N, 1, 1, T) with kernel ones(1, k).

    Border: kornia's default ``border_type="geodesic"`` ignores the outside of the array, so a run of ones that
    touches an end of the window is not eroded there. We use ``border_type="constant", border_value=0`` instead: the
    window ends count as boundaries. Reasons: (1) a mask that covers the whole window still has a band (with
    "geodesic" its band is empty, I = U = 0 and the IoU term is stuck at 1 even for a perfect prediction), and
    (2) zero-padding a short window then behaves exactly like the outside of its unpadded crop, so padded and
    unpadded windows give the same loss. For a binary row, B is 1 on the last ``k // 2`` ones of every run at each
    of its ends (the whole run if it is shorter than k).
    """
    from kornia.morphology import erosion

    _check_rows("x", x)
    if not isinstance(kernel_size, (int, np.integer)) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer (a centred band), got {kernel_size!r}")
    kernel = torch.ones(1, int(kernel_size), dtype=x.dtype, device=x.device)
    eroded = erosion(x[:, None, None, :], kernel, border_type="constant", border_value=0.0)
    return x - eroded[:, 0, 0, :]


def biou_loss(
    m: torch.Tensor,
    g: torch.Tensor,
    kernel_size: int = 7,
    eps: float = 1e-8,
    row_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boundary-IoU loss (paper Eq. 6, first two terms, made numerically stable), mean over rows.

    m (N, T) probabilities, g (N, T) binary targets, row_valid (N, T) bool (padded entries count as 0). Per row:
    ``1 - I / (U + eps) + ||m - g||_2 / (c * max(I, 1))`` with I = sum B(m) B(g), U = sum (B(m) + B(g) - B(m) B(g)),
    c = number of ones in g (at least 1). When the bands do not overlap (I = 0) the normalised L2 term carries the
    gradient."""
    _check_rows("m", m)
    _check_rows("g", g, m)
    m = _apply_row_valid(m, row_valid)
    g = _apply_row_valid(g.to(m.dtype), row_valid)
    band_m = boundary_band(m, kernel_size)
    band_g = boundary_band(g, kernel_size)
    both = band_m * band_g
    intersection = both.sum(dim=1)
    union = (band_m + band_g - both).sum(dim=1)
    ones_in_target = g.sum(dim=1).clamp(min=1.0)
    distance = torch.linalg.vector_norm(m - g, dim=1)
    per_row = 1.0 - intersection / (union + eps) + distance / (ones_in_target * intersection.clamp(min=1.0))
    return _mean_or_zero(per_row, m)


def dice_loss(
    m: torch.Tensor, g: torch.Tensor, eps: float = 1e-8, row_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """V-Net dice loss ``1 - 2 sum m g / (sum m^2 + sum g^2 + eps)`` per row, mean over rows."""
    _check_rows("m", m)
    _check_rows("g", g, m)
    m = _apply_row_valid(m, row_valid)
    g = _apply_row_valid(g.to(m.dtype), row_valid)
    per_row = 1.0 - 2.0 * (m * g).sum(dim=1) / ((m * m).sum(dim=1) + (g * g).sum(dim=1) + eps)
    return _mean_or_zero(per_row, m)


def mask_bce_loss(
    mask_logits_rows: torch.Tensor,
    g: torch.Tensor,
    balanced: bool = True,
    row_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy with logits per row, mean over rows; padded entries (row_valid False) are left out.

    balanced=True: in each row the positives share weight 0.5 and the negatives weight 0.5 (0.5/npos and 0.5/nneg per
    entry, the released code's class-balanced BCE), so short instances are not drowned by background; a row with
    only positives (or only negatives) gives that half weight 1. balanced=False: plain mean over the row's valid
    entries."""
    _check_rows("mask_logits_rows", mask_logits_rows)
    _check_rows("g", g, mask_logits_rows)
    g = g.to(mask_logits_rows.dtype)
    valid = torch.ones_like(g, dtype=torch.bool) if row_valid is None else row_valid.bool()
    if row_valid is not None:
        _check_rows("row_valid", row_valid, mask_logits_rows)
    per_entry = F.binary_cross_entropy_with_logits(mask_logits_rows, g, reduction="none")
    positive = valid & (g > 0.5)
    negative = valid & ~(g > 0.5)
    dtype = per_entry.dtype
    if balanced:
        num_pos = positive.sum(dim=1, keepdim=True).to(dtype)
        num_neg = negative.sum(dim=1, keepdim=True).to(dtype)
        pos_share = torch.where(num_neg > 0, 0.5, 1.0).to(dtype) / num_pos.clamp(min=1)
        neg_share = torch.where(num_pos > 0, 0.5, 1.0).to(dtype) / num_neg.clamp(min=1)
        weight = torch.where(positive, pos_share, torch.where(negative, neg_share, 0.0))
    else:
        weight = valid.to(dtype) / valid.sum(dim=1, keepdim=True).clamp(min=1).to(dtype)
    # where (not multiply) keeps padded entries out even if their logits are not finite
    per_row = torch.where(valid, per_entry * weight, torch.zeros_like(per_entry)).sum(dim=1)
    return _mean_or_zero(per_row, mask_logits_rows)


def mask_loss(
    mask_logits: torch.Tensor,
    mask_target: torch.Tensor,
    action: torch.Tensor,
    valid: torch.Tensor | None = None,
    kind: str = "default",
    lambda_b: float = 0.1,
    lambda2: float = 0.4,
    kernel_size: int = 7,
    balanced_bce: bool = True,
) -> dict[str, torch.Tensor]:
    """Mask loss over the columns of the action snippets, averaged over all action snippets of the batch.

    mask_logits (B, T, T) (column t = mask predicted from snippet t), mask_target (B, T, T) (column t = g_t),
    action (B, T) bool, valid (B, T) bool (None: all valid; padded rows of each column are left out).
    kind "default": BCE + dice + lambda_b * bIoU (docs/DESIGN.md "Training": trains where the paper's combination did
    not);
    "paper": bIoU + lambda2 * dice (paper Eq. 6); "bce_dice": BCE + dice.
    Returns {"mask_bce", "mask_dice", "mask_biou", "mask"} (terms the kind does not use are absent); "mask" is the
    total, a zero that keeps the graph when the batch has no action snippet."""
    check_loss_kind("mask_loss", kind)
    if mask_logits.dim() != 3 or mask_logits.shape[1] != mask_logits.shape[2]:
        raise ValueError(f"mask logits must have shape (B, T, T), got {tuple(mask_logits.shape)}")
    batch, length, _ = mask_logits.shape
    if mask_target.shape != mask_logits.shape:
        raise ValueError(f"mask target has shape {tuple(mask_target.shape)}, mask logits {tuple(mask_logits.shape)}")
    if tuple(action.shape) != (batch, length):
        raise ValueError(f"action must have shape (B, T) = {(batch, length)}, got {tuple(action.shape)}")
    valid = _valid_mask(valid, batch, length, mask_logits.device)
    action = action.bool() & valid

    uses_bce = kind in ("default", "bce_dice")
    uses_biou = kind in ("default", "paper")
    if not bool(action.any()):
        zero = mask_logits.sum() * 0.0
        terms = {"mask_dice": zero}
        if uses_bce:
            terms["mask_bce"] = zero
        if uses_biou:
            terms["mask_biou"] = zero
        terms["mask"] = zero
        return terms

    # Column t of (B, T, T) is row t of the transpose; pick the action columns as rows (N, T).
    logits_rows = mask_logits.transpose(1, 2)[action]
    target_rows = mask_target.transpose(1, 2)[action].to(mask_logits.dtype)
    row_valid = valid[:, None, :].expand(batch, length, length)[action]
    probabilities = torch.sigmoid(logits_rows)

    terms: dict[str, torch.Tensor] = {}
    if uses_bce:
        terms["mask_bce"] = mask_bce_loss(logits_rows, target_rows, balanced=balanced_bce, row_valid=row_valid)
    terms["mask_dice"] = dice_loss(probabilities, target_rows, row_valid=row_valid)
    if uses_biou:
        terms["mask_biou"] = biou_loss(probabilities, target_rows, kernel_size=kernel_size, row_valid=row_valid)

    if kind == "default":
        total = terms["mask_bce"] + terms["mask_dice"] + lambda_b * terms["mask_biou"]
    elif kind == "paper":
        total = terms["mask_biou"] + lambda2 * terms["mask_dice"]
    else:
        total = terms["mask_bce"] + terms["mask_dice"]
    terms["mask"] = total
    return terms


# ---------------------------------------------------------------------------------------------------------------------
# Boundary distances (the boundary-refined variant)
# ---------------------------------------------------------------------------------------------------------------------


def boundary_distance_loss(
    distances: torch.Tensor, target: torch.Tensor, action: torch.Tensor, valid: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """1-D distance-IoU loss of the boundary head, averaged over the valid action snippets.

    distances (B, 2, T) predicted distances (>= 0) from each snippet's centre to its instance's start (row 0) and end
    (row 1); target (B, T, 2) the same from :func:`gsmt_fast.data.targets.assign_targets`; action, valid (B, T) bool.
    Both segments contain the snippet's centre, so with ``(p_s, p_e)`` predicted and ``(g_s, g_e)`` target distances:
    ``inter = min(p_s, g_s) + min(p_e, g_e)``, ``union = max(p_s, g_s) + max(p_e, g_e)`` (also the length of the
    smallest segment enclosing both), and the loss is ``1 - inter / union + (c_p - c_g)^2 / union^2`` with ``c`` the
    segments' centres relative to the snippet (``(p_e - p_s) / 2``): IoU plus the DIoU centre term (Zheng et al.,
    AAAI 2020), which keeps a gradient when the segments barely overlap. Scale-free, so long and short instances
    weigh the same, as anchor-free detectors (FCOS, ActionFormer) train their regression."""
    if distances.dim() != 3 or distances.shape[1] != 2:
        raise ValueError(f"boundary distances must have shape (B, 2, T), got {tuple(distances.shape)}")
    batch, _, length = distances.shape
    if tuple(target.shape) != (batch, length, 2):
        raise ValueError(f"boundary target must have shape (B, T, 2) = {(batch, length, 2)}, got {tuple(target.shape)}")
    if tuple(action.shape) != (batch, length):
        raise ValueError(f"action must have shape (B, T) = {(batch, length)}, got {tuple(action.shape)}")
    rows = action.bool() & _valid_mask(valid, batch, length, distances.device)
    pred = distances.transpose(1, 2)[rows]  # (N, 2)
    goal = target.to(distances.dtype)[rows]
    inter = torch.minimum(pred[:, 0], goal[:, 0]) + torch.minimum(pred[:, 1], goal[:, 1])
    union = (torch.maximum(pred[:, 0], goal[:, 0]) + torch.maximum(pred[:, 1], goal[:, 1])).clamp(min=eps)
    centre_gap = 0.5 * ((pred[:, 1] - pred[:, 0]) - (goal[:, 1] - goal[:, 0]))
    per_snippet = 1.0 - inter / union + (centre_gap / union) ** 2
    return _mean_or_zero(per_snippet, distances)


class GSMTLoss(nn.Module):
    """``L = L_c + L_m`` (paper §3.3), plus ``lambda_boundary * L_d`` for a model with the boundary head. forward
    returns a dict with "cls", the mask terms of ``mask_loss``, "mask", "boundary" (only when distances are given)
    and "total"."""

    def __init__(self, cfg: LossConfig | None = None, **fields):
        """``GSMTLoss(LossConfig(...))`` or ``GSMTLoss(cls_loss=..., lambda1=..., ...)`` (the LossConfig fields)."""
        super().__init__()
        if cfg is not None and fields:
            raise TypeError("pass either a LossConfig or its fields, not both")
        self.cfg = cfg if cfg is not None else LossConfig(**fields)

    def forward(
        self,
        cls_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        targets: dict[str, torch.Tensor],
        valid: torch.Tensor | None = None,
        boundaries: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """cls_logits (B, K+1, T), mask_logits (B, T, T), targets from ``batch_targets`` (needs "cls", "mask",
        "action", and "boundary" with ``boundaries``), valid (B, T) bool (None: targets["valid"] if present, else all
        valid), boundaries (B, 2, T): the boundary head's distances (None: a model without the head)."""
        required = ("cls", "mask", "action") + (("boundary",) if boundaries is not None else ())
        missing = [key for key in required if key not in targets]
        if missing:
            raise ValueError(f"targets lack {missing}; build them with batch_targets")
        if valid is None:
            valid = targets.get("valid")
        c = self.cfg
        losses = {
            "cls": classification_loss(cls_logits, targets["cls"], valid, kind=c.cls_loss, lambda1=c.lambda1,
                                       gamma=c.gamma, alpha=c.alpha)
        }
        losses.update(mask_loss(mask_logits, targets["mask"], targets["action"], valid, kind=c.mask_loss,
                                lambda_b=c.lambda_b, lambda2=c.lambda2, kernel_size=c.kernel_size,
                                balanced_bce=c.balanced_bce))
        if boundaries is not None:
            losses["boundary"] = boundary_distance_loss(boundaries, targets["boundary"], targets["action"], valid)
        losses["total"] = self.total(losses["cls"], losses["mask"], losses.get("boundary"))
        return losses

    def total(self, cls, mask, boundary=None):
        """The objective from its terms (tensors or floats): ``cls + mask (+ lambda_boundary * boundary)``; the one
        place that weighs them (distributed training combines per-rank weighted terms with it too)."""
        total = cls + mask
        return total if boundary is None else total + self.cfg.lambda_boundary * boundary

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.cfg.to_dict().items())
