"""Label-free choice of the detection score threshold on the target images.

A detector adapted across domains is less confident on the target than on its source, so the
source-domain default (0.5) drops real nuclei. Without target labels we pick, among
``GRID``, the threshold whose predicted nuclear area fraction is closest to that of Otsu's
threshold on the hematoxylin channel (``rgb2hed``) of the same images: a per-image prior every
H&E user already trusts for "how much of this is nuclei", used here for one number only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["GRID", "otsu_fraction", "calibrate_threshold"]

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def otsu_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels of ``rgb`` [H, W, 3] uint8 above Otsu's threshold on hematoxylin."""
    from skimage.filters import threshold_otsu

    from ..classical import hematoxylin

    h = hematoxylin(rgb)
    if float(h.max()) <= float(h.min()):
        return 0.0
    return float((h > threshold_otsu(h)).mean())


def calibrate_threshold(detector, images: Sequence[np.ndarray], *, tile: int = 512, mask_threshold: float = 0.5,
                        min_area: int = 10, rng=None, max_images: int = 12) -> tuple[float, dict]:
    """Score threshold for ``detector`` (eval-mode Mask R-CNN) from unlabelled target ``images``
    ([H, W, 3] uint8 at the model's µm/px). Up to ``max_images`` images, one ``tile`` px crop each.
    Returns (threshold, {"otsu_fraction", "fractions": {threshold: fraction}})."""
    rng = rng if rng is not None else np.random.default_rng(0)
    picks = list(images)
    if len(picks) > max_images:
        picks = [picks[i] for i in sorted(rng.choice(len(picks), max_images, replace=False))]
    dev = next(detector.parameters()).device
    saved = detector.roi_heads.score_thresh
    detector.roi_heads.score_thresh = min(GRID)
    try:
        fr, prior = _fractions(detector, picks, dev, tile, mask_threshold, min_area, rng)
    finally:
        detector.roi_heads.score_thresh = saved
    target = float(np.mean(prior)) if prior else 0.0
    means = {t: float(np.mean(v)) if v else 0.0 for t, v in fr.items()}
    best = min(GRID, key=lambda t: (abs(means[t] - target), -t))
    return float(best), {"otsu_fraction": target, "fractions": {str(t): round(v, 4) for t, v in means.items()}}


def _fractions(detector, picks, dev, tile, mask_threshold, min_area, rng):
    """Per threshold of GRID the predicted nuclear area fraction of each image, and Otsu's."""
    import torch
    import torch.nn.functional as F

    from .data import random_crop
    from .model import paste_instances
    from .network import detect, normalise

    fr = {t: [] for t in GRID}
    prior = []
    for im in picks:
        if min(im.shape[:2]) > tile:
            im = random_crop([im], tile, rng)[0]
        prior.append(otsu_fraction(im))
        h, w = im.shape[:2]
        H, W = -(-h // 32) * 32, -(-w // 32) * 32
        x = F.pad(normalise(torch.from_numpy(np.ascontiguousarray(im[..., :3])).permute(2, 0, 1)[None]),
                  (0, W - w, 0, H - h), mode="replicate").to(dev)
        with torch.inference_mode():
            d = detect(detector, x)[0]
        boxes, scores = d["boxes"].float().cpu().numpy(), d["scores"].float().cpu().numpy()
        masks = d["masks"][:, 0].float().cpu().numpy()
        for t in GRID:
            fr[t].append(float((paste_instances((h, w), boxes, scores, masks, t, mask_threshold, min_area) > 0).mean()))
    return fr, prior
