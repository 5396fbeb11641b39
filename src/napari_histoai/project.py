"""A correction project: what a user did on one image, stored next to it.

``<image>.histoai/`` (or any folder) holds::

    project.json       image path, classes, current model, trained models (name, metrics)
    points.csv         y,x,class,score,source  (level-0 px; source = model | user)
    regions.geojson    Polygon features, property kind = reviewed | no_target (x, y level-0 px,
                       QuPath's frame: File > Import objects shows them as annotations)

Every file is written atomically (temporary sibling + fsync + rename, ``io.atomic``): a crash or
kill in the middle of a save leaves the previous version intact. Nothing here needs Qt.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .errors import JobError
from .io.atomic import atomic_write_text

__all__ = ["Project", "ProjectPoints", "project_dir_for", "REVIEWED", "NO_TARGET", "SOURCES"]

SUFFIX = ".histoai"
REVIEWED, NO_TARGET = "reviewed", "no_target"
REGION_NAMES = {REVIEWED: "Reviewed", NO_TARGET: "No target"}  # QuPath classification names
REGION_COLORS = {REVIEWED: [40, 200, 80], NO_TARGET: [90, 90, 90]}
SOURCES = ("model", "user")


def project_dir_for(image_path: str | os.PathLike) -> Path:
    """The project folder of an image file: ``<image path>.histoai`` next to it."""
    p = Path(image_path)
    return p.with_name(p.name.rstrip("/") + SUFFIX)


@dataclass
class ProjectPoints:
    """yx [N, 2] level-0 px; classes / sources [N] str; scores [N] float."""

    yx: np.ndarray
    classes: list
    scores: np.ndarray
    sources: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.yx)


def points_text(yx, classes: Sequence[str], scores=None, sources: Optional[Sequence[str]] = None) -> str:
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    n = len(yx)
    scores = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    sources = ["model"] * n if sources is None else list(sources)
    if not (len(classes) == len(scores) == len(sources) == n):
        raise JobError("points, classes, scores and sources must have the same length")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["y", "x", "class", "score", "source"])
    for (y, x), c, s, src in zip(yx, classes, scores, sources):
        w.writerow([f"{y:.2f}", f"{x:.2f}", str(c), f"{s:.4f}", str(src)])
    return buf.getvalue()


def parse_points(text: str, name: str = "points.csv") -> ProjectPoints:
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"y", "x"} <= set(rows[0]):
        raise JobError(f"{name} needs columns y,x")
    try:
        yx = np.array([[float(r["y"]), float(r["x"])] for r in rows], dtype=np.float64).reshape(-1, 2)
        sc = np.array([float(r.get("score") or 1.0) for r in rows], dtype=np.float64)
    except (TypeError, ValueError):
        raise JobError(f"{name} has non-numeric values") from None
    cls = [str(r.get("class") or "nucleus") for r in rows]
    src = [str(r.get("source") or "model") for r in rows]
    return ProjectPoints(yx, cls, sc, src)


def regions_geojson(regions: dict) -> dict:
    """``{kind: [polygon [K, 2] (y, x)]}`` -> FeatureCollection (x, y order, closed rings)."""
    feats = []
    for kind, polys in regions.items():
        if kind not in REGION_NAMES:
            raise JobError(f"unknown region kind {kind!r}")
        for poly in polys:
            p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
            if len(p) < 3:
                continue
            ring = [[round(float(x), 2), round(float(y), 2)] for y, x in p]
            ring.append(ring[0])
            feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                          "properties": {"objectType": "annotation", "kind": kind,
                                         "classification": {"name": REGION_NAMES[kind], "color": REGION_COLORS[kind]}}})
    return {"type": "FeatureCollection", "features": feats}


def parse_regions(doc: dict) -> dict:
    out = {REVIEWED: [], NO_TARGET: []}
    names = {v: k for k, v in REGION_NAMES.items()}
    for f in doc.get("features", []):
        props = f.get("properties") or {}
        kind = props.get("kind") or names.get((props.get("classification") or {}).get("name"))
        geom = f.get("geometry") or {}
        if kind not in out or geom.get("type") != "Polygon":
            continue
        ring = np.asarray(geom["coordinates"][0], dtype=np.float64)[:, ::-1]  # (x, y) -> (y, x)
        if len(ring) > 3 and np.allclose(ring[0], ring[-1]):
            ring = ring[:-1]
        out[kind].append(ring)
    return out


class Project:
    """One image's correction project folder (created on the first save)."""

    def __init__(self, root: str | os.PathLike, image_path: Optional[str] = None):
        self.root = Path(root)
        self._meta = self._read_meta()
        if image_path:
            self._meta["image"] = str(image_path)

    @classmethod
    def for_image(cls, image_path: str | os.PathLike) -> "Project":
        return cls(project_dir_for(image_path), str(Path(image_path).resolve()))

    # ------------------------------------------------------------------ paths
    @property
    def points_path(self) -> Path:
        return self.root / "points.csv"

    @property
    def regions_path(self) -> Path:
        return self.root / "regions.geojson"

    @property
    def meta_path(self) -> Path:
        return self.root / "project.json"

    def exists(self) -> bool:
        return self.points_path.is_file() or self.regions_path.is_file()

    # ------------------------------------------------------------------ metadata
    def _read_meta(self) -> dict:
        try:
            d = json.loads(self.meta_path.read_text(encoding="utf-8"))
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    @property
    def meta(self) -> dict:
        return self._meta

    @property
    def image_path(self) -> Optional[str]:
        return self._meta.get("image")

    def update_meta(self, **kw) -> None:
        self._meta.update(kw)
        self._meta["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write_text(self.meta_path, json.dumps(self._meta, indent=2, default=str))

    def add_model(self, name: str, folder: str, metrics: Optional[dict] = None) -> None:
        models = [m for m in self._meta.get("models", []) if m.get("name") != name]
        models.append({"name": name, "path": str(folder), "metrics": metrics or {},
                       "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        self.update_meta(models=models, model=name)

    # ------------------------------------------------------------------ points
    def save_points(self, yx, classes, scores=None, sources=None) -> Path:
        return atomic_write_text(self.points_path, points_text(yx, classes, scores, sources))

    def load_points(self) -> ProjectPoints:
        if not self.points_path.is_file():
            return ProjectPoints(np.zeros((0, 2)), [], np.zeros(0), [])
        try:
            text = self.points_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise JobError(f"cannot read {self.points_path}: {e}") from None
        return parse_points(text, str(self.points_path))

    # ------------------------------------------------------------------ regions
    def save_regions(self, reviewed=(), no_target=()) -> Path:
        doc = regions_geojson({REVIEWED: list(reviewed), NO_TARGET: list(no_target)})
        return atomic_write_text(self.regions_path, json.dumps(doc))

    def load_regions(self) -> dict:
        """``{"reviewed": [poly (y, x)], "no_target": [...]}`` (empty lists when none saved)."""
        if not self.regions_path.is_file():
            return {REVIEWED: [], NO_TARGET: []}
        try:
            doc = json.loads(self.regions_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise JobError(f"{self.regions_path} is not valid GeoJSON: {str(e).splitlines()[0]}") from None
        return parse_regions(doc)

    # ------------------------------------------------------------------ all at once
    def save(self, points: ProjectPoints, reviewed=(), no_target=(), **meta) -> None:
        self.save_points(points.yx, points.classes, points.scores, points.sources or None)
        self.save_regions(reviewed, no_target)
        self.update_meta(**meta)
