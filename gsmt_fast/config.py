"""Configuration objects: the model (:class:`GSMTConfig`) and inference (:class:`InferenceConfig`).

Both are plain dataclasses that round-trip through JSON (they are stored in checkpoint metadata).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

POSITIONAL_ENCODINGS = ("fixed", "learned", "none")
GRID_CONVENTIONS = ("stride", "resize")
# The loss variants (see gsmt_fast.losses): classification (focal + class-balanced LR, or cross-entropy) and mask
# (BCE + dice + bIoU, the paper's bIoU + dice, or BCE + dice).
LOSS_KINDS = {"cls_loss": ("focal_lr", "ce"), "mask_loss": ("default", "paper", "bce_dice")}


def _from_dict(cls, data: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; valid fields: {sorted(names)}")
    return cls(**data)


class _JsonFields:
    """JSON round trip of a config dataclass (they are stored in checkpoint metadata and training configs)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The config from a dict of its fields; unknown fields are an error that lists the valid ones."""
        return _from_dict(cls, data)


@dataclass
class GSMTConfig(_JsonFields):
    """Architecture of the GSMT model (paper §3.1–3.2; docs/DESIGN.md, "Model").

    ``temporal_scale`` is T, the fixed number of snippets per window; ``num_classes`` is K (background is index K).

    ``boundary_head`` adds the boundary-refined variant's head (docs/DESIGN.md, "Boundary candidates"): per snippet,
    the distances from its centre to its instance's start and end, from which the candidates' boundaries come
    (``InferenceConfig.candidates``). The paper's model has none (False, the default, builds exactly the paper's
    modules).
    """

    num_classes: int = 20
    temporal_scale: int = 256
    input_dim: int = 2048
    hidden_dim: int = 512  # C
    mask_dim: int = 256  # C_m
    num_layers: int = 1
    num_heads: int = 4
    dropout: float = 0.1
    activation: str = "relu"
    positional_encoding: str = "fixed"
    boundary_head: bool = False

    # Inclusive bounds of the integer fields: far above any real model, low enough that a config (e.g. from a
    # checkpoint's metadata) can never ask for an absurd allocation. num_classes and T are also the limits of the
    # post-processing's packed candidate keys (csrc/gsmt_core.h).
    LIMITS = {"num_classes": (1, (1 << 24) - 1), "temporal_scale": (1, 1 << 16), "input_dim": (1, 1 << 16),
              "hidden_dim": (1, 1 << 16), "mask_dim": (1, 1 << 16), "num_layers": (0, 64), "num_heads": (1, 1 << 10)}

    def __post_init__(self):
        for name, (low, high) in self.LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            value = int(value)
            setattr(self, name, value)
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real) or \
                not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.positional_encoding not in POSITIONAL_ENCODINGS:
            raise ValueError(f"positional_encoding must be one of {POSITIONAL_ENCODINGS}, "
                             f"got {self.positional_encoding!r}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {self.activation!r}")
        if not isinstance(self.boundary_head, bool):
            raise ValueError(f"boundary_head must be true or false, got {self.boundary_head!r}")

    PRESETS = {
        # The paper's architecture (Table 3: 2.9 M parameters, 0.6 GFLOPs at K=200, T=100, d_in=2048).
        "paper": dict(hidden_dim=512, mask_dim=256, num_layers=1, num_heads=4),
        # Small models for the synthetic benchmark, trainable on 2 CPU cores in minutes.
        "small": dict(hidden_dim=128, mask_dim=128, num_layers=1, num_heads=4),
        "tiny": dict(hidden_dim=32, mask_dim=32, num_layers=1, num_heads=4),
    }

    @classmethod
    def preset(cls, name: str, **overrides) -> GSMTConfig:
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})


# Where the candidates of a window come from (InferenceConfig.candidates).
CANDIDATE_SOURCES = ("auto", "masks", "boundaries")
DEFAULT_MASK_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Documented maxima of the post-processing settings: far above the paper's values (M1 50, M2 200, 200 detections,
# 9 thresholds), and bounding the work one window can ask for. M1 cannot exceed a window; SoftNMS costs
# O(max_detections x candidates); the native ops keep at most 64 distinct mask thresholds.
MAX_TOP_SNIPPETS = 1 << 16
MAX_PRE_NMS_TOPK = 100_000
MAX_DETECTIONS = 100_000
MAX_MASK_THRESHOLDS = 64


@dataclass
class InferenceConfig(_JsonFields):
    """Post-processing settings (docs/DESIGN.md, "Post-processing" and "SoftNMS"). Defaults are the paper's (THUMOS:
    ``short``, σ 0.4).

    ``score_threshold`` is θ_c, ``pre_nms_topk`` is M2, ``top_snippets`` is M1.
    ``window_overlap`` is the fraction of T shared by consecutive windows in window mode.
    ``candidates``: where the candidates come from (docs/DESIGN.md, "Boundary candidates"): ``"masks"`` (the paper:
    runs of the thresholded mask columns), ``"boundaries"`` (one segment per selected snippet from the boundary head
    of the boundary-refined variant; needs a model with that head) or ``"auto"`` (``"boundaries"`` when the model has
    the head, else ``"masks"``).
    """

    top_snippets: int = 50
    mask_thresholds: tuple[float, ...] = DEFAULT_MASK_THRESHOLDS
    mode: str = "short"
    score_threshold: float = 0.1
    pre_nms_topk: int = 200
    nms_method: str = "gaussian"
    nms_sigma: float = 0.4
    nms_iou_threshold: float = 0.0
    nms_min_score: float = 0.001
    max_detections: int = 200
    multiclass_nms: bool = True
    window_overlap: float = 0.25
    candidates: str = "auto"

    def __post_init__(self):
        self.mask_thresholds = tuple(float(t) for t in self.mask_thresholds)
        if self.mode not in ("short", "long"):
            raise ValueError(f"mode must be 'short' or 'long', got {self.mode!r}")
        if self.nms_method not in ("gaussian", "linear", "hard"):
            raise ValueError(f"nms_method must be 'gaussian', 'linear' or 'hard', got {self.nms_method!r}")
        for name, high in (("top_snippets", MAX_TOP_SNIPPETS), ("pre_nms_topk", MAX_PRE_NMS_TOPK),
                           ("max_detections", MAX_DETECTIONS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= high:
                raise ValueError(f"{name} must be an integer in [1, {high}], got {value!r}")
            setattr(self, name, int(value))
        for name in ("score_threshold", "nms_sigma", "nms_iou_threshold", "nms_min_score", "window_overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if len(self.mask_thresholds) > MAX_MASK_THRESHOLDS:
            raise ValueError(f"at most {MAX_MASK_THRESHOLDS} mask thresholds are supported, got "
                             f"{len(self.mask_thresholds)}")
        if not self.mask_thresholds or not all(0.0 <= t < 1.0 for t in self.mask_thresholds):
            raise ValueError(f"mask_thresholds must be non-empty values in [0, 1), got {self.mask_thresholds}")
        if not 0.0 <= self.window_overlap < 1.0:
            raise ValueError(f"window_overlap must be in [0, 1), got {self.window_overlap}")
        if self.nms_sigma <= 0:
            raise ValueError(f"nms_sigma must be > 0, got {self.nms_sigma}")
        if self.candidates not in CANDIDATE_SOURCES:
            raise ValueError(f"candidates must be one of {CANDIDATE_SOURCES}, got {self.candidates!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mask_thresholds"] = list(self.mask_thresholds)
        return d

    def nms_kwargs(self) -> dict[str, Any]:
        """The SoftNMS settings as keyword arguments of :func:`gsmt_fast.soft_nms`."""
        return {"method": self.nms_method, "sigma": self.nms_sigma, "iou_threshold": self.nms_iou_threshold,
                "min_score": self.nms_min_score, "max_seg_num": self.max_detections,
                "multiclass": self.multiclass_nms}

    def replace(self, **overrides) -> InferenceConfig:
        return _from_dict(type(self), {**self.to_dict(), **overrides})

    def candidate_source(self, has_boundaries: bool) -> str:
        """``"masks"`` or ``"boundaries"``: this config's candidate source for a model with (``has_boundaries``) or
        without the boundary head; a clear error when it asks for boundaries the model does not have."""
        if self.candidates == "auto":
            return "boundaries" if has_boundaries else "masks"
        if self.candidates == "boundaries" and not has_boundaries:
            raise ValueError("candidates='boundaries' needs a model with the boundary head (model.boundary_head: "
                             "true) and its distances; use candidates='masks' or 'auto' for this model")
        return self.candidates


def check_loss_kind(field: str, kind: str) -> str:
    """The one check of a loss variant name (``field`` is ``"cls_loss"`` or ``"mask_loss"``)."""
    if kind not in LOSS_KINDS[field]:
        raise ValueError(f"unknown {field} {kind!r}; expected one of {LOSS_KINDS[field]}")
    return kind


@dataclass
class LossConfig(_JsonFields):
    """Training loss settings (paper §3.3; the ``loss:`` section of a training config).

    ``cls_loss``: ``"focal_lr"`` (lambda1 * focal + (1 - lambda1) * class-balanced LR) or ``"ce"``;
    ``mask_loss``: ``"default"`` (BCE + dice + lambda_b * bIoU), ``"paper"`` (bIoU + lambda2 * dice) or
    ``"bce_dice"``; ``kernel_size`` is the bIoU boundary band's erosion kernel (odd); ``lambda_boundary`` weighs the
    boundary-distance loss of a model with the boundary head (``GSMTConfig.boundary_head``; unused without it).
    """

    cls_loss: str = "focal_lr"
    mask_loss: str = "default"
    lambda1: float = 0.4
    lambda2: float = 0.4
    lambda_b: float = 0.1
    gamma: float = 2.0
    alpha: float = 10.0
    kernel_size: int = 7
    balanced_bce: bool = True
    lambda_boundary: float = 1.0

    def __post_init__(self):
        check_loss_kind("cls_loss", self.cls_loss)
        if isinstance(self.lambda_boundary, bool) or not isinstance(self.lambda_boundary, numbers.Real) or \
                not 0.0 <= self.lambda_boundary < math.inf:
            raise ValueError(f"lambda_boundary must be a finite number >= 0, got {self.lambda_boundary!r}")
        check_loss_kind("mask_loss", self.mask_loss)
        if not 0.0 <= self.lambda1 <= 1.0:
            raise ValueError(f"lambda1 must lie in [0, 1], got {self.lambda1}")
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) or self.kernel_size < 1 \
                or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size!r}")


@dataclass
class GridConfig(_JsonFields):
    """How snippet indices map to seconds (docs/DESIGN.md, "Time grid").

    ``convention="stride"``: native features, snippet i centred at (i*feat_stride + num_frames/2)/fps; videos are
    cut into windows of T snippets (input mode ``window``). ``convention="resize"``: the whole video is linearly
    resampled to T snippets; snippet i covers [i, i+1)*duration/T (input mode ``resize``).
    """

    convention: str = "stride"
    feat_stride: int = 4
    num_frames: int = 16
    default_fps: float | None = None

    def __post_init__(self):
        if self.convention not in GRID_CONVENTIONS:
            raise ValueError(f"grid convention must be one of {GRID_CONVENTIONS}, got {self.convention!r}")


__all__ = ["GSMTConfig", "InferenceConfig", "GridConfig", "LossConfig", "CANDIDATE_SOURCES", "DEFAULT_MASK_THRESHOLDS",
           "LOSS_KINDS",
           "MAX_DETECTIONS", "MAX_MASK_THRESHOLDS", "MAX_PRE_NMS_TOPK", "MAX_TOP_SNIPPETS", "check_loss_kind"]
