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
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import JobError

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

MPP = 0.5  # µm per level-0 px of every source tile and slide
TRUTH_DOWNSAMPLE = 4  # level-0 px per truth-mask px
KATHER_TUMOUR = "TUM"
KATHER_NORMAL = ("NORM", "STR", "LYM", "MUS", "MUC", "DEB")
CRC_MIN_EPI_FRACTION = 0.6  # of classified (non-"unlabeled") nuclei
CRC_MIN_EPI = 30
CROP_MIN, CROP_MAX = 192, 256  # crop side, level-0 px (Kather tiles give at most 224)
GRID_STEP = 160  # level-0 px between crop centres
JITTER = 12  # level-0 px; crop half - ramp >= GRID_STEP / 2 + JITTER: cells are always covered
RAMP = 4  # level-0 px of soft blend at a crop's edges
EDGE_SIGMA = 0.75  # truth px: Gaussian blur of tissue / region masks -> ~8 level-0 px soft edges
MIN_FOCUS_SIDE = 250  # level-0 px: the smallest tumour region is about this side
TUMOUR_FRACTION = (0.015, 0.40)  # of the tissue, log-uniform, per tumour slide
TISSUE_FRACTION = (0.38, 0.62)  # target of the canvas before small parts are dropped
BLOCK = 256  # level-0 px blocks for the soft composites
MAX_BLANK = 0.35  # at most this fraction of a crop may be glass-like

_SPLIT_IDS = {"train": 1, "eval": 2}

Pools = dict  # {"train" | "eval": {"tumour": [rel path], "normal": [rel path]}}


# ----------------------------------------------------------------------------- source pools
def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _crc_kind(points_csv: Path) -> str | None:
    """``tumour``, ``normal`` or None (not used) for a crchisto tile, from its nucleus classes."""
    classes = [r.get("class", "") for r in _read_csv(points_csv)]
    n_epi = sum(c == "epithelial" for c in classes)
    n_cls = sum(c not in ("", "unlabeled") for c in classes)
    if n_epi == 0:
        return "normal"
    if n_epi >= CRC_MIN_EPI and n_epi >= CRC_MIN_EPI_FRACTION * n_cls:
        return "tumour"
    return None


def source_pools(data_dir: str | os.PathLike) -> Pools:
    """Disjoint train / eval pools of source tiles, as paths relative to ``data_dir`` (posix).

    Returns ``{"train": {"tumour": [...], "normal": [...]}, "eval": {...}}``, each list sorted.
    Raises ``JobError`` (one line) when ``data_dir`` lacks the needed files.
    """
    data = Path(data_dir)
    need = [data / "tissue_tiles" / "labels.csv", data / "tissue_tiles" / "images",
            data / "crchisto" / "train" / "images", data / "crchisto" / "train" / "points",
            data / "crchisto" / "val" / "images", data / "crchisto" / "val" / "points"]
    for p in need:
        if not p.exists():
            raise JobError(f"{p} not found: {data} is not the shared data folder (set --data or HISTOAI_DATA)")
    pools: Pools = {s: {"tumour": [], "normal": []} for s in ("train", "eval")}

    by_class: dict[str, list[str]] = {}
    for row in _read_csv(data / "tissue_tiles" / "labels.csv"):
        if row.get("class") in KATHER_NORMAL + (KATHER_TUMOUR,):
            by_class.setdefault(row["class"], []).append(row["file"])
    for cls, files in sorted(by_class.items()):
        kind = "tumour" if cls == KATHER_TUMOUR else "normal"
        for i, name in enumerate(sorted(files)):
            rel = f"tissue_tiles/images/{name}"
            if not (data / rel).is_file():
                raise JobError(f"{data / rel} not found (listed in tissue_tiles/labels.csv)")
            pools["eval" if i % 2 == 1 else "train"][kind].append(rel)

    for split in ("train", "val"):
        images = sorted(p.name for p in (data / "crchisto" / split / "images").glob("*.png"))
        kinds: dict[str, list[str]] = {"tumour": [], "normal": []}
        for name in images:
            pts = data / "crchisto" / split / "points" / (Path(name).stem + ".csv")
            if not pts.is_file():
                raise JobError(f"{pts} not found: crchisto/{split} needs a points file per image")
            kind = _crc_kind(pts)
            if kind is not None:
                kinds[kind].append(name)
        for kind, names in kinds.items():
            for i, name in enumerate(names):
                to_eval = split == "val" or i % 3 == 2
                pools["eval" if to_eval else "train"][kind].append(f"crchisto/{split}/images/{name}")

    for split, kinds in pools.items():
        for kind, files in kinds.items():
            if not files:
                raise JobError(f"no {kind} source tiles for the {split} pool in {data}")
            files.sort()
    return pools


def load_tiles(data_dir: str | os.PathLike, files: Sequence[str]) -> dict[str, np.ndarray]:
    """RGB uint8 tiles [h, w, 3] of the given paths relative to ``data_dir``, by path."""
    from PIL import Image

    out = {}
    for rel in files:
        try:
            with Image.open(Path(data_dir) / rel) as im:
                out[rel] = np.asarray(im.convert("RGB"))
        except OSError as e:
            raise JobError(f"cannot read source tile {rel}: {e}") from None
    return out


def _dataset(rel: str) -> str:
    return "kather" if rel.startswith("tissue_tiles/") else "crchisto"


class TileBank:
    """Source tiles by path (RGB uint8 [h, w, 3]) and where they are glass-like: some source tiles
    (crchisto tiles without epithelium, Kather MUC) are largely blank, and a blank crop would be a
    glass hole inside the tissue, so crops are drawn where at most :data:`MAX_BLANK` of the crop
    is glass-like (the complement of the rule of
    :func:`~napari_histoai.engine.tissue.tissue_mask_from_rgb`)."""

    def __init__(self, tiles: dict[str, np.ndarray]):
        self.tiles = tiles
        self._integral: dict[str, np.ndarray] = {}
        self._usable: dict[str, bool] = {}

    def integral(self, rel: str) -> np.ndarray:
        """Summed-area table [h/4 + 1, w/4 + 1] of the glass-like fraction per 4 x 4 px block."""
        if rel not in self._integral:
            r, g, b = (self.tiles[rel][..., i] for i in range(3))  # (reductions over a size-3 axis are slow)
            mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
            bright = r.astype(np.int16) + g + b >= 3 * 220
            blank = bright & ((mx - mn).astype(np.int16) * 25 <= 2 * mx.astype(np.int16))  # range <= 0.08 max
            h, w = blank.shape[0] // 4 * 4, blank.shape[1] // 4 * 4
            frac = blank[:h, :w].reshape(h // 4, 4, w // 4, 4).sum(axis=(1, 3), dtype=np.int32) / np.float32(16)
            self._integral[rel] = np.pad(frac.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        return self._integral[rel]

    def blank_fraction(self, rel: str, ty: int, tx: int, s: int) -> float:
        """Glass-like fraction of the crop [ty:ty+s, tx:tx+s] (on 4 px blocks)."""
        ii = self.integral(rel)
        y0, x0, y1, x1 = ty // 4, tx // 4, (ty + s) // 4, (tx + s) // 4
        n = max(1, (y1 - y0) * (x1 - x0))
        return float(ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]) / n

    def usable(self, rel: str) -> bool:
        """Whether some :data:`CROP_MIN` crop (on a 4 px grid) is at most MAX_BLANK glass-like."""
        if rel not in self._usable:
            h, w = self.tiles[rel].shape[:2]
            ii, k = self.integral(rel), min(CROP_MIN, h, w) // 4
            sums = ii[k:, k:] - ii[:-k, k:] - ii[k:, :-k] + ii[:-k, :-k]
            self._usable[rel] = bool(sums.min() <= MAX_BLANK * k * k)
        return self._usable[rel]

    def usable_files(self, files: Sequence[str]) -> list[str]:
        out = [f for f in files if self.usable(f)]
        if not out:
            raise JobError("no source tile of a pool has enough tissue for crops")
        return out

    def crop(self, rng: np.random.Generator, rel: str, s: int, tries: int = 12) -> np.ndarray | None:
        """A random s x s crop (s clipped to the tile), rotated by k * 90° and maybe flipped, at most
        MAX_BLANK glass-like; None when ``tries`` positions all fail."""
        tile = self.tiles[rel]
        s = min(s, tile.shape[0], tile.shape[1])
        for _ in range(tries):
            ty = int(rng.integers(0, tile.shape[0] - s + 1))
            tx = int(rng.integers(0, tile.shape[1] - s + 1))
            if self.blank_fraction(rel, ty, tx, s) <= MAX_BLANK:
                crop = np.rot90(tile[ty:ty + s, tx:tx + s], int(rng.integers(4)))
                return crop[:, ::-1] if rng.random() < 0.5 else crop


def _pick_files(rng: np.random.Generator, files: Sequence[str], k: int) -> list[str]:
    """``k`` files (fewer if the dataset has fewer) of one dataset, each dataset equally likely, so
    tumour and non-tumour textures have the same mix of stain styles."""
    groups: dict[str, list[str]] = {}
    for f in sorted(files):
        groups.setdefault(_dataset(f), []).append(f)
    names = sorted(groups)
    group = groups[names[int(rng.integers(len(names)))]]
    idx = rng.choice(len(group), size=min(k, len(group)), replace=False)
    return [group[i] for i in sorted(idx)]


# ----------------------------------------------------------------------------- layout
@dataclass
class SlideLayout:
    """Where tissue and regions lie, at the truth resolution.

    size: (H, W) of the slide, level-0 px; downsample: level-0 px per mask px;
    tissue: bool [ceil(H / ds), ceil(W / ds)]; tumour_blobs / other_blobs: bool masks of the same
    shape, each inside the tissue (other_blobs = non-tumour "decoy" regions).
    """

    size: tuple[int, int]
    downsample: int
    tissue: np.ndarray
    tumour_blobs: list = field(default_factory=list)
    other_blobs: list = field(default_factory=list)

    @property
    def truth(self) -> np.ndarray:
        """uint8 [h, w] mask, 255 = tumour (tumour blobs ∩ tissue), 0 elsewhere."""
        m = np.zeros(self.tissue.shape, bool)
        for b in self.tumour_blobs:
            m |= b
        return ((m & self.tissue) * 255).astype(np.uint8)

    @property
    def tissue_fraction(self) -> float:
        return float(self.tissue.mean())

    @property
    def tumour_fraction_of_tissue(self) -> float:
        n = int(self.tissue.sum())
        return float((self.truth > 0).sum() / n) if n else 0.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """float32 [h, w] Gaussian-filtered white noise with correlation length ``sigma`` px,
    zero mean, unit std (filtered on a coarser grid and upsampled, so large sigmas are cheap)."""
    from scipy import ndimage as ndi

    f = max(1, int(sigma // 4))
    coarse = rng.standard_normal((-(-shape[0] // f) + 2, -(-shape[1] // f) + 2)).astype(np.float32)
    coarse = ndi.gaussian_filter(coarse, sigma / f, mode="wrap")
    up = _upsample(coarse, f, f, f + shape[0], f, f + shape[1]) if f > 1 else coarse[1:1 + shape[0], 1:1 + shape[1]]
    up = up - up.mean()
    return (up / (up.std() + 1e-6)).astype(np.float32)


def _largest(mask: np.ndarray, n: int = 1) -> np.ndarray:
    from scipy import ndimage as ndi

    lab, k = ndi.label(mask)
    if k <= n:
        return mask
    sizes = ndi.sum(mask, lab, index=np.arange(1, k + 1))
    keep = np.zeros(k + 1, bool)
    keep[1 + np.argsort(sizes)[::-1][:n]] = True
    return keep[lab]


def _tissue_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """bool [h, w]: one or two smooth blobs covering about 35-65 % of the canvas."""
    from scipy import ndimage as ndi

    h, w = shape
    side = max(h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    n = int(rng.integers(1, 3))
    if n == 1:
        centres = [(rng.uniform(0.4, 0.6) * h, rng.uniform(0.4, 0.6) * w)]
        radii = [(rng.uniform(0.2, 0.3) * h, rng.uniform(0.2, 0.3) * w)]
    else:
        a, b = rng.uniform(0.24, 0.34), rng.uniform(0.66, 0.76)
        o = (rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6))
        centres = [(a * h, o[0] * w), (b * h, o[1] * w)] if rng.random() < 0.5 else [(o[0] * h, a * w), (o[1] * h, b * w)]
        radii = [(rng.uniform(0.15, 0.22) * h, rng.uniform(0.15, 0.22) * w) for _ in range(2)]
    field_ = np.zeros(shape, np.float32)
    for (cy, cx), (ry, rx) in zip(centres, radii):
        field_ = np.maximum(field_, np.exp(-0.5 * (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)))
    field_ += 0.3 * _smooth_noise(rng, shape, side / 14)
    border = np.minimum(np.minimum(yy, h - 1 - yy), np.minimum(xx, w - 1 - xx)) / side
    field_ -= np.clip(0.05 - border, 0, None) * 20  # keep the tissue off the canvas edge
    target = rng.uniform(*TISSUE_FRACTION)
    mask = field_ > np.quantile(field_, 1 - target)
    return ndi.binary_fill_holes(_largest(mask, n))


def _blob(rng: np.random.Generator, allowed: np.ndarray, area: float) -> np.ndarray | None:
    """bool mask of one smooth compact blob of about ``area`` px inside ``allowed`` (None if no
    room): radial falloff around a centre deep inside ``allowed`` plus smooth noise, thresholded to
    the area, its component at the centre kept and holes filled."""
    from scipy import ndimage as ndi

    h, w = allowed.shape
    dist = ndi.distance_transform_edt(allowed)
    if dist.max() < 2:
        return None
    r = math.sqrt(area / math.pi)
    cand = np.flatnonzero(dist >= min(0.7 * r, 0.8 * dist.max()))
    c = int(cand[int(rng.integers(len(cand)))])
    cy, cx = divmod(c, w)
    m = math.ceil(2.5 * r) + 4
    y0, y1, x0, x1 = max(0, cy - m), min(h, cy + m + 1), max(0, cx - m), min(w, cx + m + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    f = -(((yy - cy) ** 2 + (xx - cx) ** 2) / (r * r))
    f += 0.6 * _smooth_noise(rng, f.shape, max(2.0, r / 2))
    ok = allowed[y0:y1, x0:x1]
    f[~ok] = -np.inf
    k = int(min(round(area), ok.sum()))
    if k < 1:
        return None
    thr = np.partition(f.ravel(), f.size - k)[f.size - k]
    sub = (f >= thr) & ok
    lab, _ = ndi.label(sub)
    at = lab[cy - y0, cx - x0]
    sub = lab == at if at else _largest(sub)
    sub = ndi.binary_fill_holes(sub) & ok
    out = np.zeros(allowed.shape, bool)
    out[y0:y1, x0:x1] = sub
    return out


def _regions(rng: np.random.Generator, tissue: np.ndarray, taken: np.ndarray, n: int, total: float,
             min_area: float) -> list[np.ndarray]:
    """Up to ``n`` disjoint blobs inside ``tissue`` and outside ``taken`` (updated in place),
    ``total`` px in all, each at least ``min_area`` px (retried up to 4 times when smaller)."""
    from scipy import ndimage as ndi

    n = max(1, min(n, int(total // min_area)))
    areas = np.maximum(rng.dirichlet([2.0] * n) * total, min_area)
    out = []
    for a in areas:
        best = None
        for _ in range(4):
            allowed = tissue & ~ndi.binary_dilation(taken, iterations=8)
            b = _blob(rng, allowed, a)
            if b is not None and (best is None or b.sum() > best.sum()):
                best = b
            if best is not None and best.sum() >= min(0.85 * a, min_area):
                break
        if best is not None and best.any():
            out.append(best)
            taken |= best
    return out


def slide_layout(rng: np.random.Generator, size: tuple[int, int], positive: bool,
                 downsample: int = TRUTH_DOWNSAMPLE) -> SlideLayout:
    """Random :class:`SlideLayout` of an H x W (level-0 px) slide: the tissue, 1-3 tumour blobs
    when ``positive`` (total log-uniform in :data:`TUMOUR_FRACTION` of the tissue, each at least
    about :data:`MIN_FOCUS_SIDE` px square), and non-tumour decoy blobs (1-3 in normal slides,
    0-1 in tumour slides)."""
    H, W = int(size[0]), int(size[1])
    shape = (-(-H // downsample), -(-W // downsample))
    tissue = _tissue_mask(rng, shape)
    t_area = float(tissue.sum())
    min_area = min((MIN_FOCUS_SIDE / downsample) ** 2, 0.25 * t_area)
    taken = np.zeros(shape, bool)
    tumour = []
    if positive:
        lo, hi = np.log(TUMOUR_FRACTION[0]), np.log(TUMOUR_FRACTION[1])
        frac = float(np.exp(rng.uniform(lo, hi)))
        total = float(np.clip(frac * t_area, min_area, 0.45 * t_area))
        tumour = _regions(rng, tissue, taken, int(rng.integers(1, 4)), total, min_area)
    n_other = int(rng.integers(0, 2)) if positive else int(rng.integers(1, 4))
    other = []
    if n_other:
        frac = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))))
        total = float(np.clip(frac * t_area, min_area, 0.35 * t_area))
        other = _regions(rng, tissue, taken, n_other, total, min_area)
    return SlideLayout((H, W), downsample, tissue, tumour, other)


# ----------------------------------------------------------------------------- painting
_RAMPS: dict[int, np.ndarray] = {}


def _ramp(s: int) -> np.ndarray:
    """float32 [s, s, 1] alpha: 1 inside, falling to ~0 over :data:`RAMP` px at the edges."""
    if s not in _RAMPS:
        d = np.minimum(np.arange(s), np.arange(s)[::-1]).astype(np.float32) + 0.5
        r = np.clip(d / RAMP, 0, 1)
        _RAMPS[s] = np.minimum(r[:, None], r[None, :])[..., None]
    return _RAMPS[s]


def _paint_cells(rng: np.random.Generator, canvas: np.ndarray, need: np.ndarray, ds: int,
                 choose: Callable[[float, float], str], bank: TileBank, fallback: Sequence[str]) -> int:
    """Cover every grid cell of ``canvas`` (uint8 [h, w, 3], level-0 px, changed in place) that
    meets ``need`` (bool mask of the canvas at ``ds``) with a soft-edged random crop of the tile
    ``choose(cy, cx)`` picks for the cell centre (another tile of ``fallback`` when that tile has
    no crop with enough tissue); cells are painted in random order. Returns the number of crops."""
    h, w = canvas.shape[:2]
    phase_y, phase_x = (int(v) for v in rng.integers(0, GRID_STEP, 2))
    half = GRID_STEP // 2
    cells = []
    for cy in range(phase_y - GRID_STEP, h + GRID_STEP, GRID_STEP):
        for cx in range(phase_x - GRID_STEP, w + GRID_STEP, GRID_STEP):
            y0, y1 = max(0, cy - half), min(h, cy + half)
            x0, x1 = max(0, cx - half), min(w, cx + half)
            if y1 <= y0 or x1 <= x0:
                continue
            if need[y0 // ds:-(-y1 // ds), x0 // ds:-(-x1 // ds)].any():
                cells.append((cy, cx))
    for i in rng.permutation(len(cells)):
        cy, cx = cells[i]
        s = int(rng.integers(CROP_MIN, CROP_MAX + 1))
        crop = bank.crop(rng, choose(cy, cx), s)
        while crop is None:
            crop = bank.crop(rng, fallback[int(rng.integers(len(fallback)))], s)
        s = crop.shape[0]
        jy, jx = (int(v) for v in rng.integers(-JITTER, JITTER + 1, 2))
        y0, x0 = cy + jy - s // 2, cx + jx - s // 2
        cy0, cx0 = max(0, y0), max(0, x0)
        cy1, cx1 = min(h, y0 + s), min(w, x0 + s)
        if cy1 <= cy0 or cx1 <= cx0:
            continue
        src = crop[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0].astype(np.float32)
        a = _ramp(s)[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        dst = canvas[cy0:cy1, cx0:cx1]
        dst[...] = (dst + (src - dst) * a + 0.5).astype(np.uint8)
    return len(cells)


def _upsample(lr: np.ndarray, ds: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Bilinear values [y1 - y0, x1 - x0] of the low-res float image ``lr`` (one px = ds x ds
    level-0 px, pixel centres aligned) at level-0 px [y0:y1, x0:x1]."""
    def axis(a0, a1, n):
        v = np.clip((np.arange(a0, a1) + 0.5) / ds - 0.5, 0, n - 1)
        i0 = np.floor(v).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), (v - i0).astype(np.float32)

    iy0, iy1, wy = axis(y0, y1, lr.shape[0])
    ix0, ix1, wx = axis(x0, x1, lr.shape[1])
    j0, j1 = ix0.min(), ix1.max() + 1
    sub = lr[:, j0:j1]
    rows = sub[iy0] * (1 - wy)[:, None] + sub[iy1] * wy[:, None]
    return rows[:, ix0 - j0] * (1 - wx) + rows[:, ix1 - j0] * wx


def _soft_alpha(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(mask.astype(np.float32), EDGE_SIGMA)


def _composite(dst: np.ndarray, src, alpha_lr: np.ndarray, ds: int) -> None:
    """dst = dst * (1 - a) + src * a in place, a = ``alpha_lr`` (float [h, w] in 0..1 at ``ds``)
    upsampled bilinearly; block by block, skipping blocks where a is 0 and copying where it is 1.
    ``src`` is an array like ``dst`` or a function (y0, y1, x0, x1) -> uint8 block."""
    h, w = dst.shape[:2]
    for y0 in range(0, h, BLOCK):
        for x0 in range(0, w, BLOCK):
            y1, x1 = min(h, y0 + BLOCK), min(w, x0 + BLOCK)
            lr = alpha_lr[max(0, y0 // ds - 1):-(-y1 // ds) + 1, max(0, x0 // ds - 1):-(-x1 // ds) + 1]
            if lr.max() <= 1e-3:
                continue
            block = src(y0, y1, x0, x1) if callable(src) else src[y0:y1, x0:x1]
            if lr.min() >= 1 - 1e-3:
                dst[y0:y1, x0:x1] = block
                continue
            a = _upsample(alpha_lr, ds, y0, y1, x0, x1)[..., None]
            d = dst[y0:y1, x0:x1]
            d[...] = (d + (block.astype(np.float32) - d) * a + 0.5).astype(np.uint8)


def _glass(rng: np.random.Generator, lr_shape: tuple[int, int], ds: int) -> Callable:
    """A function (y0, y1, x0, x1) -> uint8 [.., .., 3] glass block: one near-white colour
    (236..245 per channel, faint tint), faint smooth shading and per-pixel noise; each block is
    seeded by its position, so the glass does not depend on which blocks are asked for."""
    base = rng.uniform(238.5, 242.5)
    colour = np.clip(base + rng.uniform(-2.0, 2.0, 3), 236.5, 244.5).astype(np.float32)
    shade = 0.8 * _smooth_noise(rng, lr_shape, max(lr_shape) / 8)
    seed = int(rng.integers(2 ** 62))

    def block(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        g = np.random.default_rng([seed, y0, x0])
        v = colour + (_upsample(shade, ds, y0, y1, x0, x1)
                      + 0.9 * g.standard_normal((y1 - y0, x1 - x0), dtype=np.float32))[..., None]
        return np.clip(v + 0.5, 0, 255).astype(np.uint8)

    return block


def _bbox(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    h, w = mask.shape
    return max(0, ys[0] - margin), min(h, ys[-1] + margin + 1), max(0, xs[0] - margin), min(w, xs[-1] + margin + 1)


def paint_slide(rng: np.random.Generator, layout: SlideLayout, tiles: TileBank | dict,
                normal_files: Sequence[str], tumour_files: Sequence[str]) -> np.ndarray:
    """RGB uint8 [H, W, 3] (level-0 px, 0.5 µm/px) of ``layout``: non-tumour crops over the tissue
    in 4-9 zones of 1-3 source tiles each, decoy blobs refilled from 1-3 other non-tumour tiles,
    tumour blobs from 1-3 tumour tiles, then composited onto glass with soft edges. ``tiles``:
    a :class:`TileBank` or a dict path -> RGB tile holding the listed files."""
    from scipy import ndimage as ndi

    bank = tiles if isinstance(tiles, TileBank) else TileBank(tiles)
    normal_files, tumour_files = bank.usable_files(normal_files), bank.usable_files(tumour_files)
    H, W = layout.size
    ds = layout.downsample
    if not layout.tissue.any():
        return _glass(rng, layout.tissue.shape, ds)(0, H, 0, W)
    texture = np.zeros((H, W, 3), np.uint8)
    need = ndi.binary_dilation(layout.tissue, iterations=5)
    ly0, ly1, lx0, lx1 = _bbox(need, 0)
    n_zones = int(rng.integers(4, 10))
    zy = rng.uniform(ly0 * ds, ly1 * ds, n_zones)
    zx = rng.uniform(lx0 * ds, lx1 * ds, n_zones)
    zone_files = [_pick_files(rng, normal_files, int(rng.integers(1, 4))) for _ in range(n_zones)]

    def by_zone(cy: float, cx: float) -> str:
        files = zone_files[int(np.argmin((zy - cy) ** 2 + (zx - cx) ** 2))]
        return files[int(rng.integers(len(files)))]

    _paint_cells(rng, texture, need, ds, by_zone, bank, normal_files)

    regions = [(b, normal_files) for b in layout.other_blobs] + [(b, tumour_files) for b in layout.tumour_blobs]
    for blob, pool in regions:
        by0, by1, bx0, bx1 = _bbox(blob, 6)
        y0, y1, x0, x1 = by0 * ds, min(H, by1 * ds), bx0 * ds, min(W, bx1 * ds)
        files = _pick_files(rng, pool, int(rng.integers(1, 4)))
        layer = texture[y0:y1, x0:x1].copy()
        _paint_cells(rng, layer, ndi.binary_dilation(blob[by0:by1, bx0:bx1], iterations=5), ds,
                     lambda cy, cx, f=files: f[int(rng.integers(len(f)))], bank, pool)
        _composite(texture[y0:y1, x0:x1], layer, _soft_alpha(blob[by0:by1, bx0:bx1]), ds)

    # glass where there is no tissue: dst = texture, src = glass, alpha = 1 - soft tissue
    _composite(texture, _glass(rng, layout.tissue.shape, ds), 1 - _soft_alpha(layout.tissue), ds)
    return texture


def make_slide(rng: np.random.Generator, size: tuple[int, int], tiles: TileBank | dict,
               normal_files: Sequence[str], tumour_files: Sequence[str], positive: bool,
               downsample: int = TRUTH_DOWNSAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """One mosaic slide: (rgb uint8 [H, W, 3] at 0.5 µm/px, truth uint8 [ceil(H / ds),
    ceil(W / ds)] with 255 = tumour), ``size`` = (H, W) level-0 px, ds = ``downsample``."""
    layout = slide_layout(rng, size, positive, downsample)
    return paint_slide(rng, layout, tiles, normal_files, tumour_files), layout.truth


# ----------------------------------------------------------------------------- annotations
def blob_polygons(mask: np.ndarray, downsample: int = TRUTH_DOWNSAMPLE, tolerance: float = 2.0) -> list[np.ndarray]:
    """Outer contour polygons of the connected parts of ``mask`` (bool [h, w] at ``downsample``)
    as float arrays [n, 2] of (x, y) level-0 px, closed (first point = last), from
    ``find_contours`` simplified by ``approximate_polygon`` (``tolerance`` in mask px)."""
    from scipy import ndimage as ndi
    from skimage.measure import approximate_polygon, find_contours

    out = []
    lab, n = ndi.label(mask)
    for i in range(1, n + 1):
        part = np.pad(lab == i, 1)
        contours = find_contours(part.astype(np.float32), 0.5)
        if not contours:
            continue
        c = max(contours, key=len) - 1.0  # undo the padding
        c = approximate_polygon(c, tolerance)
        if len(c) < 4:
            continue
        if not np.array_equal(c[0], c[-1]):
            c = np.vstack([c, c[:1]])
        # mask px (row, col) centres lie at level-0 ((row + 0.5) * ds, (col + 0.5) * ds)
        out.append((c[:, ::-1] + 0.5) * downsample)
    return out


def annotation_geojson(blobs: Sequence[np.ndarray], downsample: int = TRUTH_DOWNSAMPLE) -> dict:
    """QuPath-style GeoJSON FeatureCollection: one ``Tumor`` Polygon annotation per part of each
    blob mask (bool [h, w] at ``downsample``), coordinates [x, y] level-0 px."""
    feats = []
    for blob in blobs:
        for poly in blob_polygons(blob, downsample):
            feats.append({
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[[round(float(x), 2), round(float(y), 2)] for x, y in poly]]},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            })
    return {"type": "FeatureCollection", "features": feats}


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
