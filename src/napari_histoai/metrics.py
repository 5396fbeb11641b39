"""Detection and segmentation metrics.

Points are arrays [N, 2] of (y, x) pixels; masks are integer label images [H, W] with
0 = background (binary masks are any nonzero). Pairing for detection is Hungarian within a
radius (px), as in SC-CNN / HoVer-Net / AC-Former evaluations.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = [
    "RADIUS_UM", "radius_px", "pair_points", "detection_scores", "classification_scores",
    "pooled_classification_scores", "dice", "iou_matrix",
    "aji", "panoptic_quality", "object_f1",
]


RADIUS_UM = 3.0  # pairing radius of the detection papers (6 px at 20x, 12 px at 40x)


def radius_px(mpp: Optional[float], radius_um: float = RADIUS_UM) -> float:
    """The pairing radius in px of an image of ``mpp`` µm/px (0.5 µm/px assumed when unknown)."""
    return float(radius_um) / float(mpp or 0.5)


def pair_points(pred: np.ndarray, gt: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one pairing of pred [P, 2] and gt [G, 2] minimising total distance, with
    pairs farther than ``radius`` forbidden. Returns index arrays (pred_idx, gt_idx)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    d = cdist(pred, gt)
    big = 1e6
    cost = np.where(d <= radius, d, big)
    # only rows/cols that have at least one feasible partner take part (keeps it fast)
    rows = np.flatnonzero((d <= radius).any(1))
    cols = np.flatnonzero((d <= radius).any(0))
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    r, c = linear_sum_assignment(cost[np.ix_(rows, cols)])
    ok = cost[rows[r], cols[c]] < big
    return rows[r][ok], cols[c][ok]


def _f1(tp: float, fp: float, fn: float) -> float:
    den = 2 * tp + fp + fn
    return 1.0 if den == 0 else 2 * tp / den


def detection_scores(pred: np.ndarray, gt: np.ndarray, radius: float = 6.0) -> dict:
    """F_d with precision, recall and counts (tp, fp, fn)."""
    pi, _ = pair_points(pred, gt, radius)
    tp = len(pi)
    fp = len(np.asarray(pred).reshape(-1, 2)) - tp
    fn = len(np.asarray(gt).reshape(-1, 2)) - tp
    prec = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    rec = tp / (tp + fn) if tp + fn else 1.0
    return {"f1": _f1(tp, fp, fn), "precision": prec, "recall": rec, "tp": tp, "fp": fp, "fn": fn}


def classification_scores(
    pred: np.ndarray,
    pred_cls: np.ndarray,
    gt: np.ndarray,
    gt_cls: np.ndarray,
    n_classes: int,
    radius: float = 6.0,
    ignore: int = -1,
    weights: Sequence[float] = (2, 2, 1, 1),
) -> dict:
    """Per-class F_c as HoVer-Net's reference evaluation computes it (``compute_stats.py``,
    ``_f1_type``; Graham et al. 2019 eq. 5; AC-Former's evaluation follows it), plus F_d.

    For class t, only the matched pairs where the truth *or* the prediction is t take part, so
    TN_c (both not t) is always 0 there: TP_c both t, FP_c pred t / truth not t, FN_c truth t /
    pred not t; FP_d unmatched predictions of class t, FN_d unmatched truths of class t.
    F_c = 2 TP_c / (2 TP_c + w0 FP_c + w1 FN_c + w2 FP_d + w3 FN_d), weights (2, 2, 1, 1).
    Ground-truth points of class ``ignore`` (e.g. "unlabeled") count for detection only: their
    pairs and their misses are left out of every F_c. ``radius`` is in the points' px (the
    papers' protocol: 3 µm, i.e. 6 px at 0.5 µm/px; see :func:`radius_px`).
    Returns {"f_d", "f_c": [K], "mean_f_c", ...}.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    pred_cls = np.asarray(pred_cls).reshape(-1)
    gt_cls = np.asarray(gt_cls).reshape(-1)
    pi, gi = pair_points(pred, gt, radius)
    det = detection_scores(pred, gt, radius)
    um_pred = np.ones(len(pred), bool)
    um_pred[pi] = False
    um_gt = np.ones(len(gt), bool)
    um_gt[gi] = False
    keep = gt_cls[gi] != ignore
    pc, gc = pred_cls[pi][keep], gt_cls[gi][keep]
    w0, w1, w2, w3 = weights
    f_c = []
    for t in range(n_classes):
        sel = (pc == t) | (gc == t)  # the reference keeps only the pairs involving class t
        tp = np.sum((pc[sel] == t) & (gc[sel] == t))
        fp = np.sum((pc[sel] == t) & (gc[sel] != t))
        fn = np.sum((pc[sel] != t) & (gc[sel] == t))
        fpd = np.sum(pred_cls[um_pred] == t)
        fnd = np.sum((gt_cls[um_gt] == t))
        num = 2 * tp
        den = num + w0 * fp + w1 * fn + w2 * fpd + w3 * fnd
        f_c.append(float(num / den) if den else float("nan"))
    f_c_arr = np.array(f_c)
    return {
        "f_d": det["f1"], "precision": det["precision"], "recall": det["recall"],
        "f_c": f_c_arr, "mean_f_c": float(np.nanmean(f_c_arr)) if np.isfinite(f_c_arr).any() else float("nan"),
        "n_pairs": len(pi),
    }


def pooled_classification_scores(per_image, n_classes: int, radius: float = 6.0, ignore: int = -1) -> dict:
    """F_d / F_c pooled over images: ``per_image`` yields (pred [N, 2], pred_cls [N], gt [G, 2],
    gt_cls [G]) in px of each image; images are stacked far apart in y so no pair crosses two
    images. -> {"f_d", "precision", "recall", "f_c": [K] list, "mean_f_c", "n_pred", "n_true"}."""
    P, PC, G, GC, off = [], [], [], [], 0.0
    for pred, pred_cls, gt, gt_cls in per_image:
        pred = np.asarray(pred, np.float64).reshape(-1, 2)
        gt = np.asarray(gt, np.float64).reshape(-1, 2)
        both = np.concatenate([pred[:, 0], gt[:, 0]])
        if not len(both):
            continue
        shift = np.array([off - both.min(), 0.0])
        P.append(pred + shift), PC.append(np.asarray(pred_cls).reshape(-1))
        G.append(gt + shift), GC.append(np.asarray(gt_cls).reshape(-1))
        off += both.max() - both.min() + 3 * radius + 1
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape)  # noqa: E731
    r = classification_scores(cat(P, (0, 2)), cat(PC, 0).astype(np.int64), cat(G, (0, 2)), cat(GC, 0).astype(np.int64),
                              n_classes, radius=radius, ignore=ignore)
    return {"f_d": float(r["f_d"]), "precision": float(r["precision"]), "recall": float(r["recall"]),
            "f_c": [float(v) for v in r["f_c"]], "mean_f_c": float(r["mean_f_c"]),
            "n_pred": int(sum(len(x) for x in P)), "n_true": int(sum(len(x) for x in G))}


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Binary Dice of two masks (nonzero = foreground); 1.0 when both are empty."""
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    den = p.sum() + g.sum()
    return 1.0 if den == 0 else float(2 * np.logical_and(p, g).sum() / den)


def iou_matrix(gt: np.ndarray, pred: np.ndarray):
    """Intersections, areas and IoUs between all gt and pred objects.

    Returns (gt_ids [G], pred_ids [P], inter [G, P], gt_area [G], pred_area [P]) with ids in
    ascending order (background excluded)."""
    gt = np.asarray(gt).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    gt_ids, g_inv = np.unique(gt, return_inverse=True)
    pr_ids, p_inv = np.unique(pred, return_inverse=True)
    inter = np.zeros((len(gt_ids), len(pr_ids)), dtype=np.int64)
    np.add.at(inter, (g_inv, p_inv), 1)
    g_area = inter.sum(1)
    p_area = inter.sum(0)
    gsel = gt_ids != 0
    psel = pr_ids != 0
    return gt_ids[gsel], pr_ids[psel], inter[np.ix_(gsel, psel)], g_area[gsel], p_area[psel]


def aji(gt: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017): each gt object is paired with the pred of
    highest IoU; unpaired preds add their area to the union."""
    _, _, inter, ga, pa = iou_matrix(gt, pred)
    if len(ga) == 0 and len(pa) == 0:
        return 1.0
    if len(ga) == 0 or len(pa) == 0:
        return 0.0
    union = ga[:, None] + pa[None, :] - inter
    iou = inter / np.maximum(union, 1)
    best = iou.argmax(1)
    rows = np.arange(len(ga))
    c = inter[rows, best].sum()
    u = union[rows, best].sum()
    used = np.zeros(len(pa), bool)
    used[best[inter[rows, best] > 0]] = True
    # gt objects with no overlap at all: their whole area is union (pred not "used")
    no_overlap = inter[rows, best] == 0
    u = union[rows[~no_overlap], best[~no_overlap]].sum() + ga[no_overlap].sum()
    u += pa[~used].sum()
    return float(c / u) if u else 1.0


def _matched_iou(gt: np.ndarray, pred: np.ndarray, thr: float = 0.5):
    _, _, inter, ga, pa = iou_matrix(gt, pred)
    if len(ga) == 0 or len(pa) == 0:
        return np.zeros(0), len(ga), len(pa)
    iou = inter / np.maximum(ga[:, None] + pa[None, :] - inter, 1)
    gi, pi = np.nonzero(iou > thr)  # IoU > 0.5 pairs are unique by construction
    return iou[gi, pi], len(ga), len(pa)


def panoptic_quality(gt: np.ndarray, pred: np.ndarray) -> dict:
    """PQ = DQ x SQ with pairs at IoU > 0.5 (Kirillov et al. 2019)."""
    ious, ng, npred = _matched_iou(gt, pred)
    tp = len(ious)
    fp, fn = npred - tp, ng - tp
    if tp + fp + fn == 0:
        return {"pq": 1.0, "dq": 1.0, "sq": 1.0}
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(ious.mean()) if tp else 0.0
    return {"pq": dq * sq, "dq": dq, "sq": sq}


def object_f1(gt: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> float:
    """Object-level F1: a pred is a true positive when it overlaps a gt at IoU > threshold."""
    ious, ng, npred = _matched_iou(gt, pred, iou_threshold)
    tp = len(ious)
    return _f1(tp, npred - tp, ng - tp)
