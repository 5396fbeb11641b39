"""Small geometry helpers on (y, x) pixel coordinates."""

from __future__ import annotations

import numpy as np


def polygons_bbox(polys) -> tuple[float, float, float, float]:
    """(y0, x0, y1, x1) enclosing all polygons ([K, 2] (y, x) arrays)."""
    allv = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p in polys])
    return (float(allv[:, 0].min()), float(allv[:, 1].min()), float(allv[:, 0].max()), float(allv[:, 1].max()))


def points_in_polygons(points: np.ndarray, polys) -> np.ndarray:
    """Boolean [N]: which (y, x) points lie inside any of the polygons."""
    from skimage.measure import points_in_poly

    pts = np.asarray(points, float).reshape(-1, 2)
    inside = np.zeros(len(pts), bool)
    for p in polys:
        p = np.asarray(p, float).reshape(-1, 2)
        if len(p) >= 3:
            inside |= points_in_poly(pts, p)
    return inside
