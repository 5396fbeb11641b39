"""View generators: the Adaptive Affine Transformer (AAT) and its ablation alternatives
(random affine = the paper's "RT", random crop = "RC", none).

Affine convention = ``F.affine_grid``: theta [N, 2, 3] maps a view's normalised coordinates
(x_o, y_o, 1) in [-1, 1] (align_corners=False) to the source image's normalised coordinates.
With rows (t11 t12 t13; t21 t22 t23): t11, t22 are scales, t12, t21 rotation/shear, t13, t23
translation. Scale 0.5 with translation (+-0.5, +-0.5) is a quadrant crop.
Points here are (y, x) in [0, 1] (pixel = p * size - 0.5), so normalised = 2 p - 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import sine_embed_maps

__all__ = ["AAT", "clamp_theta", "quadrant_thetas", "random_affine_thetas", "random_crop_thetas",
           "warp_images", "transform_points", "build_view_generator", "SCALE", "SHEAR", "SHIFT"]

SCALE = (0.2, 2.0)   # t11, t22
SHEAR = (-1.0, 1.0)  # t12, t21
SHIFT = (-0.5, 0.5)  # t13, t23


def clamp_theta(theta: torch.Tensor) -> torch.Tensor:
    """Clamp raw parameters [..., 6] (t11 t12 t13 t21 t22 t23) to the paper's ranges -> [..., 2, 3].
    Differentiable inside the ranges."""
    t11, t12, t13, t21, t22, t23 = theta.unbind(-1)
    rows = torch.stack([
        t11.clamp(*SCALE), t12.clamp(*SHEAR), t13.clamp(*SHIFT),
        t21.clamp(*SHEAR), t22.clamp(*SCALE), t23.clamp(*SHIFT),
    ], -1)
    return rows.view(*theta.shape[:-1], 2, 3)


def quadrant_thetas(m: int) -> torch.Tensor:
    """The AAT head's initial bias: m views cycling through the 4 quadrant crops -> [m, 6]."""
    quads = [(-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5)]  # (tx, ty)
    out = [[0.5, 0.0, quads[i % 4][0], 0.0, 0.5, quads[i % 4][1]] for i in range(m)]
    return torch.tensor(out, dtype=torch.float32)


def random_affine_thetas(n: int, generator=None, scale=(0.4, 0.7)) -> torch.Tensor:
    """Random affine views (rotation, anisotropic scale, shear, translation), clamped -> [n, 2, 3]."""
    u = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    ang = (u(n) * 2 - 1) * (math.pi / 4)  # larger turns: the data pipeline's 90-degree turns
    sy = scale[0] + (scale[1] - scale[0]) * u(n)
    sx = scale[0] + (scale[1] - scale[0]) * u(n)
    sh = (u(n) * 2 - 1) * 0.15
    c, s = ang.cos(), ang.sin()
    a11, a12 = c * sx, -s * sy + sh
    a21, a22 = s * sx, c * sy
    t = (u(n, 2) * 2 - 1) * 0.5
    raw = torch.stack([a11, a12, t[:, 0], a21, a22, t[:, 1]], -1)
    return clamp_theta(raw)


def random_crop_thetas(n: int, generator=None, scale: float = 0.5) -> torch.Tensor:
    """Random axis-aligned crops at a fixed scale -> [n, 2, 3]."""
    t = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)
    raw = torch.zeros(n, 6)
    raw[:, 0] = raw[:, 4] = scale
    raw[:, 2], raw[:, 5] = t[:, 0], t[:, 1]
    return clamp_theta(raw)


def warp_images(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Warp images [N, C, H, W] with theta [N, 2, 3] into views [N, C, size, size] (bilinear,
    zeros outside). Differentiable w.r.t. images and theta."""
    grid = F.affine_grid(theta, (images.shape[0], images.shape[1], size, size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def transform_points(points: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Source points [G, 2] (y, x) in [0, 1] -> view points [G, 2] and a keep mask [G] (inside
    the view). theta [2, 3] maps view -> source, so view = A^-1 (source - t)."""
    theta = theta.detach().to(points.dtype)
    A, t = theta[:, :2], theta[:, 2]
    if points.numel() == 0:
        return points.reshape(0, 2), torch.zeros(0, dtype=torch.bool, device=points.device)
    if torch.linalg.det(A).abs() < 1e-6:  # degenerate view: keep nothing
        return points[:0], torch.zeros(len(points), dtype=torch.bool, device=points.device)
    src = points.flip(-1) * 2 - 1  # (x, y) normalised
    view = torch.linalg.solve(A, (src - t).T).T
    out = ((view + 1) / 2).flip(-1)  # back to (y, x) in [0, 1]
    keep = ((out >= 0) & (out <= 1)).all(-1)
    return out, keep


class AAT(nn.Module):
    """Adaptive Affine Transformer: patch embedding (kernel = stride = ``patch``) + sine position
    embedding + ``blocks`` transformer blocks + mean pooling + a linear head -> M x 6 affine
    parameters, zero-initialised weights with the quadrant-crop bias, then clamped.

    forward(images [B, 3, H, W] in [0, 1]) -> theta [B, M, 2, 3].
    """

    def __init__(self, m: int = 4, patch: int = 4, embed: int = 120, heads: int = 12, blocks: int = 1,
                 input_size: int = 256):
        super().__init__()
        self.m, self.input_size, self.embed = m, input_size, embed
        self.patch_embed = nn.Conv2d(3, embed, patch, stride=patch)
        layer = nn.TransformerEncoderLayer(embed, heads, dim_feedforward=2 * embed, dropout=0.0, batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.head = nn.Linear(embed, m * 6)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(quadrant_thetas(m).reshape(-1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.patch_embed(x - 0.5)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2) + sine_embed_maps(h, w, self.embed, x.device, x.dtype)[None]
        x = self.blocks(x).mean(1)
        return clamp_theta(self.head(x).view(-1, self.m, 6))


class ViewGenerator(nn.Module):
    """M views per image for one of ``aat | affine | crop | none``.

    forward(images [B, 3, H, W], generator) -> (views [B*M, 3, s, s], theta [B*M, 2, 3]); view k
    of image b is row b*M + k. ``none`` returns the images themselves (M = 1, identity theta).
    """

    def __init__(self, kind: str, m: int, size: int, aat: AAT | None = None):
        super().__init__()
        self.kind, self.m, self.size = kind, (1 if kind == "none" else m), size
        self.aat = aat

    def forward(self, images: torch.Tensor, generator=None):
        b = images.shape[0]
        if self.kind == "none":
            eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=images.device).expand(b, 2, 3)
            return images, eye
        if self.kind == "aat":
            theta = self.aat(images).reshape(b * self.m, 2, 3)
        elif self.kind == "affine":
            theta = random_affine_thetas(b * self.m, generator).to(images.device)
        elif self.kind == "crop":
            theta = random_crop_thetas(b * self.m, generator, scale=min(1.0, self.size / images.shape[-1])).to(images.device)
        else:
            raise ValueError(f"unknown view generator {self.kind!r}")
        src = images.repeat_interleave(self.m, dim=0)
        return warp_images(src, theta, self.size), theta


def build_view_generator(cfg) -> ViewGenerator:
    aat = None
    if cfg.views == "aat":
        aat = AAT(cfg.n_views, cfg.aat_patch, cfg.aat_embed, cfg.aat_heads, cfg.aat_blocks, cfg.aat_input)
    size = cfg.crop_size if cfg.views == "none" else cfg.view_size
    return ViewGenerator(cfg.views, cfg.n_views, size, aat)
