"""The two networks of the heatmap method.

:class:`PatchSegNet` (stage 1, theta_1): a small encoder-decoder. RGB [B, 3, H, W] uint8-range
float -> tumour logits [B, 1, H / stride, W / stride]. Encoder: four stages at 1/2, 1/4, 1/8,
1/16 of the input (widths w, 2w, 4w, 4w), each a strided conv3x3 then a residual pair of
conv3x3 (BatchNorm, ReLU); decoder: upsample + skip back to 1/stride, a 1x1 head. H and W must
be multiples of 16. Optional FuseStyle after the first two stages (training only).

:class:`PatchClassifier` (stage 2, theta_2): patch [B, 4, h, w] (RGB and the stage-1 probability
map upsampled to the patch, both in [0, 1]) -> patch logit [B]. The slide probability is the
mean of the patch probabilities over the slide's top-K patches (the paper's stage 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchSegNet", "PatchClassifier", "ClassifierEnsemble", "normalise"]


def normalise(rgb: torch.Tensor) -> torch.Tensor:
    """RGB [B, 3, H, W] in 0..255 -> roughly zero-mean unit-range float."""
    return (rgb.float() / 255.0 - 0.5) / 0.25


def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Stage(nn.Module):
    """Strided conv (down by 2) and a residual pair of conv3x3."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = _cbr(cin, cout, stride=2)
        self.res = nn.Sequential(_cbr(cout, cout), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return F.relu(x + self.res(x))


class PatchSegNet(nn.Module):
    """images [B, 3, H, W] (0..255) -> tumour logits [B, 1, H / stride, W / stride]."""

    def __init__(self, width: int = 24, stride: int = 4, fusestyle: bool = False):
        super().__init__()
        w = width
        chans = (w, 2 * w, 4 * w, 4 * w)
        self.stride = stride
        self.stages = nn.ModuleList([_Stage(3, chans[0]), _Stage(chans[0], chans[1]), _Stage(chans[1], chans[2]),
                                     _Stage(chans[2], chans[3])])
        self.style = None
        if fusestyle:
            from ..fusestyle import FuseStyle

            self.style = nn.ModuleList([FuseStyle(), FuseStyle()])
        # decoder from 1/16 up to 1/stride: one fuse block per level
        self.n_up = {16: 0, 8: 1, 4: 2, 2: 3}[stride]
        self.fuse = nn.ModuleList()
        c = chans[3]
        for k in range(self.n_up):
            skip = chans[2 - k]
            self.fuse.append(_cbr(c + skip, skip))
            c = skip
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalise(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if self.style is not None and i < 2:
                x = self.style[i](x)
            feats.append(x)
        for k, fuse in enumerate(self.fuse):
            skip = feats[2 - k]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(torch.cat([x, skip], 1))
        return self.head(x)


class PatchClassifier(nn.Module):
    """patches [B, 4, h, w] (RGB / 255 and a probability map, in [0, 1]) -> logits [B]."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(_cbr(4, w, 2), _cbr(w, 2 * w, 2), _cbr(2 * w, 2 * w, 2), _cbr(2 * w, 4 * w, 2),
                                  _cbr(4 * w, 4 * w, 2))
        self.head = nn.Linear(8 * w + 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = x[:, 3:4]
        f = self.body(torch.cat([(x[:, :3] - 0.5) / 0.25, prob], 1))
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3)), prob.amax((2, 3)), prob.mean((2, 3))], 1)
        return self.head(pooled).squeeze(1)


class ClassifierEnsemble(nn.Module):
    """Several :class:`PatchClassifier` trained with different seeds: patches [B, 4, h, w] ->
    logits [B] of the members' mean probability (less variance in the slide score and in the
    stage-2 loss that picks the round)."""

    def __init__(self, n: int = 1):
        super().__init__()
        self.members = nn.ModuleList([PatchClassifier() for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0).clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)
