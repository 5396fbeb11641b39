#!/usr/bin/env python
"""Pick an AC-Former model's ``stain_matched_shift`` (the score-threshold change for images
outside its training stains, which it matches to them) on MoNuSeg's 17 training tiles that have
binary masks only: centres from the masks (``centroids_from_mask``, markers 3 µm apart), F_d at
3 µm over the tiles the model matches, for thresholds 0.05-0.50. The 13 tiles with annotated
centroids, which the detection benchmark scores, are never read.

    python scripts/pick_matched_shift.py resources/models/acformer-crc --threads 2 [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MONUSEG = (ROOT / ".." / "shared" / "data" / "monuseg" / "train").resolve()
MONUSEG_MPP = 0.25
GRID = np.round(np.arange(0.05, 0.5001, 0.025), 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model folder (its config.json is updated with --write)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="store the picked shift in the model's config.json")
    ap.add_argument("--tta", action="store_true", help="score with test-time flips (a check; --write refuses it)")
    ap.add_argument("--no-match", action="store_true", help="report only: F_d over all 17 tiles with stain matching "
                    "off, at the model's own threshold (how the model copes with foreign stains as they are)")
    a = ap.parse_args(argv)

    import tifffile
    import torch
    from PIL import Image

    from napari_histoai.engine.inference import infer_array
    from napari_histoai.io.atomic import atomic_write_text
    from napari_histoai.methods.detection.data import centroids_from_mask
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.metrics import pooled_classification_scores, radius_px

    if (a.tta or a.no_match) and a.write:
        ap.error("--write stores the shift of plain detection; --tta and --no-match only report")
    torch.set_num_threads(a.threads)
    det = load_acformer(a.model, device="cpu", tta=a.tta)
    base = float(det.threshold)
    if a.no_match:
        det.stain_target = None
    det.threshold, det.matched_shift = float(GRID[0]), 0.0
    runs, n_all = [], 0
    for p in sorted((MONUSEG / "images").glob("*.png")):
        if (MONUSEG / "points" / f"{p.stem}.csv").exists():
            continue  # scored by bench_detection: never used here
        n_all += 1
        truth = centroids_from_mask(tifffile.imread(MONUSEG / "masks_binary" / f"{p.stem}.tif"), 3.0 / MONUSEG_MPP)
        pts, cls, score = infer_array(det, np.asarray(Image.open(p).convert("RGB")), mpp=MONUSEG_MPP).arrays()
        if det.stain_lut is not None or a.no_match:  # only images the model matches get the shift
            runs.append((pts, cls, score, truth))
    if not runs:
        print(f"none of the {n_all} tiles is outside the model's training stains: shift 0")
        return 0
    if a.no_match:
        r = pooled_classification_scores(((p[s >= base], c[s >= base], g, -np.ones(len(g), int)) for p, c, s, g in runs),
                                         len(det.classes), radius_px(MONUSEG_MPP))
        print(f"stain matching off, {len(runs)} mask-only MoNuSeg tiles, threshold {base:.3f}: F_d {r['f_d']:.4f} "
              f"(precision {r['precision']:.3f}, recall {r['recall']:.3f})")
        return 0
    rows = []
    for t in GRID:
        r = pooled_classification_scores(((p[s >= t], c[s >= t], g, -np.ones(len(g), int)) for p, c, s, g in runs),
                                         len(det.classes), radius_px(MONUSEG_MPP))
        rows.append((float(t), r["f_d"], r["precision"], r["recall"]))
    print(f"{len(runs)} of {n_all} mask-only MoNuSeg tiles are matched; model threshold {base:.3f}\n")
    print("| threshold | F_d | precision | recall |\n|---|---|---|---|")
    for t, f, pr, rc in rows:
        print(f"| {t:.3f} | {f:.4f} | {pr:.3f} | {rc:.3f} |")
    best = max(rows, key=lambda r: (round(r[1], 4), -abs(r[0] - base)))  # ties: nearer the model's own
    shift = round(best[0] - base, 3)
    print(f"\nbest threshold {best[0]:.3f} (F_d {best[1]:.4f}): stain_matched_shift {shift:+.3f}")
    if a.write:
        path = Path(a.model) / "config.json"
        cfg = json.loads(path.read_text())
        cfg["architecture"]["stain_matched_shift"] = shift
        cfg.setdefault("training", {})["stain_matched_shift"] = {
            "picked_on": "MoNuSeg train, the 17 tiles with binary masks only (centres from the masks)",
            "command": "python scripts/pick_matched_shift.py MODEL --write", "threshold": best[0], "f_d": round(best[1], 4)}
        atomic_write_text(path, json.dumps(cfg, indent=2) + "\n")
        print(f"written to {path}")
        if (Path(a.model) / "MODEL_CARD.md").exists():  # the card says it (train_default_detector's card)
            import sys

            sys.path.insert(0, str(ROOT / "scripts"))
            from train_default_detector import model_card

            atomic_write_text(Path(a.model) / "MODEL_CARD.md", model_card(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
