"""Whole-slide nuclei on disk: a columnar store that a viewer reads by region and a correction
edits point by point, each edit durable as soon as it is made (it survives ``kill -9``).

A store is a folder (``<image>.histoai/nuclei.points`` in a correction project, or any
``*.points`` folder the CLI writes)::

    store.sqlite        the commit record and the edits (sqlite, WAL, synchronous=FULL):
                        table ``info``  key -> JSON value: classes, mpp, shape, bucket, bin,
                                        generation, n (base rows), next_id
                        table ``edits`` id, y, x, cls, score, source, deleted: the current state
                                        of every point a user added, moved, re-classed or deleted
    base-<generation>/  the points as the last write or compaction left them, sorted by bucket
                        (``bucket`` level-0 px squares, row-major): y.npy, x.npy float32 level-0
                        px; cls.npy int16 (index into ``classes``); score.npy float32; source.npy
                        uint8 (0 model, 1 user); offsets.npy int64 [nby * nbx + 1] (bucket b is
                        rows offsets[b]:offsets[b + 1]); counts.npy uint32 [K, H/bin, W/bin]
                        per-class nuclei per ``bin`` px square (the density pyramid's base)

Ids: base rows are ids 0..n-1, added points get ``next_id`` onwards; a compaction renumbers.
A region query reads (memory-mapped) only the buckets the box touches, then applies the edits.
Writing a base (``create``, ``compact``) is atomic: the folder is written and fsynced first, then
one sqlite transaction names the new generation (and clears the edits it folded in): that
transaction is the commit; a kill before it leaves the previous generation. Nothing here needs Qt.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from ..errors import JobError

__all__ = ["PointStore", "Points", "SOURCES", "BUCKET_PX", "BIN_PX"]

SOURCES = ("model", "user")
BUCKET_PX = 1024   # side of a spatial bucket (level-0 px): a region query reads whole buckets
BIN_PX = 64        # side of a density bin at the pyramid's base (level-0 px)
DB = "store.sqlite"
COLUMNS = {"y": np.float32, "x": np.float32, "cls": np.int16, "score": np.float32, "source": np.uint8}
LEFTOVER_AGE_S = 60.0


@dataclass
class Points:
    """A set of store points: ids [N] int64; yx [N, 2] float32 level-0 px; cls [N] int16 (index
    into the store's ``classes``); score [N] float32; source [N] uint8 (0 model, 1 user)."""

    ids: np.ndarray
    yx: np.ndarray
    cls: np.ndarray
    score: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def empty() -> "Points":
        return Points(np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros(0, np.int16),
                      np.zeros(0, np.float32), np.zeros(0, np.uint8))

    def take(self, keep) -> "Points":
        return Points(self.ids[keep], self.yx[keep], self.cls[keep], self.score[keep], self.source[keep])

    @staticmethod
    def concat(parts: Sequence["Points"]) -> "Points":
        parts = [p for p in parts if len(p)] or [Points.empty()]
        return Points(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("ids", "yx", "cls", "score", "source")))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr))
        fh.flush()
        os.fsync(fh.fileno())


def _grid(shape, step: int) -> tuple[int, int]:
    return max(1, -(-int(shape[0]) // step)), max(1, -(-int(shape[1]) // step))


def bin_counts(yx: np.ndarray, cls: np.ndarray, n_classes: int, shape, bin_px: int, sign: int = 1,
               out: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-class counts [K, ceil(H/bin), ceil(W/bin)] (int64) of points (y, x level-0 px)."""
    gh, gw = _grid(shape, bin_px)
    if out is None:
        out = np.zeros((n_classes, gh, gw), np.int64)
    if len(yx):
        by = np.clip((yx[:, 0] // bin_px).astype(np.int64), 0, gh - 1)
        bx = np.clip((yx[:, 1] // bin_px).astype(np.int64), 0, gw - 1)
        flat = (cls.astype(np.int64) * gh + by) * gw + bx
        out += sign * np.bincount(flat, minlength=out.size).reshape(out.shape)
    return out


class PointStore:
    """An open store (see the module docstring). ``query`` may run in a worker thread while
    another thread edits: the edits are held in memory under a lock, sqlite is the durable copy."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / DB).is_file():
            raise JobError(f"{self.path} is not a nuclei store (no {DB})")
        self._lock = threading.RLock()
        self._db = self._connect(self.path)
        info = {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM info")}
        try:
            self.classes: list = list(info["classes"])
            self.mpp: Optional[float] = info.get("mpp")
            self.shape: tuple = tuple(int(v) for v in info["shape"])
            self.bucket, self.bin = int(info["bucket"]), int(info["bin"])
            self.generation: str = info["generation"]
            self.n_base, self.next_id = int(info["n"]), int(info["next_id"])
            self.attrs: dict = dict(info.get("attrs") or {})
        except (KeyError, TypeError, ValueError) as e:
            raise JobError(f"{self.path / DB}: incomplete store record ({e})") from None
        base = self.path / f"base-{self.generation}"
        try:
            self._cols = {k: np.load(base / f"{k}.npy", mmap_mode="r") for k in COLUMNS}
            self._offsets = np.load(base / "offsets.npy")
            self._base_counts = np.load(base / "counts.npy")
        except (OSError, ValueError) as e:
            raise JobError(f"cannot read the points of {self.path}: {e}") from None
        self.version = 0  # +1 per edit: tells a reader whether what it queried is still current
        self._edits: dict = {}
        for row in self._db.execute("SELECT id, y, x, cls, score, source, deleted FROM edits"):
            self._edits[int(row[0])] = tuple(row[1:])
        self._edit_arrays = None
        self._remove_leftovers()

    # ------------------------------------------------------------------ creation
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path / DB), check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS edits (id INTEGER PRIMARY KEY, y REAL, x REAL, cls INTEGER,"
                   " score REAL, source INTEGER, deleted INTEGER)")
        return db

    @classmethod
    def create(cls, path: str | os.PathLike, yx, class_ids, classes: Sequence[str], scores=None, sources=None,
               *, shape: Optional[Sequence[int]] = None, mpp: Optional[float] = None, attrs: Optional[dict] = None,
               bucket: int = BUCKET_PX, bin_px: int = BIN_PX) -> "PointStore":
        """Write points (yx [N, 2] level-0 px, class_ids [N] into ``classes``, scores [N], sources
        [N] 0/1 or names) as a new store at ``path``, or as the new generation of the store there
        (its edits are dropped: they belonged to the points replaced). ``shape`` (H, W) level-0 px
        of the slide (default: the points' extent). Atomic (see the module docstring)."""
        path = Path(path)
        yx = np.asarray(yx, np.float64).reshape(-1, 2)
        n = len(yx)
        cid = np.asarray(class_ids, np.int64).reshape(-1)
        sc = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32).reshape(-1)
        if sources is None:
            src = np.zeros(n, np.uint8)
        else:
            src = np.asarray([SOURCES.index(s) if isinstance(s, str) else int(s) for s in sources], np.uint8) \
                if not isinstance(sources, np.ndarray) or sources.dtype.kind in "OUS" else sources.astype(np.uint8)
        if len(cid) != n or len(sc) != n or len(src) != n:
            raise JobError("points, classes, scores and sources must have the same length")
        if not (np.isfinite(yx).all() and np.isfinite(sc).all()):
            raise JobError("points to store must have finite coordinates and scores")
        if n and (cid.min() < 0 or cid.max() >= len(classes)):
            raise JobError("class ids must index the class names")
        if shape is None:
            shape = (int(yx[:, 0].max()) + 1, int(yx[:, 1].max()) + 1) if n else (1, 1)
        shape = (int(shape[0]), int(shape[1]))
        if n and (yx.min() < 0 or yx[:, 0].max() >= shape[0] or yx[:, 1].max() >= shape[1]):
            raise JobError(f"points lie outside the slide ({shape[0]} x {shape[1]} px)")
        path.mkdir(parents=True, exist_ok=True)
        db = cls._connect(path)
        try:
            gen = _write_base(path, yx, cid, sc, src, len(classes), shape, bucket, bin_px)
            info = {"classes": list(map(str, classes)), "mpp": mpp, "shape": list(shape), "bucket": bucket,
                    "bin": bin_px, "generation": gen, "n": n, "next_id": n, "attrs": attrs or {},
                    "created": time.time()}
            with _transaction(db):
                db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
                db.execute("DELETE FROM edits")
        finally:
            db.close()
        return cls(path)

    @staticmethod
    def is_store(path: str | os.PathLike) -> bool:
        return (Path(path) / DB).is_file()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ reading
    @property
    def n_edits(self) -> int:
        return len(self._edits)

    def _edited(self) -> tuple[np.ndarray, Points, np.ndarray]:
        """(ids of every edited point [E] sorted, the edits' current state, deleted [E] bool)."""
        with self._lock:
            if self._edit_arrays is None:
                ids = np.array(sorted(self._edits), np.int64)
                rows = np.array([self._edits[i] for i in ids], np.float64).reshape(-1, 6)
                pts = Points(ids, rows[:, 0:2].astype(np.float32), rows[:, 2].astype(np.int16),
                             rows[:, 3].astype(np.float32), rows[:, 4].astype(np.uint8))
                self._edit_arrays = (ids, pts, rows[:, 5].astype(bool))
            return self._edit_arrays

    def _base_rows(self, r0: int, r1: int) -> Points:
        c = self._cols
        y, x = np.asarray(c["y"][r0:r1]), np.asarray(c["x"][r0:r1])
        return Points(np.arange(r0, r1, dtype=np.int64), np.stack([y, x], 1), np.asarray(c["cls"][r0:r1]),
                      np.asarray(c["score"][r0:r1]), np.asarray(c["source"][r0:r1]))

    def query(self, y0: float, x0: float, y1: float, x1: float) -> Points:
        """The current points with y0 <= y < y1 and x0 <= x < x1 (level-0 px), edits applied."""
        nby, nbx = _grid(self.shape, self.bucket)
        b = self.bucket
        by0, by1 = max(0, int(y0 // b)), min(nby - 1, int(np.ceil(y1 / b)) - 1)
        bx0, bx1 = max(0, int(x0 // b)), min(nbx - 1, int(np.ceil(x1 / b)) - 1)
        parts = []
        for by in range(by0, by1 + 1):
            if bx1 < bx0:
                break
            r0, r1 = int(self._offsets[by * nbx + bx0]), int(self._offsets[by * nbx + bx1 + 1])
            if r1 > r0:
                parts.append(self._base_rows(r0, r1))
        base = Points.concat(parts)
        ids, edits, deleted = self._edited()
        if len(ids):
            base = base.take(~np.isin(base.ids, ids, assume_unique=True))
            base = Points.concat([base, edits.take(~deleted)])
        yy, xx = base.yx[:, 0], base.yx[:, 1]
        return base.take((yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1))

    def iter_points(self, rows: int = 1 << 20) -> Iterator[Points]:
        """Every current point, in chunks of at most ``rows`` base rows (edits come last)."""
        ids, edits, deleted = self._edited()
        for r0 in range(0, self.n_base, rows):
            part = self._base_rows(r0, min(self.n_base, r0 + rows))
            yield part.take(~np.isin(part.ids, ids, assume_unique=True)) if len(ids) else part
        if len(ids):
            yield edits.take(~deleted)

    def get(self, ids) -> Points:
        """The current state of points by id (deleted ones included; unknown ids: JobError)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        eids, edits, _ = self._edited()
        pos = np.searchsorted(eids, ids)
        hit = (pos < len(eids)) & (eids[np.minimum(pos, max(len(eids) - 1, 0))] == ids) if len(eids) else np.zeros(len(ids), bool)
        if ((~hit) & ((ids < 0) | (ids >= self.n_base))).any():
            raise JobError("unknown point id")
        out = Points(ids.copy(), np.zeros((len(ids), 2), np.float32), np.zeros(len(ids), np.int16),
                     np.zeros(len(ids), np.float32), np.zeros(len(ids), np.uint8))
        b = ~hit
        if b.any():
            c = self._cols
            out.yx[b] = np.stack([c["y"][ids[b]], c["x"][ids[b]]], 1)
            for f, k in (("cls", "cls"), ("score", "score"), ("source", "source")):
                getattr(out, f)[b] = c[k][ids[b]]
        if hit.any():
            e = edits.take(pos[hit])
            out.yx[hit], out.cls[hit], out.score[hit], out.source[hit] = e.yx, e.cls, e.score, e.source
        return out

    def class_counts(self) -> np.ndarray:
        """Current number of nuclei per class [K] (int64)."""
        k = len(self.classes)
        out = np.zeros(k, np.int64)
        base = self._base_counts.sum(axis=(1, 2), dtype=np.int64)
        out[: len(base)] = base
        ids, edits, deleted = self._edited()
        if len(ids):
            old = ids[ids < self.n_base]
            out -= np.bincount(np.asarray(self._cols["cls"][old], np.int64), minlength=k)[:k]
            out += np.bincount(edits.cls[~deleted].astype(np.int64), minlength=k)[:k]
        return out

    def density_counts(self) -> np.ndarray:
        """Current per-class counts per density bin [K, ceil(H/bin), ceil(W/bin)] (int64)."""
        k = len(self.classes)
        out = np.zeros((k,) + _grid(self.shape, self.bin), np.int64)
        kb = self._base_counts.shape[0]
        out[:kb] = self._base_counts
        ids, edits, deleted = self._edited()
        if len(ids):
            old = ids < self.n_base
            if old.any():
                base = self._base_rows_at(ids[old])
                bin_counts(base.yx, base.cls, k, self.shape, self.bin, sign=-1, out=out)
            live = edits.take(~deleted)
            bin_counts(live.yx, live.cls, k, self.shape, self.bin, out=out)
        return out

    def _base_rows_at(self, ids: np.ndarray) -> Points:
        c = self._cols
        return Points(ids, np.stack([c["y"][ids], c["x"][ids]], 1), np.asarray(c["cls"][ids]),
                      np.asarray(c["score"][ids]), np.asarray(c["source"][ids]))

    def __len__(self) -> int:
        return int(self.class_counts().sum())

    # ------------------------------------------------------------------ editing
    def class_index(self, name: str) -> int:
        """Index of a class name, added to the store's classes (durably) when new."""
        with self._lock:
            if name not in self.classes:
                self.classes.append(str(name))
                with _transaction(self._db):
                    self._db.execute("INSERT OR REPLACE INTO info VALUES ('classes', ?)", (json.dumps(self.classes),))
            return self.classes.index(name)

    def new_ids(self, n: int) -> np.ndarray:
        """Reserve ``n`` ids for added points (persisted with the next ``put``)."""
        with self._lock:
            ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
            self.next_id += n
            return ids

    def put(self, pts: Points, deleted=None) -> None:
        """Record the current state of points (one sqlite transaction, fsynced: durable when this
        returns). ``deleted`` [N] bool marks deletions."""
        n = len(pts)
        if not n:
            return
        dl = np.zeros(n, bool) if deleted is None else np.asarray(deleted, bool).reshape(-1)
        if not np.isfinite(pts.yx[~dl]).all():
            raise JobError("edited points must have finite coordinates")
        rows = [(int(i), float(y), float(x), int(c), float(s), int(src), int(d))
                for i, (y, x), c, s, src, d in zip(pts.ids, pts.yx, pts.cls, pts.score, pts.source, dl)]
        with self._lock:
            with _transaction(self._db):
                self._db.executemany("INSERT OR REPLACE INTO edits VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("INSERT OR REPLACE INTO info VALUES ('next_id', ?)", (json.dumps(self.next_id),))
            for r in rows:
                self._edits[r[0]] = r[1:]
            self._edit_arrays = None
            self.version += 1

    def add(self, yx, cls, score=None, source: int = 1) -> np.ndarray:
        """Add points (yx [N, 2], class indices [N]); -> their ids."""
        yx = np.asarray(yx, np.float32).reshape(-1, 2)
        ids = self.new_ids(len(yx))
        sc = np.ones(len(yx), np.float32) if score is None else np.asarray(score, np.float32)
        self.put(Points(ids, yx, np.asarray(cls, np.int16).reshape(-1), sc, np.full(len(yx), source, np.uint8)))
        return ids

    def delete(self, ids) -> None:
        pts = self.get(ids)
        self.put(pts, deleted=np.ones(len(pts), bool))

    def set_class(self, ids, cls: int) -> None:
        pts = self.get(ids)
        pts.cls[:], pts.source[:], pts.score[:] = cls, 1, 1.0
        self.put(pts)

    def compact(self) -> None:
        """Fold the edits into a new base generation (atomic; renumbers ids)."""
        with self._lock:
            pts = Points.concat(list(self.iter_points()))
            gen = _write_base(self.path, pts.yx.astype(np.float64), pts.cls.astype(np.int64), pts.score, pts.source,
                              len(self.classes), self.shape, self.bucket, self.bin)
            with _transaction(self._db):
                for k, v in (("generation", gen), ("n", len(pts)), ("next_id", len(pts))):
                    self._db.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (k, json.dumps(v)))
                self._db.execute("DELETE FROM edits")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fresh = PointStore(self.path)
            self._db.close()
            self.__dict__.update(fresh.__dict__)
            self.version += 1

    def _remove_leftovers(self) -> None:
        """Delete base folders of other generations (older ones, and ones of killed writes)."""
        old = time.time() - LEFTOVER_AGE_S
        for p in self.path.glob("base-*"):
            if p.name != f"base-{self.generation}" and p.stat().st_mtime < old:
                shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection):
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _write_base(path: Path, yx, cid, sc, src, n_classes: int, shape, bucket: int, bin_px: int) -> str:
    """Write a base generation folder (sorted by bucket, fsynced); -> its generation id."""
    gen = uuid.uuid4().hex[:12]
    base = path / f"base-{gen}"
    base.mkdir(parents=True)
    nby, nbx = _grid(shape, bucket)
    key = (np.clip(yx[:, 0] // bucket, 0, nby - 1).astype(np.int64) * nbx
           + np.clip(yx[:, 1] // bucket, 0, nbx - 1).astype(np.int64))
    order = np.argsort(key, kind="stable")
    offsets = np.zeros(nby * nbx + 1, np.int64)
    np.cumsum(np.bincount(key, minlength=nby * nbx), out=offsets[1:])
    cols = {"y": yx[order, 0], "x": yx[order, 1], "cls": cid[order], "score": np.asarray(sc)[order],
            "source": np.asarray(src)[order]}
    for k, dt in COLUMNS.items():
        _save_npy(base / f"{k}.npy", cols[k].astype(dt))
    _save_npy(base / "offsets.npy", offsets)
    counts = bin_counts(yx, cid, n_classes, shape, bin_px)
    _save_npy(base / "counts.npy", counts.astype(np.uint32))
    _fsync_dir(base)
    _fsync_dir(path)
    return gen
