"""Plain helpers shared by the kernel tests (tests/kernels/test_*.py import them by module name: pytest puts this
folder on sys.path). The fixtures live in tests/kernels/conftest.py."""

from __future__ import annotations

import os

import torch


def interpreted() -> bool:
    """Whether Triton runs under its CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def rel_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Relative RMS error ||actual - expected|| / ||expected||, in float64."""
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-300))


def nan_tensor(shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """An output buffer pre-filled with NaN, so that any element a kernel does not write shows up."""
    return torch.full(tuple(shape), float("nan"), dtype=dtype, device=device)
