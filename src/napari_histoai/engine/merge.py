"""One rule for duplicate points: of points closer than ``radius``, keep the higher score.

Used wherever the same nucleus can be reported twice: across tile seams (the engine), across the
window seams inside a detector tile, and when a detector merges its own near-duplicate proposals.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["suppress_close"]


def suppress_close(points: np.ndarray, scores: np.ndarray, radius: float,
                   groups: Optional[np.ndarray] = None) -> np.ndarray:
    """Keep mask [N] of greedy non-maximum suppression on distance: points are visited from the
    highest score down and one is dropped when a kept point lies within ``radius`` px of it.

    points [N, 2] (y, x) px; scores [N]; ``groups`` [N] (e.g. the tile or window that reported
    each point): when given only points of *different* groups suppress each other (one tile
    never reports the same nucleus twice, two neighbours may). ``radius <= 0`` keeps all.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    keep = np.ones(len(pts), bool)
    if radius <= 0 or len(pts) < 2:
        return keep
    from scipy.spatial import cKDTree

    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    grp = None if groups is None else np.asarray(groups).reshape(-1)[order]
    alive = np.ones(len(pts), bool)
    # pairs (i, j), i < j in score order, sorted: every pair (k, i) that decides i comes first
    for i, j in sorted(cKDTree(pts[order]).query_pairs(radius)):
        if alive[i] and alive[j] and (grp is None or grp[i] != grp[j]):
            alive[j] = False
    keep[order] = alive
    return keep
