"""Set criterion: Hungarian matching, then sigmoid focal classification loss over all proposals
(unmatched proposals get the empty target: all classes 0) and L1 on matched points, with deep
supervision over the encoder proposals and every decoder layer.

Targets with label -1 (unknown class) are positives for detection: their proposal's per-class
terms are left out and a focal term pushes its highest class probability to 1 instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .matcher import build_matcher

__all__ = ["SetCriterion", "sigmoid_focal", "build_criterion"]


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Elementwise focal loss (Lin et al. 2017), same shape as ``logits``."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


class SetCriterion(nn.Module):
    """``forward(outputs, targets) -> (total, parts)``; ``parts`` holds detached per-term
    values (``class``, ``point``, summed over the supervised sets)."""

    def __init__(self, cfg):
        super().__init__()
        self.matcher = build_matcher(cfg)
        self.w_class, self.w_point = cfg.loss_class, cfg.loss_point
        self.alpha, self.gamma = cfg.focal_alpha, cfg.focal_gamma

    def single(self, out: dict, targets: list, n_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits, points = out["pred_logits"], out["pred_points"]
        idx = self.matcher(out, targets)
        onehot = torch.zeros_like(logits)
        keep = torch.ones(logits.shape[:2], dtype=logits.dtype, device=logits.device)
        l1 = logits.new_zeros(())
        unk_logits = []
        for b, (qi, ti) in enumerate(idx):
            if len(qi) == 0:
                continue
            qi, ti = qi.to(logits.device), ti.to(logits.device)
            lab = targets[b]["labels"][ti]
            known = lab >= 0
            onehot[b, qi[known], lab[known]] = 1.0
            keep[b, qi[~known]] = 0.0
            if (~known).any():
                unk_logits.append(logits[b, qi[~known]].max(-1)[0])
            l1 = l1 + (points[b, qi] - targets[b]["points"][ti].to(points)).abs().sum()
        cls = (sigmoid_focal(logits, onehot, self.alpha, self.gamma) * keep[..., None]).sum()
        if unk_logits:
            u = torch.cat(unk_logits)
            cls = cls + sigmoid_focal(u, torch.ones_like(u), self.alpha, self.gamma).sum()
        return cls / n_norm, l1 / n_norm

    def normaliser(self, targets: list) -> float:
        """Loss normaliser: the number of target points in the batch (at least 1)."""
        return max(1.0, float(sum(len(t["labels"]) for t in targets)))

    def forward(self, outputs: dict, targets: list) -> tuple[torch.Tensor, dict]:
        n_norm = self.normaliser(targets)
        sets = [outputs] + list(outputs.get("aux_outputs", []))
        if "enc_outputs" in outputs:
            sets.append(outputs["enc_outputs"])
        cls_sum = outputs["pred_logits"].new_zeros(())
        pt_sum = outputs["pred_logits"].new_zeros(())
        for out in sets:
            c, p = self.single(out, targets, n_norm)
            cls_sum, pt_sum = cls_sum + c, pt_sum + p
        total = self.w_class * cls_sum + self.w_point * pt_sum
        return total, {"class": float(cls_sum.detach()), "point": float(pt_sum.detach())}


def build_criterion(cfg) -> SetCriterion:
    return SetCriterion(cfg)
