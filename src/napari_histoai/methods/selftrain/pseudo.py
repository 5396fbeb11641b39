"""Pseudo labels from the hematoxylin prior, at the working resolution.

Smoothed hematoxylin amount (by the image's own stain vectors, Macenko; or the fixed Ruifrok
vectors of ``rgb2hed``) above Otsu's threshold, holes filled and
opened, is split into instances by a distance-transform watershed (the baseline a user gets
from scikit-image). The network learns from it with two kinds of pixels left out: background
that is nearly as dark as the threshold, and faint rims of nuclei: the prior's least certain
pixels. The distance target is each pseudo nucleus' distance transform divided by its maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import SelfTrainConfig

__all__ = ["PseudoLabels", "pseudo_labels", "prior_mask"]


@dataclass
class PseudoLabels:
    """All [H, W]: fg float32 {0, 1}; weight float32 {0, 1} (0 = left out of the loss);
    dist float32 in [0, 1]; instances int32 (the prior's nuclei)."""

    fg: np.ndarray
    weight: np.ndarray
    dist: np.ndarray
    instances: np.ndarray


def _smoothed_h(rgb: np.ndarray, cfg: SelfTrainConfig) -> np.ndarray:
    """The nuclear signal [H, W] float32: hematoxylin minus ``eosin_weight`` x eosin, by the fixed
    (Ruifrok) or the image's own (Macenko) stain vectors, smoothed ``smooth_um``."""
    if cfg.stain == "image":
        from ..stain import stain_concentrations

        c = stain_concentrations(rgb)
        h, e = c[..., 0], c[..., 1]
    else:
        from skimage.color import rgb2hed

        hed = rgb2hed(np.asarray(rgb)[..., :3]).astype(np.float32)
        h, e = np.clip(hed[..., 0], 0, None), np.clip(hed[..., 1], 0, None)
    sig = np.clip(h - cfg.eosin_weight * e, 0, None) if cfg.eosin_weight else h
    return ndi.gaussian_filter(sig.astype(np.float32), cfg.px(cfg.smooth_um))


def prior_mask(rgb: np.ndarray, cfg: SelfTrainConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(mask bool [H, W], smoothed hematoxylin [H, W], its Otsu threshold) of RGB uint8 ``rgb``."""
    from skimage.filters import threshold_otsu

    h = _smoothed_h(rgb, cfg)
    if float(h.max()) <= float(h.min()):
        return np.zeros(h.shape, bool), h, float(h.max())
    t = float(threshold_otsu(h))
    m = ndi.binary_fill_holes(h > t)
    r = max(1, int(round(cfg.px(cfg.open_um))))
    m = ndi.binary_opening(m, structure=_disk(r))
    return m, h, t


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy ** 2 + xx ** 2 <= r ** 2


def pseudo_labels(rgb: np.ndarray, cfg: SelfTrainConfig) -> PseudoLabels:
    """Targets for one RGB uint8 image [H, W, 3] at ``cfg.mpp``."""
    from ..contrastive.postprocess import split_instances

    m, h, t = prior_mask(rgb, cfg)
    inst = split_instances(m, max(1, int(round(cfg.px(cfg.min_distance_um)))),
                           min_size=int(cfg.min_size_um2 / cfg.mpp ** 2))
    fg = inst > 0
    rim = fg & ~ndi.binary_erosion(fg, iterations=max(1, int(round(cfg.px(cfg.rim_um)))))
    unsure = (~fg & (h > cfg.ignore_low * t)) | (rim & (h < cfg.ignore_high * t))
    d = ndi.distance_transform_edt(fg)
    peak = np.ones(int(inst.max()) + 1)
    if inst.max():
        peak[1:] = np.maximum(ndi.maximum(d, inst, index=np.arange(1, inst.max() + 1)), 1.0)
    dist = (d / peak[inst]).astype(np.float32) * fg
    return PseudoLabels(fg.astype(np.float32), (~unsure).astype(np.float32), dist, inst.astype(np.int32))
