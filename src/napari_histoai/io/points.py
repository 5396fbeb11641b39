"""Nuclei points in and out, the one codec for every points file of the package: CSV
(``y,x,class[,score][,source]``: exports, training data, correction projects) and GeoJSON that
QuPath imports.

Points are (y, x) level-0 pixels. When a pixel size was used (the file's, given, or assumed),
CSV exports add ``y_um,x_um`` and an ``mpp`` column that states it, and GeoJSON a top-level
``properties`` with ``mpp`` and where it came from. GeoJSON uses x, y order (GeoJSON
convention, QuPath's pixel frame), one ``Point`` feature per nucleus with ``objectType:
detection`` and ``classification {name, color}``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..classes import class_color
from ..errors import JobError
from .atomic import atomic_write_text


@dataclass
class PointsTable:
    """yx [N, 2] float px; classes [N] str ("nucleus" when absent); scores [N] float (1.0 when
    absent); sources [N] str, ``model`` or ``user`` ("model" when absent)."""

    yx: np.ndarray
    classes: list = field(default_factory=list)
    scores: Optional[np.ndarray] = None
    sources: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.yx)


def read_points_csv(path: str | os.PathLike) -> PointsTable:
    """Read a points CSV with header ``y,x[,class][,score][,source]`` (extra columns ignored)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"cannot read {p.name}: {e}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return PointsTable(np.zeros((0, 2)), [], np.zeros(0), [])
    header = [h.strip().lower() for h in rows[0]]
    if "y" not in header or "x" not in header:
        raise JobError(f"{p.name}: a points CSV needs a header with 'y' and 'x' columns (got {','.join(header)})")
    iy, ix = header.index("y"), header.index("x")
    col = {k: header.index(k) if k in header else None for k in ("class", "score", "source")}

    def cell(r, k):
        i = col[k]
        return r[i].strip() if i is not None and i < len(r) and r[i].strip() else None

    yx, cls, sc, src = [], [], [], []
    for n, r in enumerate(rows[1:], start=2):
        if not r or all(not v.strip() for v in r):
            continue
        try:
            y, x = float(r[iy]), float(r[ix])
            s = float(cell(r, "score") or 1.0)
        except (ValueError, IndexError):
            raise JobError(f"{p.name} line {n}: expected numbers in y,x and score (got {','.join(r)})") from None
        if not (np.isfinite(y) and np.isfinite(x) and np.isfinite(s)):
            raise JobError(f"{p.name} line {n}: y, x and score must be finite numbers")
        yx.append((y, x))
        cls.append(cell(r, "class") or "nucleus")
        sc.append(s)
        src.append(cell(r, "source") or "model")
    return PointsTable(np.array(yx, dtype=np.float64).reshape(-1, 2), cls, np.array(sc, dtype=np.float64), src)


def points_csv_text(yx: np.ndarray, classes: Sequence[str], scores: Optional[Sequence[float]] = None,
                    mpp: Optional[float] = None, sources: Optional[Sequence[str]] = None) -> str:
    """CSV text: ``y,x,class,score`` (level-0 px), ``source`` when given, and ``y_um,x_um,mpp``
    when a pixel size ``mpp`` (µm/px) was used."""
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    n = len(yx)
    scores = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(classes) != n or len(scores) != n or (sources is not None and len(sources) != n):
        raise JobError("points, classes, scores and sources must have the same length")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["y", "x", "class", "score"] + (["source"] if sources is not None else [])
               + (["y_um", "x_um", "mpp"] if mpp else []))
    for i, ((y, x), c, s) in enumerate(zip(yx, classes, scores)):
        row = [f"{y:.2f}", f"{x:.2f}", str(c), f"{s:.4f}"] + ([str(sources[i])] if sources is not None else [])
        if mpp:
            row += [f"{y * mpp:.3f}", f"{x * mpp:.3f}", f"{mpp:g}"]
        w.writerow(row)
    return buf.getvalue()


def write_points_csv(path, yx, classes, scores=None, mpp: Optional[float] = None, sources=None) -> Path:
    """Write ``y,x,class,score`` (level-0 px) plus ``y_um,x_um,mpp`` when a pixel size ``mpp``
    (µm/px) was used, atomically."""
    return atomic_write_text(path, points_csv_text(yx, classes, scores, mpp, sources))


def points_geojson(yx, classes, scores=None, mpp: Optional[float] = None, mpp_source: Optional[str] = None,
                   model: Optional[str] = None) -> dict:
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    scores = np.ones(len(yx)) if scores is None else np.asarray(scores, dtype=np.float64)
    order = {c: i for i, c in enumerate(dict.fromkeys(classes))}
    feats = []
    for (y, x), c, s in zip(yx, classes, scores):
        rgb = [int(round(255 * v)) for v in class_color(c, order[c])]
        feats.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(float(x), 2), round(float(y), 2)]},
            "properties": {
                "objectType": "detection",
                "classification": {"name": str(c), "color": rgb},
                "measurements": {"score": round(float(s), 4)},
            },
        })
    out = {"type": "FeatureCollection", "features": feats}
    props = {"units": "pixels"}
    if mpp:
        props["mpp"] = mpp
    if mpp_source:
        props["mpp_source"] = mpp_source
    if model:
        props["model"] = model
    out["properties"] = props
    return out


def write_points_geojson(path, yx, classes, scores=None, mpp: Optional[float] = None,
                         mpp_source: Optional[str] = None, model: Optional[str] = None) -> Path:
    """A FeatureCollection QuPath imports (File > Import objects): one Point per nucleus, and the
    pixel size used (``mpp``, ``mpp_source``: file | given | assumed) in its properties."""
    return atomic_write_text(path, json.dumps(points_geojson(yx, classes, scores, mpp, mpp_source, model)))


def read_points_geojson(path: str | os.PathLike) -> PointsTable:
    """Read Point / MultiPoint features (e.g. exported from QuPath); polygons are skipped."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JobError(f"{p.name} is not valid GeoJSON: {str(e).splitlines()[0]}") from None
    feats = doc.get("features") if isinstance(doc, dict) else doc if isinstance(doc, list) else None
    if feats is None and isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    if not isinstance(feats, list):
        raise JobError(f"{p.name}: expected a GeoJSON FeatureCollection")
    yx, cls, sc = [], [], []
    for i, f in enumerate(feats):
        try:
            geom = f["geometry"]
            props = f.get("properties") or {}
            c = (props.get("classification") or {}).get("name") or props.get("class") or "nucleus"
            s = float((props.get("measurements") or {}).get("score", 1.0))
            coords = [geom["coordinates"]] if geom["type"] == "Point" else geom["coordinates"] if geom["type"] == "MultiPoint" else []
            for xy in coords:
                yx.append((float(xy[1]), float(xy[0])))
                cls.append(str(c))
                sc.append(s)
        except (KeyError, TypeError, ValueError, IndexError):
            raise JobError(f"{p.name}: feature {i} is malformed") from None
    return PointsTable(np.array(yx, dtype=np.float64).reshape(-1, 2), cls, np.array(sc))


def read_points(path: str | os.PathLike) -> PointsTable:
    """CSV or GeoJSON by extension."""
    low = str(path).lower()
    if low.endswith((".geojson", ".json")):
        return read_points_geojson(path)
    return read_points_csv(path)
