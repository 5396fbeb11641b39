#!/usr/bin/env python
"""Precision / recall / F_d / mean F_c of a detector per score threshold on the train hold-out
(every 7th CRCHistoPhenotypes train tile, methods/detection/selection.py): how sure the points
are that a model would hand out as pseudo labels.

    python scripts/threshold_precision.py acformer-crc --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "crchisto" / "train").resolve()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from napari_histoai.engine.inference import infer_array
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.registry import load_detector
    from napari_histoai.methods.detection.selection import selection_split
    from napari_histoai.metrics import pooled_classification_scores, radius_px

    torch.set_num_threads(args.threads)
    det = load_detector(args.model, device="cpu")
    _, sel = selection_split(load_folder(DATA / "images", DATA / "points", det.classes, 0.5, 0.5))
    det.threshold = 0.05
    raw = [infer_array(det, it.image, mpp=0.5).arrays() for it in sel]
    print("| threshold | precision | recall | F_d | mean F_c |\n|---|---|---|---|---|")
    for thr in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        r = pooled_classification_scores(((p[s >= thr], c[s >= thr], it.points, it.labels)
                                          for it, (p, c, s) in zip(sel, raw)), len(det.classes), radius_px(0.5))
        print(f"| {thr} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f_d']:.3f} | {r['mean_f_c']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
