"""Set criterion: Hungarian matching, then sigmoid focal classification loss over all proposals
(unmatched proposals get the empty target: all classes 0) and L1 on matched points, with deep
supervision over the encoder proposals and every decoder layer.

Targets per image: ``{"points": [G, 2] (y, x) normalised to [0, 1], "labels": [G] int64}`` and,
optionally (mixed supervision, pseudo labels):

* ``"weights"`` [G] in [0, 1] (default 1): a matched proposal's class target is its target's
  weight (a soft label inside the focal loss) and its L1 term is scaled by the weight;
* ``"ignore"`` bool [h, w] over the view: unmatched proposals whose (detached) point falls in it
  get no classification loss (neither true nor false there).

Targets with label -1 (unknown class) are positives for detection: their proposal's per-class
terms are left out and a focal term pushes its highest class probability to the target weight
instead. All terms are divided by the sum of the target weights in the batch (the number of
target points when no weights are given), at least 1.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from .matcher import build_matcher

__all__ = ["SetCriterion", "build_criterion"]


class SetCriterion(nn.Module):
    """``forward(outputs, targets) -> (total, parts)``; ``parts`` holds detached per-term
    values (``class``, ``point``, summed over the supervised sets)."""

    def __init__(self, cfg):
        super().__init__()
        self.matcher = build_matcher(cfg)
        self.w_class, self.w_point = cfg.loss_class, cfg.loss_point
        self.alpha, self.gamma = cfg.focal_alpha, cfg.focal_gamma

    def focal(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Elementwise focal loss (Lin et al. 2017), same shape as ``logits``."""
        return sigmoid_focal_loss(logits, targets, self.alpha, self.gamma, reduction="none")

    def single(self, out: dict, targets: list, n_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(class, point) loss of one supervised set: ``pred_logits`` [B, Q, K], ``pred_points``
        [B, Q, 2] against the B targets."""
        logits, points = out["pred_logits"], out["pred_points"]
        idx = self.matcher(out, targets)
        tgt = torch.zeros_like(logits)
        keep = torch.ones(logits.shape[:2], dtype=logits.dtype, device=logits.device)
        l1 = logits.new_zeros(())
        unk_logits, unk_tgt = [], []
        for b, t in enumerate(targets):
            qi, ti = (i.to(logits.device) for i in idx[b])
            ign = t.get("ignore")
            if ign is not None and bool(ign.any()):
                h, w = ign.shape
                p = points[b].detach()
                iy = (p[:, 0] * h).long().clamp(0, h - 1)
                ix = (p[:, 1] * w).long().clamp(0, w - 1)
                drop = ign.to(logits.device)[iy, ix].clone()
                drop[qi] = False
                keep[b, drop] = 0.0
            if len(qi) == 0:
                continue
            lab = t["labels"][ti]
            wt = t.get("weights")
            wt = torch.ones(len(ti), dtype=logits.dtype, device=logits.device) if wt is None else wt.to(logits)[ti]
            known = lab >= 0
            tgt[b, qi[known], lab[known]] = wt[known]
            keep[b, qi[~known]] = 0.0
            if (~known).any():
                unk_logits.append(logits[b, qi[~known]].max(-1)[0])
                unk_tgt.append(wt[~known])
            err = (points[b, qi] - t["points"][ti].to(points)).abs()
            l1 = l1 + (err.sum() if t.get("weights") is None else (err.sum(-1) * wt).sum())
        cls = (self.focal(logits, tgt) * keep[..., None]).sum()
        if unk_logits:
            cls = cls + self.focal(torch.cat(unk_logits), torch.cat(unk_tgt)).sum()
        return cls / n_norm, l1 / n_norm

    def normaliser(self, targets: list) -> float:
        """Sum of the target weights (the number of points where no weights are given), at least 1."""
        return max(1.0, float(sum(float(t["weights"].sum()) if t.get("weights") is not None else len(t["labels"])
                                  for t in targets)))

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
