"""Model selection on training data only: a fixed hold-out of the training tiles and the score
threshold picked there, so a reported split (val) never chooses anything."""

from __future__ import annotations

__all__ = ["GRID", "selection_split", "pick_threshold"]

GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)


def selection_split(items: list) -> tuple[list, list]:
    """(train, selection) of PointImage items: every 7th of the name-sorted list (the 4th, 11th,
    ...; 10 of CRCHistoPhenotypes' 70 training tiles) is held out for selection."""
    items = sorted(items, key=lambda it: it.name)
    return [it for i, it in enumerate(items) if i % 7 != 3], [it for i, it in enumerate(items) if i % 7 == 3]


def pick_threshold(det, items, image_mpp: float, grid=GRID) -> tuple[float, dict]:
    """Score threshold of point detector ``det`` maximising pooled F_d + mean F_c (3 µm pairing,
    HoVer-Net's F_c) on ``items`` (images at ``image_mpp`` µm/px; one detection pass at the lowest
    threshold, then the grid). Returns (threshold, {threshold: [F_d, mean F_c]})."""
    from ...engine.inference import infer_array
    from ...metrics import pooled_classification_scores, radius_px

    saved = det.threshold
    det.threshold = min(grid)
    try:
        raw = [infer_array(det, it.image, mpp=image_mpp).arrays() for it in items]
    finally:
        det.threshold = saved
    scores = {}
    for thr in grid:
        r = pooled_classification_scores(((p[s >= thr], c[s >= thr], it.points, it.labels)
                                          for it, (p, c, s) in zip(items, raw)), len(det.classes),
                                         radius_px(image_mpp))
        scores[thr] = (r["f_d"], r["mean_f_c"])
    best = max(grid, key=lambda t: sum(scores[t]))
    return best, {str(t): [round(a, 4), round(b, 4)] for t, (a, b) in scores.items()}
