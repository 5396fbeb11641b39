"""Gradient reversal and its schedule (Ganin & Lempitsky; CyC-PDAM eq. for alpha_da)."""

from __future__ import annotations

import math

import torch

__all__ = ["grad_reverse", "alpha_schedule"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha: float):
        ctx.alpha = float(alpha)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


def grad_reverse(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by ``-alpha``."""
    return _GradReverse.apply(x, alpha)


def alpha_schedule(progress: float) -> float:
    """alpha = 2 / (1 + exp(-10 t)) - 1 for training progress t in [0, 1] (0 at the start, ~1 at
    the end)."""
    t = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-10.0 * t)) - 1.0
