"""Checkpoints (docs/DESIGN.md, "Checkpoints"): one ``.safetensors`` file holding the weights and, as JSON metadata,
everything needed to use them — model config, class names, time grid convention, input mode and inference defaults.

Files are written atomically. Nothing is ever unpickled from a checkpoint; foreign PyTorch ``.pth`` state dicts are
read with ``torch.load(weights_only=True)`` by :func:`import_state_dict`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import GridConfig, GSMTConfig, InferenceConfig
from .files import atomic_path
from .model import GSMT

FORMAT_VERSION = 1
METADATA_KEY = "gsmt_fast"


@dataclass
class CheckpointMeta:
    model: GSMTConfig
    class_names: list[str]
    grid: GridConfig = field(default_factory=GridConfig)
    input_mode: str = "window"  # "window" (native stride, sliding windows) or "resize" (whole video → T)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.input_mode not in ("window", "resize"):
            raise ValueError(f"input_mode must be 'window' or 'resize', got {self.input_mode!r}")
        if len(self.class_names) != self.model.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a model with {self.model.num_classes} classes")
        expected = "resize" if self.input_mode == "resize" else "stride"
        if self.grid.convention != expected:
            raise ValueError(f"input_mode {self.input_mode!r} needs grid convention {expected!r}, "
                             f"got {self.grid.convention!r}")

    def to_json(self) -> str:
        return json.dumps({
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "class_names": list(self.class_names),
            "grid": self.grid.to_dict(),
            "input_mode": self.input_mode,
            "inference": self.inference.to_dict(),
            "extra": self.extra,
        })

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        d = json.loads(text)
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported checkpoint format_version {d.get('format_version')!r} "
                             f"(this gsmt_fast reads {FORMAT_VERSION})")
        return cls(model=GSMTConfig.from_dict(d["model"]), class_names=list(d["class_names"]),
                   grid=GridConfig.from_dict(d["grid"]), input_mode=d["input_mode"],
                   inference=InferenceConfig.from_dict(d["inference"]), extra=d.get("extra", {}))


def save_checkpoint(model: GSMT, path: str | os.PathLike, class_names=None, inference=None, grid=None,
                    input_mode: str | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` and its metadata to ``path`` (``.safetensors``) atomically.

    ``inference`` may be an :class:`InferenceConfig` or a dict of overrides of the defaults; ``grid`` a
    :class:`GridConfig` or dict; ``input_mode`` defaults to ``resize`` for a ``resize`` grid, else ``window``.
    """
    from safetensors.torch import save_file

    cfg: GSMTConfig = model.cfg
    class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(cfg.num_classes)]
    if isinstance(inference, dict) or inference is None:
        inference = InferenceConfig(**(inference or {}))
    if isinstance(grid, dict) or grid is None:
        grid = GridConfig(**(grid or {}))
    if input_mode is None:
        input_mode = "resize" if grid.convention == "resize" else "window"
    meta = CheckpointMeta(cfg, class_names, grid, input_mode, inference, dict(extra or {}))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: meta.to_json()})
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Weights and metadata of a checkpoint, with clear errors for missing, foreign or corrupt files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise ValueError(f"{path} is not a readable .safetensors checkpoint (corrupt or truncated?): {e}") from e
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path} is a safetensors file without gsmt_fast metadata; to import foreign weights use "
                         f"gsmt_fast.checkpoint.import_state_dict")
    try:
        meta = CheckpointMeta.from_json(metadata[METADATA_KEY])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: corrupt gsmt_fast metadata: {e}") from e
    return tensors, meta


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", with_meta: bool = False):
    """Return ``(model, cfg)`` (``(model, cfg, meta)`` with ``with_meta=True``); the model is in eval mode."""
    tensors, meta = read_checkpoint(path)
    model = GSMT(meta.model)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the stored model config: {e}") from e
    model.to(map_location).eval()
    return (model, meta.model, meta) if with_meta else (model, meta.model)


def import_state_dict(pth_path: str | os.PathLike, cfg: GSMTConfig) -> GSMT:
    """Build a model from a foreign PyTorch state dict (``.pth``), never unpickling arbitrary objects."""
    state = torch.load(pth_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = GSMT(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()
