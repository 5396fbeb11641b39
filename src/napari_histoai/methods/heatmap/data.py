"""Training data of the heatmap trainer: labelled slides cut into tissue patches.

A :class:`TrainingSlide` is a slide file, its slide label (1 tumour, 0 not) and the tumour
regions drawn on it (polygons [K, 2] (y, x) level-0 px; may be empty). :func:`slide_patches`
reads its tissue patches once at the model's resolution into memory (:class:`SlidePatches`):
the E-step predicts them, the M-step crops them, stage 2 ranks them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import JobError

__all__ = ["TrainingSlide", "SlidePatches", "slide_patches", "patch_boxes", "read_patch", "model_scale"]


@dataclass
class TrainingSlide:
    path: Path
    label: int                          # 1 = tumour, 0 = no tumour
    regions: list = field(default_factory=list)  # drawn tumour polygons [K, 2] (y, x) level-0 px
    mpp: Optional[float] = None          # µm/px when the file does not say

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass
class SlidePatches:
    """One slide's tissue patches at the model's resolution.

    images [N, P, P, 3] uint8; boxes [N, 4] (y0, x0, y1, x1) level-0 px; fine [N, P/s, P/s]
    float32 in [0, 1] (the drawn regions rasterised on the heatmap grid; None when the slide has
    no drawn regions); label 0/1; mpp µm per level-0 px used."""

    name: str
    label: int
    images: np.ndarray
    boxes: np.ndarray
    fine: Optional[np.ndarray]
    mpp: float

    def __len__(self) -> int:
        return len(self.images)


def model_scale(slide, model_mpp: float, mpp: Optional[float] = None) -> tuple[float, str, float]:
    """(µm per level-0 px, where it came from, level-0 px per model px). A slide without a
    pixel size needs ``mpp``: a heatmap at the wrong scale is meaningless, so it is not assumed."""
    if mpp is not None:
        used, src = float(mpp), "given"
    elif slide.mpp:
        used, src = float(slide.mpp), "file"
    else:
        raise JobError(f"{slide.name} has no pixel size; give it (--mpp, or the labels CSV's mpp column)")
    if not (math.isfinite(used) and 0 < used <= 100):
        raise JobError(f"pixel size must be a positive number of µm/px, got {used}")
    return used, src, model_mpp / used


def patch_boxes(slide, patch: int, overlap: int, f: float, tissue_min: float = 0.1,
                region=None) -> tuple[list, int, float]:
    """Tissue patches of ``patch`` model px (``overlap`` between neighbours) of ``slide`` at
    ``f`` level-0 px per model px: ([(y0, x0, y1, x1) level px of the chosen level], level,
    level-0 px per level px). A patch is kept when at least ``tissue_min`` of it is tissue."""
    from ...engine.tiling import tile_grid
    from ...engine.tissue import tile_has_tissue, tissue_mask

    level = slide.best_level_for_downsample(f)
    ds = slide.downsamples[level]
    r = ds / f  # model px per level px
    tile_l = max(8, int(round(patch / r)))
    ovl_l = min(tile_l - 1, int(round(overlap / r)))
    shape = slide.levels[level].shape
    lregion = None if region is None else tuple(v / ds for v in region)
    mask, mds = tissue_mask(slide)
    boxes = [(t.y0, t.x0, t.y1, t.x1) for t in tile_grid(shape, tile_l, ovl_l, lregion)
             if tile_has_tissue(mask, mds, t.y0 * ds, t.x0 * ds, t.y1 * ds, t.x1 * ds, min_fraction=tissue_min)]
    return boxes, level, ds


def read_patch(slide, box, level: int, r: float, patch: int) -> np.ndarray:
    """Pixels [patch, patch, 3] uint8 of the level box (y0, x0, y1, x1) resampled by ``r`` model
    px per level px; boxes smaller than a patch (slide edges) are padded with glass white."""
    from ...engine.resize import resize

    y0, x0, y1, x1 = box
    px = slide.read_region(y0, x0, y1, x1, level=level)[..., :3]
    hm, wm = min(patch, max(1, int(round(px.shape[0] * r)))), min(patch, max(1, int(round(px.shape[1] * r))))
    return _fit(resize(px, (hm, wm)), patch)


def _fit(px: np.ndarray, patch: int) -> np.ndarray:
    out = np.full((patch, patch, 3), 242, np.uint8)
    h, w = min(patch, px.shape[0]), min(patch, px.shape[1])
    out[:h, :w] = px[:h, :w]
    return out


def slide_patches(ts: TrainingSlide, model_mpp: float, patch: int, overlap: int, stride: int,
                  tissue_min: float = 0.1, cancel=None) -> SlidePatches:
    """Read the tissue patches of a training slide (see :class:`SlidePatches`). Regions outside
    the slide raise one line; a slide without tissue raises one line."""
    from ...errors import check_cancel
    from ...io import open_image
    from ...io.regions import rasterise_polygons

    with open_image(ts.path) as slide:
        slide.require_rgb8("the heatmap trainer")
        used, _, f = model_scale(slide, model_mpp, ts.mpp)
        h0, w0 = slide.shape[:2]
        for poly in ts.regions:
            p = np.asarray(poly)
            if p[:, 0].min() >= h0 or p[:, 1].min() >= w0 or p[:, 0].max() <= 0 or p[:, 1].max() <= 0:
                raise JobError(f"a drawn region of {ts.name} lies outside the slide ({h0} x {w0} px)")
        boxes, level, ds = patch_boxes(slide, patch, overlap, f, tissue_min)
        if not boxes:
            raise JobError(f"{ts.name}: no tissue found (nothing to train on)")
        r = ds / f  # model px per level px
        images = np.empty((len(boxes), patch, patch, 3), np.uint8)
        fine = np.zeros((len(boxes), patch // stride, patch // stride), np.float32) if ts.regions else None
        l0 = np.zeros((len(boxes), 4), np.float64)
        for i, (y0, x0, y1, x1) in enumerate(boxes):
            check_cancel(cancel)
            images[i] = read_patch(slide, (y0, x0, y1, x1), level, r, patch)
            l0[i] = (y0 * ds, x0 * ds, y1 * ds, x1 * ds)
            if fine is not None:
                # the heatmap grid of this patch: stride model px = stride * f level-0 px per cell
                fine[i] = rasterise_polygons(ts.regions, fine.shape[1:], downsample=stride * f, origin=(y0 * ds, x0 * ds))
    return SlidePatches(ts.name, int(ts.label), images, l0, fine, used)


def slide_stem(name: str) -> str:
    """A slide's name without its image suffix (``a.ome.tif`` -> ``a``, ``b.svs`` -> ``b``)."""
    low = name.lower()
    for s in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if low.endswith(s):
            return name[: -len(s)]
    return Path(name).stem if "." in name else name


def training_slides(slides, labels_csv, annotations=None) -> tuple[list[TrainingSlide], list[str]]:
    """Training slides from a folder (or list) of slides, a labels CSV
    (:func:`~napari_histoai.io.slide_labels.read_slide_labels`) and an optional folder of GeoJSON
    annotations named like the slides (``<stem>.geojson``, polygons = tumour regions).

    Returns (slides, notes). One-line ``JobError``: labels naming slides that are not there.
    Slides without a label are left out (said in the notes); whether both classes are there is
    the trainer's check."""
    from ...io.inputs import expand_inputs
    from ...io.regions import read_polygons
    from ...io.slide_labels import read_slide_labels

    files = expand_inputs(slides if isinstance(slides, (list, tuple)) else [slides])
    table = read_slide_labels(labels_csv)
    by_name = {}
    for f in files:
        by_name[f.name] = f
        by_name.setdefault(slide_stem(f.name), f)
    missing = [n for n in table if n not in by_name and slide_stem(n) not in by_name]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise JobError(f"the labels name slides that are not among the inputs: {', '.join(missing[:3])}{more}")
    out, used = [], set()
    ann_dir = None if annotations is None else Path(annotations)
    if ann_dir is not None and not ann_dir.is_dir():
        raise JobError(f"annotations folder {ann_dir} does not exist")
    for n, (lab, mpp) in table.items():
        f = by_name.get(n) or by_name[slide_stem(n)]
        if f in used:
            continue
        used.add(f)
        regions = []
        if ann_dir is not None:
            g = ann_dir / (slide_stem(f.name) + ".geojson")
            if g.is_file():
                regions = read_polygons(g)
        out.append(TrainingSlide(f, lab, regions, mpp))
    notes = []
    unlabelled = [f.name for f in files if f not in used]
    if unlabelled:
        notes.append(f"{len(unlabelled)} slide(s) have no label and were not used (e.g. {unlabelled[0]})")
    if ann_dir is not None:
        stems = {slide_stem(t.name) for t in out}
        stray = [g.name for g in sorted(ann_dir.glob("*.geojson")) if g.name[:-8] not in stems]
        if stray:
            notes.append(f"{len(stray)} annotation file(s) match no labelled slide (e.g. {stray[0]})")
    return out, notes
