"""Tiling with overlap over any image level, and seam-safe stitching of points and labels.

Coordinates are (row, col) = (y, x) pixels of the level being tiled. Every tile has a *core*:
the cores of all tiles partition the region exactly, so assigning each result to the tile whose
core holds it reports every object once; the overlap around the core gives the model context
and lets objects that cross a core border be seen whole by one tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .merge import suppress_close

__all__ = ["Tile", "tile_grid", "stitch_points", "LabelStitcher"]


@dataclass(frozen=True)
class Tile:
    """A window ``[y0:y1, x0:x1]`` to read and its core ``[cy0:cy1, cx0:cx1]`` (same frame)."""

    y0: int
    x0: int
    y1: int
    x1: int
    cy0: int
    cx0: int
    cy1: int
    cx1: int
    index: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def core_contains(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Boolean mask of global points (y, x) that fall in this tile's core."""
        return (y >= self.cy0) & (y < self.cy1) & (x >= self.cx0) & (x < self.cx1)


def _axis_starts(lo: int, hi: int, tile: int, step: int) -> list[int]:
    if hi - lo <= tile:
        return [lo]
    starts = list(range(lo, hi - tile, step))
    starts.append(hi - tile)  # last tile flush with the end: full-size tiles only
    return sorted(set(starts))


def tile_grid(
    shape: Sequence[int],
    tile: int = 512,
    overlap: int = 64,
    region: Optional[Sequence[int]] = None,
) -> list[Tile]:
    """Tiles of side ``tile`` (px) with ``overlap`` (px) covering ``region`` = (y0, x0, y1, x1).

    ``shape`` is (H, W[, C]) of the level; the region defaults to the whole level and is clipped
    to it. Cores split each overlap in the middle, so cores tile the region without gaps.
    """
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile > overlap >= 0, got tile={tile}, overlap={overlap}")
    h, w = int(shape[0]), int(shape[1])
    y0, x0, y1, x1 = (0, 0, h, w) if region is None else [int(round(v)) for v in region]
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(h, y1), min(w, x1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"empty region {region} for an image of shape {(h, w)}")
    step = tile - overlap
    ys = _axis_starts(y0, y1, tile, step)
    xs = _axis_starts(x0, x1, tile, step)

    def cores(starts: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
        out = []
        for i, s in enumerate(starts):
            e = min(s + tile, hi)
            c0 = lo if i == 0 else (s + min(starts[i - 1] + tile, hi)) // 2
            c1 = hi if i == len(starts) - 1 else (starts[i + 1] + e) // 2
            out.append((c0, c1))
        return out

    ycores, xcores = cores(ys, y0, y1), cores(xs, x0, x1)
    tiles = []
    for iy, ty in enumerate(ys):
        for ix, tx in enumerate(xs):
            tiles.append(
                Tile(
                    ty, tx, min(ty + tile, y1), min(tx + tile, x1),
                    ycores[iy][0], xcores[ix][0], ycores[iy][1], xcores[ix][1],
                    index=len(tiles),
                )
            )
    return tiles


def stitch_points(
    per_tile: Sequence[tuple[Tile, np.ndarray, np.ndarray, np.ndarray]],
    merge_radius: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-tile detections into one set: every nucleus once, none lost at a seam.

    ``per_tile``: (tile, points [N, 2] global (y, x) px, classes [N] int, scores [N] float).
    Each tile keeps the points in its core; then pairs from *different* tiles closer than
    ``merge_radius`` px (the same nucleus localised slightly differently on either side of a
    seam) are merged, keeping the higher score. Returns (points [M, 2], classes [M], scores [M]).
    """
    pts, cls, scs, src = [], [], [], []
    for tile, p, c, s in per_tile:
        p = np.asarray(p, dtype=np.float64).reshape(-1, 2)
        keep = tile.core_contains(p[:, 0], p[:, 1])
        pts.append(p[keep])
        cls.append(np.asarray(c).reshape(-1)[keep])
        scs.append(np.asarray(s, dtype=np.float64).reshape(-1)[keep])
        src.append(np.full(int(keep.sum()), tile.index))
    if not pts:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros(0)
    p, c, s, t = (np.concatenate(a) for a in (pts, cls, scs, src))
    keep = suppress_close(p, s, merge_radius, groups=t)
    return p[keep], c[keep].astype(np.int64), s[keep]


class LabelStitcher:
    """Write per-tile instance labels into one array so that each object gets one id.

    An object is kept from the tile whose core holds its centroid, provided it does not touch a
    tile border that is not an image/region border (with overlap larger than the largest object,
    the tile that owns its centroid sees it whole). Kept objects are written with fresh ids;
    pixels already written by a neighbour are not overwritten. ``out`` may be a numpy array or a
    zarr array (streamed to disk) of shape (H, W) in the frame of the tiles.
    """

    def __init__(self, out, region: Optional[Sequence[int]] = None):
        self.out = out
        h, w = out.shape[:2]
        self.region = (0, 0, h, w) if region is None else tuple(int(v) for v in region)
        self.next_id = 1

    def add(self, tile: Tile, labels: np.ndarray) -> int:
        """Add the labels [h, w] (0 = background) predicted for ``tile``. Returns objects kept."""
        from scipy import ndimage as ndi

        labels = np.asarray(labels)
        if labels.shape != tile.shape:
            raise ValueError(f"labels {labels.shape} do not match tile {tile.shape}")
        ids = np.unique(labels)
        ids = ids[ids != 0]
        if len(ids) == 0:
            return 0
        ry0, rx0, ry1, rx1 = self.region
        slices = ndi.find_objects(labels)
        coms = ndi.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, ids)
        y0, x0 = tile.y0, tile.x0
        block = np.asarray(self.out[tile.y0:tile.y1, tile.x0:tile.x1])
        kept = 0
        for lab, com in zip(ids, coms):
            sl = slices[int(lab) - 1]
            if sl is None:
                continue
            gy, gx = com[0] + y0, com[1] + x0
            if not (tile.cy0 <= gy < tile.cy1 and tile.cx0 <= gx < tile.cx1):
                continue
            touches = (
                (sl[0].start == 0 and tile.y0 > ry0)
                or (sl[1].start == 0 and tile.x0 > rx0)
                or (sl[0].stop == labels.shape[0] and tile.y1 < ry1)
                or (sl[1].stop == labels.shape[1] and tile.x1 < rx1)
            )
            if touches:
                continue
            m = (labels[sl] == lab) & (block[sl] == 0)
            if not m.any():
                continue
            block[sl][m] = self.next_id
            self.next_id += 1
            kept += 1
        self.out[tile.y0:tile.y1, tile.x0:tile.x1] = block
        return kept
