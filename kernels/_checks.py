"""Input validation shared by the kernel wrappers (attention, class_head, layer_norm, linear, mask_head).

Every check raises the wrappers' usual errors: TypeError for a wrong type or dtype, ValueError for a wrong device,
shape or aliasing. Importing this module does not import triton.
"""

from __future__ import annotations

import math
import os

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreted() -> bool:
    """Whether Triton runs under its CPU interpreter (``TRITON_INTERPRET=1``), read at each call."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def check_tensor(name: str, t, *, or_none: bool = False) -> None:
    """TypeError unless ``t`` is a torch.Tensor (``or_none``: the message says that None is allowed too)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{' or None' if or_none else ''}, got {type(t).__name__}")


def check_float_dtype(name: str, dtype) -> None:
    """TypeError unless ``dtype`` is float32, float16 or bfloat16."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {dtype}")


def check_device(name: str, t: torch.Tensor, device, device_of: str) -> None:
    """ValueError unless ``t`` is on ``device``, the device of the input named ``device_of``."""
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but {device_of} is on {device}")


def check_float(name: str, t, device=None, device_of: str = "x") -> None:
    """``t`` is a float32/float16/bfloat16 tensor, and on ``device`` (that of ``device_of``) when one is given."""
    check_tensor(name, t)
    check_float_dtype(name, t.dtype)
    if device is not None:
        check_device(name, t, device, device_of)


def check_shape(name: str, t: torch.Tensor, shape: tuple) -> None:
    """ValueError unless ``t`` has exactly ``shape``."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def check_vector(name: str, t, length: int, device, device_of: str = "x") -> None:
    """A 1-D float parameter (bias, LayerNorm weight...) of ``length`` elements on ``device``."""
    check_float(name, t, device, device_of)
    check_shape(name, t, (length,))


def check_integer_dtype(name: str, t: torch.Tensor) -> None:
    """TypeError unless ``t`` holds integers (not floats, complex numbers or bools)."""
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")


def memory_span(t: torch.Tensor) -> tuple[int, int]:
    """[first byte, one past the last byte] that ``t`` can touch."""
    if t.numel() == 0:
        return t.data_ptr(), t.data_ptr()
    last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory spans of ``a`` and ``b`` intersect."""
    a0, a1 = memory_span(a)
    b0, b1 = memory_span(b)
    return a0 < b1 and b0 < a1


def check_eps(name: str, eps) -> None:
    """ValueError unless ``eps`` (a LayerNorm epsilon) is a finite int or float >= 0."""
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")


def check_out(out, shape: tuple, like: torch.Tensor, like_name: str, *, or_none: bool = False) -> None:
    """``out`` is a tensor of ``shape`` with the device and dtype of the input ``like`` (named ``like_name``)."""
    check_tensor("out", out, or_none=or_none)
    check_device("out", out, like.device, like_name)
    if out.dtype != like.dtype:
        raise TypeError(f"out must have {like_name}'s dtype {like.dtype}, got {out.dtype}")
    check_shape("out", out, shape)
