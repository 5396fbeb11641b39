"""Pairwise patch similarities (paper sec. 2.4): larger = more alike.

Each function maps a [N, D] and b [M, D] (flattened attended patches, values in [0, 1], or
features for ``cosine``) to a similarity matrix [N, M]:

* ``mse``: minus the mean squared difference (the paper's best on MoNuSeg);
* ``ce``: minus the mean binary cross-entropy (bits) of b under a (best on CoNSeP);
* ``cosine``: cosine similarity of featurised patches (the featuriser is applied by the loss).
"""

from __future__ import annotations

import torch

EPS = 1e-6


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = a.shape[1]
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return -sq.clamp_min(0) / d


def ce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = a.shape[1]
    lb = torch.log2(b.clamp(EPS, 1 - EPS))
    l1b = torch.log2((1 - b).clamp(EPS, 1 - EPS))
    return (a @ lb.T + (1 - a) @ l1b.T) / d


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(a, dim=1)
    b = torch.nn.functional.normalize(b, dim=1)
    return a @ b.T


SIMILARITIES = {"mse": mse, "ce": ce, "cosine": cosine}
FEATURISED = {"cosine"}
