"""Painting a mosaic slide from its layout: source-tile crops on a jittered grid, soft-edged
compositing of regions and glass, and the near-white glass itself (:func:`paint_slide`,
:func:`make_slide`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .fields import _smooth_noise, _upsample
from .layout import TRUTH_DOWNSAMPLE, SlideLayout, slide_layout
from .sources import CROP_MAX, CROP_MIN, TileBank, _pick_files

GRID_STEP = 160  # level-0 px between crop centres
JITTER = 12  # level-0 px; crop half - ramp >= GRID_STEP / 2 + JITTER: cells are always covered
RAMP = 4  # level-0 px of soft blend at a crop's edges
EDGE_SIGMA = 0.75  # truth px: Gaussian blur of tissue / region masks -> ~8 level-0 px soft edges
BLOCK = 256  # level-0 px blocks for the soft composites

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

