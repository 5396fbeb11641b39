"""The numbers pathologists report from a nuclei store: counts and densities per class, for the
whole slide and for drawn regions, and the per-class density pyramid a viewer shows zoomed out.

Areas are in mm² (from the store's µm/px); without a pixel size they are in Mpx² (10⁶ px²) and
the unit says so. The whole slide's area is the area of the density bins that hold at least one
nucleus (``bin`` level-0 px squares, 32 µm at 0.5 µm/px): the tissue the detector found nuclei in,
not the glass around it. Nothing here needs Qt.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .atomic import atomic_write_text
from .point_store import PointStore

__all__ = ["density_pyramid", "region_summary", "slide_summary", "summary_csv_text", "write_summary_csv",
           "polygon_area_px"]


def _area_unit(store: PointStore) -> tuple[float, str]:
    """(level-0 px² per unit area, unit name)."""
    if store.mpp:
        return (1000.0 / store.mpp) ** 2, "mm²"
    return 1e6, "Mpx²"


def density_pyramid(store: PointStore, counts: Optional[np.ndarray] = None, min_size: int = 64) -> list[np.ndarray]:
    """Per-class nuclei per area unit (mm², see the module docstring), as a pyramid: level l is
    [K, h0 / 2**l, w0 / 2**l] float32 on a grid of ``store.bin * 2**l`` level-0 px (level 0
    padded so that every level halves exactly). ``counts`` (default: the store's current ones)."""
    counts = store.density_counts() if counts is None else counts
    k, h, w = counts.shape
    n = 1
    while max(h, w) / 2 ** n >= min_size:
        n += 1
    f = 2 ** (n - 1)
    lvl = np.zeros((k, -(-h // f) * f, -(-w // f) * f), np.float64)
    lvl[:, :h, :w] = counts
    per_unit, _ = _area_unit(store)
    out = []
    for i in range(n):
        side = store.bin * 2 ** i
        out.append((lvl * (per_unit / side ** 2)).astype(np.float32))
        if i < n - 1:
            lvl = lvl.reshape(k, lvl.shape[1] // 2, 2, lvl.shape[2] // 2, 2).sum(axis=(2, 4))
    return out


def polygon_area_px(poly) -> float:
    """Area (level-0 px²) of a simple polygon [K, 2] (y, x) (shoelace formula)."""
    p = np.asarray(poly, float).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    y, x = p[:, 0], p[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _rows(store: PointStore, region: str, counts: np.ndarray, area_px: float) -> list[dict]:
    per_unit, unit = _area_unit(store)
    area = area_px / per_unit
    rows = [{"region": region, "class": c, "count": int(n), f"area_{unit}": area,
             f"nuclei_per_{unit}": (n / area if area > 0 else 0.0)} for c, n in zip(store.classes, counts)]
    total = int(np.sum(counts))
    rows.append({"region": region, "class": "all", "count": total, f"area_{unit}": area,
                 f"nuclei_per_{unit}": (total / area if area > 0 else 0.0)})
    return rows


def slide_summary(store: PointStore) -> list[dict]:
    """One row per class (and ``all``): count, area, nuclei per area unit, for the whole slide."""
    dc = store.density_counts()
    occupied = int((dc.sum(axis=0) > 0).sum())
    return _rows(store, "slide", dc.sum(axis=(1, 2)), occupied * float(store.bin) ** 2)


def region_summary(store: PointStore, polygons: Sequence, name: str = "region") -> list[dict]:
    """Rows as :func:`slide_summary` for the union of ``polygons`` ([K, 2] (y, x) level-0 px;
    assumed not to overlap): the points inside them and the sum of their areas."""
    from skimage.measure import points_in_poly

    counts = np.zeros(len(store.classes), np.int64)
    area = 0.0
    for poly in polygons:
        p = np.asarray(poly, float).reshape(-1, 2)
        if len(p) < 3:
            continue
        area += polygon_area_px(p)
        pts = store.query(p[:, 0].min(), p[:, 1].min(), np.nextafter(p[:, 0].max(), np.inf),
                          np.nextafter(p[:, 1].max(), np.inf))
        inside = points_in_poly(pts.yx.astype(np.float64), p) if len(pts) else np.zeros(0, bool)
        counts += np.bincount(pts.cls[inside].astype(np.int64), minlength=len(counts))[: len(counts)]
    return _rows(store, name, counts, area)


def summary_csv_text(rows: Sequence[dict]) -> str:
    """CSV: region,class,count,area_<unit>,nuclei_per_<unit> (unit mm², or Mpx² without µm/px)."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def write_summary_csv(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    return atomic_write_text(path, summary_csv_text(rows))
