"""Fixtures of the kernel tests; plain helpers are in tests/kernels/kernel_testing.py."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import interpreted


@pytest.fixture(autouse=True)
def _skip_where_the_kernels_cannot_run(request):
    """A gpu-marked test needs a CUDA GPU. Any other test runs the kernels on CPU tensors, which needs the Triton
    interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without a GPU); on a GPU machine only the gpu-marked tests
    apply, except in a module whose tensors live on ``DEVICE = "cuda"`` there (test_mask_head)."""
    if request.node.get_closest_marker("gpu") is not None:
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
    elif not interpreted() and getattr(request.module, "DEVICE", "cpu") == "cpu":
        pytest.skip("CPU-tensor kernel tests need TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU)")
