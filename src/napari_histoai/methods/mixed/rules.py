"""The mixed-supervision rules of Li et al. (Algorithm 1), for point targets.

* E-step filter: a pseudo-label patch whose highest prediction score is below ``T`` is dropped
  (not trained on, its area is ignored). The paper's T = 0.4 is for its probability maps; for a
  detector the training job defaults T to the model's own operating score threshold.
* Re-weighting: a kept prediction with score s becomes a soft target of weight
  ``clip(s * V, 0, 1)``; weights below ``zero_below`` (0.01) after scaling are set to 0 (the
  point is not a target). With T = 0.4 and V = 4 every point of a patch with a confident
  nucleus counts; faint ones keep a small soft weight.
* Batch mix: fine : pseudo : negative crops at the ratio R (paper 2 : 1 : 7); kinds that have
  no data are left out and the ratio is renormalised over the others.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["reweight", "patch_filter", "mix_schedule", "KINDS", "DEFAULTS"]

KINDS = ("fine", "pseudo", "negative")
DEFAULTS = {"T": None, "V": 4.0, "zero_below": 0.01, "ratio": (2, 1, 1)}  # T None = model's threshold


def reweight(scores, V: float = 4.0, zero_below: float = 0.01) -> np.ndarray:
    """Soft target weights: ``clip(scores * V, 0, 1)``, then ``< zero_below`` -> 0."""
    w = np.clip(np.asarray(scores, dtype=np.float64) * float(V), 0.0, 1.0)
    w[w < zero_below] = 0.0
    return w


def patch_filter(points, scores, shape: Sequence[int], patch: int, T: float = 0.4,
                 area=None) -> tuple[np.ndarray, np.ndarray]:
    """Split an image of ``shape`` (h, w) into ``patch`` x ``patch`` cells; keep the cells whose
    highest point score is >= ``T``. Only cells overlapping ``area`` (bool [h, w], e.g. the
    unreviewed tissue) are considered when it is given.

    Returns (kept-cell mask upsampled to bool [h, w], keep flag per point [N])."""
    h, w = int(shape[0]), int(shape[1])
    gh, gw = -(-h // patch), -(-w // patch)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    cy = np.clip(np.floor(pts[:, 0] + 0.5).astype(int) // patch, 0, gh - 1)
    cx = np.clip(np.floor(pts[:, 1] + 0.5).astype(int) // patch, 0, gw - 1)
    best = np.full((gh, gw), -np.inf)
    np.maximum.at(best, (cy, cx), sc)
    cells = best >= T
    mask = np.kron(cells, np.ones((patch, patch), bool))[:h, :w]
    if area is not None:
        mask &= np.asarray(area, bool)
    return mask, cells[cy, cx] if len(pts) else np.zeros(0, bool)


def mix_schedule(ratio: Sequence[float], available: Sequence[bool], n: int, rng=None) -> list[str]:
    """``n`` crop kinds drawn at ``ratio`` (fine, pseudo, negative) over the ``available`` kinds.

    Deterministic proportions: the counts are the largest-remainder rounding of n * share
    (e.g. ratio 2:1:7, n = 10 -> 2 fine, 1 pseudo, 7 negative); the order is shuffled with
    ``rng`` when given. Raises ``ValueError`` when no kind with a positive ratio is available."""
    r = np.array([float(x) if a else 0.0 for x, a in zip(ratio, available)])
    if r.sum() <= 0:
        raise ValueError("no training data: mark a reviewed region (or give pseudo labels / no-target regions)")
    share = r / r.sum() * n
    counts = np.floor(share).astype(int)
    rest = n - counts.sum()
    if rest:
        order = np.argsort(-(share - counts), kind="stable")
        counts[order[:rest]] += 1
    kinds = [k for k, c in zip(KINDS, counts) for _ in range(c)]
    if rng is not None:
        rng.shuffle(kinds)
    return kinds
