"""A correction project: what a user did on one image, stored next to it.

``<image>.histoai/`` (or any folder) holds::

    project.json       image path, classes, current model, trained models (name, metrics), and
                       the record of the last save: ``generation`` (its id) and ``files``
                       (sha256 of points.csv and regions.geojson as that save wrote them)
    points.csv         y,x,class,score,source  (level-0 px; source = model | user)
    regions.geojson    Polygon features, property kind = reviewed | no_target (x, y level-0 px,
                       QuPath's frame: File > Import objects shows them as annotations)

A save is one atomic step, whatever it writes (``save``, ``save_points``, ``save_regions``,
``update_meta``): the new points.csv / regions.geojson are written and fsynced as pending
siblings ``.<name>.<generation>``; then project.json, naming the new generation and the
checksums, replaces the old one atomically - that rename is the commit -; then the pending files
are renamed into place. A kill before the commit leaves the previous generation as it was (its
pending files are garbage that a later save removes); a kill after it leaves pending files of
the committed generation, which the next load or save renames into place. So a load always
sees the last committed generation, all three files from the same save. A file that matches
neither project.json's checksum nor a pending file (the folder edited, or copied apart while it
was being saved) is a torn project: loading reports it with one line, it never guesses.
Projects without ``files`` in project.json (written before generations) load as they are.
Saves and loads of a folder take turns (``flock`` on ``.histoai-lock``; not on Windows), so a
save in another thread or process (the GUI's autosave, a training run recording its model)
neither loses fields nor makes a load see a half-finished save. Nothing here needs Qt.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np

from .errors import JobError
from .io.atomic import atomic_write_text
from .io.points import (
    PointsTable as ProjectPoints,  # a project's points: yx, classes, scores, sources
)
from .io.points import (
    class_name,
    feature_parts,
    geojson_features,
    json_kind,
    object_type,
    points_csv_text,
    read_json,
    read_points_csv,
)
from .io.regions import outer_rings, polygons_geojson, ring_yx

__all__ = ["NO_TARGET", "REVIEWED", "SOURCES", "Project", "ProjectPoints", "project_dir_for"]

SUFFIX = ".histoai"
REVIEWED, NO_TARGET = "reviewed", "no_target"
REGION_NAMES = {REVIEWED: "Reviewed", NO_TARGET: "No target"}  # QuPath classification names
REGION_KINDS = {v: k for k, v in REGION_NAMES.items()}
REGION_COLORS = {REVIEWED: [40, 200, 80], NO_TARGET: [90, 90, 90]}
SOURCES = ("model", "user")
POINTS, REGIONS, META, LOCK = "points.csv", "regions.geojson", "project.json", ".histoai-lock"
# project.json fields the store reads, with their JSON types (null = absent)
META_TYPES = {"image": (str, "a string"), "model": (str, "a string"), "classes": (list, "a list"),
              "models": (list, "a list"), "generation": (str, "a string"), "files": (dict, "an object")}
LEFTOVER_AGE_S = 60.0  # pending files older than this are leftovers of killed saves


def project_dir_for(image_path: str | os.PathLike) -> Path:
    """The project folder of an image file: ``<image path>.histoai`` next to it."""
    p = Path(image_path)
    return p.with_name(p.name.rstrip("/") + SUFFIX)


def regions_geojson(regions: dict) -> dict:
    """``{kind: [polygon [K, 2] (y, x)]}`` -> FeatureCollection (x, y order, closed rings);
    polygons of fewer than 3 points are dropped, non-finite coordinates refused."""
    feats = []
    for kind, polys in regions.items():
        if kind not in REGION_NAMES:
            raise JobError(f"unknown region kind {kind!r}")
        feats += polygons_geojson(polys, REGION_NAMES[kind], REGION_COLORS[kind], kind=kind)["features"]
    return {"type": "FeatureCollection", "features": feats}


def _region_kind(props: dict, where: str) -> str | None:
    """``reviewed`` / ``no_target`` from the ``kind`` property (ours) or the classification name
    ("Reviewed" / "No target", as QuPath shows them); None for other features."""
    kind = props.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise JobError(f"{where}: property 'kind' must be a string, got {json_kind(kind)}")
    return kind if kind in REGION_NAMES else REGION_KINDS.get(class_name(props, where))


def parse_regions(doc, label: str = REGIONS) -> dict:
    """``{"reviewed": [poly [K, 2] (y, x)], "no_target": [...]}`` from a GeoJSON document: what
    :meth:`Project.save_regions` writes, or QuPath exports (File > Export objects).

    A region is a Polygon or MultiPolygon annotation (``objectType`` annotation or absent) whose
    kind comes from :func:`_region_kind`. Skipped, keeping the rest: other classes, detections
    and cells, other geometry types, null or empty geometries, rings of fewer than 3 points (no
    area: the writer drops them too). One-line JobError (naming ``label`` and the feature): a
    document that is not a FeatureCollection, a feature, geometry or properties that is not an
    object, a kind or class name that is not a string, missing coordinates, coordinates that are
    not nested lists of finite [x, y] numbers."""
    out = {REVIEWED: [], NO_TARGET: []}
    for i, f in enumerate(geojson_features(doc, label)):
        where = f"{label}: feature {i}"
        geom, props = feature_parts(f, where)
        kind = _region_kind(props, where)
        if kind is None or object_type(f, props) not in ("", "annotation") \
                or geom.get("type") not in ("Polygon", "MultiPolygon"):
            continue
        rings = (ring_yx(r, where) for r in outer_rings(geom, where))
        out[kind].extend(r for r in rings if r is not None)
    return out


def _points_text(yx, classes, scores=None, sources=None) -> str:
    """points.csv's text; JobError for non-finite coordinates or scores (never save what
    :func:`read_points_csv` would refuse to load)."""
    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(yx).all() or (scores is not None and not np.isfinite(scores).all()):
        raise JobError("points to save must have finite coordinates and scores")
    return points_csv_text(yx, classes, scores, sources=["model"] * len(yx) if sources is None else sources)


def _regions_text(reviewed, no_target) -> str:
    return json.dumps(regions_geojson({REVIEWED: list(reviewed), NO_TARGET: list(no_target)}))


def _sha256(path: Path) -> str | None:
    """Hex sha256 of a file's bytes; None when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise JobError(f"cannot read {path}: {e.strerror or e}") from None


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _save_lock(root: Path, create: bool):
    """Hold ``root``'s save lock: one save or load at a time, across threads and processes
    (``flock`` on ``.histoai-lock``, released when its process dies). ``create``: saves make the
    lock file; loads only use it if it exists. No lock without flock (Windows) or a lock file."""
    try:
        import fcntl

        fh = open(root / LOCK, "a" if create else "r")
    except (ImportError, OSError):
        yield
        return
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Project:
    """One image's correction project folder (created on the first save).

    Opening one reads project.json: a one-line JobError when it is not a JSON object or a field
    the store reads has the wrong type (a broken project.json is reported, never overwritten)."""

    def __init__(self, root: str | os.PathLike, image_path: str | None = None):
        self.root = Path(root)
        self._image = str(image_path) if image_path else None
        self._meta = self._meta_on_disk()
        if self._image:
            self._meta["image"] = self._image

    @classmethod
    def for_image(cls, image_path: str | os.PathLike) -> Project:
        return cls(project_dir_for(image_path), str(Path(image_path).resolve()))

    # ------------------------------------------------------------------ paths
    @property
    def points_path(self) -> Path:
        return self.root / POINTS

    @property
    def regions_path(self) -> Path:
        return self.root / REGIONS

    @property
    def meta_path(self) -> Path:
        return self.root / META

    def exists(self) -> bool:
        return self.points_path.is_file() or self.regions_path.is_file() or bool(self._meta.get("files"))

    # ------------------------------------------------------------------ metadata
    def _meta_on_disk(self) -> dict:
        """project.json as it is now ({} when there is none); one-line JobError when it is
        unreadable, not a JSON object, or a field of ``META_TYPES`` has another type."""
        if not self.meta_path.is_file():
            return {}
        d = read_json(self.meta_path, str(self.meta_path))
        if not isinstance(d, dict):
            raise JobError(f"{self.meta_path} must hold a JSON object, got {json_kind(d)}")
        for k, (t, word) in META_TYPES.items():
            if d.get(k) is not None and not isinstance(d[k], t):
                raise JobError(f"{self.meta_path}: field {k!r} must be {word}, got {json_kind(d[k])}")
        return d

    @property
    def meta(self) -> dict:
        return self._meta

    @property
    def image_path(self) -> str | None:
        return self._meta.get("image")

    def update_meta(self, **kw) -> None:
        """Set project.json fields (a save of its own: see :meth:`_commit`)."""
        self._commit({}, **kw)

    def add_model(self, name: str, folder: str, metrics: dict | None = None) -> None:
        """Record a trained model (replacing one of the same name) and make it current."""
        models = [m for m in self._meta_on_disk().get("models") or []
                  if not (isinstance(m, dict) and m.get("name") == name)]
        models.append({"name": name, "path": str(folder), "metrics": metrics or {}, "saved": _now()})
        self.update_meta(models=models, model=name)

    # ------------------------------------------------------------------ saving
    def _pending(self, name: str, generation) -> Path:
        return self.root / f".{name}.{generation}"

    def _roll_forward(self, record: dict) -> None:
        """Rename the pending files of ``record``'s generation into place: finishes a save that
        was killed after its commit (a no-op when there are none)."""
        gen = record.get("generation")
        if not (isinstance(gen, str) and gen.isalnum()):  # none, or not one this store wrote
            return
        for name in set(record.get("files") or {}) & {POINTS, REGIONS}:
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._pending(name, gen), self.root / name)

    def _remove_leftovers(self) -> None:
        """Delete pending files of killed saves, once a minute old (where there is no save lock, a
        save in progress elsewhere keeps its own); ``io.atomic`` cleans project.json's temporaries."""
        old = time.time() - LEFTOVER_AGE_S
        for name in (POINTS, REGIONS):
            for p in self.root.glob(f".{name}.*"):
                with contextlib.suppress(OSError):
                    if p.stat().st_mtime < old:
                        p.unlink()

    def _commit(self, texts: dict, **meta) -> None:
        """Make ``texts`` ({file name: new content}) and the ``meta`` fields the next generation
        in one atomic step (the module docstring tells how). Fields others wrote to project.json
        since this object read it are kept."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _save_lock(self.root, create=True):
            disk = self._meta_on_disk()
            self._roll_forward(disk)
            gen = uuid.uuid4().hex[:12]
            files = dict(disk.get("files") or {})
            for name, text in texts.items():
                data = text.encode("utf-8")
                _write_synced(self._pending(name, gen), data)
                files[name] = hashlib.sha256(data).hexdigest()
            record = {**disk, **({"image": self._image} if self._image else {}), **meta,
                      "generation": gen, "files": files, "updated": _now()}
            atomic_write_text(self.meta_path, json.dumps(record, indent=2, default=str))  # the commit
            self._meta = record
            self._roll_forward(record)
            self._remove_leftovers()

    def _read_committed(self, name: str, read, empty):
        """``read(path)`` of file ``name`` as the last committed save left it (``empty`` when
        there is none), under the save lock; finishes that save first if it was killed after its
        commit. One-line JobError for a torn project."""
        with _save_lock(self.root, create=False):
            record = self._meta_on_disk()
            try:
                self._roll_forward(record)
            except OSError as e:
                raise JobError(f"cannot finish the interrupted save of {self.root}: {e.strerror or e}") from None
            path, want = self.root / name, (record.get("files") or {}).get(name)
            if want is not None and _sha256(path) != want:
                state = "is missing" if not path.exists() else "is not the file"
                raise JobError(f"project {self.root} is torn: {name} {state} its last save wrote (generation "
                               f"{record.get('generation')} in {META}); the folder was edited or copied apart")
            return read(path) if path.is_file() else empty

    def save(self, points: ProjectPoints, reviewed=(), no_target=(), **meta) -> None:
        """Points, regions and ``meta`` fields as one generation: all or nothing, even if killed."""
        self._commit({POINTS: _points_text(points.yx, points.classes, points.scores, points.sources or None),
                      REGIONS: _regions_text(reviewed, no_target)}, **meta)

    # ------------------------------------------------------------------ points
    def save_points(self, yx, classes, scores=None, sources=None) -> Path:
        """Save the points alone (the autosave): a generation that writes points.csv and the
        small project.json; atomic like every save."""
        self._commit({POINTS: _points_text(yx, classes, scores, sources)})
        return self.points_path

    def load_points(self) -> ProjectPoints:
        """The points of the last committed save (none when never saved); one-line JobError for a
        torn project or a bad file (see :func:`read_points_csv`: finite numbers only)."""
        return self._read_committed(POINTS, read_points_csv, ProjectPoints(np.zeros((0, 2)), [], np.zeros(0), []))

    # ------------------------------------------------------------------ regions
    def save_regions(self, reviewed=(), no_target=(), **meta) -> Path:
        """Save the regions alone (and ``meta`` fields), as one generation."""
        self._commit({REGIONS: _regions_text(reviewed, no_target)}, **meta)
        return self.regions_path

    def load_regions(self) -> dict:
        """``{"reviewed": [poly (y, x)], "no_target": [...]}`` of the last committed save (empty
        lists when none saved); one-line JobError for a torn project or a bad file, features it
        cannot use skipped (see :func:`parse_regions`)."""
        return self._read_committed(REGIONS, lambda p: parse_regions(read_json(p, str(p)), str(p)),
                                    {REVIEWED: [], NO_TARGET: []})
