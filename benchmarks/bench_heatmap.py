"""Tumour heatmaps on held-out development mosaics: mixed supervision against its two baselines
(pixel-level only, image-level only) and a hematoxylin-density heuristic a user could use
without training, in one table.

Data: the seeded mosaic recipe (``scripts/make_tumour_mosaics.py``; built here when missing):
slides of the ``train`` split train, slides of the ``eval`` split (made from other tiles) are
scored. Per arm: slide AUC, specificity at 100 % sensitivity (the paper's goal metric:
threshold = the lowest tumour-slide score), the operating point fixed on the training slides,
pixel Dice / IoU of the heatmap at 0.5 against the pixel truth (all eval slides pooled),
training time, and heatmap speed in MP/s of tissue (level-0 px) on this machine's threads.

    python benchmarks/bench_heatmap.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT, SCRATCH, save, table  # noqa: E402


def auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half)."""
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def spec_at_full_sensitivity(scores, labels) -> float:
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    thr = s[y == 1].min()
    return float((s[y == 0] < thr).mean())


def at_threshold(scores, labels, thr) -> tuple[float, float]:
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    return float((s[y == 1] >= thr).mean()), float((s[y == 0] < thr).mean())


def truth_on(truth: np.ndarray, truth_ds: float, shape, ds: float) -> np.ndarray:
    """The truth mask (``truth_ds`` level-0 px per px) resampled (nearest, by centres) onto a
    grid of ``ds`` level-0 px per px and ``shape``."""
    yy = np.minimum(((np.arange(shape[0]) + 0.5) * ds / truth_ds).astype(int), truth.shape[0] - 1)
    xx = np.minimum(((np.arange(shape[1]) + 0.5) * ds / truth_ds).astype(int), truth.shape[1] - 1)
    return truth[np.ix_(yy, xx)]


def load_split(root: Path, split: str):
    from napari_histoai.io.slide_labels import read_slide_labels

    labels = read_slide_labels(root / split / "labels.csv")
    return [(root / split / "slides" / name, lab) for name, (lab, _) in labels.items()]


def truth_mask(root: Path, split: str, slide: Path) -> np.ndarray:
    from PIL import Image

    from napari_histoai.methods.heatmap.data import slide_stem

    return np.asarray(Image.open(root / split / "truth" / f"{slide_stem(slide.name)}.png")) > 127


def tissue_px(slide_path: Path) -> float:
    from napari_histoai.engine.tissue import tissue_mask
    from napari_histoai.io import open_image

    with open_image(slide_path) as s:
        m, ds = tissue_mask(s)
    return float(m.sum() * ds * ds)


def hematoxylin_baseline(slides, train, truth_ds, root):
    """Score = 99th percentile of the smoothed hematoxylin density over tissue; map = that
    density; the pixel threshold is fixed on the training slides (best Dice)."""
    from scipy import ndimage as ndi

    from napari_histoai.engine.tissue import tissue_mask_from_rgb
    from napari_histoai.io import open_image
    from napari_histoai.methods.classical import hematoxylin

    def dens(p):
        with open_image(p) as s:
            lv = s.best_level_for_downsample(8)
            ds = s.downsamples[lv]
            rgb = np.asarray(s.levels[lv])[..., :3]
        h = ndi.uniform_filter(hematoxylin(rgb).astype(np.float32), 16)
        tissue = tissue_mask_from_rgb(rgb)
        return np.where(tissue, h, 0), ds

    def run(items, split):
        out = []
        for p, lab in items:
            d, ds = dens(p)
            out.append((d, ds, float(np.percentile(d[d > 0], 99)) if (d > 0).any() else 0.0,
                        truth_on(truth_mask(root, split, p), truth_ds, d.shape, ds)))
        return out

    t0 = time.perf_counter()
    tr = run(train, "train")
    hi = max(float(d.max()) for d, *_ in tr) or 1.0
    best = (-1.0, 0.5)
    for thr in np.linspace(0.05, 0.95, 19) * hi:
        inter = sum(((d >= thr) & t).sum() for d, _, _, t in tr)
        tot = sum((d >= thr).sum() + t.sum() for d, _, _, t in tr)
        best = max(best, (2 * inter / max(tot, 1), thr))
    train_scores = [s for _, _, s, _ in tr]
    slide_thr = min(s for s, (_, lab) in zip(train_scores, train) if lab)
    ev = run(slides, "eval")
    secs = time.perf_counter() - t0
    thr = best[1]
    inter = sum(((d >= thr) & t).sum() for d, _, _, t in ev)
    pred = sum((d >= thr).sum() for d, _, _, t in ev)
    true = sum(t.sum() for d, _, _, t in ev)
    return [s for _, _, s, _ in ev], slide_thr, (2 * inter / max(pred + true, 1), inter / max(pred + true - inter, 1)), secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "benchmarks" / "data" / "tumour_mosaics"))
    ap.add_argument("--arms", default="mixed,pixel,image")
    ap.add_argument("--config", default="compact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--init-steps", type=int, default=None)
    ap.add_argument("--fusestyle", action="store_true")
    ap.add_argument("--negatives", choices=["hard", "all"], default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default=str(SCRATCH / "heatmap_models"), help="where trained models are kept")
    ap.add_argument("--reuse", action="store_true", help="reuse trained models found in --models")
    ap.add_argument("--name", default="heatmap")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from napari_histoai.engine.jobs import run_job
    from napari_histoai.io.regions import read_polygons
    from napari_histoai.methods.heatmap import (
        TrainingSlide,
        config_from,
        heatmap_job,
        load_heatmap_model,
        save_heatmap_model,
        train_heatmap_job,
    )
    from napari_histoai.methods.heatmap.data import slide_stem

    root = Path(args.data)
    if not (root / "manifest.json").is_file():
        from napari_histoai.devdata.tumour_mosaics import make_tumour_mosaics

        print(f"building the development mosaics in {root} ...", file=sys.stderr)
        make_tumour_mosaics(DATA, root)
    import json

    manifest = json.loads((root / "manifest.json").read_text())
    truth_ds = float(manifest.get("truth_downsample", 4))
    train, evals = load_split(root, "train"), load_split(root, "eval")
    ann = root / "train" / "annotations"
    n_ann = sum((ann / f"{slide_stem(p.name)}.geojson").is_file() for p, _ in train)
    eval_tissue = {p: tissue_px(p) for p, _ in evals}
    y_eval = [lab for _, lab in evals]
    rows, payload = [], {"data": str(root), "n_train": len(train), "n_eval": len(evals), "n_annotated": n_ann,
                         "threads": args.threads, "config": args.config, "arms": {}}
    for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
        if arm == "hematoxylin":
            continue
        cfg = config_from(args.config, mode=arm, rounds=args.rounds, round_steps=args.steps, init_steps=args.init_steps,
                          fusestyle=True if args.fusestyle else None, negatives=args.negatives, seed=args.seed)
        folder = Path(args.models) / f"{args.name}-{arm}"
        if args.reuse and (folder / "config.json").is_file():
            train_s = json.loads((folder / "config.json").read_text())["training"]["seconds"]
        else:
            items = [TrainingSlide(p, lab, read_polygons(ann / f"{slide_stem(p.name)}.geojson")
                                   if arm != "image" and (ann / f"{slide_stem(p.name)}.geojson").is_file() else [])
                     for p, lab in train]
            t0 = time.perf_counter()
            res = run_job(train_heatmap_job(items, cfg, device="cpu"),
                          lambda p: print(f"\r[{arm}] {p.message[:70]:<70}", end="", file=sys.stderr))
            train_s = time.perf_counter() - t0
            print(file=sys.stderr)
            save_heatmap_model(res, folder)
        model = load_heatmap_model(folder)
        scores, inter, pred, true, secs, tissue = [], 0, 0, 0, 0.0, 0.0
        for p, lab in evals:
            t0 = time.perf_counter()
            r = run_job(heatmap_job(p, model))
            secs += time.perf_counter() - t0
            tissue += eval_tissue[p]
            scores.append(r.score)
            m = np.asarray(r.maps.maps[0])
            t = truth_on(truth_mask(root, "eval", p), truth_ds, m.shape, r.maps.downsample)
            inter += int(((m >= 0.5) & t).sum())
            pred += int((m >= 0.5).sum())
            true += int(t.sum())
        sens, spec = at_threshold(scores, y_eval, model.threshold)
        cfgj = json.loads((folder / "config.json").read_text())
        row = {"auc": auc(scores, y_eval), "spec_at_100_sens": spec_at_full_sensitivity(scores, y_eval),
               "sens_at_train_thr": sens, "spec_at_train_thr": spec, "dice": 2 * inter / max(pred + true, 1),
               "iou": inter / max(pred + true - inter, 1), "train_s": train_s, "mp_per_s": tissue / secs / 1e6,
               "best_round": cfgj["training"]["best_round"], "rounds": cfgj["training"]["rounds"],
               "scores": [round(s, 4) for s in scores]}
        payload["arms"][arm] = row
        rows.append([arm, n_ann if arm != "image" else 0, row["auc"], row["spec_at_100_sens"],
                     f"{row['sens_at_train_thr']:.2f} / {row['spec_at_train_thr']:.2f}", row["dice"], row["iou"],
                     row["best_round"], f"{train_s / 60:.1f}", f"{row['mp_per_s']:.1f}"])
        print(f"{arm}: AUC {row['auc']:.3f}, spec@100%sens {row['spec_at_100_sens']:.3f}, Dice {row['dice']:.3f}",
              file=sys.stderr)
    if "hematoxylin" in args.arms:
        scores, slide_thr, (dice, iou), secs = hematoxylin_baseline(evals, train, truth_ds, root)
        sens, spec = at_threshold(scores, y_eval, slide_thr)
        payload["arms"]["hematoxylin"] = {"auc": auc(scores, y_eval), "spec_at_100_sens":
                                          spec_at_full_sensitivity(scores, y_eval), "dice": dice, "iou": iou,
                                          "sens_at_train_thr": sens, "spec_at_train_thr": spec}
        rows.append(["hematoxylin density (no training)", 0, auc(scores, y_eval),
                     spec_at_full_sensitivity(scores, y_eval), f"{sens:.2f} / {spec:.2f}", dice, iou, "-", "-", "-"])
    md = (f"Tumour heatmaps, {len(evals)} held-out mosaic slides ({sum(y_eval)} with tumour), trained on "
          f"{len(train)} ({n_ann} with drawn regions); config {args.config}, {args.threads} CPU threads\n\n"
          + table(["arm", "drawn slides", "slide AUC", "spec @ 100 % sens", "sens / spec @ train thr",
                   "pixel Dice", "pixel IoU", "round kept", "train min", "heatmap MP/s"], rows))
    print(md)
    save(args.name, payload, md)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
