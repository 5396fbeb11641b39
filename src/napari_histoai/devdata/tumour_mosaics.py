"""Tumour / normal development "slides": seeded mosaics of real labelled H&E tiles.

No real slide-level tumour dataset is available, so slides are built from real tiles whose labels
are known (all at 0.5 µm/px, 20x):

* ``tissue_tiles/`` (Kather et al., 224 x 224): class TUM is the tumour source; NORM, STR, LYM,
  MUS, MUC and DEB are non-tumour sources (BACK and ADI, mostly white, are not used);
* ``crchisto/{train,val}`` (500 x 500): a tile is a tumour source when >= 60 % of its classified
  nuclei are epithelial and it has >= 30 epithelial nuclei, a non-tumour source when it has no
  epithelial nucleus; other tiles are not used.

Tile pools are disjoint (:func:`source_pools`): the ``eval`` pool holds every crchisto/val source,
every third crchisto/train source (sorted by name within the tumour and within the non-tumour
sources, index % 3 == 2) and every other Kather tile of each class (sorted by name, odd
indices); the ``train`` pool holds the rest. Slides of a split use only their pool.

A slide (:func:`make_slide`) is an H x W level-0 canvas at 0.5 µm/px: near-white glass with a
faint tint and noise, one or two smooth tissue blobs (35-65 % of the canvas) textured all over
with random crops (192-256 px, flips, rot90) of non-tumour sources on a jittered grid, grouped in
zones of a few source tiles; 1-3 "decoy" regions of other non-tumour sources in normal slides
(0-1 in tumour slides), and 1-3 tumour regions of tumour-source crops in tumour slides (from about
1.5 % of the tissue, each at least 250 x 250 level-0 px, up to about 40 %). Crop edges and region
edges are soft-blended over a few px, so seams and region borders occur in both classes. Pixel
truth = tumour regions ∩ tissue, at :data:`TRUTH_DOWNSAMPLE`.

:func:`make_tumour_mosaics` writes the whole set (see its docstring for the layout). Every slide
has its own generator seeded from (seed, split, index): the same seed gives the same slides,
truth masks, labels and manifest.

Modules: :mod:`.sources` (source pools, tile loading, crops), :mod:`.layout` (tissue and region
blobs, annotation polygons), :mod:`.paint` (painting a slide), :mod:`.fields` (smooth noise,
upsampling); this module builds and writes the set and re-exports their public names.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import JobError
from .layout import (
    MPP,
    TRUTH_DOWNSAMPLE,
    SlideLayout,
    annotation_geojson,
    blob_polygons,
    slide_layout,
)
from .paint import make_slide, paint_slide
from .sources import Pools, TileBank, load_tiles, source_pools

__all__ = [
    "MPP",
    "TRUTH_DOWNSAMPLE",
    "SlideLayout",
    "TileBank",
    "annotation_geojson",
    "blob_polygons",
    "load_tiles",
    "make_slide",
    "make_tumour_mosaics",
    "paint_slide",
    "slide_layout",
    "source_pools",
]

_SPLIT_IDS = {"train": 1, "eval": 2}


# ----------------------------------------------------------------------------- the whole set
def _prepare_out(out: Path) -> None:
    """Create ``out``; clear slides, truth, annotations and labels of an earlier build there.
    Refuses a non-empty folder that holds anything but an earlier build."""
    if out.exists():
        if not out.is_dir():
            raise JobError(f"{out} exists and is not a folder")
        extra = sorted(p.name for p in out.iterdir() if p.name not in ("train", "eval", "manifest.json"))
        if extra:
            raise JobError(f"{out} is not empty ({extra[0]} ...) and is not a tumour-mosaics folder; choose another --out")
        for split in ("train", "eval"):
            for sub in ("slides", "truth", "annotations"):
                if (out / split / sub).is_dir():
                    shutil.rmtree(out / split / sub)
            (out / split / "labels.csv").unlink(missing_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_png(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(mask).save(path, format="PNG")


def _build_one(out: Path, split: str, i: int, label: str, seed: int, size: tuple[int, int], bank: TileBank,
               pools: Pools, is_ann: bool, on_progress, done: int, total: int, writer, pending) -> dict:
    """Paint slide ``i`` of ``split``, write its truth (and annotation), hand its pyramid to
    ``writer`` after ``pending`` (the previous slide's write) finished; its manifest entry, with
    the write's future under ``_future``."""
    from ..engine.jobs import Progress
    from ..io.atomic import atomic_write_text
    from ..io.writers import write_pyramid_ometiff

    ds = TRUTH_DOWNSAMPLE
    stem = f"{split}_{i:03d}"
    name = f"{stem}.ome.tif"
    d = out / split
    if on_progress is not None:
        on_progress(Progress(done, total, f"{split} slide {name}"))
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
    layout = slide_layout(rng, size, label == "tumour", ds)
    rgb = paint_slide(rng, layout, bank, pools[split]["normal"], pools[split]["tumour"])
    if pending is not None:
        pending.result()  # at most one slide waits for its write: bounded memory, errors surface
    future = writer.submit(write_pyramid_ometiff, d / "slides" / name, rgb, mpp=MPP)
    _write_png(d / "truth" / f"{stem}.png", layout.truth)
    if is_ann:
        atomic_write_text(d / "annotations" / f"{stem}.geojson",
                          json.dumps(annotation_geojson([b & layout.tissue for b in layout.tumour_blobs], ds)))
    return {
        "name": name, "split": split, "label": label,
        "tumour_fraction_of_tissue": round(layout.tumour_fraction_of_tissue, 5),
        "tissue_fraction": round(layout.tissue_fraction, 5),
        "annotated": is_ann,
        "n_tumour_regions": len(layout.tumour_blobs),
        "n_decoy_regions": len(layout.other_blobs),
        "slide": f"{split}/slides/{name}",
        "truth": f"{split}/truth/{stem}.png",
        "annotation": f"{split}/annotations/{stem}.geojson" if is_ann else None,
        "_future": future,
    }


def make_tumour_mosaics(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n_train: int = 24,
    n_eval: int = 16,
    n_annotated: int = 3,
    size: tuple[int, int] = (3072, 3072),
    seed: int = 0,
    on_progress: Callable | None = None,
) -> dict:
    """Build the development set of tumour / normal mosaic slides and return its manifest.

    Layout of ``out_dir``::

        train/slides/<stem>.ome.tif   pyramidal tiled JPEG OME-TIFF, RGB, 0.5 µm/px, size (H, W)
        train/truth/<stem>.png        uint8 [ceil(H/4), ceil(W/4)], 255 = tumour (4 level-0 px/px)
        train/annotations/<stem>.geojson  QuPath GeoJSON Tumor polygons, level-0 px, for the
                                      first ``n_annotated`` tumour slides of train
        train/labels.csv              slide,label (slide = file name, label = tumour | normal)
        eval/{slides,truth,labels.csv}
        manifest.json                 seed, sizes, mpp, truth downsample, per-slide facts, pools

    Half of each split (rounded down) is tumour, in a shuffled order; stems are ``train_000`` ...
    and ``eval_000`` ... ``on_progress`` gets a :class:`~napari_histoai.engine.jobs.Progress`
    per slide. Raises ``JobError`` (one line) for a data folder without the needed files or bad
    arguments.
    """
    from ..engine.jobs import Progress
    from ..io.atomic import atomic_write_text

    H, W = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if min(H, W) < 512:
        raise JobError(f"slide size {H} x {W} is too small: at least 512 x 512 px")
    if n_train < 0 or n_eval < 0 or n_annotated < 0:
        raise JobError("slide counts must not be negative")
    if seed < 0:
        raise JobError("seed must not be negative")
    data, out = Path(data_dir), Path(out_dir)
    pools = source_pools(data)
    _prepare_out(out)
    all_files = sorted({f for p in pools.values() for fs in p.values() for f in fs})
    bank = TileBank(load_tiles(data, all_files))
    unusable = [f for f in all_files if not bank.usable(f)]
    ds = TRUTH_DOWNSAMPLE

    plan = []  # (split, index, label)
    for split, n in (("train", n_train), ("eval", n_eval)):
        labels = ["tumour"] * (n // 2) + ["normal"] * (n - n // 2)
        order = np.random.default_rng([seed, _SPLIT_IDS[split]]).permutation(n)
        plan += [(split, i, labels[j]) for i, j in enumerate(order)]
    annotated = {(sp, i) for sp, i, _ in [p for p in plan if p[0] == "train" and p[2] == "tumour"][:n_annotated]}
    for sub in ("train/slides", "train/truth", "train/annotations", "eval/slides", "eval/truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    slides = []
    total = len(plan)
    # the pyramid of slide k is JPEG-encoded in a thread while slide k + 1 is painted
    writer = ThreadPoolExecutor(max_workers=1)
    pending = None
    try:
        for done, (split, i, label) in enumerate(plan):
            slides.append(_build_one(out, split, i, label, seed, (H, W), bank, pools, (split, i) in annotated,
                                     on_progress, done, total, writer, pending))
            pending = slides[-1].pop("_future")
        if pending is not None:
            pending.result()
    finally:
        writer.shutdown(wait=True)

    for split in ("train", "eval"):
        rows = "".join(f"{s['name']},{s['label']}\n" for s in slides if s["split"] == split)
        atomic_write_text(out / split / "labels.csv", "slide,label\n" + rows)

    manifest = {
        "recipe": "napari_histoai.devdata.tumour_mosaics",
        "recipe_version": 1,
        "seed": int(seed),
        "size": [H, W],
        "size_units": "level-0 px (H, W)",
        "mpp": MPP,
        "truth_downsample": ds,
        "truth_format": f"uint8 PNG, 255 = tumour, 0 = not; one px = {ds} x {ds} level-0 px",
        "annotation_format": "QuPath GeoJSON FeatureCollection of Polygon 'Tumor' annotations, [x, y] level-0 px",
        "n_train": n_train, "n_eval": n_eval, "n_annotated": len(annotated),
        "splits": {s: {"n": sum(x["split"] == s for x in slides),
                       "n_tumour": sum(x["split"] == s and x["label"] == "tumour" for x in slides),
                       "labels": f"{s}/labels.csv"} for s in ("train", "eval")},
        "slides": slides,
        "pools": pools,
        "sources_without_tissue": unusable,
        "pool_rule": ("eval = crchisto/val sources + crchisto/train sources with index % 3 == 2 (sorted by name, "
                      "counted within tumour and within non-tumour sources) + Kather tiles with odd index "
                      "(sorted by name, per class); train = the rest"),
        "source_rule": ("tumour: Kather TUM, crchisto tiles with >= 30 epithelial nuclei and >= 60 % of classified "
                        "nuclei epithelial; normal: Kather NORM/STR/LYM/MUS/MUC/DEB, crchisto tiles without "
                        "epithelial nuclei"),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    if on_progress is not None:
        on_progress(Progress(total, total, "done"))
    return manifest
