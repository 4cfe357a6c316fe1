"""Triton kernels of the gsmt_fast engine, importable as ``gsmt_fast.kernels``.

One module per kernel, its naive PyTorch version beside it (``<op>_naive``: what the tests compare against):

* ``linear``: ``fused_linear`` — GEMM with an optional LayerNorm prologue and bias/activation/residual/row-add
  epilogues (input projection + positional encoding, pre-LN QKV, out-projection + residual, pre-LN MLP);
* ``attention``: ``flash_attention`` — multi-head attention over the fused QKV layout, online softmax, padded keys
  masked, no T×T score tensor;
* ``layer_norm``: ``layer_norm_rows`` — the final LayerNorm, padded snippets written as zeros;
* ``class_head``: ``class_head`` — class logits, softmax, foreground max/argmax and the top-M1 snippets;
* ``mask_head``: ``mask_head`` — conv k=3 + ReLU ×2 and the k=1 projection to T + sigmoid, the T×T masks written once
  (or only selected columns);
* ``boundary_head``: ``boundary_head`` — the boundary-refined variant's head: a k=1 projection of the mask head's
  hidden features to two distances + softplus.

``model`` chains them into the whole GSMT forward pass (used by ``gsmt_fast.backends.triton_backend``); ``_checks``
holds the wrappers' shared input validation.

Triton is optional: importing this package never requires it; each kernel module imports triton itself.
Under ``TRITON_INTERPRET=1`` (set before importing a kernel module) the kernels run on the CPU.
"""


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True
