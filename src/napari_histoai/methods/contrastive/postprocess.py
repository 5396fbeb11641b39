"""From confidence maps to nuclei: channel suggestion, threshold, the paper's morphology and the
instance split (distance transform + watershed). Pure numpy / scikit-image, no torch."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin optical density [H, W] (skimage ``rgb2hed`` channel 0) of an RGB uint8 image."""
    from skimage.color import rgb2hed

    return rgb2hed(np.ascontiguousarray(rgb[..., :3])).astype(np.float32)[..., 0]


def channel_agreement(conf: np.ndarray, rgb: np.ndarray, threshold=0.5, step: int = 2) -> np.ndarray:
    """Agreement [K] of each confidence channel ``conf`` [K, H, W] with the hematoxylin stain:
    Dice between the channel thresholded at ``threshold`` (a number or "auto") and the Otsu mask
    of the hematoxylin optical density. (Pearson correlation ranked channels worse: a channel can
    correlate well yet sit on the wrong side of the threshold.)"""
    from skimage.filters import threshold_otsu

    h = hematoxylin(rgb[::step, ::step])
    hm = h > threshold_otsu(h) if h.max() > h.min() else np.zeros(h.shape, bool)
    out = []
    for c in conf:
        c = c[::step, ::step]
        m = c > resolve_threshold(c, threshold)
        den = m.sum() + hm.sum()
        out.append(2.0 * (m & hm).sum() / den if den else 0.0)
    return np.array(out)


def suggest_channel(conf: np.ndarray, rgb: np.ndarray, threshold=0.5) -> int:
    """The channel that agrees best with the hematoxylin stain: the nuclei channel."""
    return int(np.argmax(channel_agreement(conf, rgb, threshold)))


def auto_threshold(conf_k: np.ndarray) -> float:
    """Otsu threshold of a confidence map: for maps that are not (yet) saturated to 0/1."""
    from skimage.filters import threshold_otsu

    c = np.asarray(conf_k, np.float32)
    if c.size > 1_000_000:
        c = c[:: max(1, int(np.sqrt(c.size / 1_000_000))), :: max(1, int(np.sqrt(c.size / 1_000_000)))]
    return float(threshold_otsu(c)) if c.max() > c.min() else 0.5


def resolve_threshold(conf_k: np.ndarray, threshold) -> float:
    """A number, or ``None`` / ``"auto"`` for :func:`auto_threshold`."""
    if threshold is None or (isinstance(threshold, str) and threshold.lower() == "auto"):
        return auto_threshold(conf_k)
    return float(threshold)


def mask_from_confidence(conf_k: np.ndarray, threshold: float | str | None = 0.5, open_radius: int = 3,
                         close_radius: int = 1, iterations: int = 2) -> np.ndarray:
    """Threshold one confidence map [H, W] (``None``/"auto" = Otsu) and apply the paper's
    post-processing: two openings (disc radius 3) then two closings (radius 1). Bool mask."""
    from skimage.morphology import disk

    m = np.asarray(conf_k) > resolve_threshold(conf_k, threshold)
    se_open = disk(open_radius) if open_radius > 0 else None
    se_close = disk(close_radius) if close_radius > 0 else None
    for _ in range(iterations):  # as the authors: opening then closing, repeated
        if se_open is not None:
            m = ndi.binary_opening(m, structure=se_open)
        if se_close is not None:
            m = ndi.binary_closing(m, structure=se_close, border_value=0)
    return m


def split_instances(mask: np.ndarray, min_distance: int = 5, min_size: int = 20,
                    smooth: float = 1.0) -> np.ndarray:
    """Instance labels (int32, 0 = background) from a binary nuclei mask: markers are the local
    maxima of the (smoothed) distance transform at least ``min_distance`` px apart, grown back
    over the mask by watershed; objects smaller than ``min_size`` px are dropped."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    dist = ndi.distance_transform_edt(mask)
    if smooth > 0:
        dist = ndi.gaussian_filter(dist, smooth)
    cc, _ = ndi.label(mask)
    peaks = peak_local_max(dist, min_distance=max(1, int(min_distance)), labels=cc, exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without any peak (tiny or flat) keep one marker at their maximum
    missing = np.setdiff1d(np.unique(cc[mask]), np.unique(cc[markers > 0]))
    if len(missing):
        pos = ndi.maximum_position(dist, cc, missing)
        for i, p in enumerate(pos):
            markers[p] = len(peaks) + 1 + i
    labels = watershed(-dist, markers, mask=mask)
    if min_size > 0:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_size
        small[0] = False
        labels[small[labels]] = 0
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels)[0].astype(np.int32)


def labels_from_confidence(conf_k: np.ndarray, threshold: float | str | None = 0.5, min_distance: int = 5,
                           min_size: int = 20) -> np.ndarray:
    """threshold + morphology + watershed split, in one call."""
    return split_instances(mask_from_confidence(conf_k, threshold), min_distance, min_size)
