"""The mixed-supervision rules of Li et al. (Algorithm 1; METHODS.md section 4), shared by every
trainer that learns from fine labels, a model's own pseudo labels and hard negatives: the nuclei
detector fine-tuning from user corrections (``detection.finetune``) and, later, slide heatmaps
(patch segmentation with soft pseudo labels). Nothing here knows about a particular model.

* E-step filter (:func:`patch_filter`): a pseudo-label patch whose highest score is below ``T``
  is dropped (not trained on, its area is ignored). Scores are given at points: detections for a
  point detector, or the pixels (or local maxima) of a probability map.
* Re-weighting (:func:`reweight`, :func:`soft_labels`): a kept score s becomes a soft target
  ``clip(s * V, 0, 1)``; values below ``zero_below`` (0.01) after scaling are set to 0 (no
  target). With T = 0.4 and V = 4 everything in a patch with a confident prediction counts;
  faint predictions keep a small soft weight.
* Batch mix (:func:`mix_schedule`): fine : pseudo : negative crops at the ratio R (paper
  2 : 1 : 7); kinds that have no data are left out and the ratio is renormalised over the others.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["reweight", "soft_labels", "patch_filter", "mix_schedule", "KINDS", "DEFAULTS"]

KINDS = ("fine", "pseudo", "negative")
DEFAULTS = {"T": 0.4, "V": 4.0, "zero_below": 0.01, "ratio": (2, 1, 7)}  # the paper's settings


def reweight(scores, V: float = DEFAULTS["V"], zero_below: float = DEFAULTS["zero_below"]) -> np.ndarray:
    """Soft target weights float64, same shape as ``scores`` (probabilities in [0, 1]):
    ``clip(scores * V, 0, 1)``, then ``< zero_below`` -> 0."""
    w = np.clip(np.asarray(scores, dtype=np.float64) * float(V), 0.0, 1.0)
    w[w < zero_below] = 0.0
    return w


def soft_labels(prob_map, V: float = DEFAULTS["V"], zero_below: float = DEFAULTS["zero_below"]) -> np.ndarray:
    """A probability map (float [..., h, w] in [0, 1]) as a soft pseudo-label map float32 of the
    same shape: the :func:`reweight` rule per pixel."""
    return reweight(prob_map, V, zero_below).astype(np.float32)


def patch_filter(points, scores, shape: Sequence[int], patch: int, T: float = DEFAULTS["T"],
                 area=None) -> tuple[np.ndarray, np.ndarray]:
    """Split an image of ``shape`` (h, w) px into ``patch`` x ``patch`` cells; keep the cells
    whose highest score is >= ``T``. ``points`` [N, 2] (y, x) px carry the ``scores`` [N]; cells
    with no point are dropped. Only cells overlapping ``area`` (bool [h, w], e.g. the unlabelled
    tissue) are kept when it is given.

    Returns (kept-cell mask bool [h, w], keep flag per point bool [N])."""
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
    """``n`` crop kinds (of :data:`KINDS`) drawn at ``ratio`` (fine, pseudo, negative) over the
    ``available`` kinds.

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
