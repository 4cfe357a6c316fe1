"""Training windows: features cut (``window``) or resampled (``resize``) to T snippets, with their targets.

A dataset root (e.g. one written by ``gsmt-fast synth``) holds ``dataset.json`` describing the annotation file, the
feature folder(s), the splits, the grid convention and the input mode; :func:`load_dataset_spec` reads it and the
training config may override any field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import GridConfig
from .annotations import AnnotationSet, VideoAnnotation, load_annotations
from .features import FeatureStore
from .targets import assign_targets
from .windows import Window, cut_windows


@dataclass
class DatasetSpec:
    annotations: str
    features: list[str]
    train_split: str = "training"
    val_split: str = "validation"
    input_mode: str = "window"
    grid: GridConfig = field(default_factory=GridConfig)
    temporal_scale: int | None = None

    @classmethod
    def from_dict(cls, d: dict, root: Path | None = None) -> DatasetSpec:
        d = dict(d)
        base = Path(root) if root is not None else Path(".")
        feats = d.get("features")
        if feats is None or d.get("annotations") is None:
            raise ValueError("dataset spec needs 'annotations' and 'features' (set data.root or --data, or give both)")
        feats = [feats] if isinstance(feats, str) else list(feats)
        grid = d.get("grid") or {}
        return cls(annotations=str(base / d["annotations"]), features=[str(base / f) for f in feats],
                   train_split=d.get("train_split", "training"), val_split=d.get("val_split", "validation"),
                   input_mode=d.get("input_mode", "window"),
                   grid=grid if isinstance(grid, GridConfig) else GridConfig.from_dict(grid),
                   temporal_scale=d.get("temporal_scale"))


def load_dataset_spec(data_cfg: dict, root: str | Path | None = None) -> DatasetSpec:
    """Merge ``root/dataset.json`` (when present) with the config's ``data`` section (config wins, except paths)."""
    root = root or data_cfg.get("root")
    merged: dict = {}
    if root is not None:
        meta_path = Path(root) / "dataset.json"
        if meta_path.is_file():
            merged.update(json.loads(meta_path.read_text()))
        elif not Path(root).is_dir():
            raise FileNotFoundError(f"dataset root {root} does not exist")
    merged.update({k: v for k, v in data_cfg.items() if k != "root" and v is not None})
    return DatasetSpec.from_dict(merged, root=Path(root) if root is not None else None)


def video_windows(video: VideoAnnotation, feats: np.ndarray, mode: str, grid_cfg: GridConfig, temporal_scale: int,
                  overlap: float) -> list[Window]:
    """Cut one annotated video into model windows exactly as :class:`gsmt_fast.Detector` does at inference."""
    fps = video.fps or grid_cfg.default_fps
    if mode == "window" and not fps:
        raise ValueError(f"video {video.video_id}: window mode needs fps (annotation or grid.default_fps)")
    return cut_windows(feats, mode, temporal_scale, overlap, duration=video.duration, fps=fps,
                       feat_stride=grid_cfg.feat_stride, num_frames=grid_cfg.num_frames)


class WindowDataset(torch.utils.data.Dataset):
    """All windows of one split held in memory (features float32, mask targets uint8, boundary targets float32)."""

    def __init__(self, videos: list[VideoAnnotation], store: FeatureStore, classes: list[str], mode: str,
                 grid_cfg: GridConfig, temporal_scale: int, overlap: float, skip_empty: bool = False):
        t = temporal_scale
        index = {c: i for i, c in enumerate(classes)}
        feats, valid, cls, mask, boundary = [], [], [], [], []
        self.window_video: list[str] = []
        for v in videos:
            x = store.load(v.video_id)
            labels = np.array([index[name] for name in v.labels], dtype=np.int64)
            for w in video_windows(v, x, mode, grid_cfg, t, overlap):
                seg_units = w.grid.to_units(v.segments) if len(v.segments) else np.zeros((0, 2))
                tg = assign_targets(seg_units, labels, len(classes), t, len(w.features))
                if skip_empty and not (tg.cls < len(classes)).any():
                    continue
                padded = np.zeros((t, x.shape[1]), np.float32)
                padded[: len(w.features)] = w.features
                feats.append(padded)
                valid.append(len(w.features))
                cls.append(tg.cls)
                mask.append(tg.mask.astype(np.uint8))
                boundary.append(tg.boundary)
                self.window_video.append(v.video_id)
        if not feats:
            raise ValueError("no training windows: the split is empty")
        self.features = torch.from_numpy(np.stack(feats))
        self.valid_len = torch.tensor(valid, dtype=torch.int64)
        self.cls = torch.from_numpy(np.stack(cls))
        self.mask = torch.from_numpy(np.stack(mask))
        self.boundary = torch.from_numpy(np.stack(boundary))
        self.num_classes = len(classes)

    def __len__(self) -> int:
        return len(self.valid_len)

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.features.shape[1]
        valid = torch.arange(t)[None, :] < self.valid_len[idx][:, None]
        cls = self.cls[idx]
        return {"features": self.features[idx], "valid_len": self.valid_len[idx], "valid": valid,
                "cls": cls, "mask": self.mask[idx].float(), "action": (cls < self.num_classes) & valid,
                "boundary": self.boundary[idx]}


def load_split(spec: DatasetSpec) -> tuple[AnnotationSet, FeatureStore]:
    return load_annotations(spec.annotations), FeatureStore(spec.features)
