"""Hungarian matching of point proposals to target points (focal class cost + L1 point cost).

Targets per image: ``{"points": [G, 2] (y, x) in [0, 1], "labels": [G] int64}``; label -1 is a
nucleus of unknown class ("unlabeled"): its class cost uses the highest class probability
(it must be detected, whatever its class).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["HungarianMatcher", "focal_class_cost", "build_matcher"]


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Focal classification cost [N, G] of logits [N, K] against labels [G] (-1 = unknown class)."""
    p = logits.sigmoid()
    neg = (1 - alpha) * p.pow(gamma) * -(1 - p + 1e-8).log()
    pos = alpha * (1 - p).pow(gamma) * -(p + 1e-8).log()
    cost_all = pos - neg  # [N, K]
    known = labels >= 0
    cost = torch.empty(logits.shape[0], labels.shape[0], dtype=logits.dtype, device=logits.device)
    if known.any():
        cost[:, known] = cost_all[:, labels[known]]
    if (~known).any():
        pm = p.max(-1)[0]
        c = alpha * (1 - pm).pow(gamma) * -(pm + 1e-8).log() - (1 - alpha) * pm.pow(gamma) * -(1 - pm + 1e-8).log()
        cost[:, ~known] = c[:, None]
    return cost


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising ``w_class * focal cost + w_point * L1`` (normalised
    coordinates). ``forward(outputs, targets)`` -> list over the batch of (pred_idx [T], tgt_idx
    [T]) int64, T = min(Q, G)."""

    def __init__(self, cost_class: float = 2.0, cost_point: float = 5.0, alpha: float = 0.25, gamma: float = 2.0):
        super().__init__()
        self.cost_class, self.cost_point, self.alpha, self.gamma = cost_class, cost_point, alpha, gamma

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list) -> list:
        logits, points = outputs["pred_logits"], outputs["pred_points"]  # [B, Q, K], [B, Q, 2]
        result = []
        for b, t in enumerate(targets):
            g = len(t["labels"])
            if g == 0:
                e = torch.zeros(0, dtype=torch.int64)
                result.append((e, e))
                continue
            c = self.cost_class * focal_class_cost(logits[b].float(), t["labels"], self.alpha, self.gamma)
            c = c + self.cost_point * torch.cdist(points[b].float(), t["points"].float(), p=1)
            r, k = linear_sum_assignment(c.cpu().numpy())
            result.append((torch.as_tensor(r, dtype=torch.int64), torch.as_tensor(k, dtype=torch.int64)))
        return result


def build_matcher(cfg) -> HungarianMatcher:
    return HungarianMatcher(cfg.cost_class, cfg.cost_point, cfg.focal_alpha, cfg.focal_gamma)
