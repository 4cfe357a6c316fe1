"""Training targets and losses of GSMT (paper §3.3, SPEC §3).

Targets: ``assign_targets`` turns the instances of one window (in snippet units) into per-snippet classes and the
T×T global segmentation mask target; ``batch_targets`` stacks several windows into torch tensors.

Losses (all take logits, never probabilities, so that the log terms use stable log-sigmoid / log-softmax forms):

- classification: focal + class-balanced logistic regression (``classification_loss``), or plain cross-entropy;
- mask: class-balanced BCE, dice and boundary-IoU (bIoU) on the mask columns of the action snippets (``mask_loss``);
- ``GSMTLoss`` combines both as ``L = L_c + L_m``.

Padding: windows shorter than T carry a ``valid (B, T)`` mask. Padded snippets are left out of the classification
average, are never action snippets, and their rows of every mask column count as 0 in both prediction and target
(and are left out of the BCE), so a padded window gives exactly the loss of its unpadded crop.

kornia (for the differentiable erosion of the bIoU band) is imported inside ``boundary_band`` only, so that
inference never needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CLASSIFICATION_LOSS_KINDS = ("focal_lr", "ce")
MASK_LOSS_KINDS = ("default", "paper", "bce_dice")


# ---------------------------------------------------------------------------------------------------------------------
# Label assignment
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Targets:
    """Training targets of one window of ``T`` snippets.

    cls: (T,) int64, class of each snippet; K (background) on background and padded snippets.
    mask: (T, T) float32, column t is the mask target g_t of snippet t (all zeros for background snippets).
    instance: (T,) int64, index (into the input instances) of the instance owning snippet t; -1 for background.
    valid_len: number of valid (non-padded) snippets.
    """

    cls: np.ndarray
    mask: np.ndarray
    instance: np.ndarray
    valid_len: int


def assign_targets(
    segments_units: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    temporal_scale: int,
    valid_len: int | None = None,
) -> Targets:
    """Assign classes and global segmentation mask targets to the snippets of one window.

    ``segments_units`` (N, 2) are instance ``[start, end]`` in snippet units of the window: snippet i covers [i, i+1)
    and its centre is i + 0.5. Rules:

    - snippet t < valid_len is a snippet of instance j when its centre lies in the closed interval [s_j, e_j];
    - an instance that covers no snippet centre but overlaps the valid window [0, valid_len) with positive length
      (or is a zero-length instance inside it) has one snippet: the one whose centre is nearest to the midpoint of
      the instance clipped into the window (ties: the lower index);
    - instances that do not overlap the valid window are ignored;
    - a snippet claimed by several instances belongs to the shortest one (by full, unclipped length; ties: the lower
      instance index) and gets its class;
    - the mask column g_t of an action snippet t is 1 on all snippets of t's instance, whether or not that instance
      won them, and 0 elsewhere (padded rows included). An instance whose snippets were all won by shorter instances
      contributes no column.
    """
    if not isinstance(temporal_scale, (int, np.integer)) or temporal_scale < 1:
        raise ValueError(f"temporal_scale must be a positive integer, got {temporal_scale!r}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if valid_len is None:
        valid_len = temporal_scale
    if not 0 <= valid_len <= temporal_scale:
        raise ValueError(f"valid_len must lie in [0, temporal_scale={temporal_scale}], got {valid_len}")
    valid_len = int(valid_len)

    segments = np.asarray(segments_units, dtype=np.float64)
    if segments.size == 0:
        segments = segments.reshape(0, 2)
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"segments_units must have shape (N, 2), got {segments.shape}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(segments):
        raise ValueError(f"got {len(segments)} segments but {len(labels)} labels")
    if not np.all(np.isfinite(segments)):
        raise ValueError("segments_units contains non-finite values")
    if np.any(segments[:, 1] < segments[:, 0]):
        bad = int(np.flatnonzero(segments[:, 1] < segments[:, 0])[0])
        raise ValueError(f"segment {bad} ends before it starts: {segments[bad].tolist()}")
    if np.any((labels < 0) | (labels >= num_classes)):
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got {labels.tolist()}")

    centres = np.arange(valid_len) + 0.5
    # The snippets of each kept instance (an index array into the valid window).
    members: dict[int, np.ndarray] = {}
    for j, (start, end) in enumerate(segments):
        clipped_start, clipped_end = max(start, 0.0), min(end, float(valid_len))
        overlaps = clipped_end > clipped_start or (start == end and 0.0 <= start < valid_len)
        if not overlaps:
            continue
        covered = np.flatnonzero((centres >= start) & (centres <= end))
        if covered.size == 0:
            # Sub-snippet instance (or a sliver at the window edge): its nearest snippet centre to the clipped
            # midpoint. The centre t + 0.5 nearest to x is t = round(x - 0.5); ceil(x - 1) is the same with ties
            # going to the lower index.
            midpoint = 0.5 * (clipped_start + clipped_end)
            nearest = min(max(math.ceil(midpoint - 1.0), 0), valid_len - 1)
            covered = np.array([nearest])
        members[j] = covered

    cls = np.full(temporal_scale, num_classes, dtype=np.int64)
    instance = np.full(temporal_scale, -1, dtype=np.int64)
    # Shortest instance first (ties: lower index); a snippet already taken keeps its owner.
    lengths = segments[:, 1] - segments[:, 0]
    for j in sorted(members, key=lambda j: (lengths[j], j)):
        free = members[j][instance[members[j]] < 0]
        instance[free] = j
        cls[free] = labels[j]

    mask = np.zeros((temporal_scale, temporal_scale), dtype=np.float32)
    for t in np.flatnonzero(instance >= 0):
        mask[members[int(instance[t])], t] = 1.0
    return Targets(cls=cls, mask=mask, instance=instance, valid_len=valid_len)


def batch_targets(targets: list[Targets], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Stack the targets of several windows: cls (B, T) int64, mask (B, T, T) float32, action (B, T) bool,
    instance (B, T) int64 and valid (B, T) bool."""
    if len(targets) == 0:
        raise ValueError("batch_targets needs at least one Targets")
    scales = {len(t.cls) for t in targets}
    if len(scales) != 1:
        raise ValueError(f"all targets must have the same temporal scale, got {sorted(scales)}")
    temporal_scale = scales.pop()
    instance = torch.as_tensor(np.stack([t.instance for t in targets]), device=device)
    valid_len = torch.as_tensor([t.valid_len for t in targets], device=device)
    return {
        "cls": torch.as_tensor(np.stack([t.cls for t in targets]), device=device),
        "mask": torch.as_tensor(np.stack([t.mask for t in targets]), device=device),
        "action": instance >= 0,
        "instance": instance,
        "valid": torch.arange(temporal_scale, device=device)[None, :] < valid_len[:, None],
    }


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
    if kind == "focal_lr":
        return lambda1 * focal_loss(logits, target, valid, gamma=gamma) + (1.0 - lambda1) * class_balanced_lr_loss(
            logits, target, valid, alpha=alpha)
    if kind == "ce":
        return cross_entropy_loss(logits, target, valid)
    raise ValueError(f"unknown classification loss kind {kind!r}; expected one of {CLASSIFICATION_LOSS_KINDS}")


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
    kind "default": BCE + dice + lambda_b * bIoU (SPEC §3; trains where the paper's combination did not);
    "paper": bIoU + lambda2 * dice (paper Eq. 6); "bce_dice": BCE + dice.
    Returns {"mask_bce", "mask_dice", "mask_biou", "mask"} (terms the kind does not use are absent); "mask" is the
    total, a zero that keeps the graph when the batch has no action snippet."""
    if kind not in MASK_LOSS_KINDS:
        raise ValueError(f"unknown mask loss kind {kind!r}; expected one of {MASK_LOSS_KINDS}")
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


class GSMTLoss(nn.Module):
    """``L = L_c + L_m`` (paper §3.3). forward returns a dict with "cls", the mask terms of ``mask_loss``, "mask" and
    "total"."""

    def __init__(
        self,
        cls_loss: str = "focal_lr",
        mask_loss: str = "default",
        lambda1: float = 0.4,
        lambda2: float = 0.4,
        lambda_b: float = 0.1,
        gamma: float = 2.0,
        alpha: float = 10.0,
        kernel_size: int = 7,
        balanced_bce: bool = True,
    ):
        super().__init__()
        if cls_loss not in CLASSIFICATION_LOSS_KINDS:
            raise ValueError(f"unknown cls_loss {cls_loss!r}; expected one of {CLASSIFICATION_LOSS_KINDS}")
        if mask_loss not in MASK_LOSS_KINDS:
            raise ValueError(f"unknown mask_loss {mask_loss!r}; expected one of {MASK_LOSS_KINDS}")
        if not 0.0 <= lambda1 <= 1.0:
            raise ValueError(f"lambda1 must lie in [0, 1], got {lambda1}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
        self.cls_loss = cls_loss
        self.mask_loss = mask_loss
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.lambda_b = lambda_b
        self.gamma = gamma
        self.alpha = alpha
        self.kernel_size = kernel_size
        self.balanced_bce = balanced_bce

    def forward(
        self,
        cls_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        targets: dict[str, torch.Tensor],
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """cls_logits (B, K+1, T), mask_logits (B, T, T), targets from ``batch_targets`` (needs "cls", "mask",
        "action"), valid (B, T) bool (None: targets["valid"] if present, else all valid)."""
        missing = [key for key in ("cls", "mask", "action") if key not in targets]
        if missing:
            raise ValueError(f"targets lack {missing}; build them with batch_targets")
        if valid is None:
            valid = targets.get("valid")
        losses = {
            "cls": classification_loss(cls_logits, targets["cls"], valid, kind=self.cls_loss, lambda1=self.lambda1,
                                       gamma=self.gamma, alpha=self.alpha)
        }
        losses.update(mask_loss(mask_logits, targets["mask"], targets["action"], valid, kind=self.mask_loss,
                                lambda_b=self.lambda_b, lambda2=self.lambda2, kernel_size=self.kernel_size,
                                balanced_bce=self.balanced_bce))
        losses["total"] = losses["cls"] + losses["mask"]
        return losses

    def extra_repr(self) -> str:
        return (f"cls_loss={self.cls_loss!r}, mask_loss={self.mask_loss!r}, lambda1={self.lambda1}, "
                f"lambda2={self.lambda2}, lambda_b={self.lambda_b}, gamma={self.gamma}, alpha={self.alpha}, "
                f"kernel_size={self.kernel_size}")
