"""Tissue mask from a low-resolution level, so background tiles are never processed."""

from __future__ import annotations

import numpy as np


def tissue_mask_from_rgb(rgb: np.ndarray, gray_max: float = 220.0, sat_min: float = 0.08) -> np.ndarray:
    """Boolean tissue mask [h, w] of a low-resolution RGB uint8 image [h, w, 3].

    Tissue = not (bright and unsaturated) glass: gray < ``gray_max`` or HSV saturation >
    ``sat_min``; then a closing, small holes filled and specks removed. A fixed threshold
    (not Otsu) keeps all-tissue images whole.
    """
    from scipy import ndimage as ndi

    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3]
    if rgb.dtype != np.uint8:  # e.g. 16-bit: scale to 8 bits for the fixed thresholds
        hi = float(rgb.max()) or 1.0
        rgb = (rgb.astype(np.float32) * (255.0 / hi)).astype(np.uint8)
    # integer arithmetic (3 x gray, max - min) keeps the GIL-held time of a 1024 px mask short
    total = rgb.sum(axis=2, dtype=np.int16)
    mx, mn = rgb.max(axis=2).astype(np.int16), rgb.min(axis=2).astype(np.int16)
    dark_pen = total < 3 * 25  # black marker / scanner borders are not tissue
    mask = ((total < 3 * gray_max) | ((mx - mn) > sat_min * mx)) & ~dark_pen
    # closing with a 5 x 5 square; the border is extended, so all-tissue images keep their edges
    mask = ndi.minimum_filter(ndi.maximum_filter(mask.view(np.uint8), 5, mode="nearest"), 5, mode="nearest") > 0
    mask = _fill_holes(mask)
    lab, n = ndi.label(mask)
    if n:
        sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
        keep = np.zeros(n + 1, bool)
        keep[1:] = sizes >= max(16, 0.0005 * mask.size)
        mask = keep[lab]
    return mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` by labelling the background once (holes = background parts that
    do not touch the border): the same result in one pass instead of an iterated dilation, which
    held the GIL for most of a tissue mask's time."""
    from scipy import ndimage as ndi

    bg, n = ndi.label(~mask)
    if n == 0:
        return mask
    border = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    outside = np.zeros(n + 1, bool)
    outside[border] = True
    outside[0] = True  # the mask itself
    return mask | ~outside[bg]


def thumbnail(slide, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """(RGB [h, w, 3] with max(h, w) <= about ``max_side``, downsample) of a
    :class:`~napari_histoai.io.SlideImage`, read from the coarsest level no larger than needed
    (level-0 px per thumbnail px = downsample); one-line ``JobError`` when unreadable."""
    small, ds = slide.read_overview(max_side)
    return small[..., :3], ds


def tissue_mask(slide, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """(mask bool [h, w], downsample) of a :class:`~napari_histoai.io.SlideImage`, computed on
    the coarsest level no larger than needed (level-0 px per mask px = downsample)."""
    small, ds = thumbnail(slide, max_side)
    return tissue_mask_from_rgb(small), ds


def tile_has_tissue(mask: np.ndarray, downsample: float, y0: float, x0: float, y1: float, x1: float,
                    min_fraction: float = 0.0) -> bool:
    """Whether the level-0 box [y0:y1, x0:x1] holds tissue in ``mask``."""
    my0, mx0 = int(np.floor(y0 / downsample)), int(np.floor(x0 / downsample))
    my1, mx1 = int(np.ceil(y1 / downsample)), int(np.ceil(x1 / downsample))
    sub = mask[max(0, my0):max(0, my1), max(0, mx0):max(0, mx1)]
    if sub.size == 0:
        return False
    return bool(sub.mean() > min_fraction) if min_fraction > 0 else bool(sub.any())


def tissue_boxes(slide, tile: int, region=None, min_fraction: float = 0.5) -> list[tuple[int, int, int, int]]:
    """Non-overlapping ``tile`` px boxes (y0, x0, y1, x1) level-0 px of ``region`` (whole image
    when None) at least ``min_fraction`` tissue: where to sample training tiles on a slide."""
    from .tiling import tile_grid

    mask, ds = tissue_mask(slide)
    return [(t.y0, t.x0, t.y1, t.x1) for t in tile_grid(slide.shape, tile=tile, overlap=0, region=region)
            if tile_has_tissue(mask, ds, t.y0, t.x0, t.y1, t.x1, min_fraction=min_fraction)]
