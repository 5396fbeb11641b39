"""Layout of a mosaic slide at the truth resolution: the tissue blobs, the tumour and non-tumour
"decoy" region blobs (:func:`slide_layout`, :class:`SlideLayout`), and the tumour regions as
polygons and QuPath-style annotation GeoJSON (:func:`blob_polygons`, :func:`annotation_geojson`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .fields import _smooth_noise

MPP = 0.5  # µm per level-0 px of every source tile and slide
TRUTH_DOWNSAMPLE = 4  # level-0 px per truth-mask px
MIN_FOCUS_SIDE = 250  # level-0 px: the smallest tumour region is about this side
TUMOUR_FRACTION = (0.015, 0.40)  # of the tissue, log-uniform, per tumour slide
TISSUE_FRACTION = (0.38, 0.62)  # target of the canvas before small parts are dropped


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

