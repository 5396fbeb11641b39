"""The three domain discriminators of CyC-PDAM (paper Tables 1-2), each preceded by gradient
reversal in :mod:`.network`. Outputs are logits of "source" (1) vs "target" (0)."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["ImageDiscriminator", "SemanticDiscriminator", "InstanceDiscriminator"]


class ImageDiscriminator(nn.Module):
    """FPN maps average-pooled to 8 x 8 and summed [B, C, 8, 8] -> logits [B, 1, 8, 8]
    (paper: conv 3x3 C-256-512-512... here widths scale with ``width``)."""

    def __init__(self, in_channels: int, width: int = 256):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 1, 1),
        )

    @staticmethod
    def pool(features: dict) -> torch.Tensor:
        """Sum of every FPN level average-pooled to 8 x 8: [B, C, 8, 8]."""
        return sum(F.adaptive_avg_pool2d(f, 8) for f in features.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.leaky_relu(x + self.b(F.leaky_relu(self.a(x), 0.2)), 0.2)


class SemanticDiscriminator(nn.Module):
    """Entropy map of the semantic head [B, 2, H, W] -> logits [B, 1, H/16, W/16] (paper:
    conv 7x7 s2 2->64, then 5x5 s2 -> 128 -> 256 -> 512, two residual blocks after each, and a
    1x1 conv to the patch logits; a 256 x 256 input gives 16 x 16)."""

    def __init__(self, in_channels: int = 2, width: int = 64):
        super().__init__()
        w = width
        layers = [nn.Conv2d(in_channels, w, 7, stride=2, padding=3), nn.LeakyReLU(0.2, inplace=True)]
        c = w
        for mult in (2, 4, 8):
            layers += [nn.Conv2d(c, w * mult, 5, stride=2, padding=2), nn.LeakyReLU(0.2, inplace=True),
                       _Res(w * mult), _Res(w * mult)]
            c = w * mult
        layers.append(nn.Conv2d(c, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class InstanceDiscriminator(nn.Module):
    """RoI features [N, D] (box-head representation + 2x2-pooled mask features) -> logits [N, 1];
    three fully connected layers D -> 256 -> 256 -> 1."""

    def __init__(self, in_features: int, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
