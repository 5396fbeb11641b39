"""Task re-weighting (CyC-PDAM eq. 3): a task loss is scaled by min(p_t / p_s, beta) where p_s is
the domain discriminator's probability that the *source* features it saw are source. Features
the discriminator finds easy to tell apart (p_s -> 1) get their task loss down-weighted."""

from __future__ import annotations

import torch

__all__ = ["task_weight"]


def task_weight(p_source: torch.Tensor, beta: float = 2.0, floor: float = 0.0, eps: float = 1e-4) -> torch.Tensor:
    """Scalar weight (detached) from the discriminator's source probabilities ``p_source`` (any
    shape, values in (0, 1), on source inputs): mean over elements of (1 - p_s) / p_s, clamped to
    [floor, beta]. The paper clamps at beta = 2 only; the authors' code also floors at 0.5."""
    p = p_source.detach().float().clamp(eps, 1 - eps)
    return ((1 - p) / p).mean().clamp(min=floor, max=beta)
