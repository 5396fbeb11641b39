"""Nuclei points in and out, the one codec for every points file of the package: CSV
(``y,x,class[,score][,source]``: exports, training data, correction projects) and GeoJSON that
QuPath imports.

Points are (y, x) level-0 pixels. When a pixel size was used (the file's, given, or assumed),
CSV exports add ``y_um,x_um`` and an ``mpp`` column that states it, and GeoJSON a top-level
``properties`` with ``mpp`` and where it came from. GeoJSON uses x, y order (GeoJSON
convention, QuPath's pixel frame), one ``Point`` feature per nucleus with ``objectType:
detection`` and ``classification {name, color}``. The GeoJSON reader also takes QuPath's
exports (see :func:`read_points_geojson`); its helpers (:func:`read_json`,
:func:`geojson_features`, :func:`feature_parts`, :func:`class_name`, :func:`position`) read the
regions of correction projects too. Every bad input gives a one-line ``JobError``.
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


def read_csv_rows(path: str | os.PathLike, what: str = "") -> list[list[str]]:
    """The rows of a UTF-8 CSV file (a BOM allowed); one-line JobError naming the file (as
    ``what`` + its name) when it cannot be read or parsed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"cannot read {what}{p.name}: {e}") from None
    try:
        return list(csv.reader(io.StringIO(text)))
    except csv.Error as e:  # e.g. a field longer than the csv module's limit
        raise JobError(f"{p.name} is not a readable CSV: {e}") from None


def read_points_csv(path: str | os.PathLike) -> PointsTable:
    """Read a points CSV with header ``y,x[,class][,score][,source]`` (extra columns ignored).
    y, x and score must be finite numbers (NaN, inf and 1e400 are rejected, as in GeoJSON); any
    bad line gives a one-line JobError naming it."""
    p = Path(path)
    rows = read_csv_rows(p)
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
    yx, scores = _finite_points(yx, classes, scores)
    n = len(yx)
    if sources is not None and len(sources) != n:
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


def _finite_points(yx, classes, scores) -> tuple[np.ndarray, np.ndarray]:
    """(yx [N, 2], scores [N]) as float arrays; one-line ``JobError`` for mismatched lengths or
    values that are not finite (NaN is not valid JSON, and the readers refuse it)."""
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    scores = np.ones(len(yx)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(classes) != len(yx) or len(scores) != len(yx):
        raise JobError("points, classes and scores must have the same length")
    if not (np.isfinite(yx).all() and np.isfinite(scores).all()):
        raise JobError("cannot write points with NaN or infinite coordinates or scores")
    return yx, scores


def points_geojson(yx, classes, scores=None, mpp: Optional[float] = None, mpp_source: Optional[str] = None,
                   model: Optional[str] = None) -> dict:
    yx, scores = _finite_points(yx, classes, scores)
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


def json_kind(v) -> str:
    """The JSON name of a value's type, for error messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def _short(v, n: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def finite_number(v) -> Optional[float]:
    """``v`` as a float when it is a finite JSON number (not a boolean, not NaN or infinite,
    1e400 parses to inf); else ``None``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer literal too large for a float
        return None
    return f if np.isfinite(f) else None


def read_json(path: str | os.PathLike, label: Optional[str] = None):
    """The JSON value of a file (UTF-8, a BOM allowed). One-line JobError, naming the file as
    ``label`` (default its name), when it cannot be read, is not UTF-8, is not JSON or is nested
    too deeply to parse."""
    p = Path(path)
    label = label or p.name
    try:
        data = p.read_bytes()
    except OSError as e:
        raise JobError(f"cannot read {label}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise JobError(f"{label} is not UTF-8 text (invalid byte at offset {e.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise JobError(f"{label}: JSON nested too deeply to read") from None
    except ValueError as e:
        raise JobError(f"{label} is not valid JSON: {str(e).splitlines()[0]}") from None


def geojson_features(doc, label: str) -> list:
    """The features of a FeatureCollection, of a single Feature, or of a bare list of features
    (older QuPath exports); one-line JobError for anything else (``features`` null or not a
    list, a file that is a number, a string, null...)."""
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        return [doc]
    feats = doc.get("features") if isinstance(doc, dict) else doc
    if not isinstance(feats, list):
        what = (f"the file holds {json_kind(doc)}" if not isinstance(doc, dict)
                else f"'features' is {json_kind(feats)}" if "features" in doc else "'features' is missing")
        raise JobError(f"{label}: expected a GeoJSON FeatureCollection with a list of features; {what}")
    return feats


def feature_parts(f, where: str) -> tuple[dict, dict]:
    """(geometry, properties) of a feature, ``{}`` for null or missing ones; an empty list counts
    as no properties (some writers emit ``[]`` for ``{}``). One-line JobError when the feature,
    its geometry or its properties are something else."""
    if not isinstance(f, dict):
        raise JobError(f"{where} is {json_kind(f)}, not a GeoJSON Feature object")
    geom, props = f.get("geometry") or {}, f.get("properties") or {}
    for name, v in (("geometry", geom), ("properties", props)):
        if not isinstance(v, dict):
            raise JobError(f"{where}: {name} must be an object, got {json_kind(v)}")
    return geom, props


# QuPath 0.2 said what an object is in the feature's id
QUPATH_02_IDS = {"PathAnnotationObject": "annotation", "PathDetectionObject": "detection",
                 "PathCellObject": "cell", "PathTileObject": "tile"}


def object_type(f: dict, props: dict) -> str:
    """QuPath's object type, lower case (``annotation``, ``detection``, ``cell``...):
    ``properties.objectType`` (QuPath 0.3+), ``objectType`` beside the properties, or the
    feature ``id`` of QuPath 0.2 exports (``PathAnnotationObject``...); "" when absent."""
    t = props.get("objectType", f.get("objectType"))
    if not isinstance(t, str):
        fid = f.get("id")
        t = QUPATH_02_IDS.get(fid, "") if isinstance(fid, str) else ""
    return t.lower()


def class_name(props: dict, where: str) -> Optional[str]:
    """A feature's class: ``classification.name`` (QuPath: ``{"name", "color"}`` or
    ``{"name", "colorRGB"}``), a ``classification`` string (older QuPath exports) or a ``class``
    property; ``None`` when absent. One-line JobError when it is not a string."""
    c = props.get("classification")
    if isinstance(c, dict):
        c = c.get("name")
    if c is None:
        c = props.get("class")
    if c is not None and not isinstance(c, str):
        raise JobError(f"{where}: the class name must be a string, got {json_kind(c)}")
    return c or None


def position(xy, where: str) -> tuple[float, float]:
    """(y, x) of a GeoJSON position ``[x, y(, z)]`` of finite numbers; one-line JobError else."""
    if not isinstance(xy, list) or len(xy) < 2:
        raise JobError(f"{where}: a position must be [x, y], got {_short(xy)}")
    x, y = finite_number(xy[0]), finite_number(xy[1])
    if x is None or y is None:
        raise JobError(f"{where}: coordinates must be finite numbers, got {_short(xy)}")
    return y, x


def _score(props: dict, where: str) -> float:
    """The ``score`` measurement: ours ``{"score": s}`` (also QuPath 0.4+'s ``{name: value}``)
    or QuPath 0.2's list of ``{"name", "value"}``; 1.0 when there is none."""
    m = props.get("measurements")
    if isinstance(m, list):
        s = next((e.get("value") for e in m if isinstance(e, dict) and e.get("name") == "score"), 1.0)
    else:
        s = m.get("score", 1.0) if isinstance(m, dict) else 1.0
    f = finite_number(s)
    if f is None:
        raise JobError(f"{where}: the score must be a finite number, got {_short(s)}")
    return f


def _point_positions(geom: dict, where: str) -> list:
    """The positions of a Point or MultiPoint geometry; [] for other (or no) geometries."""
    kind = geom.get("type")
    if kind not in ("Point", "MultiPoint"):
        return []
    if "coordinates" not in geom:
        raise JobError(f"{where}: {kind} without coordinates")
    c = geom["coordinates"]
    if c == []:  # an empty geometry (RFC 7946: may be read as null)
        return []
    if kind == "MultiPoint" and not isinstance(c, list):
        raise JobError(f"{where}: MultiPoint coordinates must be a list of positions, got {json_kind(c)}")
    return [c] if kind == "Point" else c


def read_points_geojson(path: str | os.PathLike) -> PointsTable:
    """Read the points of a GeoJSON file: what :func:`write_points_geojson` writes, and QuPath
    exports (File > Export objects): detections and annotations (QuPath's Points tool makes
    MultiPoint annotations) alike. Every Point / MultiPoint position is a nucleus; other
    geometries (polygons: cells, regions) and null geometries are skipped.

    Class: see :func:`class_name` ("nucleus" when absent). Score: see :func:`_score`.
    Coordinates and scores must be finite JSON numbers. Anything else gives a one-line
    JobError naming the feature."""
    p = Path(path)
    yx, cls, sc = [], [], []
    for i, f in enumerate(geojson_features(read_json(p), p.name)):
        where = f"{p.name}: feature {i}"
        geom, props = feature_parts(f, where)
        positions = _point_positions(geom, where)
        if not positions:
            continue
        c, s = class_name(props, where) or "nucleus", _score(props, where)
        for xy in positions:
            yx.append(position(xy, where))
            cls.append(c)
            sc.append(s)
    return PointsTable(np.array(yx, dtype=np.float64).reshape(-1, 2), cls, np.array(sc, dtype=np.float64))


def read_points(path: str | os.PathLike) -> PointsTable:
    """CSV or GeoJSON by extension."""
    low = str(path).lower()
    if low.endswith((".geojson", ".json")):
        return read_points_geojson(path)
    return read_points_csv(path)
