"""Triton kernels of the gsmt_fast engine, importable as ``gsmt_fast.kernels``.

Triton is optional: importing this package never requires it; each kernel module imports triton itself.
Under ``TRITON_INTERPRET=1`` (set before importing a kernel module) the kernels run on the CPU.
"""


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True
