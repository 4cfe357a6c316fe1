"""The reference GSMT model (paper §3.1–3.2; docs/DESIGN.md "Model").

``GSMT(cfg)(x)`` maps snippet features ``x (B, T, d_in)`` to class logits ``(B, K+1, T)`` and foreground masks
``(B, T, T)`` in [0, 1], where ``masks[b, :, t]`` (column t) is the mask of the whole window predicted from snippet t.
``GSMT.predict`` gives what inference post-processes (class probabilities and masks); :func:`predict_bf16` is the
same computation with a bf16 trunk, the CPU fast path beside it (the Triton one is ``gsmt_fast.kernels.model``).

The boundary-refined variant (``cfg.boundary_head``; docs/DESIGN.md, "Boundary candidates") adds a third output
everywhere: ``boundaries (B, 2, T)``, the distances in snippets from each snippet's centre to the start (row 0) and
the end (row 1) of its instance, read linearly from the mask branch's hidden features (the features from which the
mask columns are read) through a softplus. Without the head every function returns exactly the paper model's pair.

Padding: windows shorter than T are zero-padded; ``valid_len (B,)`` masks padded snippets out of attention and zeroes
their embeddings before the heads, so a padded window computes exactly what its valid part determines.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GSMTConfig

# Initial output of the boundary head, in snippets (see GSMT.__init__).
BOUNDARY_INIT = 4.0


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal positional encoding (Vaswani et al.), shape (length, dim), on the CPU.

    Always computed on the CPU, whatever the default device: under ``torch.device("meta")`` (the checkpoint's shape
    check builds the model there) factory calls like ``arange`` go through torch's decompositions, whose first use
    imports the compiler stack and takes seconds."""
    cpu = torch.device("cpu")
    pos = torch.arange(length, dtype=torch.float64, device=cpu)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64, device=cpu) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, dtype=torch.float64, device=cpu)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe.float()


def padding_mask(valid_len: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor | None:
    """Boolean (B, T) mask, True on valid snippets; None when every snippet is valid."""
    if valid_len is None:
        return None
    valid_len = torch.as_tensor(valid_len, device=device).reshape(-1)
    if valid_len.numel() != batch:
        raise ValueError(f"valid_len has {valid_len.numel()} entries for a batch of {batch}")
    return torch.arange(length, device=device)[None, :] < valid_len[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection (the layout the Triton kernel reads)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if valid is None else valid[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + MHA(LN(x)), then x + MLP(LN(x)) with a single C→C layer (paper §3.1)."""

    def __init__(self, cfg: GSMTConfig):
        super().__init__()
        c = cfg.hidden_dim
        self.norm1 = nn.LayerNorm(c)
        self.attn = SelfAttention(c, cfg.num_heads, cfg.dropout)
        self.norm2 = nn.LayerNorm(c)
        self.fc = nn.Linear(c, c)
        self.act = nn.ReLU() if cfg.activation == "relu" else nn.GELU()
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), valid))
        return x + self.drop(self.act(self.fc(self.norm2(x))))


class GSMT(nn.Module):
    def __init__(self, cfg: GSMTConfig):
        super().__init__()
        self.cfg = cfg
        c, t = cfg.hidden_dim, cfg.temporal_scale
        self.input_proj = nn.Linear(cfg.input_dim, c)
        if cfg.positional_encoding == "fixed":
            encoding = sinusoidal_encoding(t, c).to(torch.get_default_device())
            self.register_buffer("pos_embed", encoding, persistent=False)
        elif cfg.positional_encoding == "learned":
            self.pos_embed = nn.Parameter(torch.randn(t, c) * 0.02)
        else:
            self.pos_embed = None
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(c)
        self.cls_head = nn.Conv1d(c, cfg.num_classes + 1, kernel_size=1)
        self.mask_head = nn.Sequential(
            nn.Conv1d(c, cfg.mask_dim, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv1d(cfg.mask_dim, cfg.mask_dim, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv1d(cfg.mask_dim, t, kernel_size=1),
        )
        if cfg.boundary_head:
            # Built last, so that a paper model's parameters draw the same random numbers with or without this code.
            self.boundary_head = nn.Conv1d(cfg.mask_dim, 2, kernel_size=1)
            # Start from distances of about BOUNDARY_INIT snippets (softplus(0) would be 0.69, far below most
            # instances' half-lengths, which slows the first epochs of the IoU loss).
            nn.init.constant_(self.boundary_head.bias, math.log(math.expm1(BOUNDARY_INIT)))
        else:
            self.boundary_head = None

    def embed(self, x: torch.Tensor, valid_len=None) -> torch.Tensor:
        """Snippet embeddings (B, C, T) after the transformer, zero on padded snippets."""
        if x.dim() != 3 or x.shape[1] != self.cfg.temporal_scale or x.shape[2] != self.cfg.input_dim:
            raise ValueError(f"expected features of shape (B, {self.cfg.temporal_scale}, {self.cfg.input_dim}), "
                             f"got {tuple(x.shape)}")
        b, t, _ = x.shape
        valid = padding_mask(valid_len, b, t, x.device)
        h = self.input_proj(x)
        if self.pos_embed is not None:
            h = h + self.pos_embed.to(h.dtype)
        for block in self.blocks:
            h = block(h, valid)
        h = self.norm(h)
        if valid is not None:
            h = h * valid[:, :, None].to(h.dtype)
        return h.transpose(1, 2)

    def forward_logits(self, x: torch.Tensor, valid_len=None) -> tuple[torch.Tensor, ...]:
        """Class logits (B, K+1, T) and mask logits (B, T, T) (before the sigmoid; what the losses take), and with the
        boundary head its distances (B, 2, T)."""
        e = self.embed(x, valid_len)
        if self.boundary_head is None:
            return self.cls_head(e), self.mask_head(e)
        h = self.mask_head[:-1](e)
        return self.cls_head(e), self.mask_head[-1](h), F.softplus(self.boundary_head(h))

    def forward(self, x: torch.Tensor, valid_len=None) -> tuple[torch.Tensor, ...]:
        """Class logits (B, K+1, T) and masks (B, T, T) in [0, 1] (and the boundary distances (B, 2, T))."""
        logits, mask_logits, *boundaries = self.forward_logits(x, valid_len)
        return (logits, torch.sigmoid(mask_logits), *boundaries)

    def predict(self, x: torch.Tensor, valid_len=None) -> tuple[torch.Tensor, ...]:
        """Class probabilities (B, K+1, T) (softmax over the K+1 rows) and masks (B, T, T) (and the boundary
        distances (B, 2, T)): what inference post-processes."""
        logits, masks, *boundaries = self(x, valid_len)
        return (torch.softmax(logits, dim=1), masks, *boundaries)


def predict_bf16(model: GSMT, x: torch.Tensor, valid_len=None) -> tuple[torch.Tensor, ...]:
    """:meth:`GSMT.predict` with the transformer and the two k=3 mask convolutions under bf16 autocast and the
    output layers (class head, the mask head's final k=1 convolution, the boundary head) in float32: every logit that
    the post-processing thresholds is computed in float32, because rounding the mask logits to bf16 moves values
    across the mask thresholds (bench/RESULTS.md has the accuracy of both choices)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        e = model.embed(x, valid_len)
        h = model.mask_head[:-1](e)
    # Both output layers are k=1 convolutions, computed as the equivalent GEMMs (oneDNN's fp32 conv1d with few output
    # channels is slow): class logits from the channels-last embedding, masks as W3 @ h2 per window.
    cls, last = model.cls_head, model.mask_head[-1]
    logits = F.linear(e.transpose(1, 2).float(), cls.weight[:, :, 0], cls.bias)
    h = h.float()
    mask_logits = torch.baddbmm(last.bias[None, :, None], last.weight[:, :, 0].expand(len(h), -1, -1), h)
    out = (torch.softmax(logits.transpose(1, 2), dim=1), torch.sigmoid(mask_logits))
    if model.boundary_head is None:
        return out
    head = model.boundary_head
    distances = torch.baddbmm(head.bias[None, :, None], head.weight[:, :, 0].expand(len(h), -1, -1), h)
    return (*out, F.softplus(distances))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
