"""AC-Former's set criterion with per-target weights and ignored areas (mixed supervision).

Targets per view: ``{"points": [G, 2], "labels": [G], "weights": [G] in (0, 1],
"ignore": bool [h, w] (optional)}``. A matched proposal's class target is its target's weight
(a soft label, the paper's soft-label cross entropy, here inside the focal loss) and its L1 term
is scaled by the weight. Unmatched proposals whose (detached) point falls in ``ignore`` get no
classification loss: they are neither true nor false there. Everything else is the parent's
:class:`~napari_histoai.methods.detection.loss.SetCriterion` (deep supervision, label -1 =
nucleus of unknown class, focal weights); the normaliser is the sum of the weights.
"""

from __future__ import annotations

import torch

from ..detection.loss import SetCriterion, sigmoid_focal

__all__ = ["WeightedCriterion"]


class WeightedCriterion(SetCriterion):
    def single(self, out: dict, targets: list, n_norm: float):
        logits, points = out["pred_logits"], out["pred_points"]
        idx = self.matcher(out, targets)
        tgt = torch.zeros_like(logits)
        keep = torch.ones(logits.shape[:2], dtype=logits.dtype, device=logits.device)
        l1 = logits.new_zeros(())
        unk_logits, unk_w = [], []
        for b, t in enumerate(targets):
            qi, ti = idx[b]
            qi, ti = qi.to(logits.device), ti.to(logits.device)
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
                unk_w.append(wt[~known])
            l1 = l1 + ((points[b, qi] - t["points"][ti].to(points)).abs().sum(-1) * wt).sum()
        cls = (sigmoid_focal(logits, tgt, self.alpha, self.gamma) * keep[..., None]).sum()
        if unk_logits:
            u = torch.cat(unk_logits)
            cls = cls + sigmoid_focal(u, torch.cat(unk_w), self.alpha, self.gamma).sum()
        return cls / n_norm, l1 / n_norm

    def normaliser(self, targets: list) -> float:
        """Sum of the target weights (pseudo labels count by their confidence), at least 1."""
        return max(1.0, float(sum(float(t["weights"].sum()) if t.get("weights") is not None else len(t["labels"])
                                  for t in targets)))

