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

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import JobError
from .io.atomic import atomic_write_text
from .io.points import (
    PointsTable as ProjectPoints,  # a project's points: yx, classes, scores, sources
)
from .io.points import points_csv_text, read_points_csv

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
        n = len(np.asarray(yx).reshape(-1, 2))
        return atomic_write_text(self.points_path, points_csv_text(yx, classes, scores,
                                                                    sources=["model"] * n if sources is None else sources))

    def load_points(self) -> ProjectPoints:
        if not self.points_path.is_file():
            return ProjectPoints(np.zeros((0, 2)), [], np.zeros(0), [])
        return read_points_csv(self.points_path)

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
