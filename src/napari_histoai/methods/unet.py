"""A small U-Net shared by the dense-map peer detector and the self-trained segmenter:
RGB [B, 3, H, W] in [0, 1] (H, W multiples of 2^(levels-1)) -> [B, out_channels, H, W] logits
at full resolution (``len(widths)`` levels, a max-pool between levels, bilinear upsampling)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UNet"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, widths: Sequence[int] = (16, 32, 64), out_channels: int = 2):
        super().__init__()
        w = list(widths)
        self.stride = 2 ** (len(w) - 1)
        self.down = nn.ModuleList([_block(3 if i == 0 else w[i - 1], w[i]) for i in range(len(w))])
        self.up = nn.ModuleList([_block(w[i + 1] + w[i], w[i]) for i in reversed(range(len(w) - 1))])
        self.head = nn.Conv2d(w[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - 0.5
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for blk, s in zip(self.up, reversed(skips[:-1])):
            x = blk(torch.cat([F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False), s], 1))
        return self.head(x)
