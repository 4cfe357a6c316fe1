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
        names = self.class_names
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"class_names must be a list of non-empty strings, got {names!r}"[:300])
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"class_names must be unique; repeated: {duplicated[:10]}")
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
        if not isinstance(d, dict):
            raise ValueError(f"the metadata must be a JSON object, got {type(d).__name__}")
        for key, kind in (("model", dict), ("class_names", list), ("grid", dict), ("input_mode", str),
                          ("inference", dict), ("extra", dict)):
            if key in d and not isinstance(d[key], kind) or key not in d and key != "extra":
                raise ValueError(f"metadata field {key!r} must be a JSON {kind.__name__}, got {d.get(key)!r}"[:300])
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
    if isinstance(class_names, (str, bytes)):
        raise TypeError(f"class_names must be a list of strings, got the single string {class_names!r}")
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


def parameter_shapes(cfg: GSMTConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight a model of ``cfg`` has, computed without allocating it (meta tensors)."""
    with torch.device("meta"):
        model = GSMT(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _check_shapes(path: Path, stored: dict[str, tuple], cfg: GSMTConfig) -> None:
    expected = parameter_shapes(cfg)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not match the stored model config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if stored[name] != shape:
            raise ValueError(f"{path}: weight {name!r} has shape {stored[name]}, the stored model config needs "
                             f"{shape}")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Weights and metadata of a checkpoint, with clear errors for missing, foreign or corrupt files. The metadata
    and the weight shapes in the file's header are checked before any weight is read, so a file's cost is bounded
    by its size whatever its metadata claims."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        f = safe_open(str(path), framework="pt")
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise ValueError(f"{path} is not a readable .safetensors checkpoint (corrupt or truncated?): {e}") from e
    with f:
        metadata = f.metadata() or {}
        if METADATA_KEY not in metadata:
            raise ValueError(f"{path} is a safetensors file without gsmt_fast metadata; to import foreign weights use "
                             f"gsmt_fast.checkpoint.import_state_dict")
        try:
            meta = CheckpointMeta.from_json(metadata[METADATA_KEY])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: corrupt gsmt_fast metadata: {e}") from e
        _check_shapes(path, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, meta.model)
        try:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path} is not a readable .safetensors checkpoint (corrupt or truncated?): {e}") from e
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{path}: weight {name!r} has dtype {t.dtype}; a checkpoint holds floating-point weights")
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
