"""The GSMT forward pass as a chain of this package's kernels; its naive version is the reference model
:class:`gsmt_fast.model.GSMT` itself.

Activations are channels-last ``(B*T, C)`` in the compute dtype:

1. ``fused_linear``: input projection + positional encoding (``row_add``);
2. per transformer block: ``fused_linear`` (LayerNorm 1 as GEMM prologue → QKV), ``flash_attention`` (online
   softmax, padded keys masked, no T×T scores in memory), ``fused_linear`` (output projection + residual),
   ``fused_linear`` (LayerNorm 2 prologue → FC → activation + residual);
3. ``layer_norm_rows``: the final LayerNorm, padded snippets written as zeros (as ``GSMT.embed``);
4. ``class_head``: class logits → softmax (float32 ``(B, K+1, T)``);
5. ``mask_head``: conv k=3 + ReLU, conv k=3 + ReLU, conv k=1 → T + sigmoid, the T×T masks written once;
6. with the boundary head (the boundary-refined variant): ``boundary_head`` on the mask head's h2 → the boundary
   distances ``(B, 2, T)`` float32.

Matrices are cast to the compute dtype once (:func:`prepare_weights`); LayerNorm parameters and biases stay float32
for the fp32 statistics and epilogues.
"""

from __future__ import annotations

import torch

from . import attention, boundary_head, class_head, layer_norm, linear, mask_head


def prepare_weights(model, dtype: torch.dtype, device) -> dict:
    """The parameters of a :class:`gsmt_fast.model.GSMT` on ``device``: matrices in ``dtype``, LayerNorm and bias
    vectors in float32, all contiguous (what :func:`forward` takes)."""
    def mat(t):
        return t.detach().to(device, dtype).contiguous()

    def vec(t):
        return None if t is None else t.detach().to(device, torch.float32).contiguous()

    w = {"in_w": mat(model.input_proj.weight), "in_b": vec(model.input_proj.bias),
         "pos": None if model.pos_embed is None else mat(model.pos_embed), "blocks": []}
    for block in model.blocks:
        w["blocks"].append({
            "ln1": (vec(block.norm1.weight), vec(block.norm1.bias), block.norm1.eps),
            "qkv_w": mat(block.attn.qkv.weight), "qkv_b": vec(block.attn.qkv.bias),
            "proj_w": mat(block.attn.proj.weight), "proj_b": vec(block.attn.proj.bias),
            "ln2": (vec(block.norm2.weight), vec(block.norm2.bias), block.norm2.eps),
            "fc_w": mat(block.fc.weight), "fc_b": vec(block.fc.bias),
        })
    w["ln"] = (vec(model.norm.weight), vec(model.norm.bias), model.norm.eps)
    w["cls_w"], w["cls_b"] = mat(model.cls_head.weight.squeeze(-1)), vec(model.cls_head.bias)
    conv1, conv2, conv3 = model.mask_head[0], model.mask_head[2], model.mask_head[4]
    w["mask"] = (mat(conv1.weight), vec(conv1.bias), mat(conv2.weight), vec(conv2.bias),
                 mat(conv3.weight.squeeze(-1)), vec(conv3.bias))
    if model.boundary_head is not None:  # float32: an output layer, like the class head's statistics
        w["boundary"] = (vec(model.boundary_head.weight.squeeze(-1)), vec(model.boundary_head.bias))
    return w


def forward(weights: dict, cfg, x: torch.Tensor, valid_len: torch.Tensor, compute_dtype: torch.dtype,
            mask_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """``x (B, T, d_in)`` (any float dtype) and ``valid_len (B,)`` int32 on the weights' device → class probabilities
    ``(B, K+1, T)`` float32 and masks ``(B, T, T)`` in ``mask_dtype``, plus the boundary distances ``(B, 2, T)``
    float32 for a model with the boundary head. ``cfg`` is the model's :class:`gsmt_fast.config.GSMTConfig`.
    Launches kernels only: no host synchronisation (CUDA-graph capturable)."""
    b, t, d = x.shape
    c = cfg.hidden_dim
    act = "relu" if cfg.activation == "relu" else "gelu"
    rows = x.reshape(b * t, d).to(compute_dtype)
    h = linear.fused_linear(rows, weights["in_w"], weights["in_b"], row_add=weights["pos"], row_add_period=t)
    for blk in weights["blocks"]:
        ln_w, ln_b, eps = blk["ln1"]
        qkv = linear.fused_linear(h, blk["qkv_w"], blk["qkv_b"], ln_weight=ln_w, ln_bias=ln_b, ln_eps=eps)
        y = attention.flash_attention(qkv.view(b, t, 3 * c), cfg.num_heads, valid_len)
        h = linear.fused_linear(y.view(b * t, c), blk["proj_w"], blk["proj_b"], residual=h)
        ln_w, ln_b, eps = blk["ln2"]
        h = linear.fused_linear(h, blk["fc_w"], blk["fc_b"], ln_weight=ln_w, ln_bias=ln_b, ln_eps=eps,
                                activation=act, residual=h)
    ln_w, ln_b, eps = weights["ln"]
    e = layer_norm.layer_norm_rows(h, ln_w, ln_b, eps, valid_len=valid_len, period=t).view(b, t, c)
    # No top-M1 selection here: the post-processing op selects the snippets itself.
    probs = class_head.class_head(e, weights["cls_w"], weights["cls_b"], valid_len, None).probs
    if "boundary" not in weights:
        return probs, mask_head.mask_head(e, *weights["mask"], out_dtype=mask_dtype)
    masks, hidden = mask_head.mask_head(e, *weights["mask"], out_dtype=mask_dtype, hidden=True)
    return probs, masks, boundary_head.boundary_head(hidden, *weights["boundary"])


__all__ = ["forward", "prepare_weights"]
