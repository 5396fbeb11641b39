"""A synthetic whole-slide nuclei result (millions of nuclei on a 100k x 100k slide) and a
virtual slide image to show under it, for the whole-slide benchmark, screenshots and tests:
seeded, generated in seconds, no real pixels. No Qt or napari imports here."""

from __future__ import annotations

import numpy as np

from .fields import _smooth_noise

CLASSES = ["epithelial", "inflammatory", "fibroblast", "others"]
GRID = 512  # tissue / class maps are [GRID, GRID] over the slide


def tissue_maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tissue [GRID, GRID] bool, class weights [4, GRID, GRID] float, rows sum to 1)."""
    rng = np.random.default_rng(seed)
    t = _smooth_noise(rng, (GRID, GRID), 40.0)
    yy, xx = np.mgrid[0:GRID, 0:GRID] / GRID - 0.5
    tissue = (t - 2.5 * (yy ** 2 + xx ** 2)) > -0.35  # one or a few large pieces, glass around them
    logits = np.stack([_smooth_noise(rng, (GRID, GRID), 20.0) * s for s in (1.6, 1.3, 1.0, 0.4)])
    logits[0] += 0.6
    w = np.exp(logits)
    return tissue, (w / w.sum(0)).astype(np.float32)


def synthetic_nuclei(n: int = 5_000_000, shape=(100_000, 100_000), seed: int = 0):
    """(yx [n, 2] float64 level-0 px, class ids [n] int64, scores [n] float32): nuclei spread
    over the tissue of :func:`tissue_maps`, classes in smooth regions."""
    rng = np.random.default_rng(seed)
    tissue, w = tissue_maps(seed)
    cells = np.flatnonzero(tissue.ravel())
    pick = cells[rng.integers(0, len(cells), n)]
    cy, cx = np.divmod(pick, GRID)
    sy, sx = shape[0] / GRID, shape[1] / GRID
    yx = np.stack([(cy + rng.random(n)) * sy, (cx + rng.random(n)) * sx], 1)
    yx = np.minimum(yx, np.array(shape, float) - 1e-3)
    cum = np.cumsum(w[:, cy, cx], axis=0)
    cls = (rng.random(n)[None] > cum).sum(0).clip(0, 3).astype(np.int64)
    return yx, cls, rng.uniform(0.3, 1.0, n).astype(np.float32)


def tissue_overview(seed: int = 0) -> np.ndarray:
    """uint8 [GRID, GRID, 3]: the tissue of :func:`tissue_maps` pink on white glass (one pixel is
    shape / GRID level-0 px), a cheap stand-in for a slide's pixels under the nuclei."""
    tissue, _ = tissue_maps(seed)
    return np.where(tissue[..., None], np.array([236, 190, 214], np.uint8), np.array([250, 248, 250], np.uint8))


def virtual_slide(shape=(100_000, 100_000), seed: int = 0, chunk: int = 1024, min_size: int = 1024) -> list:
    """A lazy RGB pyramid (dask, uint8 [h, w, 3] per level, halving) painting the tissue of
    :func:`tissue_maps` pink on white glass; each chunk is computed when a viewer asks for it."""
    import dask.array as da

    tissue, _ = tissue_maps(seed)
    pink, glass = np.array([236, 190, 214], np.uint8), np.array([250, 248, 250], np.uint8)
    levels, f = [], 1
    while True:
        h, w = -(-shape[0] // f), -(-shape[1] // f)

        def block(block_info=None, f=f):
            (y0, y1), (x0, x1), _ = block_info[None]["array-location"]
            gy = np.minimum(((np.arange(y0, y1) * f) * GRID) // shape[0], GRID - 1)
            gx = np.minimum(((np.arange(x0, x1) * f) * GRID) // shape[1], GRID - 1)
            m = tissue[gy][:, gx]
            return np.where(m[..., None], pink, glass).astype(np.uint8)

        levels.append(da.map_blocks(block, dtype=np.uint8, chunks=((chunk,) * (h // chunk) + ((h % chunk,) if h % chunk else ()),
                                                                   (chunk,) * (w // chunk) + ((w % chunk,) if w % chunk else ()),
                                                                   (3,))))
        if max(h, w) <= min_size:
            return levels
        f *= 2
