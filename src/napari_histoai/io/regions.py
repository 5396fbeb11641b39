"""Drawn regions in and out: GeoJSON polygons (ours or QuPath's *File > Export objects*).

Polygons are [K, 2] float (y, x) level-0 px, without the closing point; GeoJSON stores them as
closed rings in (x, y) order, QuPath's pixel frame. Used by the correction projects (reviewed /
no-target regions) and by the tumour heatmaps (drawn tumour regions). Holes are ignored: a region
is its outline. Every bad input gives a one-line ``JobError``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import JobError
from .atomic import atomic_write_text
from .points import (
    class_name,
    feature_parts,
    geojson_features,
    json_kind,
    object_type,
    position,
    read_json,
)

__all__ = ["outer_rings", "polygons_geojson", "rasterise_polygons", "read_polygons", "ring_yx", "write_polygons"]


def outer_rings(geom: dict, where: str) -> list:
    """The outer ring of a Polygon, of each polygon of a MultiPolygon; empty polygons give none."""
    kind = geom["type"]
    if "coordinates" not in geom:
        raise JobError(f"{where}: {kind} without coordinates")
    polys = [geom["coordinates"]] if kind == "Polygon" else geom["coordinates"]
    if not isinstance(polys, list) or not all(isinstance(rings, list) for rings in polys):
        raise JobError(f"{where}: {kind} coordinates must be nested lists of [x, y] positions")
    return [rings[0] for rings in polys if rings]


def ring_yx(ring, where: str) -> np.ndarray | None:
    """A GeoJSON ring as [K, 2] (y, x) without its closing point; None when fewer than 3 points
    remain (no area)."""
    if not isinstance(ring, list):
        raise JobError(f"{where}: a polygon ring must be a list of [x, y] positions, got {json_kind(ring)}")
    yx = np.array([position(xy, where) for xy in ring], dtype=np.float64).reshape(-1, 2)
    if len(yx) > 1 and (yx[0] == yx[-1]).all():
        yx = yx[:-1]
    return yx if len(yx) >= 3 else None


def read_polygons(path: str | os.PathLike, classes: Sequence[str] | None = None) -> list[np.ndarray]:
    """The polygon annotations of a GeoJSON file as [K, 2] (y, x) level-0 px arrays.

    ``classes``: keep only features whose class name is one of these (case-insensitive) or that
    have no class; None keeps all. Detections, cells, points and lines are skipped."""
    p = Path(path)
    keep = None if classes is None else {c.lower() for c in classes}
    out = []
    for i, f in enumerate(geojson_features(read_json(p), p.name)):
        where = f"{p.name}: feature {i}"
        geom, props = feature_parts(f, where)
        if object_type(f, props) not in ("", "annotation") or geom.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        name = class_name(props, where)
        if keep is not None and name is not None and name.lower() not in keep:
            continue
        out.extend(r for r in (ring_yx(r, where) for r in outer_rings(geom, where)) if r is not None)
    return out


def polygons_geojson(polys, name: str = "Tumor", color: int = -3670016, kind: str | None = None) -> dict:
    """Polygons [K, 2] (y, x) -> a FeatureCollection of annotations classified ``name`` (closed
    rings, x, y order); polygons of fewer than 3 points are dropped, non-finite ones refused."""
    feats = []
    for poly in polys:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(p) < 3:
            continue
        if not np.isfinite(p).all():
            raise JobError(f"a {kind or name} region has non-finite coordinates")
        ring = [[round(float(x), 2), round(float(y), 2)] for y, x in p]
        ring.append(ring[0])
        props = {"objectType": "annotation", "classification": {"name": name, "color": color}}
        if kind is not None:
            props["kind"] = kind
        feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props})
    return {"type": "FeatureCollection", "features": feats}


def write_polygons(path: str | os.PathLike, polys, name: str = "Tumor") -> Path:
    """Write polygons as QuPath-compatible GeoJSON annotations, atomically."""
    import json

    return atomic_write_text(path, json.dumps(polygons_geojson(polys, name)))


def rasterise_polygons(polys, shape: Sequence[int], downsample: float = 1.0,
                       origin: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """Union of polygons [K, 2] (y, x) level-0 px as bool [h, w] on a grid of ``downsample``
    level-0 px per pixel whose top-left pixel starts at level-0 ``origin``; pixel (i, j) is
    inside when its centre is."""
    from skimage.draw import polygon

    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), bool)
    for poly in polys:
        p = (np.asarray(poly, np.float64).reshape(-1, 2) - np.asarray(origin, np.float64)) / float(downsample) - 0.5
        rr, cc = polygon(p[:, 0], p[:, 1], shape=(h, w))
        mask[rr, cc] = True
    return mask
