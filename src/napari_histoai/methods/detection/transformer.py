"""Deformable encoder and point-refining decoder layers, and sine position embeddings.

Shapes: memory / src [B, S, d] (S = sum of H_l W_l over the levels); queries [B, Q, d];
reference points (y, x) in [0, 1], [B, S or Q, 2].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .deform_attn import MSDeformAttn

__all__ = ["EncoderLayer", "DecoderLayer", "MLP", "sine_embed_points", "sine_embed_maps", "inverse_sigmoid"]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """Linear layers with ReLU in between: dims in -> hidden x (n-1) -> out."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, n_layers: int):
        super().__init__()
        dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def sine_embed_points(points: torch.Tensor, d: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine embedding of points [..., 2] (y, x in [0, 1]) -> [..., d] (d/2 per coordinate)."""
    half = d // 2
    dim_t = torch.arange(half, dtype=points.dtype, device=points.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    p = points[..., None] * (2 * math.pi) / dim_t  # [..., 2, half]
    p = torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)
    return p.flatten(-2)


def sine_embed_maps(h: int, w: int, d: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Position embedding of an h x w map's pixel centres -> [h*w, d]."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).view(-1, 2)
    return sine_embed_points(grid, d)


class EncoderLayer(nn.Module):
    """Deformable self-attention over all pixels of all levels + FFN (post-norm)."""

    def __init__(self, d: int, ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.attn = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, src, pos, ref, shapes):
        """src, pos [B, S, d]; ref [B, S, L, 2]."""
        src = self.norm1(src + self.drop(self.attn(src + pos, ref, src, shapes)))
        return self.norm2(src + self.drop(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Query self-attention, deformable cross-attention into the memory, FFN (post-norm)."""

    def __init__(self, d: int, ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        self.cross_attn = MSDeformAttn(d, n_levels, n_heads, n_points)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norm3 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, tgt, query_pos, ref, memory, shapes):
        """tgt, query_pos [B, Q, d]; ref [B, Q, L, 2]; memory [B, S, d]."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.drop(self.self_attn(q, k, tgt, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.drop(self.cross_attn(tgt + query_pos, ref, memory, shapes)))
        return self.norm3(tgt + self.drop(self.ffn(tgt)))
