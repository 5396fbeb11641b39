"""The confidence network f_theta and the patch featuriser (Boserup & Selvan 2023, sec. 2.2).

Confidence network: stem conv3x3 3->w (no bias) + BN + ELU, then one residual block per
dilation d in (1, 2, 3, 5, 10, 20) made of two [conv3x3 w->w (dilation = padding = d, no bias),
BN, ELU], then conv1x1 w->K + sigmoid. With w = 8 and K = 4 it has 7,372 parameters.

Featuriser (only used by the featurised-cosine similarity): conv3x3 c->8 + BN + ELU, two
strided (2) dilated (2) conv3x3 [8->8, 8->1] + BN + ELU, flatten 9x9 = 81, linear 81->32:
3,530 parameters for RGB patches of 50 px (other patch sizes are pooled to 9x9 first).
"""

from __future__ import annotations

import torch
from torch import nn

DILATIONS = (1, 2, 3, 5, 10, 20)


def _conv_bn_elu(cin: int, cout: int, **kw) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=3, **kw), nn.BatchNorm2d(cout), nn.ELU())


class _Residual(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        kw = dict(padding=dilation, dilation=dilation, bias=False)
        self.body = nn.Sequential(_conv_bn_elu(width, width, **kw), _conv_bn_elu(width, width, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConfidenceNet(nn.Module):
    """images [B, 3, H, W] in (0, 1] -> confidence maps [B, K, H, W] in (0, 1)."""

    def __init__(self, n_channels: int = 4, width: int = 8, in_channels: int = 3,
                 dilations: tuple = DILATIONS):
        super().__init__()
        self.stem = _conv_bn_elu(in_channels, width, padding=1, bias=False)
        self.blocks = nn.Sequential(*[_Residual(width, d) for d in dilations])
        self.head = nn.Conv2d(width, n_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.blocks(self.stem(x))))


class Featuriser(nn.Module):
    """patches [N, C, P, P] -> features [N, 32]."""

    def __init__(self, in_channels: int = 3, out_features: int = 32):
        super().__init__()
        self.convs = nn.Sequential(
            _conv_bn_elu(in_channels, 8),
            _conv_bn_elu(8, 8, stride=2, dilation=2, bias=False),
            _conv_bn_elu(8, 1, stride=2, dilation=2, bias=False),
        )
        self.pool = nn.AdaptiveAvgPool2d(9)
        self.fc = nn.Linear(81, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convs(x)
        if y.shape[-2:] != (9, 9):
            y = self.pool(y)
        return self.fc(y.flatten(1))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(arch: dict) -> tuple[ConfidenceNet, Featuriser]:
    """(confidence net, featuriser) from an architecture dict ``{"n_channels", "width"}``."""
    net = ConfidenceNet(n_channels=int(arch.get("n_channels", 4)), width=int(arch.get("width", 8)))
    return net, Featuriser()
