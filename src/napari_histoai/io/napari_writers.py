"""npe2 writer contributions: Points -> CSV / GeoJSON, Labels -> OME-TIFF (no napari import)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .points import write_points_csv as _csv
from .points import write_points_geojson as _geojson
from .writers import write_labels_ometiff as _labels


def _layer_points(data: Any, meta: dict):
    """(yx level-0 px [N, 2], class names, scores, mpp) from a Points layer's data + meta."""
    yx = np.asarray(data, dtype=np.float64).reshape(-1, np.asarray(data).shape[-1] if np.asarray(data).size else 2)[:, -2:]
    feats = meta.get("features")
    n = len(yx)
    classes = ["nucleus"] * n
    scores = np.ones(n)
    if feats is not None and len(feats) == n:
        if "class" in feats:
            classes = [str(c) for c in feats["class"]]
        if "score" in feats:
            scores = np.asarray(feats["score"], dtype=np.float64)
    md = meta.get("metadata") or {}
    mpp = md.get("mpp")
    # layer data are in data (pixel) coordinates; the µm scale lives in the layer's `scale`
    return yx, classes, scores, mpp


def _store(meta: dict):
    """The nuclei store behind a whole-slide view's layer (it holds only the loaded window)."""
    from .point_store import PointStore

    path = (meta.get("metadata") or {}).get("point_store")
    return PointStore(path) if path and PointStore.is_store(path) else None


def write_points_csv(path: str, data: Any, meta: dict) -> list[str]:
    store = _store(meta)
    if store is not None:
        from .point_export import export_store_csv

        return [str(export_store_csv(store, path))]
    yx, c, s, mpp = _layer_points(data, meta)
    return [str(_csv(path, yx, c, s, mpp))]


def write_points_geojson(path: str, data: Any, meta: dict) -> list[str]:
    store = _store(meta)
    if store is not None:
        from .point_export import export_store_geojson

        return [str(export_store_geojson(store, path, (meta.get("metadata") or {}).get("model")))]
    yx, c, s, mpp = _layer_points(data, meta)
    return [str(_geojson(path, yx, c, s, mpp))]


def write_labels_ometiff(path: str, data: Any, meta: dict) -> list[str]:
    lab = data[0] if isinstance(data, list) else data
    mpp = (meta.get("metadata") or {}).get("mpp")
    return [str(_labels(path, np.asarray(lab), mpp=mpp))]
