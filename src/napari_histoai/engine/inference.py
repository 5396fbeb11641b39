"""THE tiled-inference primitive: run any model over a region of an image or slide.

:func:`infer` is a job (yields :class:`~.jobs.Progress`, returns a result). It

1. takes the image's pixel size (the file's, or ``mpp`` given by the user, or the model's own,
   said in the result's notes), and picks the pyramid level closest to the model's resolution;
2. cuts the region into tiles of the model's ``tile_size`` / ``overlap`` (model px) whose cores
   partition the region (``engine.tiling``), drops tiles without tissue unless asked not to;
3. calls the model's ``prepare(thumbnail, tissue)`` hook once, then reads, resamples and batches
   tiles, checking the cancel flag between batches;
4. stitches seam-safely: points once each (core assignment + cross-tile duplicate merge),
   instance labels with one id per object (the tile holding the centroid), maps by cores;
5. streams labels and maps into a zarr array on disk when asked (``store``) or when they are too
   large for memory, so a whole-slide result never has to fit in RAM.

Frames: points are (y, x) level-0 px; labels live on the grid of the pyramid level that was
read (level 0 for single-level images); maps on a grid of ``stride`` model px. Every result
states ``downsample`` (level-0 px per output px) and ``origin`` (level-0 px of the output's
top-left corner), which is all a viewer or writer needs to align it.

Corrupt data: a tile whose pixels cannot be read is skipped and reported (count and first
location in the result's notes); the run fails with one line only when no tile can be read or
when the overview (tissue mask, stain statistics) cannot.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import CancelFlag, JobError, check_cancel
from .jobs import Job, Progress, run_job
from .protocols import kind_of
from .resize import resize, scaled_shape
from .tiling import LabelStitcher, Tile, stitch_points, tile_grid
from .tissue import thumbnail, tile_has_tissue, tissue_mask_from_rgb

__all__ = ["infer", "infer_array", "as_image", "check_region", "PointsResult", "LabelsResult", "MapsResult",
           "IN_MEMORY_MAX_PIXELS"]

# labels / maps larger than this (output px) go to a zarr store on disk even when none is given
IN_MEMORY_MAX_PIXELS = 64_000_000
# an overview (tissue mask, stain statistics) may decode at most this many px; beyond, sample
OVERVIEW_MAX_PIXELS = 64_000_000
DEFAULT_MERGE_PX = 3.0  # model px: the same nucleus localised on either side of a tile seam


@dataclass
class Run:
    """What every result says about how it was made."""

    model: str = ""
    mpp: Optional[float] = None        # µm per level-0 px used (None: unknown and not needed)
    mpp_source: str = "unknown"        # file | given | assumed | unknown
    region: tuple = ()                 # (y0, x0, y1, x1) level-0 px that was analysed
    n_tiles: int = 0
    n_tiles_skipped: int = 0            # background tiles not processed
    n_tiles_unreadable: int = 0         # tiles whose pixels could not be read (skipped, in notes)
    notes: list = field(default_factory=list)

    @property
    def mpp_text(self) -> str:
        """``0.5 µm/px (from the file)`` and the like: the pixel size as the user should read it."""
        if self.mpp is None:
            return "pixel size unknown"
        why = {"file": "from the file", "given": "given", "assumed": "assumed: the image has no pixel size"}
        return f"{self.mpp:g} µm/px ({why.get(self.mpp_source, self.mpp_source)})"


@dataclass
class PointsResult(Run):
    """points [N, 2] (y, x) level-0 px; class_ids [N] int indexing ``classes``; scores [N]."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    classes: list = field(default_factory=list)

    @property
    def class_names(self) -> list:
        return [self.classes[i] for i in self.class_ids]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(points [N, 2], class ids [N], scores [N])."""
        return self.points, self.class_ids, self.scores

    def counts(self) -> dict:
        """{class name: number of points}."""
        return {c: int((self.class_ids == i).sum()) for i, c in enumerate(self.classes)}

    def select(self, keep: np.ndarray) -> "PointsResult":
        """The same result restricted to the points where ``keep`` [N] is True (in place)."""
        self.points, self.class_ids, self.scores = self.points[keep], self.class_ids[keep], self.scores[keep]
        return self

    def __len__(self) -> int:
        return len(self.points)


@dataclass
class LabelsResult(Run):
    """labels [H, W] uint32 (numpy, or zarr when streamed to ``store``) on a grid of
    ``downsample`` level-0 px per pixel starting at ``origin`` (level-0 px); ``n_objects``."""

    labels: object = None
    n_objects: int = 0
    downsample: float = 1.0
    origin: tuple = (0.0, 0.0)
    store: Optional[Path] = None


@dataclass
class MapsResult(Run):
    """maps [K, H, W] float32 (numpy or zarr) named by ``channels``, on a grid of ``downsample``
    level-0 px per pixel starting at ``origin`` (level-0 px)."""

    maps: object = None
    channels: list = field(default_factory=list)
    downsample: float = 1.0
    origin: tuple = (0.0, 0.0)
    store: Optional[Path] = None


# --------------------------------------------------------------------------- inputs
def as_image(image, mpp: Optional[float] = None, name: str = "image"):
    """(SlideImage, opened_here) for a SlideImage, a path or an array [H, W(, C)]."""
    from ..io import SlideImage, from_array, open_image

    if isinstance(image, SlideImage):
        return image, False
    if isinstance(image, (str, os.PathLike)):
        return open_image(image), True
    return from_array(image, mpp=mpp, name=name), False


def check_region(region: Optional[Sequence[float]], shape: Sequence[int]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) level-0 px clipped to the image; the whole image for None. One-line
    ``JobError`` for regions that are not finite, empty or outside the image."""
    h, w = int(shape[0]), int(shape[1])
    if region is None:
        return 0, 0, h, w
    vals = [float(v) for v in region]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise JobError(f"region must be 4 finite numbers y0,x0,y1,x1 in level-0 px, got {tuple(region)}")
    y0, x0, y1, x1 = (int(round(v)) for v in vals)
    if y1 <= y0 or x1 <= x0:
        raise JobError(f"region {tuple(region)} is empty")
    if y1 <= 0 or x1 <= 0 or y0 >= h or x0 >= w:
        raise JobError(f"region {tuple(region)} is outside the image ({h} x {w} px)")
    return max(0, y0), max(0, x0), min(h, y1), min(w, x1)


def _pixel_size(slide, model, mpp: Optional[float]) -> tuple[Optional[float], str, float]:
    """(µm per level-0 px, where it came from, level-0 px per model px)."""
    if mpp is not None:
        if not (math.isfinite(mpp) and 0 < mpp <= 100):
            raise JobError(f"pixel size must be a positive number of µm/px, got {mpp}")
        used, source = float(mpp), "given"
    elif slide.mpp:
        used, source = float(slide.mpp), "file"
    elif getattr(model, "mpp", None):
        used, source = float(model.mpp), "assumed"
    else:
        used, source = None, "unknown"
    if getattr(model, "mpp", None) and used:
        return used, source, float(model.mpp) / used
    return used, source, float(getattr(model, "downsample", 1.0) or 1.0)


def _zarr_out(store: Optional[Path], shape: tuple, dtype, chunks: tuple):
    """A zarr array at ``store`` (a new temporary folder when None), filled with zeros."""
    import zarr

    if store is None:
        store = Path(tempfile.mkdtemp(prefix="histoai-")) / "result.zarr"
    store = Path(store)
    arr = zarr.create_array(store=str(store), shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                            overwrite=True)
    return arr, store


# --------------------------------------------------------------------------- the primitive
def infer(image, model, region: Optional[Sequence[float]] = None, *, mpp: Optional[float] = None,
          tissue_only: bool = True, batch_size: Optional[int] = None, store: Optional[str | os.PathLike] = None,
          cancel: Optional[CancelFlag] = None, in_memory_max: Optional[int] = None) -> Job:
    """Run ``model`` (a point detector, instance segmenter or dense map; see
    :mod:`.protocols`) over ``region`` = (y0, x0, y1, x1) level-0 px of ``image`` (a
    SlideImage, a path or an RGB array [H, W, 3]; whole image when None).

    ``mpp``: the image's µm/px when the file does not say (or to override it); ``tissue_only``:
    skip tiles without tissue; ``store``: a folder for a zarr array holding the labels / maps
    (streamed tile by tile; a temporary one when they exceed ``in_memory_max`` px, default
    :data:`IN_MEMORY_MAX_PIXELS`). Yields :class:`Progress` per batch; returns a
    :class:`PointsResult`, :class:`LabelsResult` or :class:`MapsResult`.
    """
    kind = kind_of(model)
    slide, opened = as_image(image, mpp)
    try:
        result = yield from _infer(slide, model, kind, region, mpp, tissue_only, batch_size,
                                   None if store is None else Path(store), cancel,
                                   IN_MEMORY_MAX_PIXELS if in_memory_max is None else in_memory_max)
    finally:
        if opened:
            slide.close()
    return result


def _infer(slide, model, kind, region, mpp, tissue_only, batch_size, store, cancel, in_memory_max):
    slide.require_rgb8(getattr(model, "name", "this model"))
    ry0, rx0, ry1, rx1 = check_region(region, slide.shape)
    used_mpp, source, f = _pixel_size(slide, model, mpp)
    run = dict(model=getattr(model, "name", ""), mpp=used_mpp, mpp_source=source, region=(ry0, rx0, ry1, rx1))
    notes = []
    if source == "assumed":
        notes.append(f"{slide.name} has no pixel size; assumed the model's {used_mpp:g} µm/px (give --mpp or set "
                     "it in the dock if that is wrong)")
    level = slide.best_level_for_downsample(f)
    ds = slide.downsamples[level]
    r = ds / f  # model px per level px
    lv_shape = slide.levels[level].shape
    lregion = (ry0 / ds, rx0 / ds, ry1 / ds, rx1 / ds)
    tile_l = max(16, int(round(model.tile_size / r)))
    ovl_l = min(tile_l - 1, int(round(model.overlap / r)))
    tiles = tile_grid(lv_shape, tile_l, ovl_l, lregion)
    ly0, lx0 = tiles[0].y0, tiles[0].x0  # the region's corner on the level grid
    ly1, lx1 = max(t.y1 for t in tiles), max(t.x1 for t in tiles)

    needs_thumb = hasattr(model, "prepare") or (tissue_only and len(tiles) > 1)
    skipped, tile_tissue = 0, False
    if needs_thumb and slide.overview_cost() > OVERVIEW_MAX_PIXELS:
        # no level small enough (a big image without a pyramid): an overview would decode the
        # whole image first; instead a bounded sample of windows feeds ``prepare`` and every tile
        # is checked for tissue on its own pixels, once read
        yield Progress(0, 0, "sampling the image (it has no pyramid)")
        small = slide.read_sample()[..., :3]
        if hasattr(model, "prepare"):
            model.prepare(small, tissue_mask_from_rgb(small))
        tile_tissue = tissue_only and len(tiles) > 1
    elif needs_thumb:
        yield Progress(0, 0, "tissue mask")
        small, tds = thumbnail(slide)
        mask = tissue_mask_from_rgb(small)
        if tissue_only and len(tiles) > 1:
            keep = [t for t in tiles if tile_has_tissue(mask, tds, t.cy0 * ds, t.cx0 * ds, t.cy1 * ds, t.cx1 * ds)]
            skipped, tiles = len(tiles) - len(keep), keep
        if hasattr(model, "prepare"):
            model.prepare(small, mask)

    # ------------------------------------------------------------------ outputs
    stitcher = out = None
    per_tile = []
    if kind == "labels":
        shape = (ly1 - ly0, lx1 - lx0)
        if store is not None or shape[0] * shape[1] > in_memory_max:
            out, store = _zarr_out(store, shape, np.uint32, (1024, 1024))
        else:
            out = np.zeros(shape, np.uint32)
        stitcher = LabelStitcher(out)
    elif kind == "maps":
        q = r / model.stride  # map px per level px
        shape = (len(model.channels), max(1, math.ceil((ly1 - ly0) * q)), max(1, math.ceil((lx1 - lx0) * q)))
        if store is not None or shape[1] * shape[2] > in_memory_max:
            out, store = _zarr_out(store, shape, np.float32, (1, 1024, 1024))
        else:
            out = np.zeros(shape, np.float32)

    total, n_obj, unreadable = len(tiles), 0, []
    bs = max(1, int(batch_size or getattr(model, "batch_size", 4) or 4))
    yield Progress(0, total, f"{total} tiles" + (f" ({skipped} background skipped)" if skipped else ""))
    for b in range(0, total, bs):
        check_cancel(cancel)
        batch, pixels = [], []
        for t in tiles[b:b + bs]:
            try:
                px = slide.read_region(t.y0, t.x0, t.y1, t.x1, level=level)[..., :3]
            except JobError as e:  # corrupt tile data: skip the tile, report it at the end
                unreadable.append(((t.y0 * ds, t.x0 * ds, t.y1 * ds, t.x1 * ds), str(e)))
                continue
            if tile_tissue and not _has_tissue(px, t):
                skipped += 1
                continue
            batch.append(t)
            pixels.append(resize(px, scaled_shape(px.shape, r)))
        if not batch:
            pass  # every tile of this batch was background or unreadable
        elif kind == "points":
            for t, px, (pts, cls, sc) in zip(batch, pixels, model.predict_tiles(pixels)):
                pts = np.asarray(pts, np.float64).reshape(-1, 2)
                sy, sx = (t.y1 - t.y0) / px.shape[0], (t.x1 - t.x0) / px.shape[1]  # level px per model px
                g = np.stack([(pts[:, 0] + 0.5) * sy - 0.5 + t.y0, (pts[:, 1] + 0.5) * sx - 0.5 + t.x0], 1)
                per_tile.append((t, g, np.asarray(cls).reshape(-1), np.asarray(sc, np.float64).reshape(-1)))
        elif kind == "labels":
            for t, lab in zip(batch, model.segment_tiles(pixels)):
                lab = resize(np.asarray(lab), t.shape, "labels")
                n_obj += stitcher.add(_shift(t, ly0, lx0), lab)
        else:
            for t, m in zip(batch, model.predict_maps(pixels)):
                _place_map(out, np.asarray(m, np.float32), t, ly0, lx0, q)
        done = min(b + bs, total)
        msg = f"tile {done}/{total}" + (f": {n_obj} nuclei" if kind == "labels" else "")
        yield Progress(done, total, msg)

    if unreadable:
        box, msg = unreadable[0]
        if len(unreadable) == total:
            raise JobError(f"no tile of {slide.name} could be read ({msg})")
        notes.append(f"{len(unreadable)} of {total} tiles could not be read (corrupt or truncated data) and were "
                     f"skipped; the first at level-0 px {tuple(int(v) for v in box)}: {msg}")
    common = dict(run, n_tiles=total, n_tiles_skipped=skipped, n_tiles_unreadable=len(unreadable), notes=notes)
    if kind == "points":
        merge = float(getattr(model, "merge_radius", DEFAULT_MERGE_PX)) / r
        pts, cls, sc = stitch_points(per_tile, merge_radius=max(1.0, merge))
        pts = (pts + 0.5) * ds - 0.5 if ds != 1 else pts
        return PointsResult(**common, points=pts, class_ids=cls.astype(np.int64), scores=sc,
                            classes=list(model.classes))
    origin = (ly0 * ds, lx0 * ds)
    if kind == "labels":
        return LabelsResult(**common, labels=out, n_objects=n_obj, downsample=ds, origin=origin, store=store)
    return MapsResult(**common, maps=out, channels=list(model.channels), downsample=ds / q, origin=origin, store=store)


def _has_tissue(px: np.ndarray, t: Tile) -> bool:
    """Whether the core of tile ``t`` (its pixels ``px``, level px) holds tissue, judged on the
    tile itself at 1/4 resolution (for images without an overview)."""
    core = px[t.cy0 - t.y0:t.cy1 - t.y0, t.cx0 - t.x0:t.cx1 - t.x0]
    return bool(core.size) and bool(tissue_mask_from_rgb(core[::4, ::4]).any())


def _shift(t: Tile, y: int, x: int) -> Tile:
    """``t`` in the frame whose origin is level px (y, x)."""
    return Tile(t.y0 - y, t.x0 - x, t.y1 - y, t.x1 - x, t.cy0 - y, t.cx0 - x, t.cy1 - y, t.cx1 - x, t.index)


def _place_map(out, m: np.ndarray, t: Tile, ly0: int, lx0: int, q: float) -> None:
    """Write the core of a tile's map [K, h, w] (``q`` map px per level px) into ``out``."""
    gy0, gy1 = int(round((t.cy0 - ly0) * q)), int(round((t.cy1 - ly0) * q))
    gx0, gx1 = int(round((t.cx0 - lx0) * q)), int(round((t.cx1 - lx0) * q))
    oy, ox = int(round((t.y0 - ly0) * q)), int(round((t.x0 - lx0) * q))
    gy1, gx1 = min(gy1, oy + m.shape[1], out.shape[1]), min(gx1, ox + m.shape[2], out.shape[2])
    if gy1 > gy0 and gx1 > gx0:
        out[:, gy0:gy1, gx0:gx1] = m[:, gy0 - oy:gy1 - oy, gx0 - ox:gx1 - ox]


def infer_array(model, image: np.ndarray, mpp: Optional[float] = None, tissue_only: bool = False, **kw):
    """:func:`infer` on an in-memory RGB array, run to the end in this thread (validation,
    benchmarks). ``mpp`` defaults to the model's own (the image is at the model's resolution)."""
    return run_job(infer(image, model, mpp=mpp if mpp is not None else getattr(model, "mpp", None),
                         tissue_only=tissue_only, **kw))
