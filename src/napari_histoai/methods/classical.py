"""Classical nuclei baselines, no weights: hematoxylin by colour deconvolution, then

* :class:`ClassicalDetector` (points): smoothing and local maxima; the fallback when no model is
  available, a pseudo-label source and the baseline row of the detection benchmarks;
* :class:`ClassicalSegmenter` (instances): Otsu's threshold on the hematoxylin of the whole
  slide's tissue, then a distance-transform watershed: the one-line scikit-image baseline a
  user could use instead of a learned segmenter.

Both work at 0.5 µm/px (20x); the engine resamples other inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class ClassicalParams:
    """sigma: Gaussian smoothing (px at ``mpp``); min_distance: between peaks (px);
    threshold: minimum smoothed hematoxylin optical density at a peak. Defaults from
    ``benchmarks/tune_classical.py`` (grid search on crchisto/train, pooled F_d 0.70)."""

    sigma: float = 2.5
    min_distance: int = 4
    threshold: float = 0.04
    mpp: float = 0.5


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin optical density [H, W] float32 of an RGB uint8 image [H, W, 3] (Ruifrok &
    Johnston stain vectors, skimage ``rgb2hed``); 0 where there is no hematoxylin."""
    from skimage.color import rgb2hed

    hed = rgb2hed(np.asarray(rgb)[..., :3])
    return np.clip(hed[..., 0], 0, None).astype(np.float32)


class ClassicalDetector:
    """A point detector of the engine's protocol (:mod:`napari_histoai.engine.protocols`)."""

    name = "classical"
    classes = ["nucleus"]
    tile_size = 512
    overlap = 32

    def __init__(self, params: ClassicalParams | None = None):
        self.params = params or ClassicalParams()
        self.mpp = self.params.mpp

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points [N, 2] (y, x) px, classes [N] (all 0), scores [N] in [0, 1] for one tile."""
        from scipy import ndimage as ndi
        from skimage.feature import peak_local_max

        p = self.params
        h = ndi.gaussian_filter(hematoxylin(rgb), p.sigma)
        pk = peak_local_max(h, min_distance=p.min_distance, threshold_abs=p.threshold, exclude_border=False)
        pts = pk.astype(np.float64)
        vals = h[pk[:, 0], pk[:, 1]] if len(pk) else np.zeros(0)
        scores = 1.0 - np.exp(-vals / 0.15)  # OD 0.1 -> 0.49, 0.3 -> 0.86
        return pts, np.zeros(len(pts), dtype=np.int64), scores

    def predict_tiles(self, tiles: Sequence[np.ndarray]):
        return [self.detect(t) for t in tiles]


class ClassicalSegmenter:
    """An instance segmenter of the engine's protocol: hematoxylin > Otsu threshold (fixed once
    per image from its thumbnail's tissue, so every tile uses the same one), holes filled,
    specks removed, touching nuclei split by a distance-transform watershed (``min_distance``
    px between centres, objects under ``min_size`` px dropped; px at ``mpp``)."""

    name = "classical segmenter"
    tile_size = 1024
    overlap = 64
    batch_size = 1

    def __init__(self, mpp: float = 0.5, min_distance: int = 4, min_size: int = 12):
        self.mpp, self.min_distance, self.min_size = mpp, min_distance, min_size
        self.threshold: float | None = None

    def prepare(self, thumbnail: np.ndarray, tissue: np.ndarray) -> None:
        from skimage.filters import threshold_otsu

        h = hematoxylin(thumbnail)[tissue] if tissue.any() else hematoxylin(thumbnail).ravel()
        self.threshold = float(threshold_otsu(h)) if h.size and h.max() > h.min() else 0.05

    def segment_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        from scipy import ndimage as ndi

        from .contrastive.postprocess import split_instances

        out = []
        for t in tiles:
            h = hematoxylin(t)
            thr = self.threshold if self.threshold is not None else self._otsu(h)
            mask = ndi.binary_opening(ndi.binary_fill_holes(h > thr), structure=np.ones((3, 3)))
            out.append(split_instances(mask, self.min_distance, self.min_size))
        return out

    @staticmethod
    def _otsu(h: np.ndarray) -> float:
        from skimage.filters import threshold_otsu

        return float(threshold_otsu(h)) if h.max() > h.min() else 0.05
