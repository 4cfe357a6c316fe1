"""gsmt_fast: Global Segmentation Mask Transformer for temporal action localization.

The public API (docs/DESIGN.md, "Public API") is importable from the package root; submodules load lazily so that
``import gsmt_fast`` stays cheap and optional dependencies (kornia, triton, onnxruntime) load only when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "GSMTConfig": "gsmt_fast.config",
    "InferenceConfig": "gsmt_fast.config",
    "GridConfig": "gsmt_fast.config",
    "GSMT": "gsmt_fast.model",
    "save_checkpoint": "gsmt_fast.checkpoint",
    "load_checkpoint": "gsmt_fast.checkpoint",
    "Detector": "gsmt_fast.detector",
    "Detection": "gsmt_fast.detector",
    "DetectionResult": "gsmt_fast.detector",
    "StreamSession": "gsmt_fast.streaming",
    "StreamPool": "gsmt_fast.streaming",
    "StreamDetection": "gsmt_fast.streaming",
    "StreamDetections": "gsmt_fast.streaming",
    "EmissionPolicy": "gsmt_fast.streaming",
    "soft_nms": "gsmt_fast.postprocess.soft_nms",
    "evaluate": "gsmt_fast.evaluation",
    "EvaluationResult": "gsmt_fast.evaluation",
    "export_onnx": "gsmt_fast.export",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gsmt_fast' has no attribute {name!r}")


def __dir__():
    return __all__
