"""Multi-scale deformable attention (Zhu et al., Deformable DETR), pure PyTorch.

Sampling uses ``F.grid_sample`` per level, so it runs unchanged on CPU, CUDA and MPS.
Conventions: points are (y, x) normalised to [0, 1] of the image (pixel centres at
(i + 0.5) / size, as ``grid_sample(align_corners=False)``); ``spatial_shapes`` is a list of
(H_l, W_l) of the flattened levels, concatenated in order in the value sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MSDeformAttn", "ms_deform_attn_core"]


def ms_deform_attn_core(value: torch.Tensor, shapes: list, locs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling and weighted sum.

    value [B, S, M, D] (S = sum H_l W_l, M heads, D head dim); locs [B, Q, M, L, P, 2] (y, x) in
    [0, 1]; weights [B, Q, M, L, P] (softmax over L*P). Returns [B, Q, M*D].
    """
    b, _, m, d = value.shape
    _, q, _, n_lvl, n_pts, _ = locs.shape
    splits = [h * w for h, w in shapes]
    values = value.split(splits, dim=1)
    grids = 2 * locs.flip(-1) - 1  # (x, y) in [-1, 1] for grid_sample
    out = 0
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(b * m, q, n_pts, 2)
        s = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # [B*M, D, Q, P]
        a = weights[:, :, :, lvl].permute(0, 2, 1, 3).reshape(b * m, 1, q, n_pts)
        out = out + (s * a).sum(-1)  # [B*M, D, Q]
    return out.view(b, m * d, q).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Deformable attention over ``n_levels`` feature levels.

    forward(query [B, Q, d], ref [B, Q, L, 2] (y, x) in [0, 1], value [B, S, d], shapes
    [(H_l, W_l)], padding_mask [B, S] bool or None) -> [B, Q, d].
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        self.d, self.L, self.M, self.P = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        theta = torch.arange(self.M, dtype=torch.float32) * (2.0 * math.pi / self.M)
        grid = torch.stack([theta.sin(), theta.cos()], -1)  # (y, x) directions per head
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.M, 1, 1, 2).repeat(1, self.L, self.P, 1)
        for i in range(self.P):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query, ref, value, shapes, padding_mask=None):
        b, q, _ = query.shape
        s = value.shape[1]
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(b, s, self.M, self.d // self.M)
        off = self.sampling_offsets(query).view(b, q, self.M, self.L, self.P, 2)
        att = self.attention_weights(query).view(b, q, self.M, self.L * self.P).softmax(-1)
        att = att.view(b, q, self.M, self.L, self.P)
        norm = torch.tensor(shapes, dtype=query.dtype, device=query.device)  # [L, 2] (H, W)
        locs = ref[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        out = ms_deform_attn_core(v, shapes, locs, att)
        return self.output_proj(out)
