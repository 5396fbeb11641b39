"""The tiled detect job: any detector over any image region or whole slide.

It owns what every detector shares: choosing the pyramid level closest to the detector's
resolution and resampling tiles to it, skipping background tiles (tissue mask), matching the
slide's stain to the detector's training stain (detectors with ``adapt_stain``), batching,
seam-safe stitching, and mapping points back to level-0 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ...errors import JobError

from ...engine.jobs import Job, Progress
from ...engine.tiling import stitch_points, tile_grid
from ...engine.tissue import tile_has_tissue, tissue_mask


@dataclass
class DetectionResult:
    """points [N, 2] (y, x) level-0 px; class_ids [N] int indexing ``classes``; scores [N]."""

    points: np.ndarray
    class_ids: np.ndarray
    scores: np.ndarray
    classes: list
    mpp: Optional[float] = None
    model: str = ""
    region: Optional[tuple] = None
    n_tiles: int = 0
    n_tiles_skipped: int = 0
    notes: list = field(default_factory=list)

    @property
    def class_names(self) -> list:
        return [self.classes[i] for i in self.class_ids]

    def __len__(self) -> int:
        return len(self.points)


def _resize(tile: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-3:
        return tile
    from PIL import Image

    h, w = tile.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    return np.asarray(Image.fromarray(tile).resize(size, Image.BILINEAR))


def detect_job(
    image,
    detector,
    region: Optional[Sequence[float]] = None,
    tissue_only: bool = True,
    batch_size: int = 4,
    min_score: float = 0.0,
) -> Job:
    """Detect nuclei with ``detector`` over ``region`` = (y0, x0, y1, x1) level-0 px of
    ``image`` (a :class:`~napari_histoai.io.SlideImage`; whole image when None).

    Yields :class:`Progress` per batch of tiles; returns a :class:`DetectionResult`.
    """
    image.require_rgb8("nuclei detection")
    notes = []
    h0, w0 = image.shape[:2]
    if region is not None:
        y0, x0, y1, x1 = (int(round(v)) for v in region)
        if y1 <= y0 or x1 <= x0:
            raise JobError(f"region {tuple(region)} is empty")
        if y1 <= 0 or x1 <= 0 or y0 >= h0 or x0 >= w0:
            raise JobError(f"region {tuple(region)} is outside the image ({h0} x {w0} px)")
        region = (max(0, y0), max(0, x0), min(h0, y1), min(w0, x1))
    # level-0 px per detector px
    if detector.mpp and image.mpp:
        f = detector.mpp / image.mpp
    else:
        f = 1.0
        if detector.mpp and not image.mpp:
            notes.append(f"image has no pixel size; assumed the detector's {detector.mpp} µm/px")
    level = image.best_level_for_downsample(f)
    ds = image.downsamples[level]
    r = ds / f  # detector px per level px
    lv_shape = image.levels[level].shape
    lv_region = None if region is None else tuple(v / ds for v in region)
    tile_l = max(16, int(round(detector.tile_size / r)))
    ovl_l = min(tile_l - 1, int(round(detector.overlap / r)))
    tiles = tile_grid(lv_shape, tile_l, ovl_l, lv_region)
    skipped = 0
    if tissue_only and len(tiles) > 1:
        mask, mds = tissue_mask(image)
        keep = [t for t in tiles if tile_has_tissue(mask, mds, t.cy0 * ds, t.cx0 * ds, t.cy1 * ds, t.cx1 * ds)]
        skipped = len(tiles) - len(keep)
        tiles = keep
    if hasattr(detector, "adapt_stain"):
        # match the slide's stain to the training images once (thumbnail, tissue only)
        from ..stain import slide_od_stats

        detector.adapt_stain(slide_od_stats(image) if detector.stain_target is not None else None)
    total = len(tiles)
    yield Progress(0, total, f"{total} tiles" + (f" ({skipped} background skipped)" if skipped else ""))
    per_tile = []
    for b in range(0, total, batch_size):
        batch = tiles[b:b + batch_size]
        pixels = [_resize(image.read_region(t.y0, t.x0, t.y1, t.x1, level=level)[..., :3], r) for t in batch]
        outs = detector.predict_tiles(pixels)
        for t, px, (pts, cls, sc) in zip(batch, pixels, outs):
            pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
            sc = np.asarray(sc, dtype=np.float64).reshape(-1)
            keep = sc >= min_score
            # detector px -> level px (tile may be rounded by the resize)
            sy = (t.y1 - t.y0) / px.shape[0]
            sx = (t.x1 - t.x0) / px.shape[1]
            g = np.stack([(pts[keep, 0] + 0.5) * sy - 0.5 + t.y0, (pts[keep, 1] + 0.5) * sx - 0.5 + t.x0], 1)
            per_tile.append((t, g, np.asarray(cls).reshape(-1)[keep], sc[keep]))
        yield Progress(min(b + batch_size, total), total, f"tile {min(b + batch_size, total)}/{total}")
    merge_r = max(1.0, 3.0 / r)  # ~3 detector px (1.5 µm at 0.5 µm/px): same nucleus across a seam
    pts, cls, sc = stitch_points(per_tile, merge_radius=merge_r)
    pts = (pts + 0.5) * ds - 0.5 if ds != 1 else pts
    return DetectionResult(
        points=pts, class_ids=cls.astype(np.int64), scores=sc, classes=list(detector.classes),
        mpp=image.mpp, model=detector.name, region=region, n_tiles=total, n_tiles_skipped=skipped, notes=notes,
    )


def detect_image_job(
    image,
    model: Optional[str] = None,
    device: str = "auto",
    region: Optional[Sequence[float]] = None,
    tissue_only: bool = True,
    batch_size: int = 4,
    min_score: float = 0.0,
) -> Job:
    """Load ``model`` (name or folder; default = bundled model) and run :func:`detect_job`.
    The one job behind the "Detect nuclei" widget, ``histoai detect`` and batch runs."""
    from .registry import default_detector, load_detector

    name = model or default_detector()
    yield Progress(0, 0, f"loading {name}")
    detector = load_detector(name, device=device)
    result = yield from detect_job(image, detector, region=region, tissue_only=tissue_only,
                                   batch_size=batch_size, min_score=min_score)
    return result
