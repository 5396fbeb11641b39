"""Smooth random fields and bilinear upsampling of low-resolution grids, shared by the slide
layout (blob shapes) and the painting (glass shading, soft alpha)."""

from __future__ import annotations

import numpy as np


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
