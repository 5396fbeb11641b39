"""The global network: an exponential moving average (EMA) of the local network.

``ModelEMA.update(model)``: ema = d * ema + (1 - d) * local for every floating-point parameter
and buffer (integer buffers such as BatchNorm's counter are copied), with
d = min(momentum, (1 + n) / (10 + n)) after n updates (a warm-up so the early global network is
not stuck at the random initialisation).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    def __init__(self, model: nn.Module, momentum: float = 0.999, warmup: bool = True):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum, self.warmup, self.updates = float(momentum), warmup, 0

    def decay(self) -> float:
        if not self.warmup:
            return self.momentum
        return min(self.momentum, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay()
        self.updates += 1
        ema_state = self.module.state_dict()
        for k, v in model.state_dict().items():
            e = ema_state[k]
            if e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                e.copy_(v)
