"""The E-step of the EM rounds (Li et al., Algorithm 1) on predicted patch maps, and the
image-only baseline's selection; pure NumPy, on top of :mod:`..mixed_supervision`.

E-step (:func:`e_step`), for the slides without drawn regions:
* every patch whose maximum probability is below ``T`` is dropped;
* a kept patch of a tumour slide becomes a soft pseudo label ``clip(p * V, 0, 1)`` with values
  below ``zero_below`` set to 0 (:func:`..mixed_supervision.soft_labels`);
* a kept patch of a non-tumour slide becomes an all-zero hard negative. When fewer than
  ``min_negatives`` negative patches pass ``T`` (a model that already says nothing on the
  negatives), the most confident negative patches fill the pool up to that number, so the
  2 : 1 : 7 batches keep their negatives (our addition; the paper's data never ran out).

Image-only baseline (:func:`mil_selection`, Campanella et al.): per slide the ``k`` patches with
the highest maximum probability get the slide label as a whole-patch hard label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..mixed_supervision import DEFAULTS, soft_labels

__all__ = ["EStep", "e_step", "mil_selection"]


@dataclass
class EStep:
    """pseudo: [(slide, patch, soft target [h, w] float32)]; negatives: [(slide, patch)];
    dropped: number of patches below T."""

    pseudo: list = field(default_factory=list)
    negatives: list = field(default_factory=list)
    dropped: int = 0


def e_step(probs: Sequence[np.ndarray], labels: Sequence[int], skip: Sequence[bool] = (), *,
           T: float = DEFAULTS["T"], V: float = DEFAULTS["V"], zero_below: float = DEFAULTS["zero_below"],
           min_negatives: int = 0, all_negatives: bool = False) -> EStep:
    """Pseudo labels and hard negatives from per-slide patch maps ``probs[i]`` [N_i, h, w] in
    [0, 1] and slide ``labels`` (1 tumour / 0 not); slides flagged in ``skip`` (those with drawn
    regions: they keep their fine labels) are left out. ``all_negatives``: every patch of a
    non-tumour slide is a negative, not only those above ``T``."""
    out = EStep()
    neg_below = []  # (max prob, slide, patch) of negative patches under T
    for i, (pm, lab) in enumerate(zip(probs, labels)):
        if i < len(skip) and skip[i]:
            continue
        pm = np.asarray(pm, np.float32)
        mx = pm.reshape(len(pm), -1).max(1) if len(pm) else np.zeros(0)
        for j in range(len(pm)):
            if mx[j] < T and not (all_negatives and not lab):
                out.dropped += 1
                if not lab:
                    neg_below.append((float(mx[j]), i, j))
                continue
            if lab:
                out.pseudo.append((i, j, soft_labels(pm[j], V, zero_below)))
            else:
                out.negatives.append((i, j))
    short = int(min_negatives) - len(out.negatives)
    if short > 0 and neg_below:
        neg_below.sort(key=lambda t: -t[0])
        out.negatives += [(i, j) for _, i, j in neg_below[:short]]
        out.dropped -= min(short, len(neg_below))
    return out


def mil_selection(probs: Sequence[np.ndarray], labels: Sequence[int], k: int = 1) -> list:
    """[(slide, patch, label)] for the ``k`` patches of each slide with the highest maximum
    probability (Campanella's top-k multiple-instance training)."""
    out = []
    for i, (pm, lab) in enumerate(zip(probs, labels)):
        pm = np.asarray(pm)
        if not len(pm):
            continue
        mx = pm.reshape(len(pm), -1).max(1)
        for j in np.argsort(-mx, kind="stable")[: max(1, int(k))]:
            out.append((i, int(j), int(lab)))
    return out
