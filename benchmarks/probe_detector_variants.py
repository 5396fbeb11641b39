#!/usr/bin/env python
"""Inference-side variants of the bundled detector that were measured and not adopted
(session 12, 2026-12-06). Each probe changes one thing at inference, picks what it needs on
training data only, and prints the selection split beside the report split.

    python benchmarks/probe_detector_variants.py class-bias [--model acformer-crc]
    python benchmarks/probe_detector_variants.py class-threshold
    python benchmarks/probe_detector_variants.py class-headroom
    python benchmarks/probe_detector_variants.py class-pool
    python benchmarks/probe_detector_variants.py macenko
    python benchmarks/probe_detector_variants.py scale
    python benchmarks/probe_detector_variants.py ensemble --second runs/hed05-final --threshold 0.3
    python benchmarks/probe_detector_variants.py per-tile

* ``class-bias``: a per-class log-prior added to the class choice only (the score, hence F_d, is
  unchanged), grid -1..1 in steps of 0.25 per class (the first class fixed at 0), picked by mean
  F_c on the 10 held-out training tiles; crchisto/val reports the 5 best. Tiles are run whole
  (one 500 px tile each) without the detect job, to keep every point's class distribution.
* ``class-pool``: the class distribution at a head peak averaged over k x k cells (plain or
  weighted by the centre heat) instead of the peak cell; hold-out and val through the detect job.
* ``macenko``: images outside the training stains normalised by Macenko's method (the image's own
  H and E vectors and 99th-percentile amounts mapped to the training tiles' mean vectors and
  median amounts) instead of the model's OD-statistics lookup table; MoNuSeg F_d at 3 µm on the 17
  mask-only tiles (selection; centres from the masks) and the 13 centroid tiles (report), for the
  matched images' threshold 0.1-0.3 (images inside the training stains keep the model's own).
* ``scale``: MoNuSeg (40x, 0.25 µm/px) resampled as if the model's 0.5 µm/px were
  CRCHistoPhenotypes' 0.55 µm/px (the pixel size its scanner is usually quoted at), i.e. the
  tiles declared at 0.2625 or 0.275 µm/px; F_d at 3 µm (12 px of the 40x tile) on the same two
  MoNuSeg sets, through the detect job with the model's own stain matching and threshold.
* ``ensemble``: the dense heads of ``--model`` and ``--second`` (same architecture) averaged as
  probabilities (heat, offsets, class distributions; two backbone passes per tile), detected at
  ``--threshold`` (the first model's stain matching and matched shift); hold-out and val F_d / mean
  F_c, MoNuSeg F_d on both sets.
* ``per-tile``: not a variant: the model's F_d, precision and recall on each val and hold-out
  tile (detect job), with the numbers of clicked and detected nuclei, at 6 and 12 px.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from _common import DATA

CRC = DATA / "crchisto"
MON = DATA / "monuseg" / "train"


def _splits(classes):
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.selection import selection_split

    hold = selection_split(load_folder(CRC / "train" / "images", CRC / "train" / "points", classes, 0.5, 0.5))[1]
    return hold, load_folder(CRC / "val" / "images", CRC / "val" / "points", classes, 0.5, 0.5)


def _monuseg() -> list:
    """MoNuSeg's 30 training tiles: (RGB uint8 [H, W, 3] at 0.25 µm/px, truth centres [G, 2], scored):
    the 13 with annotated centroids (scored = True, report) and the 17 with binary masks only, whose
    centres come from the masks (selection)."""
    import tifffile
    from PIL import Image

    from napari_histoai.methods.detection.data import centroids_from_mask

    out = []
    for p in sorted((MON / "images").glob("*.png")):
        csv = MON / "points" / f"{p.stem}.csv"
        truth = (np.loadtxt(csv, delimiter=",", skiprows=1, usecols=(0, 1)).reshape(-1, 2) if csv.exists()
                 else centroids_from_mask(tifffile.imread(MON / "masks_binary" / f"{p.stem}.tif"), 12.0))
        out.append((np.asarray(Image.open(p).convert("RGB")), truth, csv.exists()))
    return out


def _fmt(r) -> str:
    return f"F_d {r['f_d']:.4f} mean F_c {r['mean_f_c']:.4f} ({', '.join(f'{x:.3f}' for x in r['f_c'])})"


def _head_points_probs(det, items) -> list:
    """The detector's kept points and class distributions per tile, each tile run whole (one
    500 px tile, without the detect job, so no stain matching) at ``det.threshold``:
    [(points [N, 2] px, probs [N, K])]."""
    import napari_histoai.methods.detection.predict as P

    kept, plain = [], P.postprocess

    def keep_probs(points, probs, threshold, shape, min_distance=0.0):
        h, w = shape
        k = (probs.max(-1) >= threshold) & (points[:, 0] >= -0.5) & (points[:, 0] < h - 0.5) \
            & (points[:, 1] >= -0.5) & (points[:, 1] < w - 0.5)
        kept.append((points[k], probs[k]))
        return plain(points, probs, threshold, shape, min_distance)

    P.postprocess = keep_probs
    try:
        out = []
        for it in items:
            kept.clear()
            det.predict_tiles([it.image])
            out.append(kept[0])
        return out
    finally:
        P.postprocess = plain


def class_bias(det) -> None:
    from napari_histoai.metrics import pooled_classification_scores

    hold, val = _splits(det.classes)
    raw = {"hold": _head_points_probs(det, hold), "val": _head_points_probs(det, val)}
    K = len(det.classes)

    def score(items, res, b):
        return pooled_classification_scores(((p, (np.log(q + 1e-9) + b).argmax(-1), it.points, it.labels)
                                             for it, (p, q) in zip(items, res)), K, 6.0)

    print("no bias: hold-out", _fmt(score(hold, raw["hold"], np.zeros(K))), "| val", _fmt(score(val, raw["val"], np.zeros(K))))
    grid = np.arange(-1.0, 1.001, 0.25)
    tried = sorted(((score(hold, raw["hold"], np.array((0.0,) + b))["mean_f_c"], (0.0,) + b)
                    for b in itertools.product(grid.tolist(), repeat=K - 1)), reverse=True)
    for s, b in tried[:5]:
        print(f"bias {b}: hold-out mean F_c {s:.4f} | val", _fmt(score(val, raw["val"], np.array(b))))


def class_threshold(det) -> None:
    """Per-class score thresholds: a point predicted as class k is kept when its score reaches
    t_k. HoVer-Net's F_c charges a matched point of the wrong class twice (FP_c of the predicted
    class, FN_c of the true one, weight 2 each) and a dropped one once (FN_d, weight 1), so a
    stricter threshold for unsure classes can raise mean F_c at some cost in F_d. Grid 0.2..0.5 per
    class, picked by F_d + mean F_c on the 10 held-out training tiles (tiles run whole, as class-bias)."""
    from napari_histoai.metrics import pooled_classification_scores

    hold, val = _splits(det.classes)
    base = det.threshold
    det.threshold = 0.2
    try:
        raw = {"hold": _head_points_probs(det, hold), "val": _head_points_probs(det, val)}
    finally:
        det.threshold = base
    K = len(det.classes)

    def score(items, res, t):
        t = np.asarray(t)
        out = []
        for it, (p, q) in zip(items, res):
            c = q.argmax(-1)
            k = q.max(-1) >= t[c]
            out.append((p[k], c[k], it.points, it.labels))
        return pooled_classification_scores(out, K, 6.0)

    one = [base] * K
    print(f"one threshold {base}: hold-out", _fmt(score(hold, raw["hold"], one)), "| val", _fmt(score(val, raw["val"], one)))
    grid = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
    tried = sorted((((r := score(hold, raw["hold"], t))["f_d"] + r["mean_f_c"], t)
                    for t in itertools.product(grid, repeat=K)), reverse=True)
    for s, t in tried[:5]:
        print(f"thresholds {t}: hold-out F_d + mean F_c {s:.4f} | val", _fmt(score(val, raw["val"], t)))


def class_headroom(det) -> None:
    """How much of the F_c gap is the class choice: F_d / mean F_c of the detect job's points as
    they are, and with every matched point (3 µm) given its true class (the same points, so F_d
    is unchanged); the confusion matrix of matched, classified nuclei (rows: truth)."""
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.metrics import pair_points, pooled_classification_scores

    hold, val = _splits(det.classes)
    K = len(det.classes)
    for name, items in (("val", val), ("hold-out", hold)):
        runs, conf = [], np.zeros((K, K), int)
        for it in items:
            p, c, _ = infer_array(det, it.image, mpp=0.5).arrays()
            pi, gi = pair_points(p, it.points, 6.0)
            ok = it.labels[gi] >= 0
            oracle = c.copy()
            oracle[pi[ok]] = it.labels[gi[ok]]
            np.add.at(conf, (it.labels[gi[ok]], c[pi[ok]]), 1)
            runs.append((p, c, oracle, it))
        r = pooled_classification_scores(((p, c, it.points, it.labels) for p, c, _, it in runs), K, 6.0)
        o = pooled_classification_scores(((p, t, it.points, it.labels) for p, _, t, it in runs), K, 6.0)
        print(f"{name}: as detected {_fmt(r)}")
        print(f"{name}: true classes at the matched points {_fmt(o)}")
        print(f"{name}: class accuracy of matched, classified nuclei {np.trace(conf) / conf.sum():.3f}; "
              f"confusion (rows: truth {det.classes}):")
        print(conf)


def class_pool(det) -> None:
    import torch
    import torch.nn.functional as F

    import napari_histoai.methods.detection.dense_head as DH
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.metrics import pooled_classification_scores

    plain = DH.dense_peaks
    hold, val = _splits(det.classes)

    def pooled(k, weighted):
        def peaks(dense, threshold):
            heat, prob = dense[:, :1].sigmoid(), dense[:, 3:].softmax(1)
            w = heat if weighted else torch.ones_like(heat)
            p = F.avg_pool2d(prob * w, k, 1, k // 2) / F.avg_pool2d(w, k, 1, k // 2).clamp_min(1e-9)
            return plain(torch.cat([dense[:, :3], p.clamp_min(1e-12).log()], 1), threshold)
        return peaks

    for k, weighted in ((1, False), (3, True), (3, False), (5, True)):
        DH.dense_peaks = plain if k == 1 else pooled(k, weighted)
        r = [pooled_classification_scores(((*infer_array(det, it.image, mpp=0.5).arrays()[:2], it.points, it.labels)
                                           for it in items), len(det.classes), 6.0) for items in (hold, val)]
        print(f"k {k}{' heat-weighted' if weighted else ''}: hold-out", _fmt(r[0]), "| val", _fmt(r[1]))
    DH.dense_peaks = plain


def macenko(det) -> None:
    from PIL import Image

    from napari_histoai.engine.inference import infer_array
    from napari_histoai.methods.stain import _od, macenko_vectors
    from napari_histoai.metrics import pooled_classification_scores

    def top_amounts(rgb, v):
        od = _od(rgb.reshape(-1, 3))
        return np.percentile(od[(od > 0.15).any(1)] @ np.linalg.pinv(v).T, 99, axis=0)

    train = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((CRC / "train" / "images").glob("*.png"))]
    vt = np.mean([macenko_vectors(im) for im in train], 0)
    vt /= np.linalg.norm(vt, axis=0)
    mt = np.median([top_amounts(im, vt) for im in train], 0)

    def normalise(rgb):
        v = macenko_vectors(rgb)
        c = _od(rgb.reshape(-1, 3)) @ np.linalg.pinv(v).T * (mt / np.maximum(top_amounts(rgb, v), 1e-6))
        return np.clip(np.round(256 * np.exp(-(c @ vt.T)) - 1), 0, 255).astype(np.uint8).reshape(rgb.shape)

    runs = {"lookup table (the product)": {True: [], False: []}, "Macenko": {True: [], False: []}}
    own, target = det.threshold, det.stain_target
    for rgb, truth, scored in _monuseg():
        det.threshold, det.matched_shift, det.stain_target = 0.05, 0.0, target
        res = infer_array(det, rgb, mpp=0.25).arrays()
        matched = det.stain_lut is not None
        runs["lookup table (the product)"][scored].append((res, truth, matched))
        det.stain_target = None  # already normalised
        runs["Macenko"][scored].append((infer_array(det, normalise(rgb), mpp=0.25).arrays(), truth, matched))
    det.stain_target = target
    for name, by in runs.items():
        for scored in (False, True):
            cells = []
            for t in (0.1, 0.125, 0.15, 0.2, 0.25, 0.3):
                r = pooled_classification_scores(((p[s >= (t if m else own)], c[s >= (t if m else own)], g,
                                                   -np.ones(len(g), int)) for (p, c, s), g, m in by[scored]), 4, 12.0)
                cells.append(f"{t:g}: {r['f_d']:.4f}")
            print(f"{name}, {'13 centroid tiles (report)' if scored else '17 mask-only tiles (selection)'}:",
                  "  ".join(cells))


def scale(det) -> None:
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.metrics import pooled_classification_scores

    tiles = _monuseg()
    for declared in (0.25, 0.2625, 0.275):
        by = {True: [], False: []}
        for rgb, truth, scored in tiles:
            pts, cls, _ = infer_array(det, rgb, mpp=declared).arrays()
            by[scored].append((pts, cls, truth, -np.ones(len(truth), int)))
        r = {k: pooled_classification_scores(v, len(det.classes), 12.0) for k, v in by.items()}
        print(f"declared {declared} µm/px: 17 mask-only tiles (selection) F_d {r[False]['f_d']:.4f} "
              f"(P {r[False]['precision']:.3f}, R {r[False]['recall']:.3f}) | 13 centroid tiles (report) F_d "
              f"{r[True]['f_d']:.4f} (P {r[True]['precision']:.3f}, R {r[True]['recall']:.3f})")


def ensemble(det, second: str) -> None:
    import torch

    from napari_histoai.engine.inference import infer_array
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.metrics import pooled_classification_scores

    other = load_acformer(second, device="cpu")
    own = det.model.backbone_maps

    def averaged(images, low_precision=None):
        maps, da = own(images, low_precision)
        db = other.model.backbone_maps(images, low_precision)[1]
        mean = (da[:, :3].sigmoid() + db[:, :3].sigmoid()) / 2  # heat and sub-cell offsets
        prob = (da[:, 3:].softmax(1) + db[:, 3:].softmax(1)) / 2
        return maps, torch.cat([torch.logit(mean.clamp(1e-6, 1 - 1e-6)), prob.clamp_min(1e-12).log()], 1)

    det.model.backbone_maps = averaged
    hold, val = _splits(det.classes)
    for name, items in (("hold-out", hold), ("val", val)):
        r = pooled_classification_scores(((*infer_array(det, it.image, mpp=0.5).arrays()[:2], it.points, it.labels)
                                           for it in items), len(det.classes), 6.0)
        print(f"{name}: {_fmt(r)}")
    by = {True: [], False: []}
    for rgb, truth, scored in _monuseg():
        pts, cls, _ = infer_array(det, rgb, mpp=0.25).arrays()
        by[scored].append((pts, cls, truth, -np.ones(len(truth), int)))
    print(f"MoNuSeg: 17 mask-only tiles (selection) F_d {pooled_classification_scores(by[False], 4, 12.0)['f_d']:.4f} | "
          f"13 centroid tiles (report) F_d {pooled_classification_scores(by[True], 4, 12.0)['f_d']:.4f}")


def per_tile(det) -> None:
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.metrics import detection_scores

    hold, val = _splits(det.classes)
    for name, items in (("val", val), ("hold-out", hold)):
        print(name)
        for it in items:
            pts = infer_array(det, it.image, mpp=0.5).arrays()[0]
            r, r12 = detection_scores(pts, it.points, 6.0), detection_scores(pts, it.points, 12.0)
            print(f"  {it.name:8s} clicked {len(it.points):4d} detected {len(pts):4d}  F_d {r['f1']:.3f} "
                  f"P {r['precision']:.3f} R {r['recall']:.3f}  (12 px: F_d {r12['f1']:.3f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("class-bias", "class-threshold", "class-headroom", "class-pool", "macenko", "scale", "ensemble", "per-tile"))
    ap.add_argument("--second", default=None, help="ensemble: the second model")
    ap.add_argument("--threshold", type=float, default=None, help="ensemble: score threshold (default: the model's)")
    ap.add_argument("--model", default="acformer-crc")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    from napari_histoai.methods.detection.predict import load_acformer

    torch.set_num_threads(a.threads)
    det = load_acformer(a.model, device="cpu")
    if a.probe == "ensemble":
        if not a.second:
            ap.error("ensemble needs --second MODEL")
        if a.threshold is not None:
            det.threshold = a.threshold
        ensemble(det, a.second)
        return 0
    {"class-bias": class_bias, "class-threshold": class_threshold, "class-headroom": class_headroom, "class-pool": class_pool, "macenko": macenko, "scale": scale,
     "per-tile": per_tile}[a.probe](det)
    return 0


if __name__ == "__main__":
    sys.exit(main())
